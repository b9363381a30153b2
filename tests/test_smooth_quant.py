"""SmoothQuant for the int8 export: exact in fp32, it shrinks the int8 input's range, and export's ladder tries it
before the outlier split."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sitrep.models.bundle import load_bundle
from sitrep.models.encoding import TextEncoder
from sitrep.training.export import ffn_matmuls, optimize_graph, probs_with
from sitrep.training.outlier_split import activation_absmax
from sitrep.training.smooth_quant import is_smooth_node, smooth_inputs, smoothing_scales
from sitrep.training.unfuse_attention import fused_attention_nodes, unfuse_attention
from tests.test_outlier_split import TEXTS


@pytest.fixture(scope="module")
def unfused(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str], list[str]]:
    """(the optimized graph with its attention unfused, its FFN MatMuls, its QKV MatMuls)."""
    bundle = load_bundle(tiny_bundle)
    folder = tmp_path_factory.mktemp("smooth")
    opt = folder / "model.opt.onnx"
    optimize_graph(bundle, bundle.onnx_file("onnx"), opt)
    ffn = [name for group in ffn_matmuls(opt) for name in group]
    path = folder / "model.unfused.onnx"
    return path, ffn, unfuse_attention(opt, path)


def test_scales_follow_smoothquant() -> None:
    absmax = np.array([8.0, 1.0, 100.0])
    w = np.array([[0.5, -2.0], [1.0, 0.25], [0.0, 0.0]])
    s = smoothing_scales(absmax, [w, 0.5 * w], alpha=0.5)
    # s_j = sqrt(max|x_j| / max|W_j|), W_j the largest row among the MatMuls sharing the input
    np.testing.assert_allclose(s[:2], [2.0, 1.0])
    assert s[2] == 1e3  # an all-zero weight row: clipped, not infinite
    np.testing.assert_allclose(smoothing_scales(absmax, [w], alpha=0.9)[:2], [8.0**0.9 / 2.0**0.1, 1.0])


def test_smoothing_is_exact_in_fp32_and_narrows_the_int8_input(
    tiny_bundle: Path, unfused: tuple[Path, list[str], list[str]]
) -> None:
    import onnx

    bundle = load_bundle(tiny_bundle)
    encoder = TextEncoder(bundle.tokenizer_file, bundle.max_length)
    src, ffn, qkv = unfused
    assert ffn and qkv
    dst = src.with_name("model.smooth.onnx")
    report = smooth_inputs(src, dst, ffn + qkv, encoder, TEXTS, alpha=0.8)
    assert set(report) == set(ffn + qkv)
    graph = onnx.load(str(dst), load_external_data=False).graph
    nodes = {n.name: n for n in graph.node}
    muls = [n for n in graph.node if is_smooth_node(n.name)]
    before = onnx.load(str(src), load_external_data=False).graph
    inputs = {n.input[0] for n in before.node if n.name in ffn + qkv}
    assert len(muls) == len(inputs) and all(n.op_type == "Mul" for n in muls)  # one Mul per input, shared
    order = [n.name for n in graph.node]
    for name in ffn + qkv:  # every MatMul reads its input through a smoothing Mul placed before it
        mul = next(m for m in muls if m.output[0] == nodes[name].input[0])
        assert order.index(mul.name) < order.index(name)
    # the reported ranges are what the int8 MatMuls now see, and the largest channel shrank
    after = activation_absmax(dst, sorted({nodes[n].input[0] for n in report}), encoder, TEXTS)
    for name, (was, now) in report.items():
        assert now < was
        assert after[nodes[name].input[0]].max() == pytest.approx(now, rel=1e-4)
    texts = [*TEXTS, "Short.", "A much longer sentence than the others, so that the batch is padded " * 3]
    np.testing.assert_allclose(probs_with(bundle, dst, texts), probs_with(bundle, src, texts), atol=1e-5)


def test_smoothing_the_fused_attention_is_exact_and_narrows_its_input(tiny_bundle: Path, tmp_path: Path) -> None:
    """The fused Attention node's input smoothed like a MatMul's, its QKV weight rows scaled: the graph keeps one
    Attention op per layer, each reading its input through a smoothing Mul, and scores as before in fp32."""
    import onnx

    from sitrep.training.export import OutlierSplits

    bundle = load_bundle(tiny_bundle)
    opt = tmp_path / "model.opt.onnx"
    optimize_graph(bundle, bundle.onnx_file("onnx"), opt)
    attention = fused_attention_nodes(opt)
    assert attention  # the tiny model's attention is fused by the optimizer
    splits = OutlierSplits(bundle, opt, tmp_path, TEXTS)
    dst, report = splits.smoothed(0.8, attention=True)
    assert set(report) == set(splits.ffn) | set(attention)
    graph = onnx.load(str(dst), load_external_data=False).graph
    nodes = {n.name: n for n in graph.node}
    assert [n.op_type for n in graph.node].count("Attention") == len(attention)
    assert not any(n.op_type in ("MultiHeadAttention", "Split") for n in graph.node)
    for name in attention:
        mul = next(n for n in graph.node if n.output[0] == nodes[name].input[0])
        assert is_smooth_node(mul.name) and mul.op_type == "Mul"
        was, now = report[name]
        assert now < was
    encoder = TextEncoder(bundle.tokenizer_file, bundle.max_length)
    after = activation_absmax(dst, [nodes[n].input[0] for n in attention], encoder, splits.calib)
    for name in attention:
        assert after[nodes[name].input[0]].max() == pytest.approx(report[name][1], rel=1e-4)
    texts = [*TEXTS, "Short.", "A much longer sentence than the others, so that the batch is padded " * 3]
    np.testing.assert_allclose(probs_with(bundle, dst, texts), probs_with(bundle, opt, texts), atol=1e-5)
    with pytest.raises(ValueError, match="not both"):
        splits.smoothed(0.8, qkv=True, attention=True)


def test_smoothing_refuses_unknown_matmuls_and_bad_alpha(
    tiny_bundle: Path, unfused: tuple[Path, list[str], list[str]]
) -> None:
    bundle = load_bundle(tiny_bundle)
    encoder = TextEncoder(bundle.tokenizer_file, 16)
    src, ffn, _ = unfused
    with pytest.raises(ValueError, match="no MatMul or Attention named"):
        smooth_inputs(src, src.with_name("x.onnx"), ["nope"], encoder, TEXTS)
    with pytest.raises(ValueError, match="alpha must be between 0 and 1"):
        smooth_inputs(src, src.with_name("x.onnx"), ffn, encoder, TEXTS, alpha=1.0)


def test_the_ladder_tries_smoothing_before_the_split(tiny_bundle: Path, tmp_path: Path) -> None:
    """Three SmoothQuant rungs: two u8s8 VNNI rungs right before the split rungs, the attention fused (QAttention)
    first and then unfused, and a uint8 one (the CPUs without VNNI) right after the plain all-uint8 rung, before any
    MatMul is kept fp32. Each file quantizes every MatMul (QKV included) to int8, with no thin fp32 MatMul and no
    split op left."""
    import onnx

    from sitrep.training.export import LADDER, OutlierSplits, is_u8s8, ladder, quantize
    from sitrep.training.outlier_split import is_split_node

    fused, u8s8, u8u8 = [r for r in LADDER if r.smooth_alpha is not None]
    first_split = next(r for r in LADDER if r.outlier_threshold is not None)
    assert LADDER.index(fused) == LADDER.index(u8s8) - 1 and LADDER.index(u8s8) == LADDER.index(first_split) - 1
    assert fused.smooth_attention and not fused.qkv_split and fused.vnni_only and is_u8s8(fused)
    assert fused not in ladder(vnni=False) and not any(r.smooth_attention for r in ladder(portable=True))
    assert u8s8.qkv_split and u8s8.vnni_only and is_u8s8(u8s8) and u8s8.outlier_threshold is None
    plain_uint8 = next(r for r in LADDER if r.weight_type == "uint8" and r.optimize)
    assert LADDER.index(u8u8) == LADDER.index(plain_uint8) + 1 and LADDER[LADDER.index(u8u8) + 1].exclude_sensitive
    assert u8u8.qkv_split and u8u8.weight_type == "uint8" and not u8u8.vnni_only and u8u8 in ladder(vnni=False)
    assert u8s8 not in ladder(vnni=False)
    bundle = load_bundle(tiny_bundle)
    opt = tmp_path / "model.opt.onnx"
    optimize_graph(bundle, bundle.onnx_file("onnx"), opt)
    splits = OutlierSplits(bundle, opt, tmp_path, TEXTS)
    src, report = splits.smoothed(u8s8.smooth_alpha, u8s8.qkv_split)
    assert splits.smoothed(u8u8.smooth_alpha, u8u8.qkv_split)[0] == src  # built once
    _, qkv = splits.unfused()
    assert set(report) == set(splits.ffn) | set(qkv)
    for recipe in (u8s8, u8u8):
        out = tmp_path / f"smooth-{recipe.weight_type}.onnx"
        quantize(src, out, recipe, [])
        model = onnx.load(str(out))
        ops = [(n.op_type, n.name) for n in model.graph.node]
        assert not any(is_split_node(name) for _, name in ops)
        assert sum(op in ("MatMulInteger", "DynamicQuantizeMatMul") for op, _ in ops) >= len(report)
        assert [op for op, _ in ops].count("MatMul") == 0  # nothing left fp32
        weights = [i for i in model.graph.initializer if i.name.endswith("_quantized") and len(i.dims) == 2]
        want = onnx.TensorProto.INT8 if recipe is u8s8 else onnx.TensorProto.UINT8
        assert weights and {i.data_type for i in weights if "embeddings" not in i.name} == {want}
    # the fused rung: one QAttention per layer with int8 weights, every FFN MatMul int8, nothing fp32 or unfused
    src, report = splits.smoothed(fused.smooth_alpha, fused.qkv_split, fused.smooth_attention)
    out = tmp_path / "smooth-fused.onnx"
    quantize(src, out, fused, [])
    model = onnx.load(str(out))
    ops = [n.op_type for n in model.graph.node]
    attention = [name for name in report if name not in splits.ffn]
    assert attention and ops.count("QAttention") == len(attention)
    assert not {"MatMul", "Attention", "MultiHeadAttention", "Split"} & set(ops)
    inits = {i.name: i for i in model.graph.initializer}
    assert {inits[n.input[1]].data_type for n in model.graph.node if n.op_type == "QAttention"} == {
        onnx.TensorProto.INT8}


def test_bench_int8_smooth_rows(tiny_bundle: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from sitrep.cli import app

    out, md = tmp_path / "int8.json", tmp_path / "m.md"
    result = CliRunner().invoke(app, ["bench", "int8", str(tiny_bundle), "--thresholds", "", "--smooth", "0.5,0.8",
                                      "--weights", "int8", "--qkv", "--batch1", "3", "--batch32", "64", "--json", str(out),
                                      "--markdown", str(md)])
    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text())["rows"]
    assert [(r["smooth_alpha"], r["outlier_threshold"], r["outlier_channels"], r["qkv_split"]) for r in rows] == [
        (0.5, None, 0, True), (0.8, None, 0, True)]
    assert all(0 <= r["label_agreement"] <= 1 and r["batch1_ms"] > 0 for r in rows)
    assert rows[0]["batch1_vs_first"] == 1.0 and rows[1]["batch1_vs_first"] > 0  # timed in turns, paired
    assert rows[0]["batch32_vs_first"] == 1.0 and all(r["batch32_ms"] > 0 for r in rows)
    assert json.loads(out.read_text())["batch32_sentences"] == 64
    assert "smoothed, alpha 0.8 (+QKV)" in md.read_text()
    for bad, message in ((["--smooth", "1.5"], "between 0 and 1"), (["--smooth", "x"], "--smooth takes alphas"),
                         (["--thresholds", ""], "at least one value")):
        result = CliRunner().invoke(app, ["bench", "int8", str(tiny_bundle), *bad])
        assert result.exit_code == 2 and message in result.output, result.output


def test_bench_int8_smooth_attention_rows(tiny_bundle: Path, tmp_path: Path) -> None:
    """`--smooth-attention unfused,fused`: one row per form for each alpha, the fused rows' attention one QAttention,
    timed in turns with the unfused ones; an unknown form is a one-line error."""
    from typer.testing import CliRunner

    from sitrep.cli import app

    out, md = tmp_path / "int8.json", tmp_path / "m.md"
    result = CliRunner().invoke(app, ["bench", "int8", str(tiny_bundle), "--thresholds", "", "--smooth", "0.8",
                                      "--smooth-attention", "unfused,fused,none", "--weights", "int8", "--batch1", "3",
                                      "--json", str(out), "--markdown", str(md)])
    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text())["rows"]
    assert [(r["smooth_alpha"], r["qkv_split"], r["smooth_attention"]) for r in rows] == [
        (0.8, True, False), (0.8, False, True), (0.8, False, False)]
    assert rows[0]["batch1_vs_first"] == 1.0 and all(r["batch1_ms"] > 0 for r in rows)
    assert "smoothed, alpha 0.8 (+fused attention)" in md.read_text()
    result = CliRunner().invoke(app, ["bench", "int8", str(tiny_bundle), "--thresholds", "", "--smooth", "0.8",
                                      "--smooth-attention", "packed"])
    assert result.exit_code == 2 and "unknown attention form for smoothing ['packed']" in result.output, result.output
    assert "Traceback" not in result.output
