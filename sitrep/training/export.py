"""`sitrep export BUNDLE`: ONNX fp32, int8 for CPU, fp16 for CUDA, each checked against torch fp32.

int8: the fp32 graph goes through ONNX Runtime's transformer optimizer (attention / LayerNorm / GELU
fusion; for CPU the residual LayerNorms are unfused again: sitrep/training/skip_layernorm.py), then
dynamic quantization (or MatMulNBits, per-token int8), with the few massive-activation input channels of the FFN
and QKV MatMuls smoothed into the weights (sitrep/training/smooth_quant.py) or split off into fp32
(sitrep/training/outlier_split.py). Multilingual MiniLM-style encoders are known to
collapse under naive dynamic quantization (onnxruntime issue #9599), so export tries a ladder of settings,
from naive to conservative, scores each on dev against the torch model, records every attempt in
the parity report, and keeps the first that passes the gate (its label agreement holds on each dev
file on its own, the article dev split as well as the sentence dev, not only on their union, and in two
batchings of the dev sentences, since dynamic int8 decisions depend on a sentence's batch-mates). Each
recipe is gated as its file would ship: with the word-embedding table stored compactly (per-row int8,
then fp16: sitrep/training/embeddings.py; the first that passes), else with the table fp32. On the
passing recipe the MatMul weights it left fp32 are then stored as fp16 in the
file (sitrep/training/fp16_weights.py; they still run in fp32), kept if that passes the gate too. A uint8
recipe whose file stays above the size budget (`Gates.int8_size_budget_mib`, 150 MiB) sends export on to
the ladder's last rung, fp32 compute in a compact file, kept if it passes and is smaller; a u8s8 recipe that
passes only with the fp16 table (above the budget) sends it on to the later u8s8 rungs, whose int8-row table
may pass (the twelfth-batch default: 205.8 MiB on the FFN-split rung, the FFN-and-QKV-split one within budget).
Before all of it, export writes the tokenizer as a SentencePiece model for the runtime
(sitrep/training/sentencepiece_model.py: a quarter of the memory of tokenizer.json's reader), kept if it
gives the same ids on the parity sentences.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sitrep.models.bundle import ONNX_FILES, Bundle, load_bundle, write_bundle_manifest
from sitrep.models.calibration import decisions
from sitrep.models.corpus import label_matrix, read_many, read_with_sources
from sitrep.models.cpu import cpu_name, has_vnni
from sitrep.models.encoding import TextEncoder
from sitrep.models.runtime import RuntimeUnavailable, load
from sitrep.models.scores import macro_f1
from sitrep.training import sentencepiece_model
from sitrep.training.embeddings import compact_embeddings
from sitrep.training.fp16_weights import store_fp16
from sitrep.training.outlier_split import fp32_node, quantization_error, split_outliers
from sitrep.training.skip_layernorm import unfuse_skip_layernorm
from sitrep.training.smooth_quant import smooth_inputs
from sitrep.training.unfuse_attention import fused_attention_nodes, unfuse_attention

OPSET = 17
PARITY_REPORT = "reports/parity.json"
PARITY_KEYS = ("max_abs_prob_diff", "label_agreement", "macro_f1", "macro_f1_delta")
# Word-embedding storage tried on the recipe that passes, most compact first (sitrep/training/embeddings.py).
WORD_EMBEDDINGS = ("int8-row", "fp16")
# Storage of the MatMul weights a recipe keeps fp32 (sitrep/training/fp16_weights.py). Plain fp16 is not
# tried by default: its rounding flipped too many decisions of the uint8 model on the default recipe.
FP32_WEIGHTS = ("fp16+int8-residual",)


class ExportError(RuntimeError):
    """Export failed a parity gate (the report says which and by how much)."""


@dataclass
class Gates:
    fp32_max_abs_prob: float = 1e-3
    int8_min_agreement: float = 0.99
    int8_max_f1_drop: float = 0.005  # 0.5 point of macro-F1
    tokenizer_min_identical: float = 0.999  # SentencePiece vs tokenizer.json: sentences with identical ids
    # Not a gate but a preference: a passing uint8 recipe whose file ends above this (MiB; inf: no budget)
    # sends export to the rung without int8 MatMuls, a passing u8s8 one to the later u8s8 rungs; either is
    # kept if none of those passes with a smaller file.
    int8_size_budget_mib: float = 150.0


@dataclass
class QuantRecipe:
    """One dynamic-quantization setting tried for the int8 model."""

    name: str
    per_channel: bool
    weight_type: str = "uint8"  # uint8 weights use ORT's u8u8 kernels, which do not saturate on AVX2
    optimize: bool = True
    exclude_sensitive: int = 0  # keep this many of the most sensitive FFN MatMuls in fp32 (-1: all)
    attention_output_fp32: bool = False  # keep the attention output projections fp32 too (QAttention stays int8)
    # Leave the fused attention (its QKV projection) fp32: its input is the LayerNorm output that carries the
    # same massive-activation channels the outlier split removes from the FFN inputs.
    attention_fp32: bool = False
    # Rewrite the fused attention as a QKV MatMul + MultiHeadAttention (sitrep/training/unfuse_attention.py)
    # and split (`outlier_threshold`) or smooth (`smooth_alpha`) that MatMul's outlier input channels too: its input
    # carries them.
    qkv_split: bool = False
    # ONNX Runtime's MatMulNBits with 8-bit weights in blocks of this many input channels and accuracy level 4:
    # each token's activations are quantized to int8 per block as well, so a massive-activation channel
    # spoils one block of one token, not the whole batch's scale (and a sentence's result no longer depends
    # on its batch-mates). Every MatMul of the unfused-attention graph, QKV included; None: dynamic quantization.
    block_int8: int | None = None
    # Split the FFN MatMuls' input channels whose calibration |max| exceeds this off into thin fp32
    # MatMuls (sitrep/training/outlier_split.py); None: no split.
    outlier_threshold: float | None = None
    # SmoothQuant instead of the split (sitrep/training/smooth_quant.py): the FFN MatMuls' inputs (and the QKV
    # MatMuls' with `qkv_split`) divided per channel by s = max|x|^alpha / max|W|^(1 - alpha), their weight rows
    # multiplied by it; one Mul per input, no fp32 MatMul. None: no smoothing.
    smooth_alpha: float | None = None
    # With `smooth_alpha` (and no `qkv_split`): the fused attention's input smoothed too, its QKV weight rows scaled;
    # the attention stays one op, QAttention once quantized.
    smooth_attention: bool = False
    vnni_only: bool = False  # tried only on CPUs with VNNI, where int8 weights cannot saturate (sitrep/models/cpu.py)
    embeddings: bool = False  # quantize the embedding table too (EmbedLayerNormalization); `sitrep bench int8`
    quantize: bool = True  # False: no int8 MatMul at all, the optimized fp32 graph (only its storage is compacted)
    # Tried when the first uint8 recipe that passes keeps its word-embedding table fp32 (no compact storage
    # passed the gate on top of its int8 noise) or ends above `Gates.int8_size_budget_mib`: such a recipe
    # runs most of its MatMuls in fp32 anyway, so a compact fp32-compute file costs little speed, and
    # without int8 noise its compact storages pass or fail on their own error, not by chance; and, the last
    # rung, when no int8 recipe passed at all.
    storage_fallback: bool = False


# From naive to conservative; the first recipe that passes the gate is kept. On multilingual-e5-small
# the naive setting collapses (issue #9599). The FFN MatMuls' inputs carry a few channels of "massive
# activations" (far above all other channels) that ruin per-tensor dynamic activation scales. On a CPU
# with VNNI, splitting those channels off into fp32 keeps every MatMul int8 with u8s8 kernels (the
# fastest). The fused attention's QKV projection reads a LayerNorm output with the same channels, and
# inside QAttention they cannot be split: the eighth-and-ninth-batch default failed the full split (89.1%
# of the 128 dev sentences nearest a threshold). Next, the attention rewritten as a QKV MatMul plus
# MultiHeadAttention, that MatMul's outliers split as well: every MatMul int8 again (that default: 99.43%
# of dev in its own order, where the ladder used to fall to fp32 compute), then the channels above 3 split
# (more channels in fp32, the same ops). If that fails, the fused attention's QKV projection left fp32:
# three quarters of the FLOPs stay on u8s8 kernels. These u8s8 rungs are the fastest but pass or fail by a
# hair: one activation scale per call leaves the dev sentences nearest a threshold at the mercy of their
# batch-mates (the gate scores two batchings, `gate_compare`; the tenth-batch default fails every u8s8 rung,
# the |x| > 3 one by 98.87% on article dev in the data's own order). Before the split rungs, SmoothQuant on the
# same MatMuls (sitrep/training/smooth_quant.py): the outlier channels scaled down into the weights, one Mul per
# input instead of the split's four ops and thin fp32 MatMul per MatMul: 1.14x as fast at batch 1 and 1.10x at batch
# 32 (the twelfth-batch default: alpha 0.8 passes, 0.7 and 0.5 fail; `sitrep bench int8 --smooth`). Smoothing needs no
# unfused attention, so it is tried first with the attention left fused: the fused Attention's input smoothed like a
# MatMul's, one QAttention op where the unfused form runs a QKV MatMul, a Split and MultiHeadAttention: 1.03-1.05x as
# fast at batch 1 and at batch 32 (that default: alpha 0.85 passes, 99.50%; 0.8 fails on article dev, 98.87%;
# `sitrep bench int8 --smooth 0.8,0.85 --smooth-attention unfused,fused`). Then MatMulNBits, whose
# activations are quantized per token and per block of input channels, so no batching changes a decision: about a fifth
# slower than the u8s8 files at these sizes, but it passes with margin where they fail (that default: 99.43%
# in blocks of 64; `sitrep bench int8 --blockwise 64,16` compares them). Elsewhere (or if that fails)
# uint8 weights: every MatMul int8, then the same with the inputs smoothed as above (u8u8 kernels cannot saturate,
# so a gate measured on any CPU holds on a CPU without VNNI: the twelfth-batch default agrees on 99.50% of dev with
# it, `sitrep bench int8 --weights uint8 --smooth 0.8 --qkv`), then the FFN MatMuls that hurt most stay fp32; last,
# the attention output projections too
# (only the fused QKV projection stays int8): the 200-step contrastive default's int8 model agreed with
# torch on 98.93% of dev with every FFN MatMul fp32 and on 99.43% with this rung (2026-12-05). Last, no
# int8 MatMul at all: the fused fp32 graph with the compact word-embedding table and fp16-stored weights.
# With the gate held on each dev file, export ends on this rung for the evening's default on a CPU without
# VNNI: "all FFN MatMuls in fp32" agreed on 99.07% of the two dev files together, but its macro-F1 on the
# article dev split was 1.2 points lower than fp32's.
LADDER = [
    QuantRecipe("naive: per-tensor int8, unoptimized graph", per_channel=False, weight_type="int8", optimize=False),
    QuantRecipe("optimized graph, per-channel int8 (u8s8)", per_channel=True, weight_type="int8", vnni_only=True),
    QuantRecipe("u8s8, FFN and attention inputs smoothed (SmoothQuant, alpha 0.85), attention fused (QAttention)",
                per_channel=True, weight_type="int8", smooth_alpha=0.85, smooth_attention=True, vnni_only=True),
    QuantRecipe("u8s8, FFN and QKV inputs smoothed (SmoothQuant, alpha 0.8), attention as MultiHeadAttention",
                per_channel=True, weight_type="int8", smooth_alpha=0.8, qkv_split=True, vnni_only=True),
    QuantRecipe("optimized graph, per-channel int8 (u8s8), FFN outlier channels (|x| > 4) in fp32",
                per_channel=True, weight_type="int8", outlier_threshold=4.0, vnni_only=True),
    QuantRecipe("u8s8, FFN and QKV outlier channels (|x| > 4) in fp32, attention as MultiHeadAttention",
                per_channel=True, weight_type="int8", outlier_threshold=4.0, qkv_split=True, vnni_only=True),
    QuantRecipe("u8s8, FFN and QKV outlier channels (|x| > 3) in fp32, attention as MultiHeadAttention",
                per_channel=True, weight_type="int8", outlier_threshold=3.0, qkv_split=True, vnni_only=True),
    QuantRecipe("u8s8, FFN outlier channels (|x| > 4) in fp32, attention (QKV) fp32", per_channel=True,
                weight_type="int8", outlier_threshold=4.0, attention_fp32=True, vnni_only=True),
    QuantRecipe("MatMulNBits: 8-bit weights in blocks of 64, int8 activations per token and block, attention as "
                "MultiHeadAttention", per_channel=True, weight_type="int8", block_int8=64, vnni_only=True),
    QuantRecipe("MatMulNBits, blocks of 16", per_channel=True, weight_type="int8", block_int8=16, vnni_only=True),
    QuantRecipe("optimized graph, per-channel uint8", per_channel=True),
    QuantRecipe("uint8 (u8u8), FFN and QKV inputs smoothed (SmoothQuant, alpha 0.8), attention as MultiHeadAttention",
                per_channel=True, smooth_alpha=0.8, qkv_split=True),
    QuantRecipe("+ 2 most sensitive FFN MatMuls in fp32", per_channel=True, exclude_sensitive=2),
    QuantRecipe("+ 4 most sensitive FFN MatMuls in fp32", per_channel=True, exclude_sensitive=4),
    QuantRecipe("+ 8 most sensitive FFN MatMuls in fp32", per_channel=True, exclude_sensitive=8),
    QuantRecipe("all FFN MatMuls in fp32", per_channel=True, exclude_sensitive=-1),
    QuantRecipe("all FFN and attention-output MatMuls in fp32", per_channel=True, exclude_sensitive=-1,
                attention_output_fp32=True),
    QuantRecipe("no int8 MatMul (every MatMul fp32; only the storage is compact)", per_channel=True,
                quantize=False, storage_fallback=True),
]


def is_u8s8(recipe: QuantRecipe) -> bool:
    """A dynamic int8-weight recipe on u8s8 kernels (not MatMulNBits, whose per-block activations are slower)."""
    return recipe.quantize and recipe.weight_type == "int8" and recipe.per_channel and not recipe.block_int8


def ladder(vnni: bool | None = None, portable: bool = False) -> list[QuantRecipe]:
    """The recipes export tries on this CPU: int8-weight ones only with VNNI, none at all when `portable`."""
    vnni = has_vnni() if vnni is None else vnni
    return [r for r in LADDER if (vnni or not r.vnni_only) and not (portable and r.weight_type == "int8")]


@dataclass
class Parity:
    runtime: str
    max_abs_prob_diff: float | None
    label_agreement: float | None  # fraction of sentences whose whole label set equals torch's
    macro_f1: float | None
    macro_f1_delta: float | None  # runtime minus torch; None where not measured
    passed: bool | None
    note: str = ""
    recipe: str | None = None
    attempts: list[dict[str, Any]] = field(default_factory=list)


def _export_fp32(bundle: Bundle, path: Path) -> None:
    import torch

    from sitrep.models.torch_model import load_classifier

    # Eager attention exports the classic BERT attention pattern, which ONNX Runtime's transformer
    # optimizer fuses into one Attention op (the SDPA export is left unfused).
    model = load_classifier(bundle.hf_dir, attn_implementation="eager").eval()

    class Logits(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            return self.model(input_ids=input_ids, attention_mask=attention_mask).logits

    ids = torch.ones((2, 16), dtype=torch.long)
    mask = torch.ones((2, 16), dtype=torch.long)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        Logits(),
        (ids, mask),
        str(path),
        input_names=["input_ids", "attention_mask"],
        output_names=["logits"],
        dynamic_axes={"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"},
                      "logits": {0: "batch"}},
        opset_version=OPSET,
        dynamo=False,
    )


def _model_shape(bundle: Bundle) -> tuple[int, int, int]:
    config = json.loads((bundle.hf_dir / "config.json").read_text())
    return config["num_attention_heads"], config["hidden_size"], config["num_hidden_layers"]


def optimize_graph(
    bundle: Bundle, src: Path, dst: Path, fp16: bool = False, skip_layernorm_fused: bool = False
) -> None:
    """ONNX Runtime's transformer optimizer on `src`, written to `dst` (`fp16`: converted for the CUDA runtime).

    The CPU graph gets its SkipLayerNormalization nodes unfused (on the CPU provider Add + LayerNormalization run
    several times faster, sitrep/training/skip_layernorm.py); the fp16 graph, or `skip_layernorm_fused`, keeps them.
    """
    from onnxruntime.transformers.optimizer import optimize_model

    heads, hidden, _ = _model_shape(bundle)
    opt = optimize_model(str(src), model_type="bert", num_heads=heads, hidden_size=hidden, opt_level=1,
                         use_gpu=False)
    if not (fp16 or skip_layernorm_fused):
        unfuse_skip_layernorm(opt.model)
    if fp16:
        opt.convert_float_to_float16(keep_io_types=True)
    opt.save_model_to_file(str(dst))


def ffn_matmuls(model_path: Path) -> tuple[list[str], list[str]]:
    """(FFN-input, FFN-output) MatMul names of an optimized graph: into and out of the GELU, graph order."""
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    weights = {init.name for init in graph.initializer}
    producers = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    gelu = ("Gelu", "FastGelu", "BiasGelu")
    into, out = [], []
    for node in graph.node:
        if node.op_type != "MatMul" or node.input[1] not in weights:
            continue
        src = producers.get(node.input[0])
        feeds_gelu = any(c.op_type in gelu or (c.op_type == "Add" and any(
            cc.op_type in gelu for cc in consumers.get(c.output[0], []))) for c in consumers.get(node.output[0], []))
        if src is not None and src.op_type in gelu:
            out.append(node.name)
        elif feeds_gelu:
            into.append(node.name)
    return into, out


def attention_output_matmuls(model_path: Path) -> list[str]:
    """Names of an optimized graph's attention output projections: the MatMuls fed by a fused Attention op."""
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    producers = {out: node for node in graph.node for out in node.output}
    return [node.name for node in graph.node if node.op_type == "MatMul" and node.input[0] in producers
            and producers[node.input[0]].op_type == "Attention"]


def quantize(src: Path, dst: Path, recipe: QuantRecipe, exclude: list[str]) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    if recipe.block_int8:
        from onnxruntime.quantization.matmul_nbits_quantizer import (
            DefaultWeightOnlyQuantConfig,
            MatMulNBitsQuantizer,
        )

        settings = {"bits": 8, "block_size": recipe.block_int8, "is_symmetric": True, "accuracy_level": 4}
        quantizer = MatMulNBitsQuantizer(
            onnx.load(str(src)), nodes_to_exclude=exclude, **settings,
            algo_config=DefaultWeightOnlyQuantConfig(**settings, op_types_to_quantize=("MatMul",)))
        quantizer.process()
        quantizer.model.save_model_to_file(str(dst), use_external_data_format=False)
        return
    quantize_dynamic(
        str(src),
        str(dst),
        weight_type=QuantType.QUInt8 if recipe.weight_type == "uint8" else QuantType.QInt8,
        per_channel=recipe.per_channel,
        op_types_to_quantize=(["MatMul"] + ([] if recipe.attention_fp32 or recipe.qkv_split else ["Attention"])
                              + (["EmbedLayerNormalization"] if recipe.embeddings else []) if recipe.optimize else None),
        nodes_to_exclude=exclude,
        extra_options={"MatMulConstBOnly": True, "DefaultTensorType": onnx.TensorProto.FLOAT},
    )


def candidate_classifier(bundle: Bundle, path: Path) -> Any:
    """A classifier over an ONNX file that is not (yet) part of the bundle, via the runtime."""
    from sitrep.models.runtime import Classifier, OnnxBackend

    return Classifier(bundle, "onnx-int8", OnnxBackend(path, "onnx-int8", None))


def probs_with(bundle: Bundle, path: Path, texts: list[str]) -> np.ndarray:
    """Calibrated probabilities of an ONNX file that is not (yet) part of the bundle."""
    return candidate_classifier(bundle, path).classify(texts).probs


def gate_compare(
    bundle: Bundle, path: Path, texts: list[str], ref: np.ndarray, y: np.ndarray, gates: Gates, chunk: int = 128,
    groups: list[str] | None = None, contexts: list[str] | None = None,
) -> tuple[dict[str, Any], bool]:
    """Score an int8 candidate against torch on `texts`, chunk by chunk; (comparison, passed).

    `contexts`: each text's previous sentence in its article, for a bundle trained with document context (the
    inputs `ref` was computed on).

    `groups`: each sentence's dev file. The agreement gate then holds on every file on its own as well as
    on the whole (`passes`): the article dev split is where the model is used, and the sentence dev's
    easier sentences must not hide a loss there. Stops as soon as more sentences of one file disagree than the
    agreement gate allows on it: the candidate has failed whatever the rest would show, and scoring it
    to the end only costs time (on a CPU without VNNI most of the ladder fails). Sentences are scored
    nearest-a-threshold first (`hardest_first`), where a candidate's decisions flip first, so a failing
    one stops early; the comparison then covers the sentences scored (`scored` < `n`). A candidate scored
    to the end is compared on the whole set.

    A candidate that passes is scored once more in the data's own order, batched as `sitrep eval` and the
    service batch it (`in_order`): with dynamic int8 a sentence's activation scale is its batch's, so its
    decisions depend on its batch-mates, and a pass must not hinge on one batching. It passes only if both
    do; the figures reported are the batching with the lower agreement.
    """
    clf = candidate_classifier(bundle, path)
    names = np.asarray(groups if groups is not None else [""] * len(texts))
    allowed = {g: (1.0 - gates.int8_min_agreement) * int(np.sum(names == g)) for g in dict.fromkeys(names)}
    order = hardest_first(ref, bundle.thresholds)
    o_texts, o_ref, o_y, o_names = [texts[i] for i in order], ref[order], y[order], names[order]
    o_contexts = None if contexts is None else [contexts[i] for i in order]
    parts: list[np.ndarray] = []
    done = 0
    disagree = dict.fromkeys(allowed, 0)
    while done < len(o_texts):
        probs = clf.classify(o_texts[done : done + chunk],
                             contexts=None if o_contexts is None else o_contexts[done : done + chunk]).probs
        flips = np.any(decisions(probs, bundle.thresholds) != decisions(o_ref[done : done + len(probs)],
                                                                       bundle.thresholds), axis=1)
        for g in o_names[done : done + len(probs)][flips]:
            disagree[g] += 1
        parts.append(probs)
        done += len(probs)
        if any(disagree[g] > allowed[g] for g in allowed):
            break
    cmp = {**gate_figures(o_ref[:done], np.concatenate(parts), o_y[:done], bundle.thresholds,
                          list(o_names[:done]) if groups is not None else None),
           "scored": done, "n": len(texts)}
    ok = done == len(texts) and passes(cmp, gates)
    if not ok:
        return cmp, False
    in_order = {**gate_figures(ref, clf.classify(texts, contexts=contexts).probs, y, bundle.thresholds, groups),
                "scored": len(texts), "n": len(texts)}
    both = {"hardest_first": cmp["label_agreement"], "in_order": in_order["label_agreement"]}
    worse = in_order if in_order["label_agreement"] < cmp["label_agreement"] else cmp
    return {**worse, "agreement_by_batching": both}, passes(in_order, gates)


def gate_figures(
    ref: np.ndarray, probs: np.ndarray, y: np.ndarray, thresholds: list[float], groups: list[str] | None = None,
) -> dict[str, Any]:
    """`compare` on the whole set, plus `per_file` (the same figures on each file) when `groups` names several."""
    cmp: dict[str, Any] = compare(ref, probs, y, thresholds)
    names = np.asarray(groups) if groups is not None else None
    if names is not None and len(set(names)) > 1:
        cmp["per_file"] = {g: compare(ref[names == g], probs[names == g], y[names == g], thresholds)
                           for g in dict.fromkeys(names)}
    return cmp


def passes(cmp: dict[str, Any], gates: Gates) -> bool:
    """The int8 gate: label agreement on the whole set and on each of its files, macro-F1 drop on the whole.

    Agreement counts sentences, so it holds on a file of any size; macro-F1 on one file of a few hundred
    sentences moves by most of a point when one decision on a rare label flips (2 flips of 799 article
    dev sentences moved it by 0.8 point), so its drop is gated on the whole set only.
    """
    return (-cmp["macro_f1_delta"] <= gates.int8_max_f1_drop and cmp["label_agreement"] >= gates.int8_min_agreement
            and not files_below_agreement(cmp, gates))


def files_below_agreement(cmp: dict[str, Any], gates: Gates) -> list[str]:
    """The files (of a comparison with `per_file` figures) whose own label agreement fails the gate."""
    return [f for f, c in cmp.get("per_file", {}).items() if c["label_agreement"] < gates.int8_min_agreement]


def per_file_note(cmp: dict[str, Any]) -> str:
    """" (file: agreement, ΔF1; …)" for a comparison with per-file figures (and, after a pass, the agreement
    in each batching), "" otherwise."""
    per_file = cmp.get("per_file", {})
    note = (" (" + "; ".join(f"{Path(g).parent.name}/{Path(g).name}: {c['label_agreement']:.4f}, {c['macro_f1_delta']:+.4f}"
                             for g, c in per_file.items()) + ")") if per_file else ""
    both = cmp.get("agreement_by_batching")
    return note + (f" [hardest-first {both['hardest_first']:.4f}, in order {both['in_order']:.4f}]" if both else "")


def hardest_first(ref: np.ndarray, thresholds: list[float] | np.ndarray) -> np.ndarray:
    """Sentence indices by how close the reference's nearest label probability is to its threshold."""
    margin = np.min(np.abs(np.asarray(ref) - np.asarray(thresholds, dtype=np.float64)[None, :]), axis=1)
    return np.argsort(margin, kind="stable")


def calibration_texts(bundle: Bundle, fallback: list[str], n: int = 256) -> list[str]:
    """`n` sentences spread over the bundle's training files (the parity texts if they are not there)."""
    train = bundle.manifest.training.get("config", {}).get("train_file", [])
    files = [f for f in ([train] if isinstance(train, str) else train) if Path(f).is_file()]
    pool = [e.text for e in read_many(files)] if files else fallback
    return pool[:: max(1, len(pool) // n)][:n]


class OutlierSplits:
    """The optimized graph with its outlier channels split off or smoothed into the weights, built once per setting;
    and the graph with its attention unfused (sitrep/training/unfuse_attention.py), built once."""

    def __init__(self, bundle: Bundle, opt: Path, work: Path, fallback_texts: list[str]) -> None:
        self.bundle, self.opt, self.work = bundle, opt, work
        self.ffn = [name for group in ffn_matmuls(opt) for name in group]
        self.calib = calibration_texts(bundle, fallback_texts)
        self._built: dict[tuple[str, float, bool], tuple[Path, Any]] = {}  # (kind, setting, qkv) -> (graph, report)
        self._unfused: tuple[Path, list[str]] | None = None
        self._attention: list[str] | None = None

    def unfused(self) -> tuple[Path, list[str]]:
        """(the optimized graph with each fused Attention as QKV MatMul + MultiHeadAttention, the QKV MatMuls).

        A graph the optimizer left without a fused Attention (another encoder) is returned as it is, with no
        QKV MatMuls named: its attention projections are plain MatMuls already, and the rungs that ask for
        the QKV split then split the FFN MatMuls only.
        """
        if self._unfused is None:
            path = self.work / "model.unfused.onnx"
            try:
                self._unfused = (path, unfuse_attention(self.opt, path))
            except ValueError:
                self._unfused = (self.opt, [])
        return self._unfused

    def attention(self) -> list[str]:
        """The optimized graph's fused Attention nodes (empty for an encoder the optimizer left unfused), read once."""
        if self._attention is None:
            self._attention = fused_attention_nodes(self.opt)
        return self._attention

    def get(self, threshold: float, qkv: bool = False) -> tuple[Path, dict[str, list[int]], list[str]]:
        """(split graph, {MatMul: outlier channels}, the thin fp32 MatMuls to keep out of quantization).

        `qkv`: the unfused graph, its QKV MatMuls split with the FFN ones.
        """
        path, split = self._rewrite("split", threshold, qkv, split_outliers)
        return path, split, [fp32_node(name) for name in split]

    def smoothed(
        self, alpha: float, qkv: bool = False, attention: bool = False
    ) -> tuple[Path, dict[str, tuple[float, float]]]:
        """(smoothed graph, {MatMul or Attention: largest input channel |max| before and after}).

        `qkv`: the unfused graph, its QKV MatMuls smoothed with the FFN ones. `attention`: the optimized graph, its
        fused Attention nodes' inputs smoothed with the FFN ones (their QKV weights scaled; QAttention once
        quantized).
        """
        if qkv and attention:
            raise ValueError("smooth either the unfused QKV MatMuls (qkv) or the fused Attention nodes, not both")
        return self._rewrite("smooth-attention" if attention else "smooth", alpha, qkv, smooth_inputs)

    def _rewrite(self, kind: str, setting: float, qkv: bool, rewrite: Any) -> tuple[Path, Any]:
        """The graph rewritten by `rewrite(src, dst, nodes, encoder, calibration texts, setting)` on the FFN
        MatMuls (and the QKV ones of the unfused graph with `qkv`, or the fused Attention nodes for the
        "smooth-attention" kind), built once per (kind, setting, qkv)."""
        if (kind, setting, qkv) not in self._built:
            path = self.work / f"model.{kind}{setting:g}{'-qkv' if qkv else ''}.onnx"
            src, matmuls = self.opt, list(self.ffn) + (self.attention() if kind == "smooth-attention" else [])
            if qkv:
                src, names = self.unfused()
                matmuls += names
            encoder = TextEncoder.for_bundle(self.bundle)
            self._built[kind, setting, qkv] = (path, rewrite(src, path, matmuls, encoder, self.calib, setting))
        return self._built[kind, setting, qkv]


def compare(ref_probs: np.ndarray, probs: np.ndarray, y: np.ndarray, thresholds: list[float]) -> dict[str, float]:
    ref_pred, pred = decisions(ref_probs, thresholds), decisions(probs, thresholds)
    f_ref, _ = macro_f1(y, ref_pred)
    f, _ = macro_f1(y, pred)
    return {
        "max_abs_prob_diff": float(np.max(np.abs(ref_probs - probs))) if len(probs) else 0.0,
        "label_agreement": float(np.mean(np.all(ref_pred == pred, axis=1))) if len(probs) else 1.0,
        "macro_f1": round(f, 4),
        "macro_f1_delta": round(f - f_ref, 4),
    }


def _sentencepiece(bundle: Bundle, texts: list[str], gates: Gates, log: Any) -> dict[str, Any]:
    """Write the runtime's SentencePiece tokenizer into the bundle if it matches tokenizer.json on `texts`."""
    from sitrep.models.bundle import SPM_FILE

    dst = bundle.path / SPM_FILE
    try:
        info = sentencepiece_model.write_spm(bundle.tokenizer_file, dst)
    except ValueError as exc:  # another tokenizer family: the runtime keeps tokenizer.json
        log(f"[0/4] tokenizer: no SentencePiece model ({exc})")
        return {"kept": False, "note": str(exc)}
    cmp = sentencepiece_model.compare(bundle.tokenizer_file, dst, bundle.max_length, texts)
    kept = cmp["identical_fraction"] >= gates.tokenizer_min_identical
    if not kept:
        dst.unlink()
    log(f"[0/4] tokenizer: SentencePiece model ({info['pieces']} pieces, {info['bytes'] / 2**20:.1f} MB), identical "
        f"ids on {cmp['identical']} of {cmp['n']} sentences -> {'kept' if kept else 'not kept: tokenizer.json'}")
    return {"kept": kept, "file": SPM_FILE if kept else None, **info, **cmp}


def _first_compact(
    what: str, key: str, modes: tuple[str, ...], write: Any, candidate: Path, cmp: dict[str, Any], work: Path,
    bundle: Bundle, gate_args: dict[str, Any], log: Any,
) -> tuple[str, dict[str, Any], Path, list[dict[str, Any]]]:
    """Try `write(candidate, dst, mode)` for each mode in order, gate each; keep the first that passes.

    Returns (mode kept or "fp32", its gate figures, its file, the attempts). A ValueError from `write`
    (nothing of that kind in this graph) ends the tries.
    """
    attempts: list[dict[str, Any]] = []
    for mode in modes:
        dst = work / f"candidate.{key}-{mode}.onnx"
        try:
            info = write(candidate, dst, mode)
        except ValueError as exc:
            log(f"      + {what} {mode}: skipped ({exc})")
            attempts.append({key: mode, "skipped": str(exc), "passed": False})
            break
        cmp_m, ok = gate_compare(bundle, dst, **gate_args)
        attempts.append({key: mode, **cmp_m, "passed": ok, "size_mb": round(dst.stat().st_size / 2**20, 1),
                         "stored_mb": round(float(info["bytes_after"]) / 2**20, 1)})
        log(f"      + {what} {mode}: agreement {cmp_m['label_agreement']:.4f}, max|Δp| {cmp_m['max_abs_prob_diff']:.4f}, "
            f"ΔF1 {cmp_m['macro_f1_delta']:+.4f}{per_file_note(cmp_m)}, {attempts[-1]['size_mb']} MB -> "
            f"{'pass' if ok else 'fail'}")
        if ok:
            return mode, cmp_m, dst, attempts
    return "fp32", cmp, candidate, attempts


def _register(bundle: Bundle) -> Bundle:
    """Rehash the bundle's files into its manifest (new ONNX files become part of it)."""
    return write_bundle_manifest(bundle.path, bundle.manifest)


def export(
    bundle_path: str | Path,
    data: str | Path | None = None,
    gates: Gates | None = None,
    limit: int | None = None,
    log: Any = print,
    portable: bool = False,
    word_embeddings: tuple[str, ...] = WORD_EMBEDDINGS,
    fp32_weights: tuple[str, ...] = FP32_WEIGHTS,
    sentencepiece: bool = True,
) -> dict[str, Any]:
    """Export all three ONNX files into the bundle and write the parity report. Raises ExportError.

    `portable`: only recipes with uint8 weights, safe on CPUs without VNNI (sitrep/models/cpu.py), even on one with.
    `word_embeddings`: compact storages of the word-embedding table to try, in order, on the recipe that
    passes (`()`: keep it fp32). `fp32_weights`: storages to try, in order, for the MatMul weights the
    recipe keeps fp32 (they still run in fp32; sitrep/training/fp16_weights.py; `()`: as they are). `sentencepiece`: write the
    tokenizer as a SentencePiece model for the runtime, kept if its ids match tokenizer.json's.
    """
    gates = gates or Gates()
    bundle = load_bundle(bundle_path)
    data = data or bundle.dev_files
    examples, groups = read_with_sources(data, limit)
    texts = [e.text for e in examples]
    # A bundle trained with document context is compared on the inputs it is run on: each article sentence with
    # the one before it (sitrep/models/encoding.py); other bundles ignore contexts.
    contexts = [e.context for e in examples]
    y = label_matrix(examples)
    thresholds = bundle.thresholds
    onnx_dir = bundle.path / "onnx"
    work = bundle.path / "onnx.work.tmp"
    shutil.rmtree(onnx_dir, ignore_errors=True)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    t0 = time.perf_counter()

    tokenizer = _sentencepiece(bundle, texts, gates, log) if sentencepiece else {"kept": False, "note": "not tried"}
    bundle = _register(bundle)

    log(f"[1/4] torch fp32 reference on {len(texts)} sentences from {data}")
    ref = load(bundle, "torch", device="cpu").classify(texts, contexts=contexts).probs
    f_ref, _ = macro_f1(y, decisions(ref, thresholds))

    log("[2/4] ONNX fp32 export")
    fp32 = bundle.path / ONNX_FILES["onnx"]
    _export_fp32(bundle, fp32)
    bundle = _register(bundle)
    cmp = compare(ref, load(bundle, "onnx").classify(texts, contexts=contexts).probs, y, thresholds)
    onnx_parity = Parity("onnx", **cmp, passed=cmp["max_abs_prob_diff"] <= gates.fp32_max_abs_prob)

    log("[3/4] int8: transformer optimizer + dynamic quantization ladder")
    int8 = bundle.path / ONNX_FILES["onnx-int8"]
    attempts: list[dict[str, Any]] = []
    chosen: dict[str, Any] | None = None
    opt = work / "model.opt.onnx"
    optimize_graph(bundle, fp32, opt)
    splits = OutlierSplits(bundle, opt, work, texts)
    ranking: list[tuple[str, float]] | None = None
    rungs = ladder(portable=portable)
    # A passing recipe held while later rungs are tried: a uint8 one whose table stayed fp32 or whose file is over
    # the size budget (then only the fallback rung, also the last resort when none passed), or a u8s8 one over
    # the budget (then only the later u8s8 rungs).
    kept: dict[str, Any] | None = None
    for i, recipe in enumerate(rungs):
        if kept is not None and not (recipe.storage_fallback if kept["then"] == "fallback" else is_u8s8(recipe)):
            continue
        exclude: list[str] = []
        src = opt if recipe.optimize else fp32
        split: dict[str, list[int]] = {}
        smoothing: dict[str, tuple[float, float]] = {}
        if recipe.outlier_threshold is not None:
            src, split, exclude = splits.get(recipe.outlier_threshold, recipe.qkv_split)
            log(f"      outlier split: {sum(map(len, split.values()))} channels of {len(split)} "
                f"{'FFN and QKV' if recipe.qkv_split else 'FFN'} MatMuls "
                f"above |x| {recipe.outlier_threshold:g} on {len(splits.calib)} calibration sentences")
        if recipe.smooth_alpha is not None:
            src, smoothing = splits.smoothed(recipe.smooth_alpha, recipe.qkv_split, recipe.smooth_attention)
            before, after = (max((v[i] for v in smoothing.values()), default=0.0) for i in (0, 1))
            what = ("FFN and QKV MatMuls" if recipe.qkv_split else
                    "FFN MatMuls and fused Attention nodes" if recipe.smooth_attention else "FFN MatMuls")
            log(f"      smoothing: {len(smoothing)} {what}, largest "
                f"input channel |x| {before:.1f} -> {after:.1f} on {len(splits.calib)} calibration sentences")
        if recipe.block_int8:
            src, _ = splits.unfused()
        if recipe.exclude_sensitive:
            if ranking is None:
                encoder = TextEncoder.for_bundle(bundle)
                errors = quantization_error(opt, splits.ffn, encoder, splits.calib)
                ranking = sorted(errors.items(), key=lambda x: -x[1])
                log(f"      sensitivity: {len(ranking)} FFN MatMuls ranked by simulated uint8 output error "
                    f"on {len(splits.calib)} sentences; worst {ranking[0][0]} ({ranking[0][1]:.2e})")
            k = len(ranking) if recipe.exclude_sensitive < 0 else recipe.exclude_sensitive
            exclude = [name for name, _ in ranking[:k]]
        if recipe.attention_output_fp32:
            exclude = exclude + attention_output_matmuls(opt)
        candidate = work / "candidate.int8.onnx"
        if recipe.quantize:
            quantize(src, candidate, recipe, exclude)
        else:
            shutil.copyfile(src, candidate)
        base = {"recipe": asdict(recipe), "fp32_nodes": exclude}
        gate_args = {"texts": texts, "ref": ref, "y": y, "gates": gates, "groups": groups, "contexts": contexts}
        # The gate judges the file that would ship: with the word-embedding table stored compactly (each storage in
        # order, the first that passes), or, if none passes, as it is. Gating the fp32-table file first would judge
        # another file: near the gate, a change as small as the table's storage or the LayerNorm kernel flips
        # decisions of the sentences nearest a threshold (`sitrep bench int8-noise`).
        log(f"      {recipe.name}:")
        storage, cmp, gated, tried = _first_compact(
            "word embeddings", "word_embeddings", word_embeddings, compact_embeddings, candidate, {}, work,
            bundle, gate_args, log)
        ok = storage != "fp32"
        if not ok:
            cmp, ok = gate_compare(bundle, candidate, **gate_args)
            gated = candidate
        attempts.append(base | {**cmp, "passed": ok, "word_embeddings_gated": storage,
                                "size_mb": round(gated.stat().st_size / 2**20, 1)}
                        | ({"outlier_channels": split} if split else {})
                        | ({"smoothed_absmax": {k: [round(a, 3), round(b, 3)] for k, (a, b) in smoothing.items()}}
                           if smoothing else {}))
        attempts += [base | a for a in tried]
        log(f"      -> {recipe.name}{'' if storage == 'fp32' else f', word embeddings {storage}'}: agreement "
            f"{cmp['label_agreement']:.4f}, max|Δp| {cmp['max_abs_prob_diff']:.4f}, ΔF1 {cmp['macro_f1_delta']:+.4f}"
            f"{per_file_note(cmp)} -> {'pass' if ok else 'fail'}"
            + ("" if cmp["scored"] == cmp["n"] else f" (stopped after {cmp['scored']} of {cmp['n']} sentences)"))
        if ok:
            candidate = gated
            # With no int8 noise, plain fp16 weights are near-exact: tried first there (a smaller file).
            modes = fp32_weights if recipe.quantize or not fp32_weights else tuple(dict.fromkeys(("fp16", *fp32_weights)))
            weights, cmp, candidate, tried = _first_compact(
                "fp32 MatMul weights stored", "fp32_weights_stored", modes, store_fp16, candidate, cmp, work,
                bundle, gate_args, log)
            attempts += [base | {"word_embeddings_kept": storage} | a for a in tried]
            # int8 weights whose parity was measured on saturation-free (VNNI) kernels: warn on CPUs without.
            needs_vnni = recipe.weight_type == "int8" and has_vnni()
            result = {**cmp, "recipe": recipe.name + ("" if storage == "fp32" else f", word embeddings {storage}")
                      + ("" if weights == "fp32" else f", fp32 weights stored {weights}"),
                      "weights": recipe.weight_type if recipe.quantize else "none", "needs_vnni": needs_vnni,
                      "word_embeddings": storage, "fp32_weights_stored": weights, "file": candidate}
            size_mib = candidate.stat().st_size / 2**20
            over = size_mib > gates.int8_size_budget_mib
            then = None
            if (((storage == "fp32" and word_embeddings) or over) and recipe.quantize
                    and recipe.weight_type == "uint8" and any(r.storage_fallback for r in rungs)):
                then = "fallback"
            elif over and is_u8s8(recipe) and any(is_u8s8(r) for r in rungs[i + 1:]):
                then = "u8s8"
            kept_mib = kept["file"].stat().st_size / 2**20 if kept is not None else None
            if then is not None:  # held while the later rungs are tried (a smaller over-budget u8s8 file replaces it)
                if kept is None or size_mib < kept_mib:
                    kept = {**result, "file": work / "kept.int8.onnx", "then": then}
                    shutil.copyfile(candidate, kept["file"])
                why = ("no compact word-embedding table passed on this recipe"
                       if storage == "fp32" and then == "fallback" else
                       f"its file is {size_mib:.1f} MiB, over the {gates.int8_size_budget_mib:g} MiB budget")
                log(f"      {why}: trying " + ("the rung without int8 MatMuls" if then == "fallback" else
                                             "the later u8s8 rungs") + " (the smallest passing file is kept)")
                continue
            # Within the budget, or after the last rung held ones may try: the smaller of this file and the held one
            chosen = result if kept is None or size_mib < kept_mib else kept
            break
    if chosen is None and kept is not None:
        chosen = kept  # the later rungs failed the gate: the passing recipe as it was
    if chosen is not None:
        chosen.pop("then", None)
        shutil.copyfile(chosen.pop("file"), int8)
        bundle = _register(bundle)
    if ranking is not None:
        attempts.append({"sensitivity_ranking": [{"node": n, "relative_output_error": float(f"{d:.4g}")}
                                                 for n, d in ranking]})
    if chosen is None:
        best = max((a for a in attempts if "label_agreement" in a), key=lambda a: a["label_agreement"])
        int8_parity = Parity("onnx-int8", **{k: best[k] for k in PARITY_KEYS}, passed=False, attempts=attempts,
                             note="no quantization recipe passed the gate; int8 model not written")
    else:
        int8_parity = Parity("onnx-int8", **{k: chosen[k] for k in PARITY_KEYS}, passed=True, recipe=chosen["recipe"],
                             attempts=attempts)

    log("[4/4] fp16 for the CUDA execution provider")
    fp16 = bundle.path / ONNX_FILES["cuda"]
    optimize_graph(bundle, fp32, fp16, fp16=True)
    bundle = _register(bundle)
    try:
        cmp = compare(ref, load(bundle, "cuda").classify(texts, contexts=contexts).probs, y, thresholds)
        fp16_parity = Parity("cuda", **cmp, passed=cmp["label_agreement"] >= gates.int8_min_agreement)
    except RuntimeUnavailable as exc:
        fp16_parity = Parity("cuda", None, None, None, None, passed=None,
                             note=f"not verified here: {exc}")
    shutil.rmtree(work, ignore_errors=True)

    report = {
        "data": str(data),
        "n": len(texts),
        "torch_macro_f1": round(f_ref, 4),
        "gates": asdict(gates),
        "tokenizer": tokenizer,
        "runtimes": {p.runtime: asdict(p) for p in (onnx_parity, int8_parity, fp16_parity)},
        "cpu": {"name": cpu_name(), "vnni": has_vnni()},
        "sizes_mb": {rt: round((bundle.path / rel).stat().st_size / 2**20, 1)
                     for rt, rel in ONNX_FILES.items() if (bundle.path / rel).exists()},
        "time_s": round(time.perf_counter() - t0, 1),
    }
    (bundle.path / PARITY_REPORT).parent.mkdir(exist_ok=True)
    (bundle.path / PARITY_REPORT).write_text(json.dumps(report, indent=2) + "\n")
    bundle.manifest.export = {
        "opset": OPSET,
        "files": {rt: rel for rt, rel in ONNX_FILES.items() if (bundle.path / rel).exists()},
        "parity": {rt: {k: v for k, v in r.items() if k != "attempts"} for rt, r in report["runtimes"].items()},
        "int8_recipe": int8_parity.recipe,
        "int8_weights": chosen["weights"] if chosen else None,
        "int8_word_embeddings": chosen["word_embeddings"] if chosen else None,
        "int8_fp32_weights_stored": chosen["fp32_weights_stored"] if chosen else None,
        "tokenizer": "sentencepiece" if tokenizer["kept"] else "tokenizer.json",
        "int8_needs_vnni": bool(chosen and chosen["needs_vnni"]),
    }
    _register(bundle)

    failures = []
    if not onnx_parity.passed:
        failures.append(f"ONNX fp32 differs from torch by {onnx_parity.max_abs_prob_diff:.2e} "
                        f"(gate {gates.fp32_max_abs_prob:.0e})")
    if not int8_parity.passed:
        failures.append(f"int8: best label agreement {int8_parity.label_agreement:.4f} (gate "
                        f"{gates.int8_min_agreement}), macro-F1 delta {int8_parity.macro_f1_delta:+.4f} "
                        f"(gate -{gates.int8_max_f1_drop})")
    if fp16_parity.passed is False:
        failures.append(f"fp16 CUDA label agreement {fp16_parity.label_agreement:.4f}")
    if failures:
        raise ExportError("; ".join(failures) + f" — see {bundle.path / PARITY_REPORT}")
    return report

