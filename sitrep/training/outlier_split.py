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

from pathlib import Path
from typing import Any

import numpy as np

from sitrep.models.encoding import TextEncoder, padded_batches


def activation_absmax(
    model_path: Path, tensors: list[str], encoder: TextEncoder, texts: list[str], batch_size: int = 32,
    model: Any = None,
) -> dict[str, np.ndarray]:
    """Per-channel (last axis) max |value| of each named tensor over `texts`, padded positions included.

    Padded positions count because the dynamic activation scale at run time sees them too. `model`: the
    graph at `model_path`, already loaded (it is left as it was).
    """
    import onnx

    from sitrep.models.runtime import OnnxBackend

    model = onnx.load(str(model_path)) if model is None else model
    present = {o.name for o in model.graph.output}
    added = [onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
             for name in tensors if name not in present]
    model.graph.output.extend(added)
    probe = model_path.with_name(model_path.stem + ".absmax-probe.onnx")
    onnx.save(model, str(probe))
    del model.graph.output[len(model.graph.output) - len(added):]
    try:
        backend = OnnxBackend(probe, "onnx", None, optimize=False)  # unoptimized: keeps the named tensors
        absmax: dict[str, np.ndarray] = {}
        for _, ids, mask in padded_batches(encoder, encoder.encode(texts), batch_size):
            for name, value in zip(tensors, backend.run(tensors, ids, mask), strict=True):
                m = np.abs(value).reshape(-1, value.shape[-1]).max(axis=0)
                absmax[name] = m if name not in absmax else np.maximum(absmax[name], m)
    finally:
        probe.unlink(missing_ok=True)
    return absmax


def split_outliers(
    src: Path, dst: Path, matmuls: list[str], encoder: TextEncoder, texts: list[str], threshold: float = 6.0
) -> dict[str, list[int]]:
    """Write `src` to `dst` with each named MatMul's outlier input channels split off into an fp32 MatMul.

    Returns {MatMul name: outlier channel indices}; MatMuls without outliers are left as they are. The
    new thin MatMuls are named ``<name>/outliers_fp32`` (see `fp32_nodes`), to be kept out of quantization.
    """
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(src))
    graph = model.graph
    wanted = set(matmuls)
    targets = [n for n in graph.node if n.op_type == "MatMul" and n.name in wanted]
    missing = wanted - {n.name for n in targets}
    if missing:
        raise ValueError(f"{src}: no MatMul named {sorted(missing)}")
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
        new_nodes.append(helper.make_node("Mul", [x, f"{p}/ordinary_mask"], [f"{p}/ordinary_input"], name=f"{p}/mask"))
        node.input[0] = f"{p}/ordinary_input"
        node.output[0] = f"{p}/ordinary_output"
        new_nodes.append(node)
        new_nodes.append(helper.make_node("Gather", [x, f"{p}/outlier_index"], [f"{p}/outlier_input"],
                                          name=f"{p}/gather_outliers", axis=-1))
        new_nodes.append(helper.make_node("MatMul", [f"{p}/outlier_input", f"{p}/outlier_weight"],
                                          [f"{p}/outlier_output"], name=fp32_node(p)))
        new_nodes.append(helper.make_node("Add", [f"{p}/ordinary_output", f"{p}/outlier_output"], [y],
                                          name=f"{p}/recombine"))
        split[node.name] = [int(i) for i in outliers]
    del graph.node[:]
    graph.node.extend(new_nodes)
    onnx.save(model, str(dst))
    return split


def fp32_node(matmul: str) -> str:
    """The name of the thin fp32 MatMul that carries `matmul`'s outlier channels."""
    return f"{matmul}/outliers_fp32"
