"""Store the int8 model's fp32 MatMul weights in fewer bytes in the file; they run in fp32 as before.

On CPUs without VNNI, export's int8 recipe keeps the 24 FFN MatMuls fp32 (their inputs carry "massive
activation" channels that per-tensor uint8 scales cannot hold; sitrep/training/outlier_split.py): 54 MiB
of fp32 weights, a third of the 154 MiB file. Two storages, each a few nodes in front of the MatMul:

    fp16:                W = Cast(W16)                                  2 bytes/weight, error ≤ 2⁻¹¹ |w|
    fp16+int8-residual:  W = Cast(W16) + Cast(R8) · s                   3 bytes/weight
                         R8 = round((W − W16) / s), s = max|W − W16| / 127 per output column

The residual form keeps what fp16 rounds away to 8 more bits: its error is at most 1/254 of the largest
fp16 rounding error in the column (≤ 2⁻¹¹/254 ≈ 2e-6 of the column's largest weight), where plain fp16's
is up to 2⁻¹¹ ≈ 5e-4 of each weight.
That matters for the gate: the uint8 model's dynamic activation scales turn any small change of a
MatMul's output into a few flipped decisions near the thresholds. On the articles-contrastive-frozen4
model (`sitrep export`, 2026-12-05) plain fp16 lowered the int8 model's label agreement with torch from
99.21% to 98.70% of 1,398 dev sentences (the gate needs 99%); the residual form kept 99.21% (ΔF1
−0.25 point against −0.33 without it) and took the file from 154.4 to 141.0 MiB. It is what export tries.

These nodes read only initializers, so ONNX Runtime's constant folding (on at every graph optimization
level the runtime uses) computes `W` once when the session is created: the session holds the fp32
weight and runs the same fp32 MatMul kernel as before, with no per-request cost (tests/test_fp16_weights.py
checks that the session's optimized graph has no such node left). Export scores each
storage against the int8 gate like every other candidate and keeps the first that passes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

MODES = ("fp16", "fp16+int8-residual")
MIN_ELEMENTS = 1024  # smaller weights (e.g. a classifier head: hidden × 4) are not worth a node


# Ops whose second input is a weight matrix: MatMul, and the fused fp32 Attention (its QKV weight) of a
# graph with no int8 MatMul (export's last rung); an int8 graph's QAttention holds uint8 weights.
WEIGHT_OPS = ("MatMul", "Attention")


def fp32_matmul_weights(graph: Any) -> list[str]:
    """Names of the 2-D fp32 initializers used as a MatMul's (or fp32 Attention's) weight, in graph order."""
    inits = {i.name: i for i in graph.initializer}
    names: list[str] = []
    for node in graph.node:
        if node.op_type not in WEIGHT_OPS or node.input[1] not in inits or node.input[1] in names:
            continue
        init = inits[node.input[1]]
        if init.data_type == 1 and len(init.dims) == 2 and int(np.prod(init.dims)) >= MIN_ELEMENTS:
            names.append(init.name)
    return names


def split_residual(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fp16 weight, int8 residual, fp32 scale per output column [1, out]) of a 2-D fp32 MatMul weight."""
    half = weight.astype(np.float16)
    residual = weight - half.astype(np.float32)
    absmax = np.abs(residual).max(axis=0, keepdims=True)
    scale = np.where(absmax > 0, absmax / 127.0, 1.0).astype(np.float32)
    return half, np.clip(np.rint(residual / scale), -127, 127).astype(np.int8), scale


def rebuilt(half: np.ndarray, residual: np.ndarray | None = None, scale: np.ndarray | None = None) -> np.ndarray:
    """The fp32 weight the graph computes from the stored parts."""
    w = half.astype(np.float32)
    return w if residual is None or scale is None else w + residual.astype(np.float32) * scale


def store_fp16(src: Path, dst: Path, mode: str = "fp16") -> dict[str, int]:
    """Write `src` to `dst` with its fp32 MatMul weights stored as `mode`. Raises ValueError if it has none.

    Returns how many weights changed and their bytes before and after.
    """
    if mode not in MODES:
        raise ValueError(f"unknown storage {mode!r} for fp32 weights; choose one of {', '.join(MODES)}")
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(src))
    graph = model.graph
    names = fp32_matmul_weights(graph)
    if not names:
        raise ValueError("no fp32 MatMul weights in the graph (every MatMul is quantized)")
    inits = {i.name: i for i in graph.initializer}
    users = {name for node in graph.node if node.op_type not in WEIGHT_OPS for name in node.input}
    shared = [n for n in names if n in users]
    if shared:  # another op reads the weight in fp32 too: leave the graph alone rather than rewire it
        raise ValueError(f"fp32 MatMul weight {shared[0]} is also read by a non-MatMul node")
    before = after = 0
    front = []
    for name in names:
        weight = numpy_helper.to_array(inits[name])
        half, residual, scale = split_residual(weight)
        if not np.isfinite(half).all():
            raise ValueError(f"weight {name} overflows fp16 (|w| max {np.abs(weight).max():.3g})")
        graph.initializer.remove(inits[name])
        graph.initializer.append(numpy_helper.from_array(half, f"{name}/fp16"))
        before += weight.nbytes
        after += half.nbytes
        if mode == "fp16":
            front.append(helper.make_node("Cast", [f"{name}/fp16"], [name], name=f"{name}/to_fp32", to=TensorProto.FLOAT))
            continue
        graph.initializer.extend([numpy_helper.from_array(residual, f"{name}/residual"),
                                  numpy_helper.from_array(scale, f"{name}/residual_scale")])
        after += residual.nbytes + scale.nbytes
        front += [
            helper.make_node("Cast", [f"{name}/fp16"], [f"{name}/high"], name=f"{name}/high", to=TensorProto.FLOAT),
            helper.make_node("Cast", [f"{name}/residual"], [f"{name}/residual_f"], name=f"{name}/residual_f",
                             to=TensorProto.FLOAT),
            helper.make_node("Mul", [f"{name}/residual_f", f"{name}/residual_scale"], [f"{name}/low"], name=f"{name}/low"),
            helper.make_node("Add", [f"{name}/high", f"{name}/low"], [name], name=f"{name}/to_fp32"),
        ]
    nodes = front + list(graph.node)  # these read only initializers: first in topological order
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.save(model, str(dst))
    return {"weights": len(names), "bytes_before": before, "bytes_after": after}
