"""`sitrep eval`: report.json schema, slices without positives, gates, self-contained HTML, RTL text."""

from __future__ import annotations

import base64
import html
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import f1_score
from typer.testing import CliRunner

from sitrep.cli import app
from sitrep.eval.metrics import calibration_bins, expected_calibration_error
from sitrep.eval.render import text_dir
from sitrep.models.bundle import load_bundle, write_bundle_manifest
from sitrep.models.corpus import label_matrix, read_examples
from sitrep.models.labels import LABELS
from sitrep.models.runtime import load
from sitrep.models.scores import macro_f1, slice_scores

runner = CliRunner()
TOP_KEYS = {
    "schema_version", "created", "data", "model", "runtime", "thresholds", "n", "macro_f1", "macro_f1_ci", "micro_f1",
    "labels_averaged", "labels_excluded", "per_label", "per_language", "ece", "calibration", "pr_curves",
    "cooccurrence", "errors", "truncated", "notes", "timing_s", "baseline", "deltas", "comparison",
    "per_topic", "label_sets", "provenance",
}  # fmt: skip


def run_eval(*args: str | Path) -> tuple[int, str]:
    result = runner.invoke(app, ["eval", *map(str, args), "--quiet"])
    return result.exit_code, result.output + (
        str(result.exception) if result.exit_code not in (0, 1, 2) else ""
    )


@pytest.fixture(scope="module")
def report_dir(
    tiny_bundle: Path, tiny_data: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    out = tmp_path_factory.mktemp("report")
    code, output = run_eval(tiny_bundle, "--data", tiny_data["test"], "--report", out, "--errors", "50")
    assert code == 0, output
    return out


def test_report_json_schema_and_values(
    report_dir: Path, tiny_bundle: Path, tiny_data: dict[str, Path]
) -> None:
    report = json.loads((report_dir / "report.json").read_text(encoding="utf-8"))
    assert set(report) == TOP_KEYS
    bundle = load_bundle(tiny_bundle, verify=False)
    assert report["model"] == {"name": bundle.name, "version": bundle.version, "kind": "bundle"}
    assert report["runtime"] == "onnx-int8"
    assert report["thresholds"] == {k: round(v, 4) for k, v in bundle.manifest.thresholds.items()}
    examples = read_examples(tiny_data["test"])
    assert report["n"] == report["data"]["n"] == len(examples)
    for label in LABELS:
        assert {"precision", "recall", "f1", "support", "predicted", "average_precision", "ece"} <= set(
            report["per_label"][label]
        )
    assert set(report["per_language"]) == {e.lang for e in examples}
    for s in report["per_language"].values():
        assert {"n", "macro_f1", "per_label", "labels_excluded", "ece"} <= set(s)
    assert sum(s["n"] for s in report["per_language"].values()) == report["n"]
    assert 0.0 <= report["ece"] <= 1.0 and set(report["calibration"]["per_label"]) == set(LABELS)
    assert sum(b["n"] for b in report["calibration"]["bins"]) == report["n"] * len(LABELS)

    # The numbers are the runtime's predictions scored by sitrep.models.scores, recomputed independently here.
    result = load(tiny_bundle, "onnx-int8").classify([e.text for e in examples])
    y = label_matrix(examples)
    pred = np.asarray([[int(x in labels) for x in LABELS] for labels in result.labels])
    assert report["macro_f1"] == pytest.approx(macro_f1(y, pred)[0], abs=1e-4)
    assert report["micro_f1"] == pytest.approx(f1_score(y, pred, average="micro", zero_division=0), abs=1e-4)
    assert report["ece"] == pytest.approx(expected_calibration_error(result.probs, y), abs=1e-4)
    assert report["truncated"]["n"] == sum(result.truncated)
    co = np.asarray(report["cooccurrence"]["gold_vs_predicted"])
    assert np.trace(co[:4, :4]) == int((pred & y).sum())  # the diagonal holds the true positives


def test_ece_by_hand() -> None:
    probs = np.asarray([[0.05], [0.15], [0.95], [0.95]])
    y = np.asarray([[0], [1], [1], [0]])
    # bins: [0,.1): p .05 rate 0 -> .05; [.1,.2): p .15 rate 1 -> .85; [.9,1]: p .95 rate .5 -> .45
    assert expected_calibration_error(probs, y) == pytest.approx(0.25 * 0.05 + 0.25 * 0.85 + 0.5 * 0.45)
    bins = calibration_bins(probs, y)
    assert [b["n"] for b in bins] == [1, 1, 0, 0, 0, 0, 0, 0, 0, 2]
    assert (
        expected_calibration_error(np.asarray([1.0, 0.0]), np.asarray([1, 0])) == 0.0
    )  # p=1 is the last bin


def test_label_without_positives_is_left_out_and_flagged(
    tiny_bundle: Path, tiny_data: dict[str, Path], tmp_path: Path
) -> None:
    rows = [json.loads(x) for x in tiny_data["test"].read_text(encoding="utf-8").splitlines() if x.strip()]
    # A language slice "xx" made of sentences without `claim` (but with some other label).
    picked = [r for r in rows if "claim" not in r["labels"] and r["labels"]][:6]
    assert len(picked) == 6 and {x for r in picked for x in r["labels"]} - {"claim"}
    for r in picked:
        r["lang"] = "xx"
    data = tmp_path / "slice.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    code, output = run_eval(tiny_bundle, "--data", data, "--report", tmp_path / "r")
    assert code == 0, output
    report = json.loads((tmp_path / "r" / "report.json").read_text(encoding="utf-8"))
    xx = report["per_language"]["xx"]
    assert "claim" in xx["labels_excluded"] and "claim" not in xx["labels_averaged"]
    assert xx["per_label"]["claim"]["f1"] is None and xx["per_label"]["claim"]["recall"] is None
    assert xx["per_label"]["claim"]["support"] == 0
    # The slice's macro-F1 averages only the labels that have positives.
    f1s = [xx["per_label"][k]["f1"] for k in xx["labels_averaged"]]
    assert xx["macro_f1"] == pytest.approx(sum(f1s) / len(f1s), abs=2e-4)
    assert any("'xx'" in n and "claim" in n for n in report["notes"])
    assert "'xx'" in (tmp_path / "r" / "report.md").read_text(encoding="utf-8")
    assert "language &#x27;xx&#x27;" in (tmp_path / "r" / "report.html").read_text(encoding="utf-8")


def test_slice_scores_with_no_positive_at_all() -> None:
    y = np.zeros((3, 4), dtype=np.int64)
    s = slice_scores(y, y)
    assert s["macro_f1"] is None and s["labels_excluded"] == list(LABELS)


def test_html_is_self_contained_with_inline_pngs(report_dir: Path) -> None:
    page = (report_dir / "report.html").read_text(encoding="utf-8")
    assert "<script" not in page and "<link" not in page and "@import" not in page and "url(" not in page
    srcs = re.findall(r'\ssrc="([^"]*)"', page)
    hrefs = re.findall(r'\shref="([^"]*)"', page)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert all(h.startswith("#") for h in hrefs)
    assert len(srcs) == 4  # PR curves, reliability, per-language bars, label tables
    for s in srcs:
        assert base64.b64decode(s.split(",", 1)[1]).startswith(b"\x89PNG\r\n\x1a\n")
    for section in ("Per label", "Per language", "Precision-recall", "Reliability", "Worst errors"):
        assert section in page
    md = (report_dir / "report.md").read_text(encoding="utf-8")
    for rel in re.findall(r"\]\((plots/[^)]+\.png)\)", md):
        assert (report_dir / rel).read_bytes().startswith(b"\x89PNG")


def test_worst_errors_keep_text_and_render_rtl(report_dir: Path, tiny_data: dict[str, Path]) -> None:
    report = json.loads((report_dir / "report.json").read_text(encoding="utf-8"))
    page = (report_dir / "report.html").read_text(encoding="utf-8")
    source = {e.id: e.text for e in read_examples(tiny_data["test"])}
    items = [it for v in report["errors"].values() for kind in v.values() for it in kind]
    assert items, "the tiny model makes errors"
    for label, v in report["errors"].items():
        fp = [it["probs"][label] for it in v["false_positives"]]
        fn = [it["probs"][label] for it in v["false_negatives"]]
        assert fp == sorted(fp, reverse=True) and fn == sorted(fn)  # most confident FPs, least confident FNs
        cut = report["thresholds"][label]
        assert all(p >= cut - 1e-4 for p in fp) and all(p <= cut + 1e-4 for p in fn)  # (4-decimal rounding)
    for it in items:
        assert it["text"] == source[it["id"]]  # byte-for-byte (ZWNJ, diacritics, ی/ي)
        assert html.escape(it["text"], quote=True) in page
    rtl = [it for it in items if it["lang"] in ("ar", "fa")]
    assert rtl, "Arabic/Persian rows among the errors"
    for it in rtl:
        assert (
            f'<td class="text" dir="rtl" lang="{it["lang"]}">{html.escape(it["text"], quote=True)}</td>'
            in page
        )
    en = next(it for it in items if it["lang"] == "en")
    assert f'dir="auto" lang="en">{html.escape(en["text"], quote=True)}' in page


def test_text_direction() -> None:
    assert text_dir('"K1" قاعدة عسكرية قرب كركوك', "") == "rtl"  # starts with Latin, still RTL
    assert text_dir("می‌گوید", "und") == "rtl"
    assert text_dir("Anything at all", "ur") == "rtl"
    assert text_dir("The group said", "en") == "auto"


def _degraded_copy(tiny_bundle: Path, dst: Path) -> Path:
    """The tiny bundle with every threshold at 1.0: it predicts nothing, so every F1 falls to 0."""
    shutil.copytree(tiny_bundle, dst)
    bundle = load_bundle(dst, verify=False)
    bundle.manifest.thresholds = dict.fromkeys(LABELS, 1.0)
    write_bundle_manifest(dst, bundle.manifest)
    return dst


def test_gates_exit_codes(tiny_bundle: Path, tiny_data: dict[str, Path], tmp_path: Path) -> None:
    data = tiny_data["test"]
    code, out = run_eval(tiny_bundle, "--data", data, "--report", tmp_path / "a", "--fail-under", "0.0")
    assert code == 0, out
    f1 = json.loads((tmp_path / "a" / "report.json").read_text())["macro_f1"]
    assert f1 > 0, "precondition: the tiny model gets some label right"
    code, out = run_eval(
        tiny_bundle, "--data", data, "--report", tmp_path / "b", "--fail-under", f"{f1 + 0.01:.4f}"
    )
    assert code == 1 and "fail-under" in out
    assert (tmp_path / "b" / "report.html").exists()  # the report is written even when the gate fails

    worse = _degraded_copy(tiny_bundle, tmp_path / "worse")
    code, out = run_eval(worse, "--data", data, "--report", tmp_path / "c", "--baseline", tiny_bundle,
                         "--max-regression", "0.5")  # fmt: skip
    assert code == 1 and "max-regression" in out
    report = json.loads((tmp_path / "c" / "report.json").read_text())
    assert report["baseline"]["macro_f1"] == pytest.approx(f1, abs=1e-4)
    assert report["deltas"]["macro_f1"] == pytest.approx(-f1, abs=1e-4)
    worse_rows = {(r["slice"], r["metric"]) for r in report["comparison"] if r["worse"]}
    assert ("all", "macro_f1") in worse_rows and ("all", "micro_f1") in worse_rows
    assert "▼ worse" in (tmp_path / "c" / "report.md").read_text(encoding="utf-8")
    assert '<tr class="worse">' in (tmp_path / "c" / "report.html").read_text(encoding="utf-8")

    # The other way round nothing got worse in macro-F1, so the regression gate passes.
    code, out = run_eval(tiny_bundle, "--data", data, "--report", tmp_path / "d", "--baseline", worse,
                         "--max-regression", "0.5")  # fmt: skip
    assert code == 0, out


def test_bad_input_exits_2(tiny_bundle: Path, tiny_data: dict[str, Path], tmp_path: Path) -> None:
    code, out = run_eval(
        tiny_bundle, "--data", tiny_data["test"], "--report", tmp_path, "--max-regression", "1"
    )
    assert code == 2 and "--baseline" in out
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x", "text": "t", "labels": ["not_a_label"]}\n', encoding="utf-8")
    code, out = run_eval(tiny_bundle, "--data", bad, "--report", tmp_path / "r")
    assert code == 2 and "not_a_label" in out
    code, out = run_eval(tmp_path, "--data", tiny_data["test"], "--report", tmp_path / "r")
    assert code == 2 and "neither a model bundle" in out


def test_tfidf_baseline_plugs_in(tiny_bundle: Path, tiny_data: dict[str, Path], tmp_path: Path) -> None:
    from sitrep.training.tfidf import train_tfidf

    base = tmp_path / "tfidf"
    train_tfidf(base, train_file=str(tiny_data["train"]), dev_file=str(tiny_data["dev"]), eval_files={})
    code, out = run_eval(
        tiny_bundle, "--data", tiny_data["test"], "--report", tmp_path / "r", "--baseline", base
    )
    assert code == 0, out
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["baseline"]["model"]["kind"] == "tfidf" and report["baseline"]["runtime"] == "sklearn"
    assert set(report["baseline"]["per_language"]) == set(report["per_language"])
    assert report["deltas"]["macro_f1"] == pytest.approx(
        report["macro_f1"] - report["baseline"]["macro_f1"], abs=1e-4
    )
    assert len(report["comparison"]) == 3 + 5 * len(LABELS) + 2 * len(report["per_language"])


def test_ensemble_averages_members_probabilities_against_their_mean_thresholds(
    tiny_bundle: Path, tiny_data: dict[str, Path], tmp_path: Path
) -> None:
    from sitrep.eval.predictors import EnsemblePredictor, PredictorError, load_predictor
    from sitrep.training.tfidf import train_tfidf

    base = tmp_path / "tfidf"
    train_tfidf(base, train_file=str(tiny_data["train"]), dev_file=str(tiny_data["dev"]), eval_files={})
    texts = [e.text for e in read_examples(tiny_data["test"])]
    members = [load_predictor(tiny_bundle, "onnx"), load_predictor(base)]
    each = [m.predict(texts) for m in members]
    assert not np.allclose(each[0].probs, each[1].probs)  # two different models, so the mean is a third answer
    ens = EnsemblePredictor(members)
    got = ens.predict(texts)
    mean = (each[0].probs + each[1].probs) / 2
    np.testing.assert_allclose(got.probs, mean, rtol=1e-5, atol=1e-6)
    for label in LABELS:
        assert ens.thresholds[label] == pytest.approx((members[0].thresholds[label] + members[1].thresholds[label]) / 2)
    cut = np.asarray([ens.thresholds[label] for label in LABELS])
    assert got.labels == [[label for label, on in zip(LABELS, row, strict=True) if on] for row in mean >= cut]
    assert ens.kind == "ensemble" and ens.runtime == "onnx+sklearn" and " + " in ens.name
    assert got.truncated == each[0].truncated and len(got.truncated) == len(texts)  # the bundle's, TF-IDF has none
    with pytest.raises(PredictorError, match="at least two"):
        EnsemblePredictor(members[:1])

    # the command: the report names the ensemble, and its provenance command reproduces the run
    code, out = run_eval(tiny_bundle, "--data", tiny_data["test"], "--report", tmp_path / "r", "--ensemble", base,
                         "--runtime", "onnx")
    assert code == 0, out
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["model"]["kind"] == "ensemble" and report["runtime"] == "onnx+sklearn"
    f1, _ = macro_f1(label_matrix(read_examples(tiny_data["test"])), (mean >= cut).astype(int))
    assert report["macro_f1"] == pytest.approx(f1, abs=1e-4)
    assert f"--ensemble {base}" in report["provenance"]["command"]
    code, out = run_eval(tiny_bundle, "--data", tiny_data["test"], "--report", tmp_path / "r2", "--ensemble",
                         tmp_path / "missing")
    lines = out.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "missing" in lines[0], out


def test_bootstrap_interval_brackets_the_score_and_narrows_with_more_sentences() -> None:
    from sitrep.eval.metrics import bootstrap_macro_f1
    from sitrep.models.scores import macro_f1

    rng = np.random.default_rng(3)
    widths = []
    for n in (40, 800):
        y = (rng.random((n, 4)) < 0.3).astype(np.int64)
        pred = y.copy()
        pred[rng.random((n, 4)) < 0.15] ^= 1
        ci = bootstrap_macro_f1(y, pred)
        assert ci is not None and ci["low"] <= macro_f1(y, pred)[0] <= ci["high"]
        assert bootstrap_macro_f1(y, pred) == ci  # seeded: the same interval every run
        widths.append(ci["high"] - ci["low"])
    assert widths[1] < widths[0] / 2
    assert bootstrap_macro_f1(np.zeros((0, 4)), np.zeros((0, 4))) is None


EVAL_INPUT_MISTAKES = [
    # (name, JSONL line, words the one-line error must contain) — issue 14, defect 5
    ("no labels", '{"id": "x", "text": "t"}', ["bad.jsonl:1", "'labels'", "[]"]),
    ("null labels", '{"id": "x", "text": "t", "labels": null}', ["bad.jsonl:1", "'labels'"]),
    ("labels a string", '{"id": "x", "text": "t", "labels": "claim"}', ["bad.jsonl:1", "must be a list", '"claim"']),
    ("no text", '{"id": "x", "labels": []}', ["bad.jsonl:1", "missing field 'text'"]),
    ("no id", '{"text": "t", "labels": []}', ["bad.jsonl:1", "missing field 'id'"]),
]


@pytest.mark.parametrize(("name", "line", "words"), EVAL_INPUT_MISTAKES, ids=[m[0] for m in EVAL_INPUT_MISTAKES])
def test_eval_input_mistakes_are_one_line_exit_2(
    tiny_bundle: Path, tmp_path: Path, name: str, line: str, words: list[str]
) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(line + "\n",
                   encoding="utf-8")
    code, out = run_eval(tiny_bundle, "--data", bad, "--report", tmp_path / "r")
    lines = out.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), out
    for w in words:
        assert w in lines[0], (w, out)
    assert not (tmp_path / "r" / "report.json").exists()


def test_eval_report_at_a_file_fails_before_inference(
    tiny_bundle: Path, tiny_data: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sitrep.eval.predictors as predictors

    def no_inference(*a: object, **k: object) -> None:
        raise AssertionError("the model was loaded before --report was checked")

    monkeypatch.setattr(predictors, "load_predictor", no_inference)
    existing = tmp_path / "report.md"
    existing.write_text("x", encoding="utf-8")
    for target in (existing, existing / "sub"):
        code, out = run_eval(tiny_bundle, "--data", tiny_data["test"], "--report", target)
        lines = out.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("error: --report"), out
        assert "Traceback" not in out


def test_topics_label_sets_and_provenance(tiny_bundle: Path, tiny_data: dict[str, Path], tmp_path: Path) -> None:
    """Issue 14, item 11: a per-topic table, a gold-vs-predicted view by whole label sets, a provenance footer."""
    rows = [json.loads(x) for x in tiny_data["test"].read_text(encoding="utf-8").splitlines() if x.strip()]
    for i, r in enumerate(rows):
        r["topic"] = ("alpha", "beta", "")[i % 3]
    data = tmp_path / "topics.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    report_dir = tmp_path / "report"
    code, out = run_eval(tiny_bundle, "--data", data, "--report", report_dir)
    assert code == 0, out
    report = json.loads((report_dir / "report.json").read_text(encoding="utf-8"))
    examples = read_examples(data)
    result = load(tiny_bundle, "onnx-int8").classify([e.text for e in examples])
    y = label_matrix(examples)
    pred = np.asarray([[int(x in labels) for x in LABELS] for labels in result.labels])
    topics = sorted({e.topic or "(no topic)" for e in examples})
    assert topics == ["(no topic)", "alpha", "beta"] and list(report["per_topic"]) == topics
    for topic, s in report["per_topic"].items():
        idx = [i for i, e in enumerate(examples) if (e.topic or "(no topic)") == topic]
        assert s["n"] == len(idx) and s["macro_f1"] == slice_scores(y[idx], pred[idx])["macro_f1"]
        assert "macro_f1_ci" in s
    ls = report["label_sets"]
    assert sum(ls["outcomes"].values()) == ls["n"] == len(examples)
    assert ls["outcomes"]["exact"] == int((pred == y).all(axis=1).sum())
    missed = ((y == 1) & (pred == 0)).any(axis=1)
    extra = ((y == 0) & (pred == 1)).any(axis=1)
    assert ls["outcomes"]["missed_and_extra"] == int((missed & extra).sum())
    assert ls["outcomes"]["missed_only"] == int((missed & ~extra).sum())
    top = ls["pairs"][0]
    count = sum(1 for e, labels in zip(examples, result.labels, strict=True)
                if sorted(e.labels) == sorted(top["gold"]) and labels == top["predicted"])  # fmt: skip
    assert top["n"] == count == max(r["n"] for r in ls["pairs"])
    prov = report["provenance"]
    assert prov["command"] == f"sitrep eval {tiny_bundle} --data {data} --report {report_dir}"
    assert prov["data_sha256"] == report["data"]["sha256"]
    bundle = load_bundle(tiny_bundle, verify=False)
    parity = bundle.manifest.export["parity"]["onnx-int8"]
    assert prov["model"]["version"] == bundle.version and prov["model"]["runtime"] == "onnx-int8"
    assert prov["model"]["parity"]["label_agreement"] == parity["label_agreement"]
    md = (report_dir / "report.md").read_text(encoding="utf-8")
    html = (report_dir / "report.html").read_text(encoding="utf-8")
    for page in (md, html):
        assert "Per topic" in page and "Gold vs predicted label sets" in page and "Provenance" in page
        assert prov["data_sha256"] in page and "label agreement" in page


def test_eval_compare_puts_models_side_by_side_with_per_language_intervals(
    tiny_bundle: Path, tiny_data: dict[str, Path], tmp_path: Path
) -> None:
    """`sitrep eval-compare` (the table `make report` writes): every model on every set, and each language's macro-F1
    with its bootstrap interval, the same figure `sitrep eval` gives that language."""
    from sitrep.training.tfidf import train_tfidf

    base = tmp_path / "tfidf"
    train_tfidf(base, train_file=str(tiny_data["train"]), dev_file=str(tiny_data["dev"]), eval_files={})
    out = tmp_path / "cmp" / "compare"
    result = runner.invoke(app, ["eval-compare", f"tiny={tiny_bundle}", f"tfidf={base}", "-d", f"t={tiny_data['test']}",
                                 "-d", f"z={tiny_data['zeroshot']}", "--runtime", "onnx", "-o", str(out)])
    assert result.exit_code == 0, result.output
    cmp = json.loads(out.with_suffix(".json").read_text())
    assert [(r["model"], r["set"]) for r in cmp["rows"]] == [("tiny", "t"), ("tiny", "z"), ("tfidf", "t"), ("tfidf", "z")]
    langs = {e.lang for e in read_examples(tiny_data["test"])}
    for row in cmp["rows"]:
        if row["set"] != "t":
            continue
        assert set(row["per_language"]) == set(row["per_language_ci"]) == langs
        for lang, score in row["per_language"].items():
            ci = row["per_language_ci"][lang]
            assert ci["low"] <= score <= ci["high"]
    code, _ = run_eval(tiny_bundle, "--data", tiny_data["test"], "--report", tmp_path / "r", "--runtime", "onnx")
    assert code == 0
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    tiny_t = cmp["rows"][0]
    for lang in langs:
        assert tiny_t["per_language"][lang] == pytest.approx(report["per_language"][lang]["macro_f1"], abs=1e-4)
    md = out.with_suffix(".md").read_text()
    lang = sorted(langs)[0]
    ci = tiny_t["per_language_ci"][lang]
    assert f"{tiny_t['per_language'][lang]:.3f} ({ci['low']:.2f}–{ci['high']:.2f})" in md

    # a path that is no model: one line, exit 2
    bad = runner.invoke(app, ["eval-compare", f"x={tmp_path}", "-d", f"t={tiny_data['test']}"])
    assert bad.exit_code == 2 and "Traceback" not in bad.output


def test_eval_compare_renders_results_written_before_the_language_intervals() -> None:
    """Committed compare JSONs from before `per_language_ci` still render: the language cells show the figure alone."""
    from sitrep.eval.compare import render_markdown

    row = {"model": "m", "set": "s", "n": 2, "macro_f1": 0.5, "macro_f1_ci": {"low": 0.4, "high": 0.6}, "ece": 0.1,
           "per_label": {k: {"precision": 1.0, "recall": 0.5, "f1": 0.667, "support": 1} for k in LABELS},
           "per_language": {"en": 0.75}}
    md = render_markdown({"command": "sitrep eval-compare", "created": "now", "sets": {"s": {"n": 2}}, "rows": [row]})
    assert "| 0.750 |" in md and "0.500 (0.40–0.60)" in md
