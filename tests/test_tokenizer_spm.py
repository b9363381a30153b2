"""The runtime's SentencePiece tokenizer (the ids of tokenizer.json, a fraction of its memory), and the heap trim."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from sitrep.models.bundle import SPM_FILE, load_bundle, write_bundle_manifest
from sitrep.models.corpus import read_many
from sitrep.models.encoding import TextEncoder
from sitrep.models.runtime import load
from sitrep.training.sentencepiece_model import compare, write_spm

DATA = Path(__file__).resolve().parents[1] / "data"
EDGE = ["", " ", "  two   spaces\tand a tab\nand a newline ", "می\u200cخواهد و نمی\u200cتواند", "يك ي ك / یک ی ک",
        "ＦＵＬＬＷＩＤＴＨ ١٢٣ ۱۲۳", "e\u0301 café", "\ufeffbom \u00a0nbsp\u2003em", "😀 emoji 🔥", "\u0000\u0001ctrl",
        "قصف" * 80, "x" * 300, "الضربات\u064b\u0650 بالتشكيل"]


def _corpus_texts() -> list[str]:
    files = sorted(DATA.glob("*.jsonl")) + [DATA / "articles" / f"{s}.jsonl" for s in ("train", "dev", "test")]
    return [e.text for e in read_many([str(f) for f in files])]


def test_sentencepiece_gives_tokenizer_json_ids_on_the_whole_corpus(tiny_bundle: Path, tmp_path: Path) -> None:
    """Every corpus sentence and edge case: same ids and truncation, at the bundle's length and a short one."""
    bundle = load_bundle(tiny_bundle)
    spm = tmp_path / "t.model"
    info = write_spm(bundle.tokenizer_file, spm)
    assert info["pieces"] == TextEncoder(bundle.tokenizer_file, 8).tokenizer.get_vocab_size()
    texts = _corpus_texts() + EDGE
    for max_length in (bundle.max_length, 12):
        cmp = compare(bundle.tokenizer_file, spm, max_length, texts)
        assert cmp["identical"] == cmp["n"] == len(texts), cmp["differing_examples"]
    truncated = TextEncoder(bundle.tokenizer_file, 12, spm).encode(texts)
    assert any(truncated.truncated) and max(truncated.lengths) == 12


def test_literal_special_token_strings_are_text_not_control_tokens(tiny_bundle: Path) -> None:
    """The one deliberate difference: tokenizer.json turns a literal "<s>" in the text into id 0."""
    bundle = load_bundle(tiny_bundle)
    text = ["a client sends <s> and </pad> and </s> in its text"]
    hf = TextEncoder(bundle.tokenizer_file, bundle.max_length).encode(text).ids[0]
    sp = TextEncoder.for_bundle(bundle).encode(text).ids[0]
    assert (hf[1:-1] == 0).any() and not (sp[1:-1] == 0).any() and not (sp[1:-1] == 2).any()
    assert sp[0] == 0 and sp[-1] == 2


def test_export_writes_it_and_the_runtime_uses_it(tiny_bundle: Path) -> None:
    bundle = load_bundle(tiny_bundle)
    assert bundle.spm_file == tiny_bundle / SPM_FILE and bundle.manifest.export["tokenizer"] == "sentencepiece"
    report = json.loads((tiny_bundle / "reports/parity.json").read_text())["tokenizer"]
    assert report["kept"] and report["identical"] == report["n"] > 0 and report["file"] == SPM_FILE
    for runtime in ("onnx-int8", "torch"):
        encoder = load(tiny_bundle, runtime).encoder
        assert encoder.spm is not None and not hasattr(encoder, "tokenizer")


def test_a_bundle_without_it_uses_tokenizer_json_with_the_same_results(tiny_bundle: Path, tmp_path: Path) -> None:
    texts = [e.text for e in read_many(str(DATA / "articles" / "dev.jsonl"))[:40]] + EDGE
    copy = shutil.copytree(tiny_bundle, tmp_path / "b")
    (copy / SPM_FILE).unlink()
    write_bundle_manifest(copy, load_bundle(copy, verify=False).manifest)
    old = load(copy, "onnx-int8")
    assert old.encoder.spm is None
    new = load(tiny_bundle, "onnx-int8")
    np.testing.assert_array_equal(old.classify(texts).probs, new.classify(texts).probs)


def test_export_keeps_tokenizer_json_for_a_tokenizer_it_cannot_convert(tmp_path: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({"<unk>": 0, "a": 1}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(tmp_path / "tokenizer.json"))
    with pytest.raises(ValueError, match="only Unigram"):
        write_spm(tmp_path / "tokenizer.json", tmp_path / "t.model")


def test_rss_probe_reports_each_tokenizer(tiny_bundle: Path) -> None:
    import subprocess
    import sys

    rows = []
    for options in ("default", "tokenizer.json+noarena"):
        out = subprocess.run([sys.executable, "-m", "sitrep.bench.rss_probe", str(tiny_bundle),
                              str(tiny_bundle / "onnx/model.int8.onnx"), options, "5"],
                             check=True, capture_output=True, text=True, cwd=DATA.parent).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    assert [r["tokenizer"] for r in rows] == ["sentencepiece", "tokenizer.json"]
    assert all(r["requests"] == 5 and r["peak_mb"] >= r["after_5_mixed_mb"] > r["imports_mb"] for r in rows)


def test_the_runtime_gives_freed_heap_back_after_loading(tiny_bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sitrep.models.runtime as runtime
    from sitrep.models.memory import trim_heap

    calls: list[int] = []
    monkeypatch.setattr(runtime, "trim_heap", lambda: calls.append(1) or True)
    load(tiny_bundle, "onnx-int8")
    assert calls == [1]
    assert trim_heap() in (True, False)  # glibc: 1 if it released pages; elsewhere no call at all
