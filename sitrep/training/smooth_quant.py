"""Channel smoothing for dynamic int8 (SmoothQuant): the outlier channels shrink, with no fp32 MatMul left.

The massive-activation channels that ruin ONNX Runtime's one-scale-per-tensor dynamic quantization (see
sitrep/training/outlier_split.py) sit on a few fixed input channels of each MatMul. SmoothQuant (Xiao et al.,
2023) moves that range from the activations into the weights, exactly in fp32: for ``y = x · W``,

    y = (x ⊘ s) · (diag(s) W),     s_j = max|x_j|^α / max|W_j,:|^(1−α)

with ``max|x_j|`` measured on calibration sentences and ``W_j,:`` the weight row of input channel j. The
activations' largest channel falls from ``max|x_j|`` to ``max|x_j|^(1−α) · max|W_j|^(1−α)``; the weights,
quantized per output channel, take the rest. In the graph this is one `Mul` by ``1/s`` in front of the
MatMuls that read ``x`` (the MatMuls sharing an input share it, with ``W_j`` their largest row), where the
split adds four ops per MatMul (mask, Gather, thin fp32 MatMul, Add): at batch 1 those small ops are a fifth of
the int8 model's kernel time (`sitrep bench ops`). The post-LayerNorm residual of this encoder reads the same
LayerNorm output, so the scale cannot be folded into the LayerNorm's weights; it stays a `Mul`.

The same holds for ONNX Runtime's fused `Attention` node, whose second input is the QKV weight ([in, 3 × hidden]):
its input smoothed and its weight rows scaled, the attention stays one op, `QAttention` once quantized, in place of
the unfused form's QKV `MatMul`, `Split` and `MultiHeadAttention` (sitrep/training/unfuse_attention.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sitrep.models.encoding import TextEncoder
from sitrep.training.outlier_split import activation_absmax, load_matmuls
from sitrep.training.unfuse_attention import is_fused_attention

# The nodes whose input 0 can be smoothed into their weight, input 1 ([in, out]): MatMul, and the fused Attention.
WEIGHT_INPUT_OPS = ("MatMul", "Attention")
SMOOTH = "/smooth"  # suffix of the Mul each smoothed input gets (named after the first MatMul reading it)


def is_smooth_node(name: str) -> bool:
    """Whether a graph node is one of the `Mul`s `smooth_inputs` added."""
    return name.endswith(SMOOTH)


def smoothing_scales(absmax: np.ndarray, weights: list[np.ndarray], alpha: float) -> np.ndarray:
    """SmoothQuant's per-input-channel ``s`` for activations with channel maxima `absmax` read by `weights`
    ([in, out] each), clipped to [1e-3, 1e3] so that no channel is scaled into under- or overflow."""
    w = np.max([np.abs(m).max(axis=1) for m in weights], axis=0).astype(np.float64)
    a = np.asarray(absmax, dtype=np.float64)
    s = np.power(np.maximum(a, 1e-5), alpha) / np.power(np.maximum(w, 1e-5), 1.0 - alpha)
    return np.clip(s, 1e-3, 1e3)


def smooth_inputs(
    src: Path, dst: Path, matmuls: list[str], encoder: TextEncoder, texts: list[str], alpha: float = 0.8
) -> dict[str, tuple[float, float]]:
    """Write `src` to `dst` with each named MatMul's (or fused Attention's) input divided by SmoothQuant's scales
    and its weight rows multiplied by them (exact in fp32).

    Returns {node name: (largest input channel |max| before, after)} on the calibration `texts`.
    """
    import onnx
    from onnx import helper, numpy_helper

    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be between 0 and 1 (got {alpha})")
    model, targets = load_matmuls(src, matmuls, op_types=WEIGHT_INPUT_OPS)
    graph = model.graph
    wanted = set(matmuls)
    inits = {init.name: init for init in graph.initializer}
    by_input: dict[str, list] = {}
    for node in targets:
        if node.op_type == "Attention" and not is_fused_attention(node):
            raise ValueError(f"{src}: {node.name} is not ONNX Runtime's fused Attention (com.microsoft)")
        if node.input[1] not in inits:
            raise ValueError(f"{src}: {node.op_type} {node.name} has no constant weight to scale")
        by_input.setdefault(node.input[0], []).append(node)
    absmax = activation_absmax(src, sorted(by_input), encoder, texts, model=model)
    smoothed: dict[str, str] = {}  # input tensor -> the Mul's output
    muls: dict[str, object] = {}  # input tensor -> the Mul, placed before the first MatMul that reads it
    report: dict[str, tuple[float, float]] = {}
    for x, nodes in by_input.items():
        weights = [numpy_helper.to_array(inits[n.input[1]]).astype(np.float32) for n in nodes]
        s = smoothing_scales(absmax[x], weights, alpha)
        for node, w in zip(nodes, weights, strict=True):
            inits[node.input[1]].CopyFrom(numpy_helper.from_array((w * s[:, None]).astype(np.float32), node.input[1]))
        p = nodes[0].name
        graph.initializer.append(numpy_helper.from_array((1.0 / s).astype(np.float32), f"{p}/smooth_scale"))
        smoothed[x] = f"{p}/smoothed_input"
        muls[x] = helper.make_node("Mul", [x, f"{p}/smooth_scale"], [smoothed[x]], name=p + SMOOTH)
        after = float(np.max(absmax[x] / s))
        report.update({n.name: (float(np.max(absmax[x])), after) for n in nodes})
    new_nodes = []
    for node in graph.node:
        if node.op_type in WEIGHT_INPUT_OPS and node.name in wanted:
            x = node.input[0]
            if x in muls:
                new_nodes.append(muls.pop(x))
            node.input[0] = smoothed[x]
        new_nodes.append(node)
    del graph.node[:]
    graph.node.extend(new_nodes)
    onnx.save(model, str(dst))
    return report
