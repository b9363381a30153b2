"""The machine's matrix-multiply peak through ONNX Runtime, fp32 and int8, and transformer FLOPs per sentence.

Peak: a one-node ONNX graph of M = N = K = size, timed in an ONNX Runtime session with the same
thread settings as the runtime: ``MatMul`` (fp32 x fp32), and ``MatMulInteger`` with uint8
activations against constant int8 weights (``u8s8``) or uint8 weights (``u8u8``) — the two kernels
a dynamically quantized model runs on, which differ a lot on AVX2 machines. GFLOP/s counts 2·M·N·K
per run (for int8 these are integer ops, reported in the same unit).
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

KERNELS = ("fp32", "u8s8", "u8u8")


def _gemm_model(size: int, kernel: str) -> bytes:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    if kernel == "fp32":
        a = helper.make_tensor_value_info("A", TensorProto.FLOAT, [size, size])
        b = numpy_helper.from_array(rng.standard_normal((size, size)).astype(np.float32), "B")
        y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, [size, size])
        node = helper.make_node("MatMul", ["A", "B"], ["Y"])
    else:
        a = helper.make_tensor_value_info("A", TensorProto.UINT8, [size, size])
        w = (
            rng.integers(-127, 128, (size, size), dtype=np.int8)
            if kernel == "u8s8"
            else rng.integers(0, 256, (size, size), dtype=np.uint8)
        )
        b = numpy_helper.from_array(w, "B")
        y = helper.make_tensor_value_info("Y", TensorProto.INT32, [size, size])
        node = helper.make_node("MatMulInteger", ["A", "B"], ["Y"])
    graph = helper.make_graph([node], f"gemm_{kernel}", [a], [y], initializer=[b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def gemm_peak(
    size: int = 1024, threads: int | None = None, min_seconds: float = 1.0, min_runs: int = 5
) -> dict[str, Any]:
    """GFLOP/s of size³ fp32 MatMul and u8s8 / u8u8 MatMulInteger: best and median over timed runs.

    ``int8`` repeats the faster of the two integer kernels: the machine's int8 peak.
    """
    import onnxruntime as ort

    rng = np.random.default_rng(1)
    flops = 2 * size**3
    out: dict[str, Any] = {"size": size, "threads": threads or 0, "flops_per_run": flops}
    for kernel in KERNELS:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or 0
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        sess = ort.InferenceSession(
            _gemm_model(size, kernel), sess_options=opts, providers=["CPUExecutionProvider"]
        )
        a = (
            rng.standard_normal((size, size)).astype(np.float32)
            if kernel == "fp32"
            else rng.integers(0, 256, (size, size), dtype=np.uint8)
        )
        for _ in range(2):
            sess.run(None, {"A": a})
        times: list[float] = []
        start = time.perf_counter()
        while len(times) < min_runs or time.perf_counter() - start < min_seconds:
            t0 = time.perf_counter()
            sess.run(None, {"A": a})
            times.append(time.perf_counter() - t0)
        out[kernel] = {
            "kernel": kernel,
            "runs": len(times),
            "best_ms": round(min(times) * 1e3, 3),
            "median_ms": round(statistics.median(times) * 1e3, 3),
            "peak_gflops": round(flops / min(times) / 1e9, 2),
            "median_gflops": round(flops / statistics.median(times) / 1e9, 2),
        }
    out["int8"] = max((out["u8s8"], out["u8u8"]), key=lambda k: k["peak_gflops"])
    return out


def int8_kernel(model_path: str | Path) -> str | None:
    """'u8s8' or 'u8u8': the weight type of a dynamically quantized model's integer MatMuls (None: none).

    8-bit MatMulNBits at accuracy level 4 (signed 8-bit weights, int8 activations on the same VNNI
    dot-product instructions) count as u8s8.
    """
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    types = {init.name: init.data_type for init in graph.initializer}
    integer_ops = ("MatMulInteger", "DynamicQuantizeMatMul", "MatMulIntegerToFloat")
    found = [types.get(n.input[1]) for n in graph.node if n.op_type in integer_ops and len(n.input) > 1]
    nbits = [{a.name: onnx.helper.get_attribute_value(a) for a in n.attribute} for n in graph.node
             if n.op_type == "MatMulNBits"]
    found = [t for t in found if t is not None] + [
        onnx.TensorProto.INT8 for a in nbits if a.get("bits") == 8 and a.get("accuracy_level") == 4]
    if not found:
        return None
    return "u8s8" if found.count(onnx.TensorProto.INT8) >= found.count(onnx.TensorProto.UINT8) else "u8u8"


def encoder_flops(tokens: int, layers: int, hidden: int, intermediate: int, n_labels: int) -> int:
    """FLOPs of one sentence of `tokens` tokens through a BERT/XLM-R encoder and classification head.

    Per layer: Q, K, V and output projections 4·(2·T·H²), the FFN 2·(2·T·H·I), attention scores and
    the weighted sum 2·(2·T²·H). Head on the first token: a H x H dense layer and H x labels.
    Embedding lookups, LayerNorm, softmax and GELU are left out (not matrix multiplies).
    """
    t, h = tokens, hidden
    per_layer = 8 * t * h * h + 4 * t * h * intermediate + 4 * t * t * h
    return layers * per_layer + 2 * h * h + 2 * h * n_labels
