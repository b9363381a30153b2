"""`sitrep bench ops`: kernel time by operator under ONNX Runtime's profiler, and the outlier split's share."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from sitrep.cli import app


def test_kernel_times_sum_by_op_and_tell_the_outlier_split_and_smoothing_apart() -> None:
    from sitrep.bench.ops import kernel_times

    events = [
        {"cat": "Node", "name": "/l0/fc1/MatMul_quant_kernel_time", "dur": 70, "args": {"op_name": "DynamicQuantizeMatMul"}},
        {"cat": "Node", "name": "/l0/fc1/MatMul/mask_kernel_time", "dur": 5, "args": {"op_name": "Mul"}},
        {"cat": "Node", "name": "/l0/fc1/MatMul/gather_outliers_kernel_time", "dur": 5, "args": {"op_name": "Gather"}},
        {"cat": "Node", "name": "/l0/fc1/MatMul/outliers_fp32_kernel_time", "dur": 10, "args": {"op_name": "MatMul"}},
        {"cat": "Node", "name": "/l0/fc1/MatMul/recombine_kernel_time", "dur": 5, "args": {"op_name": "Add"}},
        {"cat": "Node", "name": "/l0/Add_kernel_time", "dur": 5, "args": {"op_name": "Add"}},
        {"cat": "Node", "name": "/l1/fc1/MatMul/smooth_kernel_time", "dur": 3, "args": {"op_name": "Mul"}},
        {"cat": "Node", "name": "/l0/Add_fence_before", "dur": 99, "args": {"op_name": "Add"}},
        {"cat": "Session", "name": "model_run", "dur": 1000},
    ]
    by_op, count, by_part = kernel_times(events)
    assert by_op["Add"] == 10 and count["Add"] == 2 and by_op["DynamicQuantizeMatMul"] == 70 and by_op["Mul"] == 8
    assert by_part == {"model": 75, "outlier split": 25, "smoothing": 3}

    # The first run (warm-up) is left out: its kernels end before its `model_run` does.
    runs = [{"cat": "Session", "name": "model_run", "ts": 0, "dur": 50},
            {"cat": "Node", "name": "/w_kernel_time", "ts": 10, "dur": 40, "args": {"op_name": "Add"}},
            {"cat": "Session", "name": "model_run", "ts": 60, "dur": 50},
            {"cat": "Node", "name": "/w_kernel_time", "ts": 70, "dur": 30, "args": {"op_name": "Add"}}]
    assert kernel_times(runs, skip_runs=1)[0] == {"Add": 30} and kernel_times(runs)[0] == {"Add": 70}


def test_bench_ops_profiles_the_bundle_file(tiny_bundle: Path, tmp_path: Path) -> None:
    from sitrep.bench.common import corpus_sentences, sample_sentences
    from sitrep.bench.ops import run_ops
    from sitrep.models.bundle import load_bundle
    from sitrep.models.encoding import CALL_OVERHEAD_TOKENS, TextEncoder, length_batches

    report = run_ops(tiny_bundle, "onnx-int8", Path("data/test.jsonl"), sentences=6, batch_size=2)
    # Batched as the CPU runtime batches: length buckets of 2, cut where padding costs more than a call.
    lengths = TextEncoder.for_bundle(load_bundle(tiny_bundle)).encode(
        sample_sentences(corpus_sentences(Path("data/test.jsonl")), 6)).lengths
    assert report["calls"] == len(list(length_batches(lengths, 2, None, CALL_OVERHEAD_TOKENS))) >= 3
    assert report["sentences"] == 6
    assert abs(sum(r["share"] for r in report["ops"]) - 1.0) < 0.01
    assert abs(sum(report["parts"].values()) - 1.0) < 0.01 and "model" in report["parts"]

    md = tmp_path / "ops.md"
    result = CliRunner().invoke(app, ["bench", "ops", str(tiny_bundle), "--sentences", "4", "--markdown", str(md)])
    assert result.exit_code == 0, result.output
    assert "| op type |" in md.read_text() and "outlier split" in result.output
    bad = CliRunner().invoke(app, ["bench", "ops", str(tiny_bundle), "--runtime", "cuda"])
    assert bad.exit_code == 2 and "onnx-int8 or onnx" in bad.output and "Traceback" not in bad.output
