"""Compact word-embedding table (per-row int8, fp16): exact against the dequantized table, both lookups."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sitrep.models.bundle import load_bundle
from sitrep.training.embeddings import compact_embeddings, dequantize_rows, quantize_rows
from sitrep.training.export import optimize_graph, probs_with

TEXTS = [
    "The group said its fighters struck the base with two drones.",
    "قالت وزارة الدفاع إن الهجوم أسفر عن مقتل ثلاثة جنود.",
    "سخنگوی سپاه گفت این حمله در پاسخ به ترور فرماندهان انجام شد.",
    "No casualties were reported.",
]


def test_quantize_rows_has_one_scale_per_row_and_bounded_error() -> None:
    rng = np.random.default_rng(0)
    table = rng.normal(size=(50, 16)).astype(np.float32) * rng.uniform(1e-3, 10, size=(50, 1)).astype(np.float32)
    table[7] = 0.0
    q, scale = quantize_rows(table)
    assert q.dtype == np.int8 and q.shape == table.shape and scale.shape == (50, 1)
    assert np.all(np.abs(q).max(axis=1)[np.arange(50) != 7] == 127)  # each row uses its full range
    err = np.abs(dequantize_rows(q, scale) - table)
    assert np.all(err <= scale / 2 + 1e-7) and np.all(dequantize_rows(q, scale)[7] == 0)


def _with_table(src: Path, dst: Path, transform) -> None:
    """`src` with its word-embedding table replaced, in fp32, by `transform(table)`."""
    import onnx
    from onnx import numpy_helper

    from sitrep.training.embeddings import _word_table

    model = onnx.load(str(src))
    name, _ = _word_table(model.graph)
    init = next(i for i in model.graph.initializer if i.name == name)
    init.CopyFrom(numpy_helper.from_array(transform(numpy_helper.to_array(init)).astype(np.float32), name))
    onnx.save(model, str(dst))


def _graphs(tiny_bundle: Path, tmp: Path) -> dict[str, Path]:
    bundle = load_bundle(tiny_bundle)
    opt = tmp / "model.opt.onnx"
    optimize_graph(bundle, bundle.onnx_file("onnx"), opt)
    return {"gather": bundle.onnx_file("onnx"), "optimized": opt}


@pytest.mark.parametrize("mode,transform", [
    ("int8-row", lambda t: dequantize_rows(*quantize_rows(t))),
    ("fp16", lambda t: t.astype(np.float16).astype(np.float32)),
])
def test_compact_table_is_exact_against_its_dequantized_fp32_table(
    tiny_bundle: Path, tmp_path: Path, mode: str, transform
) -> None:
    import onnx

    bundle = load_bundle(tiny_bundle)
    for kind, src in _graphs(tiny_bundle, tmp_path).items():
        compact, reference = tmp_path / f"{kind}.{mode}.onnx", tmp_path / f"{kind}.ref.onnx"
        info = compact_embeddings(src, compact, mode)
        _with_table(src, reference, transform)
        np.testing.assert_allclose(probs_with(bundle, compact, TEXTS), probs_with(bundle, reference, TEXTS),
                                   atol=1e-6, err_msg=kind)
        assert info["bytes_after"] < info["bytes_before"] / (1.9 if mode == "fp16" else 3.5)
        types = {i.name: i.data_type for i in onnx.load(str(compact)).graph.initializer}
        stored = onnx.TensorProto.INT8 if mode == "int8-row" else onnx.TensorProto.FLOAT16
        assert types[f"word_embeddings_{mode.replace('-', '_')}/table"] == stored
        assert info["table"] not in types  # the fp32 table is gone


def test_compact_table_through_fused_embed_layer_norm() -> None:
    """The per-batch table handed to EmbedLayerNormalization gives its exact output (hand-built fused graph)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(1)
    vocab, hidden, seq = 40, 8, 5
    tables = {"word": rng.normal(size=(vocab, hidden)), "pos": rng.normal(size=(seq, hidden)),
              "seg": rng.normal(size=(2, hidden)), "gamma": rng.uniform(0.5, 1.5, hidden), "beta": rng.normal(size=hidden)}
    node = helper.make_node("EmbedLayerNormalization", ["ids", "segments", "word", "pos", "seg", "gamma", "beta", "mask"],
                            ["out", "mask_index"], domain="com.microsoft", epsilon=1e-12)
    graph = helper.make_graph(
        [node], "eln",
        [helper.make_tensor_value_info(n, TensorProto.INT32, ["b", "s"]) for n in ("ids", "segments", "mask")],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("mask_index", TensorProto.INT32, None)],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in tables.items()],
    )
    model = helper.make_model(graph, ir_version=8,
                              opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    feeds = {"ids": rng.integers(0, vocab, size=(3, seq)).astype(np.int32),
             "segments": np.zeros((3, seq), np.int32), "mask": np.ones((3, seq), np.int32)}
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        src, dst, ref = Path(d) / "eln.onnx", Path(d) / "eln.int8-row.onnx", Path(d) / "eln.ref.onnx"
        import onnx

        onnx.save(model, str(src))
        compact_embeddings(src, dst, "int8-row")
        _with_table(src, ref, lambda t: dequantize_rows(*quantize_rows(t)))
        run = {p: ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, feeds) for p in (dst, ref)}
    np.testing.assert_allclose(run[dst][0], run[ref][0], atol=1e-6)
    np.testing.assert_array_equal(run[dst][1], run[ref][1])


def test_bench_int8_rows_for_each_embedding_storage(tiny_bundle: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from sitrep.cli import app

    out = tmp_path / "emb.json"
    result = CliRunner().invoke(app, ["bench", "int8", str(tiny_bundle), "--thresholds", "none", "--weights", "uint8",
                                      "--ffn-fp32", "--word-embeddings", "fp32,int8-row,fp16", "--embeddings",
                                      "--json", str(out)])
    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text())["rows"]
    assert [r["embeddings"] for r in rows] == ["fp32", "int8-row", "fp16", "int8-tensor"]
    assert all(r["ffn_fp32"] and isinstance(r["passes_gate"], bool) for r in rows)
    size = {r["embeddings"]: r["size_mb"] for r in rows}
    assert size["int8-row"] < size["fp16"] < size["fp32"]
    assert "| int8-row |" in result.output and "| gate |" in result.output
    bad = CliRunner().invoke(app, ["bench", "int8", str(tiny_bundle), "--word-embeddings", "int4"])
    assert bad.exit_code == 2 and "unknown embedding storage" in bad.output


def test_export_records_the_word_embedding_storage(tiny_bundle: Path) -> None:
    """The tiny bundle's export tried the compact tables on the passing recipe and recorded what it kept."""
    bundle = load_bundle(tiny_bundle)
    kept = bundle.manifest.export["int8_word_embeddings"]
    assert kept in ("int8-row", "fp16", "fp32")
    attempts = json.loads((tiny_bundle / "reports/parity.json").read_text())["runtimes"]["onnx-int8"]["attempts"]
    tried = [a for a in attempts if "word_embeddings" in a]
    assert [a["word_embeddings"] for a in tried][:1] == ["int8-row"]
    assert all(a.get("skipped") or "label_agreement" in a for a in tried)
    passed = [a["word_embeddings"] for a in tried if a["passed"]]
    assert kept == (passed[0] if passed else "fp32")
