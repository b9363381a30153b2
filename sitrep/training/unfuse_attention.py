"""Take the QKV projection out of ONNX Runtime's fused `Attention` op, so the int8 export can treat it as a MatMul.

The transformer optimizer fuses each self-attention block into one `com.microsoft.Attention` node whose
QKV projection runs inside it; quantized, that becomes `QAttention`, with one dynamic scale for its whole
input. That input is the LayerNorm output carrying the massive-activation channels the outlier split
(sitrep/training/outlier_split.py) removes from the FFN inputs, and it cannot be split inside the fused op.
Rewritten as

    Attention(x, W, b, mask)  ->  MatMul(x, W) -> Split(q, k, v) -> MultiHeadAttention(q, k, v, b, mask)

the projection is an ordinary MatMul (its outlier channels can go to fp32 and the rest to u8s8 kernels)
and the attention itself stays one fused CPU kernel. Exact in fp32: `MultiHeadAttention` adds the same
packed bias and reads the same mask index.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def qkv_matmul(attention: str) -> str:
    """The name of the QKV projection MatMul that replaces the fused Attention node `attention`."""
    return f"{attention}/qkv_matmul"


def is_fused_attention(node: Any) -> bool:
    """Whether an ONNX node is ONNX Runtime's fused self-attention (`com.microsoft.Attention`)."""
    return bool(node.op_type == "Attention" and node.domain == "com.microsoft")


def fused_attention_nodes(src: Path) -> list[str]:
    """The names of the fused Attention nodes of the graph at `src`, in graph order (none: an empty list)."""
    import onnx

    return [n.name for n in onnx.load(str(src), load_external_data=False).graph.node if is_fused_attention(n)]


def unfuse_attention(src: Path, dst: Path) -> list[str]:
    """Write `src` to `dst` with every fused Attention node rewritten as above; the new QKV MatMuls' names.

    Raises ValueError when `src` has no fused Attention node, or one this rewrite does not cover (past
    state, attention bias, or unequal Q/K/V widths).
    """
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(src))
    graph = model.graph
    inits = {init.name: init for init in graph.initializer}
    attentions = [n for n in graph.node if is_fused_attention(n)]
    if not attentions:
        raise ValueError(f"{src}: no fused Attention node")
    nodes, names = [], []
    for node in graph.node:
        if node not in attentions:
            nodes.append(node)
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        inputs = list(node.input) + [""] * (4 - len(node.input))
        x, w, bias, mask = inputs[:4]
        if any(node.input[4:]) or len(node.output) > 1 or w not in inits \
                or set(attrs) - {"num_heads", "mask_filter_value", "scale"}:
            raise ValueError(f"{src}: attention node {node.name} is not a plain self-attention this rewrite covers")
        width = numpy_helper.to_array(inits[w]).shape[1]
        if width % 3:
            raise ValueError(f"{src}: attention node {node.name}: QKV width {width} is not three equal parts")
        p = node.name
        sizes = f"{p}/qkv_sizes"
        graph.initializer.append(numpy_helper.from_array(np.full(3, width // 3, dtype=np.int64), sizes))
        nodes.append(helper.make_node("MatMul", [x, w], [f"{p}/qkv"], name=qkv_matmul(p)))
        nodes.append(helper.make_node("Split", [f"{p}/qkv", sizes], [f"{p}/q", f"{p}/k", f"{p}/v"],
                                      name=f"{p}/split_qkv", axis=-1))
        nodes.append(helper.make_node("MultiHeadAttention", [f"{p}/q", f"{p}/k", f"{p}/v", bias, mask],
                                      list(node.output), name=f"{p}/mha", domain="com.microsoft", **attrs))
        names.append(qkv_matmul(p))
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.save(model, str(dst))
    return names
