"""`sitrep bench models` smoke on the tiny bundle: every field and ratio computed (no timing assertions)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from sitrep.bench.common import select_sentences
from sitrep.bench.gemm_peak import encoder_flops
from sitrep.bench.models import BenchError, BenchSpec, flops_profile, run_bench
from sitrep.cli import app
from sitrep.models.corpus import read_examples


@pytest.fixture(scope="module")
def bench(tiny_bundle: Path, tiny_data: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("bench")
    res = CliRunner().invoke(app, ["bench", "models", str(tiny_bundle), "--data", str(tiny_data["test"]),
                                   "--sentences", "12", "--batch-sizes", "1,4", "--min-batches", "3",
                                   "--variants", "pipeline,onnx,onnx-int8,onnx-int8-padded,cuda",
                                   "--gemm-size", "64",
                                   "--threads", "1", "--out", str(out)])  # fmt: skip
    assert res.exit_code == 0, res.output
    return {
        "out": out,
        "json": json.loads((out / "bench.json").read_text(encoding="utf-8")),
        "output": res.output,
    }


def test_rows_ratios_and_fields(bench: dict) -> None:
    b = bench["json"]
    assert b["n_sentences"] == 12 and b["threads"] == 1
    ok = [r for r in b["rows"] if r["status"] == "ok"]
    assert {(r["variant"], r["batch_size"]) for r in ok} == {
        (v, bs) for v in ("pipeline", "onnx", "onnx-int8", "onnx-int8-padded") for bs in (1, 4)
    }
    for bs in (1, 4):
        rows = {r["variant"]: r for r in ok if r["batch_size"] == bs}
        pipe = rows["pipeline"]
        for r in rows.values():
            assert r["sentences_per_s"] > 0 and 0 < r["p50_ms"] <= r["p99_ms"] and r["peak_rss_mb"] > 0
            assert r["speedup_vs_pipeline"] == pytest.approx(
                r["sentences_per_s"] / pipe["sentences_per_s"], abs=0.01
            )
            assert r["rss_ratio_vs_pipeline"] == pytest.approx(
                r["peak_rss_mb"] / pipe["peak_rss_mb"], abs=0.001
            )
            assert r["batches"] >= 3
            peak = b["gemm_peak"][r["peak_kind"]]["peak_gflops"]
            assert r["fraction_of_peak"] == pytest.approx(
                r["executed_gflops_per_s"] / peak, rel=0.05, abs=1e-4  # both sides are rounded in the report
            )
            assert 0 <= r["macro_f1"] <= 1
        assert pipe["speedup_vs_pipeline"] == 1.0
        # Bulk mode (whole list, each side batching its own way) exists for batch sizes above 1.
        for r in rows.values():
            if bs == 1:
                assert r["bulk_sentences_per_s"] is None
            else:
                assert r["bulk_sentences_per_s"] > 0
                ratio = r["bulk_sentences_per_s"] / pipe["bulk_sentences_per_s"]
                assert r["bulk_speedup_vs_pipeline"] == pytest.approx(ratio, abs=0.01)
        # Peak RSS is each variant's own process: the ONNX worker never imports torch, the pipeline does
        # (and neither inherits the test runner's high-water mark).
        assert rows["onnx"]["peak_rss_mb"] < pipe["peak_rss_mb"]
        assert rows["onnx"]["f1_delta_points_vs_fp32"] == 0.0 and rows["onnx"]["fp32_reference"] == "onnx"
        # The pipeline runs the same checkpoint: its scores through the bundle's calibration match ONNX fp32.
        assert rows["pipeline"]["max_abs_prob_diff_vs_fp32"] < 1e-3
        assert rows["onnx"]["peak_kind"] == "fp32" and rows["pipeline"]["peak_kind"] == "fp32"
        # The int8 model is compared with the integer kernel its weights select, and with the best one.
        assert rows["onnx-int8"]["peak_kind"] == b["int8_kernel"] and b["int8_kernel"] in ("u8s8", "u8u8")
        best = b["gemm_peak"]["int8"]["peak_gflops"]
        assert best == max(b["gemm_peak"]["u8s8"]["peak_gflops"], b["gemm_peak"]["u8u8"]["peak_gflops"])
        # The padded variant is the same model, one padded call a batch: same kernel, near-same answers.
        assert rows["onnx-int8-padded"]["peak_kind"] == rows["onnx-int8"]["peak_kind"]
        assert rows["onnx-int8-padded"]["max_abs_prob_diff_vs_fp32"] < 0.05
        assert rows["onnx-int8"]["fraction_of_int8_peak"] == pytest.approx(
            rows["onnx-int8"]["executed_gflops_per_s"] / best, rel=0.01, abs=1e-4
        )
    t = b["target"]
    assert t["batch_size"] == 4 and isinstance(t["met"], bool) and t["speedup_mode"] == "bulk"
    int8_row = next(r for r in ok if r["variant"] == "onnx-int8" and r["batch_size"] == 4)
    assert t["speedup"] == int8_row["bulk_speedup_vs_pipeline"]
    assert t["met"] == (t["speedup"] >= 4.0 and int8_row["f1_delta_points_vs_fp32"] >= -0.5)
    for kind in ("fp32", "u8s8", "u8u8"):
        assert b["gemm_peak"][kind]["peak_gflops"] > 0


def test_cuda_skipped_with_reason_without_gpu(bench: dict) -> None:
    import onnxruntime as ort

    cuda = bench["json"]["variants"]["cuda"]
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("a CUDA provider is present here")
    assert cuda["status"] == "skipped" and "CUDAExecutionProvider" in cuda["reason"]
    assert "`cuda` skipped" in (bench["out"] / "bench.md").read_text(encoding="utf-8")


def test_markdown_table(bench: dict) -> None:
    md = (bench["out"] / "bench.md").read_text(encoding="utf-8")
    assert "| variant | batch | requests: sentences/s | × pipeline |" in md
    for v in ("pipeline", "onnx", "onnx-int8"):
        assert f"| {v} | 1 |" in md and f"| {v} | 4 |" in md
    assert "GEMM peak" in md and "Target at batch 4" in md
    assert md in bench["output"]


def test_flops_and_sentence_selection(tiny_data: dict[str, Path]) -> None:
    # One layer, H=2, I=4, T=3: 8·3·4 + 4·3·2·4 + 4·9·2 = 96 + 96 + 72, head 2·4 + 2·2·4.
    assert encoder_flops(3, 1, 2, 4, 4) == 96 + 96 + 72 + 8 + 16
    shape = {"num_hidden_layers": 1, "hidden_size": 2, "intermediate_size": 4, "num_attention_heads": 1}
    prof = flops_profile(np.asarray([3, 1]), shape, [1, 2])
    assert prof["executed_flops_per_sentence"]["1"] == prof["useful_flops_per_sentence"]
    assert prof["executed_flops_per_sentence"]["2"] == encoder_flops(3, 1, 2, 4, 4)  # both padded to 3
    prof = flops_profile(np.asarray([3, 1, 3, 1]), shape, [2])
    # In input order each batch pairs a 3 with a 1 (all padded to 3); sorted by length only half is.
    assert prof["bulk_input_order"]["2"] == encoder_flops(3, 1, 2, 4, 4)
    assert (
        prof["bulk_length_sorted"]["2"] == (encoder_flops(3, 1, 2, 4, 4) + encoder_flops(1, 1, 2, 4, 4)) / 2
    )
    # The runtime's cost-based split: a 100 and a 1 in one request become two calls; a 3 and a 1 stay one
    # (another call's 8 tokens of overhead cost more than the 2 padded tokens it would save).
    prof = flops_profile(np.asarray([100, 1, 3, 1]), shape, [2])
    assert prof["requests_split"]["2"] == (
        encoder_flops(100, 1, 2, 4, 4) + encoder_flops(1, 1, 2, 4, 4) + 2 * encoder_flops(3, 1, 2, 4, 4)
    ) / 4
    assert prof["executed_flops_per_sentence"]["2"] == (
        2 * encoder_flops(100, 1, 2, 4, 4) + 2 * encoder_flops(3, 1, 2, 4, 4)
    ) / 4
    examples = read_examples(tiny_data["test"])
    picked = select_sentences(examples, 9)
    assert len(picked) == 9 and all(len(e.text) >= 60 for e in picked)
    assert {e.lang for e in picked} == {e.lang for e in examples}  # round-robin over languages
    assert [e.id for e in select_sentences(examples, 9)] == [e.id for e in picked]  # deterministic


def test_bad_options(tiny_bundle: Path, tmp_path: Path) -> None:
    res = CliRunner().invoke(
        app, ["bench", "models", str(tiny_bundle), "--variants", "onnx,tensorrt", "-o", str(tmp_path)]
    )
    assert res.exit_code == 2 and "tensorrt" in res.output
    with pytest.raises(BenchError, match="batch sizes"):
        run_bench(BenchSpec(bundle=tiny_bundle, batch_sizes=[0]), tmp_path)


def test_missing_int8_is_skipped_with_reason(
    tiny_bundle: Path, tiny_data: dict[str, Path], tmp_path: Path
) -> None:
    import shutil

    from sitrep.models.bundle import load_bundle, write_bundle_manifest

    bundle = tmp_path / "no-int8"
    shutil.copytree(tiny_bundle, bundle)
    (bundle / "onnx" / "model.int8.onnx").unlink()
    write_bundle_manifest(bundle, load_bundle(bundle, verify=False).manifest)
    spec = BenchSpec(bundle=bundle, data=tiny_data["test"], sentences=4, batch_sizes=[1, 2], min_batches=2,
                     variants=["onnx", "onnx-int8"], threads=1, gemm_size=32)  # fmt: skip
    result = run_bench(spec, tmp_path / "out", log=lambda *_: None)
    assert result["variants"]["onnx"]["status"] == "ok"
    skipped = result["variants"]["onnx-int8"]
    assert skipped["status"] == "skipped" and "model.int8.onnx" in skipped["reason"]
    assert result["target"]["met"] is None and "onnx-int8" in result["target"]["reason"]
    assert "`onnx-int8` skipped" in result["markdown"]


def test_the_pipeline_runs_the_bundles_own_pooling(tiny_bundle: Path, tmp_path: Path) -> None:
    """A mean-pooled bundle's pipeline is mean-pooled too: transformers alone would build its default head."""
    import shutil

    from sitrep.bench.worker import pipeline_runner
    from sitrep.models.runtime import load

    copy = shutil.copytree(tiny_bundle, tmp_path / "mean")
    config_path = copy / "hf" / "config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["sitrep_pooling"] = "mean"
    config_path.write_text(json.dumps(config), encoding="utf-8")
    texts = ["The group said it hit the base.", "Two soldiers were wounded, the ministry said on Tuesday."]
    probs, _ = pipeline_runner(copy, 1)(texts, 2)
    mean = load(copy, "torch", verify=False).classify(texts).probs
    cls = load(tiny_bundle, "torch").classify(texts).probs
    assert np.max(np.abs(probs - mean)) < 2e-5
    assert np.max(np.abs(mean - cls)) > 1e-4  # the pooling changes the scores, so the check above can fail


def test_target_without_the_fp32_variant_says_so_instead_of_failing() -> None:
    """`--variants pipeline,onnx-int8` has no fp32 row to compare macro-F1 with: the verdict says what to add."""
    from sitrep.bench.models import target_check, target_verdict

    row = {"variant": "onnx-int8", "batch_size": 32, "status": "ok", "bulk_speedup_vs_pipeline": 6.1,
           "speedup_vs_pipeline": 5.2, "f1_delta_points_vs_fp32": None}
    t = target_check([row], [1, 32])
    assert t["met"] is None and t["speedup_met"] is True
    assert "needs the `onnx` variant" in target_verdict(t) and "6.1×" in target_verdict(t)
    t = target_check([{**row, "f1_delta_points_vs_fp32": -0.2}], [1, 32])
    assert t["met"] is True and target_verdict(t).startswith("met: onnx-int8 is 6.1×")
    t = target_check([{**row, "f1_delta_points_vs_fp32": -0.7}], [1, 32])
    assert t["met"] is False and target_verdict(t).startswith("NOT met")
