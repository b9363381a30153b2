"""`sitrep bench score`: every variant measured side by side, GPU runtimes skipped with a reason here."""

from __future__ import annotations

import json
from pathlib import Path

import onnxruntime as ort
from typer.testing import CliRunner

from sitrep.bench.common import corpus_sentences, sample_sentences

REPO = Path(__file__).resolve().parent.parent


def test_bench_score_compares_runtimes_and_batch_sizes(tiny_bundle: Path, tmp_path: Path) -> None:
    from sitrep.cli import app
    out = tmp_path / "bench.json"
    res = CliRunner().invoke(app, ["bench", "score", str(tiny_bundle), "--runtimes", "onnx-int8,cuda",
                                   "--batch-sizes", "16,64", "--rows", "300", "--chunk-rows", "100",
                                   "--repeats", "2", "--data", str(REPO / "data" / "*.jsonl"),
                                   "--json", str(out)])  # fmt: skip
    assert res.exit_code == 0, res.output
    report = json.loads(out.read_text())
    assert report["rows"] == 300 and report["bundle"]["name"] == "tiny" and report["repeats"] == 2
    assert res.output.count("round 2/2 onnx-int8") == 2
    has_cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    measured = [(r["runtime"], r["batch_size"]) for r in report["results"]]
    assert measured == [("onnx-int8", 16), ("onnx-int8", 64)] + (
        [("cuda", 16), ("cuda", 64)] if has_cuda else []
    )
    if not has_cuda:
        assert [s["runtime"] for s in report["skipped"]] == ["cuda"] and "CUDA" in report["skipped"][0][
            "reason"
        ]
        assert "cuda: skipped" in res.output
    assert report["devices"]["onnx-int8"].startswith("CPU")
    for r in report["results"]:
        assert r["end_to_end_rows_per_s"] > 0 and r["model_only_rows_per_s"] > 0
        lo, hi = r["end_to_end_rows_per_s_range"]
        assert lo <= r["end_to_end_rows_per_s"] <= hi
        assert r["tokenize_rows_per_s_1_thread"] > 0 and 0 < r["model_busy"] <= 1
        assert r["model_s"] > 0 and r["tokenize_s_workers_sum"] > 0
        expected = r["end_to_end_rows_per_s"] / report["results"][0]["end_to_end_rows_per_s"]
        assert abs(r["vs_first"] - expected) < 1e-2
    assert report["results"][0]["vs_first"] == 1.0
    assert "sitrep bench score: bundle tiny" in res.output


def test_news_sentences_repeat_and_shuffle_the_corpus(tmp_path: Path) -> None:
    src = tmp_path / "c.jsonl"
    src.write_text(
        '{"text": "a b"}\n{"text": "c d"}\n{"text": ""}\nnot json\n{"text": "e f"}\n', encoding="utf-8"
    )
    out = sample_sentences(corpus_sentences(str(tmp_path / "*.jsonl")), 7, seed=1)
    assert len(out) == 7 and set(out) == {"a b", "c d", "e f"}
    assert sorted(out[:3]) == ["a b", "c d", "e f"]  # each pass is a permutation of the corpus
