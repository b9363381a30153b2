"""Outlier-channel split for dynamic int8: the few activation channels that ruin the int8 range stay fp32.

BERT-style encoders (multilingual-e5-small among them) carry "massive activations": on a handful of
fixed hidden channels, mostly at the `<s>` and `</s>` positions, the inputs of the FFN MatMuls reach
values an order of magnitude above every other channel. ONNX Runtime's dynamic quantization gives the
whole activation tensor one scale, so those few values decide it and the ordinary activations keep
only a few of the 256 levels; that, accumulated over 24 FFN MatMuls, is what breaks the int8 model
(onnxruntime issue #9599). `activation_absmax` below measures it; `sitrep bench int8` shows the effect.

The fix is the mixed-precision decomposition of LLM.int8() (Dettmers et al., 2022), done once in the
graph: for each MatMul ``y = x · W`` whose input channels ``O`` exceed `threshold` on calibration data,

    y = (x ⊙ m) · W[m]  +  x[..., O] · W[O, :]       (m: 1 on ordinary channels, 0 on O)

The first MatMul (full size, outlier rows of W zeroed) is quantized to int8 with a sane activation
range; the second is a thin fp32 MatMul over the |O| outlier channels. Exact in fp32.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from sitrep.models.encoding import TextEncoder, padded_batches

# The ops the split adds are named after their MatMul plus these suffixes (the mask Mul, the Gather of the outlier
# channels, the thin fp32 MatMul, the recombining Add); `sitrep bench ops` tells them apart by these names.
MASK, GATHER, THIN_FP32, RECOMBINE = "/mask", "/gather_outliers", "/outliers_fp32", "/recombine"
SPLIT_NODE_SUFFIXES = (MASK, GATHER, THIN_FP32, RECOMBINE)


def is_split_node(name: str) -> bool:
    """Whether a graph node is one of the ops `split_outliers` added."""
    return name.endswith(SPLIT_NODE_SUFFIXES)


def activation_batches(
    model_path: Path, tensors: list[str], encoder: TextEncoder, texts: list[str], batch_size: int = 32,
    model: Any = None,
) -> Iterator[list[np.ndarray]]:
    """The values of the named tensors, batch by batch over `texts` (padded as the runtime pads).

    `model`: the graph at `model_path`, already loaded (it is left as it was).
    """
    import onnx

    from sitrep.models.runtime import OnnxBackend

    model = onnx.load(str(model_path)) if model is None else model
    present = {o.name for o in model.graph.output}
    added = [onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
             for name in tensors if name not in present]
    model.graph.output.extend(added)
    probe = model_path.with_name(model_path.stem + ".activation-probe.onnx")
    onnx.save(model, str(probe))
    del model.graph.output[len(model.graph.output) - len(added):]
    try:
        backend = OnnxBackend(probe, "onnx", None, optimize=False)  # unoptimized: keeps the named tensors
        for _, ids, mask in padded_batches(encoder, encoder.encode(texts), batch_size):
            yield backend.run(tensors, ids, mask)
    finally:
        probe.unlink(missing_ok=True)


def activation_absmax(
    model_path: Path, tensors: list[str], encoder: TextEncoder, texts: list[str], batch_size: int = 32,
    model: Any = None,
) -> dict[str, np.ndarray]:
    """Per-channel (last axis) max |value| of each named tensor over `texts`, padded positions included.

    Padded positions count because the dynamic activation scale at run time sees them too.
    """
    absmax: dict[str, np.ndarray] = {}
    for values in activation_batches(model_path, tensors, encoder, texts, batch_size, model):
        for name, value in zip(tensors, values, strict=True):
            m = np.abs(value).reshape(-1, value.shape[-1]).max(axis=0)
            absmax[name] = m if name not in absmax else np.maximum(absmax[name], m)
    return absmax


def load_matmuls(src: Path, matmuls: list[str], op_types: tuple[str, ...] = ("MatMul",)) -> tuple[Any, list[Any]]:
    """(the ONNX model at `src`, its MatMul nodes named in `matmuls`, in graph order); a name not found is an error.

    `op_types`: the node types accepted; each reads its input as input 0 and its weight ([in, out]) as input 1
    (a MatMul; ONNX Runtime's fused `Attention`, whose weight is the QKV projection).
    """
    import onnx

    model = onnx.load(str(src))
    wanted = set(matmuls)
    targets = [n for n in model.graph.node if n.op_type in op_types and n.name in wanted]
    missing = wanted - {n.name for n in targets}
    if missing:
        raise ValueError(f"{src}: no {' or '.join(op_types)} named {sorted(missing)}")
    return model, targets


def split_outliers(
    src: Path, dst: Path, matmuls: list[str], encoder: TextEncoder, texts: list[str], threshold: float = 6.0
) -> dict[str, list[int]]:
    """Write `src` to `dst` with each named MatMul's outlier input channels split off into an fp32 MatMul.

    Returns {MatMul name: outlier channel indices}; MatMuls without outliers are left as they are. The
    new thin MatMuls are named ``<name>/outliers_fp32`` (see `fp32_nodes`), to be kept out of quantization.
    """
    import onnx
    from onnx import helper, numpy_helper

    model, targets = load_matmuls(src, matmuls)
    graph = model.graph
    wanted = set(matmuls)
    absmax = activation_absmax(src, sorted({n.input[0] for n in targets}), encoder, texts, model=model)
    inits = {init.name: init for init in graph.initializer}
    split: dict[str, list[int]] = {}
    new_nodes = []
    for node in graph.node:
        if node.op_type != "MatMul" or node.name not in wanted:
            new_nodes.append(node)
            continue
        x, w_name, y = node.input[0], node.input[1], node.output[0]
        outliers = np.flatnonzero(absmax[x] > threshold)
        if not len(outliers):
            new_nodes.append(node)
            continue
        weight = numpy_helper.to_array(inits[w_name])
        keep = np.ones(weight.shape[0], dtype=np.float32)
        keep[outliers] = 0.0
        p = node.name
        graph.initializer.extend([
            numpy_helper.from_array(keep, f"{p}/ordinary_mask"),
            numpy_helper.from_array(outliers.astype(np.int64), f"{p}/outlier_index"),
            numpy_helper.from_array(weight[outliers].astype(np.float32), f"{p}/outlier_weight"),
        ])
        inits[w_name].CopyFrom(numpy_helper.from_array((weight * keep[:, None]).astype(np.float32), w_name))
        new_nodes.append(helper.make_node("Mul", [x, f"{p}/ordinary_mask"], [f"{p}/ordinary_input"], name=p + MASK))
        node.input[0] = f"{p}/ordinary_input"
        node.output[0] = f"{p}/ordinary_output"
        new_nodes.append(node)
        new_nodes.append(helper.make_node("Gather", [x, f"{p}/outlier_index"], [f"{p}/outlier_input"],
                                          name=p + GATHER, axis=-1))
        new_nodes.append(helper.make_node("MatMul", [f"{p}/outlier_input", f"{p}/outlier_weight"],
                                          [f"{p}/outlier_output"], name=fp32_node(p)))
        new_nodes.append(helper.make_node("Add", [f"{p}/ordinary_output", f"{p}/outlier_output"], [y],
                                          name=p + RECOMBINE))
        split[node.name] = [int(i) for i in outliers]
    del graph.node[:]
    graph.node.extend(new_nodes)
    onnx.save(model, str(dst))
    return split


def fp32_node(matmul: str) -> str:
    """The name of the thin fp32 MatMul that carries `matmul`'s outlier channels."""
    return matmul + THIN_FP32


def _fake_quant_uint8(x: np.ndarray, axis: int | None) -> np.ndarray:
    """Quantize-dequantize to asymmetric uint8 as ONNX Runtime's dynamic quantization does: one range for
    the whole tensor (`axis` None: the activations) or one per slice, reducing over `axis` (0 for an
    [in, out] weight: one range per output channel); the range always includes 0."""
    lo = np.minimum(x.min(axis=axis, keepdims=axis is not None), 0.0)
    hi = np.maximum(x.max(axis=axis, keepdims=axis is not None), 0.0)
    scale = np.where(hi > lo, (hi - lo) / 255.0, 1.0)
    zero = np.clip(np.round(-lo / scale), 0, 255)
    return ((np.clip(np.round(x / scale) + zero, 0, 255) - zero) * scale).astype(np.float32)


def quantization_error(
    model_path: Path, matmuls: list[str], encoder: TextEncoder, texts: list[str], batch_size: int = 32
) -> dict[str, float]:
    """Each MatMul's relative output error under dynamic uint8 quantization, simulated on its own.

    For ``y = x · W`` on the activations `texts` produce, with x quantized per tensor per batch (the
    dynamic scale) and W per output channel: ``‖ŷ − y‖² / ‖y‖²`` summed over batches. One fp32 pass
    ranks every MatMul at once; quantizing the model once per MatMul and scoring it end to end ranks
    them much the same at ~25× the cost.
    """
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(model_path))
    nodes = {n.name: n for n in model.graph.node if n.op_type == "MatMul"}
    missing = [m for m in matmuls if m not in nodes]
    if missing:
        raise ValueError(f"{model_path}: no MatMul named {missing}")
    inits = {i.name: i for i in model.graph.initializer}
    weights = {m: numpy_helper.to_array(inits[nodes[m].input[1]]).astype(np.float32) for m in matmuls}
    weights_q = {m: _fake_quant_uint8(w, axis=0) for m, w in weights.items()}
    inputs = [nodes[m].input[0] for m in matmuls]
    err = dict.fromkeys(matmuls, 0.0)
    ref = dict.fromkeys(matmuls, 0.0)
    for values in activation_batches(model_path, sorted(set(inputs)), encoder, texts, batch_size, model):
        by_name = dict(zip(sorted(set(inputs)), values, strict=True))
        for m, x_name in zip(matmuls, inputs, strict=True):
            x = by_name[x_name].reshape(-1, weights[m].shape[0]).astype(np.float32)
            y = x @ weights[m]
            y_q = _fake_quant_uint8(x, axis=None) @ weights_q[m]
            err[m] += float(np.sum((y_q - y) ** 2))
            ref[m] += float(np.sum(y**2))
    return {m: err[m] / max(ref[m], 1e-30) for m in matmuls}
