"""The CPU graph's residual LayerNorms: SkipLayerNormalization taken apart into Add + LayerNormalization."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from sitrep.models.bundle import load_bundle

TEXTS = ["The group said its fighters struck the base.", "قالت وزارة الدفاع إن الهجوم أسفر عن مقتل جنديين.",
         "یک منبع امنیتی گفت پهپاد پیش از رسیدن به پایگاه رهگیری شد", "Reporting by the desk."]


def ops(path: Path) -> Counter:
    import onnx

    return Counter(n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node)


def layers(bundle: Path) -> int:
    return json.loads((bundle / "hf" / "config.json").read_text())["num_hidden_layers"]


def test_cpu_graph_unfuses_every_skip_layernorm_and_computes_the_same(tiny_bundle: Path, tmp_path: Path) -> None:
    from sitrep.training.export import optimize_graph, probs_with

    bundle = load_bundle(tiny_bundle)
    fused, unfused, fp16 = tmp_path / "fused.onnx", tmp_path / "unfused.onnx", tmp_path / "fp16.onnx"
    optimize_graph(bundle, bundle.onnx_file("onnx"), fused, skip_layernorm_fused=True)
    optimize_graph(bundle, bundle.onnx_file("onnx"), unfused)  # the CPU default
    optimize_graph(bundle, bundle.onnx_file("onnx"), fp16, fp16=True)
    n = 2 * layers(tiny_bundle)  # after the attention and after the FFN, in every layer
    plain = ops(fused)["LayerNormalization"]  # any the optimizer left unfused (e.g. the embeddings' own)
    assert ops(fused)["SkipLayerNormalization"] == n
    assert ops(unfused)["SkipLayerNormalization"] == 0 and ops(unfused)["LayerNormalization"] == plain + n
    assert ops(fp16)["SkipLayerNormalization"] == n  # the CUDA graph keeps the fused op
    np.testing.assert_allclose(probs_with(bundle, unfused, TEXTS), probs_with(bundle, fused, TEXTS), atol=1e-5)


@pytest.mark.parametrize("runtime", ["onnx-int8", "onnx"])
def test_the_cpu_session_runs_the_layernorms_unfused(tiny_bundle: Path, tmp_path: Path, runtime: str) -> None:
    """What the runtime's session runs, after ONNX Runtime's own optimizations at load: no SkipLayerNormalization
    (its SkipLayerNormFusion, left on, fuses some Add + LayerNormalization pairs back)."""
    from sitrep.models.runtime import cpu_session, session_options

    path = load_bundle(tiny_bundle).onnx_file(runtime)
    if runtime == "onnx-int8":
        assert ops(path)["SkipLayerNormalization"] == 0 and ops(path)["LayerNormalization"] >= 2 * layers(tiny_bundle)
    opts = session_options(1)
    opts.optimized_model_filepath = str(tmp_path / "as-run.onnx")
    cpu_session(path, opts)
    assert ops(tmp_path / "as-run.onnx")["SkipLayerNormalization"] == 0
    assert ops(tmp_path / "as-run.onnx")["LayerNormalization"] >= 2 * layers(tiny_bundle)


def _graph(outputs: list[str], bias: bool, opset: int = 17):
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(size=8).astype(np.float32), n) for n in ("g", "b", "bias")]
    skip = helper.make_node("SkipLayerNormalization", ["x", "s", "g", "b"] + (["bias"] if bias else []), outputs,
                            name="sln", domain="com.microsoft", epsilon=1e-5)
    nodes = [skip]
    graph_outputs = [outputs[0]]
    if len(outputs) > 3 and outputs[3]:  # the pre-normalization sum, read downstream
        nodes.append(helper.make_node("Mul", [outputs[3], "x"], ["z"]))
        graph_outputs.append("z")
    value = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2, 3, 8]) for n in ("x", "s")]
    out = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in graph_outputs]
    model = helper.make_model(helper.make_graph(nodes, "g", value, out, inits),
                              opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize(("outputs", "bias"), [(["y"], True), (["y"], False), (["y", "", "", "sum"], True)])
def test_rewrite_matches_the_fused_op(outputs: list[str], bias: bool) -> None:
    import onnxruntime as ort

    from sitrep.training.skip_layernorm import unfuse_skip_layernorm

    feeds = {k: np.random.default_rng(i).normal(size=(2, 3, 8)).astype(np.float32) for i, k in enumerate("xs")}

    def run(model) -> list[np.ndarray]:
        return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)

    model = _graph(outputs, bias)
    want = run(model)
    assert unfuse_skip_layernorm(model) == 1
    assert Counter(n.op_type for n in model.graph.node)["Add"] == 1 + bias
    got = run(model)
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, atol=1e-5)


def test_rewrite_refuses_an_opset_without_layernormalization() -> None:
    from sitrep.training.skip_layernorm import unfuse_skip_layernorm

    model = _graph(["y"], True, opset=16)
    with pytest.raises(ValueError, match="opset 17"):
        unfuse_skip_layernorm(model)
    assert [n.op_type for n in model.graph.node] == ["SkipLayerNormalization"]  # left as it was


def test_bench_int8_rows_for_both_forms(tiny_bundle: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from sitrep.cli import app

    out = tmp_path / "ln.json"
    result = CliRunner().invoke(app, ["bench", "int8", str(tiny_bundle), "--thresholds", "none", "--weights", "int8",
                                      "--layernorm", "fused,unfused,fused", "--batch1", "3", "--json", str(out),
                                      "--markdown", str(tmp_path / "m.md")])
    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text())["rows"]
    assert [r["layernorm"] for r in rows] == ["fused", "unfused", "fused"]
    assert rows[0]["label_agreement"] == rows[2]["label_agreement"] and all(r["batch1_ms"] > 0 for r in rows)
    assert "| LayerNorm | weights |" in (tmp_path / "m.md").read_text()
    bad = CliRunner().invoke(app, ["bench", "int8", str(tiny_bundle), "--layernorm", "simplified"])
    assert bad.exit_code == 2 and "unknown LayerNorm form" in bad.output
