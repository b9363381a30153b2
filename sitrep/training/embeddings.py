"""Compact word-embedding table for the int8 model: per-row int8 (one scale per row) or fp16.

The word-embedding table of multilingual-e5-small is 250,037 × 384 fp32 (366 MiB): most of the int8
model's file and of every serving process's memory. ONNX Runtime's own embedding quantization gives the
whole table one scale, which costs the model 0.6 point of macro-F1 (`sitrep bench int8`). Here each row
(one token's vector) gets its own scale, ``scale[v] = max |E[v, :]| / 127``, ``q[v] = round(E[v] / scale[v])``,
so a rare token with small values keeps its full 8-bit resolution; the error of any element is at most
half of its own row's step. `fp16` stores the table in half precision instead (twice the size of int8).

Only the rows a batch uses are dequantized, at run time, after the lookup:

    rows  = Cast(Gather(q, ids), float) * Gather(scale, ids)      # [batch, seq, hidden]    (int8-row)
    rows  = Cast(Gather(E16, ids), float)                          # [batch, seq, hidden]    (fp16)

The table stays int8 (or fp16) in the session, so the process holds 92 MiB (or 183 MiB) rather than
366 MiB. Where the graph has ONNX Runtime's fused `EmbedLayerNormalization` (the optimized BERT graph),
which looks the ids up itself in an fp32 table, the gathered rows are handed to it as a per-batch table of
``batch × seq`` rows with ids ``0 … batch × seq − 1``: the same fused op (word + position embeddings,
LayerNorm, the attention mask index) runs on exactly the dequantized rows. Elsewhere (unoptimized graphs)
the plain `Gather` of the table is replaced. With the dequantized table in fp32, both rewrites are exact
(tests/test_embeddings.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

MODES = ("fp32", "int8-row", "fp16")


def quantize_rows(table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(int8 table, fp32 scales [rows, 1]) with one symmetric scale per row; all-zero rows get scale 1."""
    absmax = np.abs(table).max(axis=1, keepdims=True).astype(np.float32)
    scale = np.where(absmax > 0, absmax / 127.0, 1.0).astype(np.float32)
    q = np.clip(np.rint(table / scale), -127, 127).astype(np.int8)
    return q, scale


def dequantize_rows(q: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """What the graph computes for each row it looks up (fp32)."""
    return q.astype(np.float32) * scale


def _word_table(graph: Any) -> tuple[str, list[Any]]:
    """The word-embedding initializer's name and the nodes that look it up (EmbedLayerNormalization or Gather)."""
    inits = {i.name: i for i in graph.initializer}
    eln = [n for n in graph.node if n.op_type == "EmbedLayerNormalization"]
    if eln:
        name = eln[0].input[2]
    else:
        gathers = [n for n in graph.node if n.op_type == "Gather" and n.input[0] in inits
                   and len(inits[n.input[0]].dims) == 2]
        if not gathers:
            raise ValueError("no word-embedding table found (no EmbedLayerNormalization, no Gather of a 2-D initializer)")
        name = max(gathers, key=lambda n: int(np.prod(inits[n.input[0]].dims))).input[0]
    if inits[name].data_type != 1:  # onnx.TensorProto.FLOAT
        raise ValueError(f"word-embedding table {name} is not fp32 (already quantized by this recipe)")
    users = [n for n in graph.node if name in n.input]
    for n in users:
        if not ((n.op_type == "EmbedLayerNormalization" and list(n.input).index(name) == 2)
                or (n.op_type == "Gather" and n.input[0] == name and _axis(n) == 0)):
            raise ValueError(f"word-embedding table {name} is read by {n.op_type} {n.name}: not a lookup this rewrite handles")
    return name, users


def _axis(node: Any) -> int:
    return next((a.i for a in node.attribute if a.name == "axis"), 0)


def compact_embeddings(src: Path, dst: Path, mode: str) -> dict[str, float | int | str]:
    """Write `src` to `dst` with its word-embedding table stored as `mode` ("int8-row", "fp16"; "fp32": a copy).

    Returns what changed: the table's name, shape and bytes before and after.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    if mode not in MODES:
        raise ValueError(f"unknown embedding mode {mode!r}; choose one of {', '.join(MODES)}")
    model = onnx.load(str(src))
    graph = model.graph
    name, users = _word_table(graph)
    init = next(i for i in graph.initializer if i.name == name)
    table = numpy_helper.to_array(init).astype(np.float32)
    info: dict[str, float | int | str] = {"table": name, "rows": table.shape[0], "hidden": table.shape[1],
                                          "mode": mode, "bytes_before": table.nbytes}
    if mode == "fp32":
        info["bytes_after"] = table.nbytes
        onnx.save(model, str(dst))
        return info
    graph.initializer.remove(init)
    p = "word_embeddings_" + mode.replace("-", "_")
    if mode == "int8-row":
        q, scale = quantize_rows(table)
        graph.initializer.extend([numpy_helper.from_array(q, f"{p}/table"),
                                  numpy_helper.from_array(scale, f"{p}/scale")])
        info["bytes_after"] = q.nbytes + scale.nbytes
    else:
        half = table.astype(np.float16)
        graph.initializer.append(numpy_helper.from_array(half, f"{p}/table"))
        info["bytes_after"] = half.nbytes

    def lookup(ids: str, out: str, tag: str) -> list[Any]:
        """Nodes computing `out` = the dequantized fp32 rows of `ids` (any shape; rows on a new last axis)."""
        t = f"{p}/{tag}"
        nodes = [helper.make_node("Gather", [f"{p}/table", ids], [f"{t}/rows_stored"], name=f"{t}/gather", axis=0)]
        if mode == "int8-row":
            nodes += [
                helper.make_node("Cast", [f"{t}/rows_stored"], [f"{t}/rows_int"], name=f"{t}/cast", to=TensorProto.FLOAT),
                helper.make_node("Gather", [f"{p}/scale", ids], [f"{t}/row_scale"], name=f"{t}/gather_scale", axis=0),
                helper.make_node("Mul", [f"{t}/rows_int", f"{t}/row_scale"], [out], name=f"{t}/dequantize"),
            ]
        else:
            nodes.append(helper.make_node("Cast", [f"{t}/rows_stored"], [out], name=f"{t}/cast", to=TensorProto.FLOAT))
        return nodes

    hidden = table.shape[1]
    if any(n.op_type == "EmbedLayerNormalization" for n in users):
        graph.initializer.extend([
            numpy_helper.from_array(np.array([-1, hidden], dtype=np.int64), f"{p}/table_shape"),
            numpy_helper.from_array(np.array(0, dtype=np.int64), f"{p}/zero"),
            numpy_helper.from_array(np.array(1, dtype=np.int64), f"{p}/one"),
        ])
    new_nodes = []
    for i, node in enumerate(graph.node):
        if node not in users:
            new_nodes.append(node)
            continue
        tag = f"lookup{i}"
        if node.op_type == "Gather":
            new_nodes += lookup(node.input[1], node.output[0], tag)
            continue
        # EmbedLayerNormalization: the batch's rows become its table, and its ids index them in order.
        ids, t = node.input[0], f"{p}/{tag}"
        new_nodes += lookup(ids, f"{t}/rows", tag)
        new_nodes += [
            helper.make_node("Reshape", [f"{t}/rows", f"{p}/table_shape"], [f"{t}/batch_table"], name=f"{t}/flatten"),
            helper.make_node("Shape", [ids], [f"{t}/ids_shape"], name=f"{t}/ids_shape"),
            helper.make_node("Size", [ids], [f"{t}/n"], name=f"{t}/n"),
            helper.make_node("Range", [f"{p}/zero", f"{t}/n", f"{p}/one"], [f"{t}/positions"], name=f"{t}/range"),
            helper.make_node("Reshape", [f"{t}/positions", f"{t}/ids_shape"], [f"{t}/local_ids64"], name=f"{t}/reshape"),
            helper.make_node("Cast", [f"{t}/local_ids64"], [f"{t}/local_ids"], name=f"{t}/cast_ids", to=TensorProto.INT32),
        ]
        node.input[0] = f"{t}/local_ids"
        node.input[2] = f"{t}/batch_table"
        new_nodes.append(node)
    del graph.node[:]
    graph.node.extend(new_nodes)
    onnx.save(model, str(dst))
    return info
