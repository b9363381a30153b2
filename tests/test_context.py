"""Document context: an article sentence read with its article's previous sentence as a second segment.

The corpus reader attaches the context, the encoder lays out the pair (the sentence intact, the context cut to fit),
training uses it when the config says `context = "previous"`, and a bundle's runtime reads contexts only where its
manifest says it was trained with them: every other bundle ignores them.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from sitrep.cli import app
from tests.conftest import DATA, tiny_config


def _rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def test_reader_gives_each_article_sentence_the_one_before_it(tmp_path: Path) -> None:
    from sitrep.models.corpus import CorpusError, read_examples

    def row(i: str, text: str, article: str | None = None, position: int | None = None) -> dict:
        extra = {} if article is None else {"article_id": article, "position": position}
        return {"id": i, "text": text, "labels": [], "lang": "en", **extra}

    # Out of order on purpose, one article with a gap, and a sentence-corpus line with no article.
    path = _rows(tmp_path / "a.jsonl", [
        row("b1", "B second.", "b", 1), row("a0", "A first.", "a", 0), row("a1", "A second.", "a", 1),
        row("a2", "A third.", "a", 2), row("s", "A lone sentence."), row("b0", "B first.", "b", 0),
        row("c5", "C sixth.", "c", 5),
    ])
    context = {e.id: e.context for e in read_examples(path)}
    assert context == {"b1": "B first.", "a0": "", "a1": "A first.", "a2": "A second.", "s": "", "b0": "",
                       "c5": ""}
    for bad in (-1, "2", True, 1.5):
        with pytest.raises(CorpusError, match="position"):
            read_examples(_rows(tmp_path / "bad.jsonl", [row("x", "X.", "x", bad)]))  # type: ignore[arg-type]


def test_pair_layout_keeps_the_sentence_and_cuts_the_context(tiny_bundle: Path) -> None:
    from sitrep.models.bundle import load_bundle
    from sitrep.models.encoding import TextEncoder

    bundle = load_bundle(tiny_bundle)
    texts = ["The ministry said two rockets hit the base.", "قالت الوزارة إن صاروخين سقطا", "x " * 200, "short"]
    contexts = ["Sirens sounded at dawn in the city. " * 10, "", "a context", "ذكرت مصادر محلية"]
    for encoder in (TextEncoder(bundle.tokenizer_file, 24), TextEncoder(bundle.tokenizer_file, 24, bundle.spm_file)):
        alone = encoder.encode(texts)
        pairs = encoder.encode(texts, contexts)
        assert pairs.truncated == alone.truncated
        for a, p, ctx in zip(alone.ids, pairs.ids, contexts, strict=True):
            assert len(p) <= 24 and np.array_equal(p[: len(a)], a)  # the sentence keeps its ids and place
            if ctx and len(a) <= 24 - 3:
                assert len(p) > len(a) + 2 and p[len(a)] == p[-1] == encoder.eos_id  # <s> A </s></s> B </s>
            else:
                assert np.array_equal(p, a)  # no context, or no room for one: the sentence alone
        assert len(pairs.ids[0]) == 24  # the long context was cut to fit
        with pytest.raises(ValueError, match="contexts"):
            encoder.encode(texts, contexts[:2])
    hf, sp = (TextEncoder(bundle.tokenizer_file, bundle.max_length, spm).encode(texts, contexts)
              for spm in (None, bundle.spm_file))
    assert all(np.array_equal(a, b) for a, b in zip(hf.ids, sp.ids, strict=True))


def _with_context(bundle_dir: Path, dst: Path) -> Path:
    """A copy of a bundle whose manifest says it was trained with document context."""
    from sitrep.models.bundle import load_bundle, write_bundle_manifest

    shutil.copytree(bundle_dir, dst)
    manifest = load_bundle(dst).manifest
    manifest.training["config"]["context"] = "previous"
    write_bundle_manifest(dst, manifest)
    return dst


def test_runtime_reads_contexts_only_for_a_bundle_trained_with_them(tiny_bundle: Path, tmp_path: Path) -> None:
    from sitrep.models.runtime import load

    texts = ["The group said its fighters hit the base.", "Two soldiers were wounded, the army said."]
    contexts = ["Sirens sounded across the north overnight.", ""]
    plain = load(tiny_bundle, "onnx-int8")
    assert plain.bundle.context == "none" and not plain.uses_context  # bundles older than the option, too
    assert np.array_equal(plain.classify(texts, contexts=contexts).probs, plain.classify(texts).probs)
    ctx = load(_with_context(tiny_bundle, tmp_path / "ctx"), "onnx")
    assert ctx.uses_context
    pairs, alone_ids = ctx.encode(texts, contexts).ids, ctx.encode(texts).ids
    assert len(pairs[0]) > len(alone_ids[0]) and np.array_equal(pairs[1], alone_ids[1])
    # The tiny model barely moves with its input, so the check is that the outputs changed at all.
    with_ctx, alone = ctx.classify(texts, contexts=contexts).probs, ctx.classify(texts).probs
    assert not np.array_equal(with_ctx[0], alone[0]) and np.allclose(with_ctx[1], alone[1], atol=1e-5)


def test_training_with_context_and_its_held_out_measurement(tiny_base: Path, tiny_data: dict,
                                                            tmp_path: Path) -> None:
    """`sitrep train --context previous` trains on pairs and records it; `sitrep thresholds` then scores pairs."""
    from sitrep.models.bundle import load_bundle
    from sitrep.models.corpus import read_examples
    from sitrep.training.config import TrainConfig
    from sitrep.training.threshold_rules import compare_rules
    from sitrep.training.train import Trainer, train

    with pytest.raises(ValueError, match="context"):
        TrainConfig.load(None, {"context": "next"})
    bad = CliRunner().invoke(app, ["train", "--context", "next", "-o", str(tmp_path / "b")])
    assert bad.exit_code == 2 and "context" in bad.output and "Traceback" not in bad.output

    articles = _rows(tmp_path / "articles.jsonl",
                     [json.loads(line) for line in (DATA / "articles" / "dev.jsonl").read_text().splitlines()[:120]])
    cfg = tiny_config(tiny_base, tiny_data, max_steps=2, context="previous",
                      train_file=[str(tiny_data["train"]), str(articles)])
    out = train(cfg, tmp_path / "ctx", progress=False)
    assert load_bundle(out).context == "previous"
    examples = read_examples(articles)
    pairs = Trainer(cfg, tmp_path / "t").encode(examples)[0].lengths
    alone = Trainer(tiny_config(tiny_base, tiny_data), tmp_path / "u").encode(examples)[0].lengths
    with_context = np.asarray([bool(e.context) for e in examples]) & (alone <= cfg.max_length - 3)
    assert (pairs[with_context] > alone[with_context]).all() and (pairs[~with_context] == alone[~with_context]).all()

    result = compare_rules(out, articles, runtime="torch", splits=3)
    assert result["n"] == len(examples) and 0.0 <= result["rules"]["f1"]["macro_f1"] <= 1.0

    # Export compares its files with torch on the inputs the bundle is run on: pairs, where torch and ONNX agree.
    from sitrep.training.export import export
    from tests.conftest import tiny_gates

    report = export(out, data=articles, gates=tiny_gates(), log=lambda *_: None)
    assert report["runtimes"]["onnx"]["passed"] and report["runtimes"]["onnx"]["max_abs_prob_diff"] < 1e-4


def test_documents_carry_context_in_batch_scoring_and_in_the_service(tiny_bundle: Path, tmp_path: Path) -> None:
    """`sitrep score --documents` and the service's document mode give a context bundle each sentence's previous
    sentence, as in training; a single text has none."""
    import asyncio

    from sitrep.models.documents import FlatPlan
    from sitrep.models.runtime import load
    from sitrep.scoring.engine_local import score_local
    from sitrep.scoring.options import ScoreOptions
    from sitrep.serving.batcher import BatchConfig, Batcher
    from sitrep.serving.lifecycle import LoadedModel
    from sitrep.serving.prometheus import Metrics

    document = "Sirens sounded at dawn. The army said two rockets hit the base. No one was hurt, it added."
    plan = FlatPlan()
    plan.add_text("One sentence.")
    plan.add_document(document)
    sentences = plan.texts[1:]
    assert plan.contexts == ["", "", sentences[0], sentences[1]] and len(sentences) == 3

    bundle = _with_context(tiny_bundle, tmp_path / "ctx")
    clf = load(bundle, "onnx")
    expected = clf.classify(sentences, contexts=plan.contexts[1:]).probs
    assert not np.array_equal(expected[1:], clf.classify(sentences).probs[1:])

    src = _rows(tmp_path / "docs.jsonl", [{"id": "d", "text": document}])
    score_local(ScoreOptions(bundle=bundle, input=str(src), output=tmp_path / "out", runtime="onnx", documents=True),
                progress=False)
    table = pq.read_table(tmp_path / "out")
    scored = np.stack([table[f"score_{k}"].to_numpy() for k in clf.labels], axis=1)
    np.testing.assert_allclose(scored, expected, atol=2e-5)

    async def serve() -> np.ndarray:
        batcher = Batcher(BatchConfig(max_wait_ms=20), Metrics())
        batcher.start()
        model = LoadedModel(clf, clf.bundle.name, clf.bundle.version, "onnx", bundle, 0.0)
        one, doc = await asyncio.gather(batcher.submit(plan.texts[:1], model, contexts=plan.contexts[:1]),
                                        batcher.submit(sentences, model, contexts=plan.contexts[1:]))
        await batcher.close()
        np.testing.assert_allclose(one.probs, clf.classify(plan.texts[:1]).probs, atol=2e-5)
        return doc.probs

    np.testing.assert_allclose(asyncio.run(serve()), expected, atol=2e-5)


def test_eval_report_gives_the_model_and_a_bundle_baseline_the_article_contexts(tiny_bundle: Path,
                                                                                 tmp_path: Path) -> None:
    """`sitrep eval --baseline` may compare two bundles: each gets the article contexts, and reads them if it was
    trained with them."""
    from sitrep.eval.predictors import BundlePredictor
    from sitrep.eval.report import build_report
    from sitrep.models.corpus import read_examples

    rows = [json.loads(line) for line in (DATA / "articles" / "dev.jsonl").read_text().splitlines()[:40]]
    path = _rows(tmp_path / "articles.jsonl", rows)
    examples = read_examples(path)
    received: list[list[str] | None] = []

    class Recording(BundlePredictor):
        def predict(self, texts, contexts=None, chunk=256):  # type: ignore[no-untyped-def]
            received.append(contexts)
            return super().predict(texts, contexts, chunk)

    model = Recording(tiny_bundle, "onnx")
    baseline = Recording(_with_context(tiny_bundle, tmp_path / "ctx"), "onnx")
    report = build_report(examples, model, path, baseline=baseline)
    assert received == [[e.context for e in examples]] * 2 and any(received[0])
    assert report["baseline"] is not None
