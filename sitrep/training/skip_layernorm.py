"""Take ONNX Runtime's fused `SkipLayerNormalization` apart again in the CPU graph: Add(s) + `LayerNormalization`.

The transformer optimizer fuses each residual add and its LayerNorm into one `com.microsoft.SkipLayerNormalization`
node (its bias input being the preceding dense layer's bias). On ONNX Runtime 1.31's CPU provider that fused
kernel is several times slower than the ops it replaces: on the default model at batch 1, `sitrep bench ops` puts
its 24 kernels at 0.68 ms a call against 0.16 ms for the 24 `LayerNormalization`s plus about 0.15 for the extra
`Add`s (sitrep/bench/results/bench-ops-default-b11{,-unfusedln}-b1.md). So the CPU graph is rewritten as

    SkipLayerNormalization(x, skip, gamma, beta, bias)  ->  LayerNormalization(Add(Add(x, bias), skip), gamma, beta)

which is the same function (the fused op's definition). ONNX Runtime's own `SkipLayerNormFusion` would fuse some
of them back when a session loads, so the CPU sessions turn it off (`models.runtime.cpu_session`; a test checks the
graph the session runs). The CUDA graph keeps the fused op. `sitrep bench int8 --layernorm fused,unfused` measures
both side by side (sitrep/models/README.md, "Request latency and batching").
"""

from __future__ import annotations

from typing import Any


def unfuse_skip_layernorm(model: Any) -> int:
    """Rewrite every SkipLayerNormalization node of the `onnx.ModelProto` in place as above; how many there were.

    The node's optional outputs map onto the rewrite: mean and inverse standard deviation are
    LayerNormalization's own second and third outputs, and the pre-normalization sum is the skip Add's output.
    """
    from onnx import helper

    graph = model.graph
    if any(n.op_type == "SkipLayerNormalization" for n in graph.node) and not any(
            o.domain in ("", "ai.onnx") and o.version >= 17 for o in model.opset_import):
        raise ValueError("LayerNormalization needs ONNX opset 17 or later; the graph imports an older one")
    nodes, count = [], 0
    for node in graph.node:
        if node.op_type != "SkipLayerNormalization" or node.domain != "com.microsoft":
            nodes.append(node)
            continue
        count += 1
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        x, skip, gamma = node.input[:3]
        beta = node.input[3] if len(node.input) > 3 else ""
        bias = node.input[4] if len(node.input) > 4 else ""
        outputs = list(node.output) + [""] * (4 - len(node.output))
        p = node.name or outputs[0]
        summed = outputs[3] or f"{p}/sum"
        if bias:
            nodes.append(helper.make_node("Add", [x, bias], [f"{p}/biased"], name=f"{p}/bias"))
            x = f"{p}/biased"
        nodes.append(helper.make_node("Add", [x, skip], [summed], name=f"{p}/skip"))
        ln_outputs = outputs[:3]
        while ln_outputs and not ln_outputs[-1]:
            ln_outputs.pop()
        nodes.append(helper.make_node("LayerNormalization", [summed, gamma] + ([beta] if beta else []), ln_outputs,
                                      name=f"{p}/layernorm", axis=-1, epsilon=attrs.get("epsilon", 1e-12)))
    del graph.node[:]
    graph.node.extend(nodes)
    return count
