"""fp32 MatMul weights stored in fewer bytes in the int8 file: exact against the rebuilt weights, folded at load."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from sitrep.models.bundle import load_bundle
from sitrep.training.export import QuantRecipe, ffn_matmuls, optimize_graph, probs_with, quantize
from sitrep.training.fp16_weights import MODES, fp32_matmul_weights, rebuilt, split_residual, store_fp16

TEXTS = [
    "The group said its fighters struck the base with two drones.",
    "قالت وزارة الدفاع إن الهجوم أسفر عن مقتل ثلاثة جنود.",
    "سخنگوی سپاه گفت این حمله در پاسخ به ترور فرماندهان انجام شد.",
    "No casualties were reported.",
]


def _quantized(tiny_bundle: Path, tmp: Path, keep_ffn_fp32: bool) -> Path:
    """The tiny bundle's optimized graph quantized as export's last uint8 rung (every FFN MatMul fp32) or all int8."""
    bundle = load_bundle(tiny_bundle)
    opt, out = tmp / "model.opt.onnx", tmp / f"model.int8.{'ffn32' if keep_ffn_fp32 else 'all'}.onnx"
    optimize_graph(bundle, bundle.onnx_file("onnx"), opt)
    into, outof = ffn_matmuls(opt)
    quantize(opt, out, QuantRecipe("test", per_channel=True), into + outof if keep_ffn_fp32 else [])
    return out


def _rounded(src: Path, dst: Path, mode: str) -> None:
    """`src` with its fp32 MatMul weights replaced by what `mode` rebuilds, still stored fp32 (the reference)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(src))
    names = set(fp32_matmul_weights(model.graph))
    for init in model.graph.initializer:
        if init.name in names:
            half, residual, scale = split_residual(numpy_helper.to_array(init))
            w = rebuilt(half) if mode == "fp16" else rebuilt(half, residual, scale)
            init.CopyFrom(numpy_helper.from_array(w, init.name))
    onnx.save(model, str(dst))


def test_residual_keeps_what_fp16_rounds_away() -> None:
    rng = np.random.default_rng(0)
    w = (rng.normal(size=(64, 48)) * rng.uniform(1e-3, 3, size=(1, 48))).astype(np.float32)
    half, residual, scale = split_residual(w)
    assert half.dtype == np.float16 and residual.dtype == np.int8 and scale.shape == (1, 48)
    err16, err_res = np.abs(rebuilt(half) - w), np.abs(rebuilt(half, residual, scale) - w)
    assert np.all(err_res <= scale / 2 + np.abs(np.spacing(w)))  # half a residual step (+ fp32 rounding of the sum)
    assert err_res.max() < err16.max() / 100


@pytest.mark.parametrize("mode", MODES)
def test_storage_is_exact_against_the_rebuilt_weights(tiny_bundle: Path, tmp_path: Path, mode: str) -> None:
    import onnx

    bundle = load_bundle(tiny_bundle)
    src = _quantized(tiny_bundle, tmp_path, keep_ffn_fp32=True)
    names = fp32_matmul_weights(onnx.load(str(src)).graph)
    into, outof = ffn_matmuls(tmp_path / "model.opt.onnx")
    assert len(names) == len(into + outof) > 0  # exactly the FFN weights the recipe left fp32
    half, ref = tmp_path / "half.onnx", tmp_path / "ref.onnx"
    info = store_fp16(src, half, mode)
    _rounded(src, ref, mode)
    n_out = sum(int(d.dims[1]) for d in onnx.load(str(src)).graph.initializer if d.name in names)
    extra = 0 if mode == "fp16" else info["bytes_before"] // 4 + 4 * n_out  # int8 residuals + column scales
    assert info["weights"] == len(names) and info["bytes_after"] == info["bytes_before"] // 2 + extra
    np.testing.assert_allclose(probs_with(bundle, half, TEXTS), probs_with(bundle, ref, TEXTS), atol=1e-6)
    types = {i.name: i.data_type for i in onnx.load(str(half)).graph.initializer}
    assert all(types[f"{n}/fp16"] == onnx.TensorProto.FLOAT16 and n not in types for n in names)
    assert half.stat().st_size < src.stat().st_size


def test_onnx_runtime_folds_the_casts_when_the_session_loads(tiny_bundle: Path, tmp_path: Path) -> None:
    """No per-request Cast: the session's optimized graph holds the fp32 weights as constants."""
    import onnx
    import onnxruntime as ort

    half = tmp_path / "half.onnx"
    store_fp16(_quantized(tiny_bundle, tmp_path, keep_ffn_fp32=True), half, "fp16+int8-residual")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC  # the least the runtime uses
    options.optimized_model_filepath = str(tmp_path / "session.onnx")
    ort.InferenceSession(str(half), options, providers=["CPUExecutionProvider"])
    graph = onnx.load(str(tmp_path / "session.onnx")).graph
    assert not [n for n in graph.node if any(i.endswith(("/fp16", "/residual", "/residual_scale")) for i in n.input)]
    stored = [n for n in onnx.load(str(half)).graph.node if n.op_type == "Cast" and n.input[0].endswith("/fp16")]
    assert len(fp32_matmul_weights(graph)) == len(stored) > 0  # each folded back into an fp32 MatMul weight


def test_a_fully_quantized_graph_has_nothing_to_store(tiny_bundle: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no fp32 MatMul weights"):
        store_fp16(_quantized(tiny_bundle, tmp_path, keep_ffn_fp32=False), tmp_path / "half.onnx")


def test_export_keeps_the_compact_storage_when_it_passes_the_gate(
    tiny_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import onnx

    import sitrep.training.export as export_mod
    from tests.conftest import tiny_gates

    copy = shutil.copytree(tiny_bundle, tmp_path / "b")
    monkeypatch.setattr(export_mod, "LADDER", [QuantRecipe("all FFN MatMuls in fp32", True, exclude_sensitive=-1)])
    export_mod.export(copy, data=load_bundle(copy).manifest.training["config"]["dev_file"], gates=tiny_gates(),
                      log=lambda *_: None)
    bundle = load_bundle(copy)
    attempts = json.loads((copy / "reports/parity.json").read_text())["runtimes"]["onnx-int8"]["attempts"]
    tried = [a for a in attempts if "fp32_weights_stored" in a]
    assert [a["fp32_weights_stored"] for a in tried] == ["fp16+int8-residual"] and "label_agreement" in tried[0]
    kept = bundle.manifest.export["int8_fp32_weights_stored"]
    assert kept == ("fp16+int8-residual" if tried[0]["passed"] else "fp32")
    stored = {i.data_type for i in onnx.load(str(bundle.onnx_file("onnx-int8"))).graph.initializer
              if i.name.endswith(("/fp16", "/residual"))}
    assert stored == ({onnx.TensorProto.FLOAT16, onnx.TensorProto.INT8} if kept != "fp32" else set())
    assert kept == "fp32" or bundle.manifest.export["int8_recipe"].endswith(f"fp32 weights stored {kept}")


def test_bench_int8_rows_for_each_fp32_weight_storage(tiny_bundle: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from sitrep.cli import app

    out = tmp_path / "w.json"
    result = CliRunner().invoke(app, ["bench", "int8", str(tiny_bundle), "--thresholds", "none", "--weights", "uint8",
                                      "--ffn-fp32", "--fp32-weights", "fp32,fp16,fp16+int8-residual", "--json", str(out)])
    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text())["rows"]
    assert [r["fp32_weights"] for r in rows] == ["fp32", "fp16", "fp16+int8-residual"]
    assert rows[1]["size_mb"] <= rows[2]["size_mb"] <= rows[0]["size_mb"]  # tiny FFNs: below the 0.1 MB shown
    assert "| fp32 weights stored |" in result.output
    bad = CliRunner().invoke(app, ["bench", "int8", str(tiny_bundle), "--fp32-weights", "bf16"])
    assert bad.exit_code == 2 and "unknown storage for fp32 weights" in bad.output
