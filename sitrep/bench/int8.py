"""`sitrep bench int8 BUNDLE`: the int8 settings side by side, on dev, against ONNX fp32.

What `sitrep export`'s ladder decides with a pass/fail gate, this measures as a table, for tuning the
int8 model of a new encoder or checking why a recipe fails: for each weight type (`int8` = u8s8
kernels, `uint8` = u8u8) and each FFN outlier threshold (`none` = no split; sitrep/training/outlier_split.py)
it quantizes the bundle's optimized fp32 graph (`ffn_fp32`: every FFN MatMul kept fp32, the recipe export
ends at without VNNI), then stores the word-embedding table each way asked (`fp32`; `int8-row`, one scale
per row, and `fp16`: sitrep/training/embeddings.py; `int8-tensor`: ONNX Runtime's quantization of the
fused embedding op, one scale for the table), optionally stores the MatMul weights left fp32 in
fewer bytes (`--fp32-weights fp16,fp16+int8-residual`: sitrep/training/fp16_weights.py; they still run
in fp32), and reports label agreement, max |Δp| and the macro-F1 difference against ONNX fp32 (identical to torch within ~1e-5:
export's own parity), the number of outlier channels split off, the file size and the sentences/s of
the int8 model on these sentences. `qkv`: the attention unfused into a QKV MatMul + MultiHeadAttention
(sitrep/training/unfuse_attention.py) and the QKV MatMuls split with the FFN ones; `blockwise`: rows for
ONNX Runtime's MatMulNBits (8-bit weights in blocks of that many input channels, int8 activations per token
and block) on the unfused graph — export's ladder tries both kinds. `layernorms`: the residual LayerNorms as
export writes them for CPU (`unfused`: Add + LayerNormalization) or as ONNX Runtime's optimizer fuses them
(`fused`: SkipLayerNormalization, several times slower on the CPU provider; sitrep/training/skip_layernorm.py).
Nothing is written into the bundle.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from sitrep.bench.common import machine, write_report
from sitrep.models.bundle import ONNX_FILES, load_bundle
from sitrep.models.corpus import label_matrix, read_with_sources
from sitrep.models.cpu import cpu_name, has_vnni
from sitrep.training.embeddings import compact_embeddings
from sitrep.training.export import (
    Gates,
    OutlierSplits,
    QuantRecipe,
    candidate_classifier,
    files_below_agreement,
    gate_figures,
    optimize_graph,
    passes,
    probs_with,
    quantize,
)
from sitrep.training.fp16_weights import MODES, store_fp16

EMBEDDINGS = ("fp32", "int8-row", "fp16", "int8-tensor")
LAYERNORMS = ("unfused", "fused")  # the residual LayerNorms of the optimized graph (sitrep/training/skip_layernorm.py)
# the attention on a SmoothQuant row: its QKV MatMul smoothed (unfused), its fused Attention's input smoothed
# (fused: QAttention), or left as it is (none: only the FFN MatMuls smoothed)
SMOOTH_ATTENTION = ("unfused", "fused", "none")
FP32_WEIGHTS = ("fp32", *MODES)  # storage of the MatMul weights left fp32 (sitrep/training/fp16_weights.py)


@dataclass
class StudyRow:
    weights: str
    embeddings: str  # how the word-embedding table is stored: one of EMBEDDINGS
    ffn_fp32: bool
    fp32_weights: str  # storage of the MatMul weights left fp32: one of FP32_WEIGHTS (they run in fp32 either way)
    outlier_threshold: float | None
    outlier_channels: int
    label_agreement: float
    max_abs_prob_diff: float
    macro_f1: float
    macro_f1_delta: float
    size_mb: float
    sentences_per_s: float
    passes_gate: bool  # export's int8 gate against fp32: agreement >= 99% on the whole set and on each of its
    # files, macro-F1 at most 0.5 point lower on the whole
    failed_files: list[str] = field(default_factory=list)  # files whose own agreement fails (several files only)
    # each file's own label agreement and ΔF1 (several files only)
    per_file: dict[str, dict[str, float]] = field(default_factory=dict)
    qkv_split: bool = False  # the QKV projection's outliers split too (attention unfused)
    block_int8: int | None = None  # MatMulNBits with 8-bit weights in blocks of this size (None: dynamic quantization)
    # median ms of one single-sentence call (tokenization included) over the first `batch1` sentences, after a
    # warm-up: request mode at batch 1, where the split's small ops weigh most (None: not measured); the rows' calls
    # take turns on each sentence (`timed_in_turns`)
    batch1_ms: float | None = None
    # median over those sentences of the first row's call time divided by this row's: how many times faster than
    # the first row at batch 1, measured pairwise, which a drifting machine distorts far less than the medians
    batch1_vs_first: float | None = None
    # the same for calls of 32 sentences (request mode at batch 32), over the first `batch32` sentences
    batch32_ms: float | None = None
    batch32_vs_first: float | None = None
    # the residual LayerNorms: "unfused" (Add + LayerNormalization, what export writes for CPU) or "fused"
    # (ONNX Runtime's SkipLayerNormalization, as the transformer optimizer leaves them; sitrep/training/skip_layernorm.py)
    layernorm: str = "unfused"
    # SmoothQuant's alpha where the outlier channels were smoothed into the weights instead of split off
    # (sitrep/training/smooth_quant.py; the QKV MatMuls too with `qkv_split`); None: not smoothed
    smooth_alpha: float | None = None
    # with `smooth_alpha`: the fused attention's input smoothed too and the attention kept one op (QAttention once
    # quantized), where `qkv_split` smooths the unfused QKV MatMul instead
    smooth_attention: bool = False


def timed_in_turns(
    clfs: list[Any], texts: list[str], n: int, warmup: int = 10, batch_size: int = 1
) -> tuple[list[float | None], list[float | None]]:
    """Calls of `batch_size` consecutive sentences from the first `n` texts, timed with the classifiers taking turns on
    each call, so that a shared machine's drift hits every one alike: (median ms a call of each, median over the calls
    of the first one's time divided by each one's: how many times faster than the first). Nones if there is no call."""
    calls = [texts[i : i + batch_size] for i in range(0, min(n, len(texts)) - batch_size + 1, batch_size)]
    if not calls:
        return [None] * len(clfs), [None] * len(clfs)
    for clf in clfs:
        for call in calls[:warmup]:
            clf.classify(call, batch_size=batch_size)
    times = np.zeros((len(calls), len(clfs)))
    for i, call in enumerate(calls):
        for j, clf in enumerate(clfs):
            t0 = time.perf_counter()
            clf.classify(call, batch_size=batch_size)
            times[i, j] = time.perf_counter() - t0
    medians: list[float | None] = [round(1000 * float(np.median(times[:, j])), 3) for j in range(len(clfs))]
    ratios: list[float | None] = [round(float(np.median(times[:, 0] / times[:, j])), 3) for j in range(len(clfs))]
    return medians, ratios


def run_study(
    bundle_path: str | Path,
    data: str | Path | None = None,
    thresholds: list[float | None] | None = None,
    weights: list[str] | None = None,
    embeddings: list[str] | None = None,
    ffn_fp32: bool = False,
    log: Any = print,
    fp32_weights: list[str] | None = None,
    qkv: bool = False,
    blockwise: list[int] | None = None,
    batch1: int = 100,
    batch32: int = 0,
    layernorms: list[str] | None = None,
    smooth: list[float] | None = None,
    smooth_attention: list[str] | None = None,
) -> dict[str, Any]:
    """The study's rows; `batch1`: how many sentences time single-sentence calls, `batch32` calls of 32 sentences
    (0: not measured); the rows' models take turns on each call.

    `layernorms`: the optimized graph's residual LayerNorms, one pass of every setting per entry, in order
    (repeats allowed, to interleave them on a drifting machine): "unfused" (export's CPU graph) or "fused".
    `smooth`: SmoothQuant alphas, one row per weight type each after the threshold rows (no split on those rows).
    `smooth_attention`: the attention on those rows, one row per entry: "unfused" (the QKV MatMul smoothed too),
    "fused" (the fused Attention's input smoothed too, QAttention) or "none" (only the FFN MatMuls); default:
    "unfused" with `qkv`, else "none".
    """
    thresholds = thresholds if thresholds is not None else [None, 4.0]
    weights = weights or ["int8", "uint8"]
    embeddings = embeddings or ["fp32"]
    bad = [e for e in embeddings if e not in EMBEDDINGS]
    if bad:
        raise ValueError(f"unknown embedding storage {bad}; choose from {', '.join(EMBEDDINGS)}")
    forms = smooth_attention or ["unfused" if qkv else "none"]
    bad = [f for f in forms if f not in SMOOTH_ATTENTION]
    if bad:
        raise ValueError(f"unknown attention form for smoothing {bad}; choose from {', '.join(SMOOTH_ATTENTION)}")
    layernorms = layernorms or ["unfused"]
    bad = [k for k in layernorms if k not in LAYERNORMS]
    if bad:
        raise ValueError(f"unknown LayerNorm form {bad}; choose from {', '.join(LAYERNORMS)}")
    fp32_weights = fp32_weights or ["fp32"]
    bad = [w for w in fp32_weights if w not in FP32_WEIGHTS]
    if bad:
        raise ValueError(f"unknown storage for fp32 weights {bad}; choose from {', '.join(FP32_WEIGHTS)}")
    bundle = load_bundle(bundle_path)
    if not bundle.has(ONNX_FILES["onnx"]):
        raise FileNotFoundError(f"{bundle.path}: no {ONNX_FILES['onnx']}; run `sitrep export {bundle.path}` first")
    fp32 = bundle.onnx_file("onnx")
    data = data or bundle.dev_files
    examples, groups = read_with_sources(data)
    texts = [e.text for e in examples]
    y = label_matrix(examples)
    rows: list[StudyRow] = []
    timed: list[Path] = []  # each row's file, for the batch-1 timing
    gates = Gates()
    work = Path(tempfile.mkdtemp(prefix="sitrep-int8-study-"))
    try:
        log(f"reference: ONNX fp32 on {len(texts)} sentences from {data}")
        ref = probs_with(bundle, fp32, texts)
        graphs: dict[str, tuple[Path, OutlierSplits]] = {}  # each form's optimized graph and its outlier splits
        for layernorm in dict.fromkeys(layernorms):
            folder = work / layernorm
            folder.mkdir()
            opt = folder / "model.opt.onnx"
            optimize_graph(bundle, fp32, opt, skip_layernorm_fused=layernorm == "fused")
            graphs[layernorm] = (opt, OutlierSplits(bundle, opt, folder, texts))
        # (LayerNorm, threshold, weights, block size, alpha, the attention's form on a smoothing row)
        settings: list[tuple[str, float | None, str, int | None, float | None, str]] = [
            (ln, t, w, None, None, "") for ln in layernorms for t in thresholds for w in weights]
        settings += [(ln, None, w, None, a, f) for ln in layernorms for a in smooth or [] for f in forms
                     for w in weights]
        settings += [(ln, None, "int8", b, None, "") for ln in layernorms for b in blockwise or []]
        for layernorm, threshold, wt, block, alpha, form in settings:
            opt, splits = graphs[layernorm]
            row_qkv = form == "unfused" if alpha is not None else qkv
            if block:
                (src, _), split, keep_fp32 = splits.unfused(), {}, []
            elif alpha is not None:
                (src, _), split, keep_fp32 = splits.smoothed(alpha, row_qkv, form == "fused"), {}, []
            elif threshold is None:
                src, split, keep_fp32 = (splits.unfused()[0] if qkv else opt), {}, []
            else:
                src, split, keep_fp32 = splits.get(threshold, qkv)
            if ffn_fp32 and not block:
                keep_fp32 = keep_fp32 + [n for n in splits.ffn if n not in keep_fp32]
            recipe = QuantRecipe("study", per_channel=True, weight_type=wt, block_int8=block, qkv_split=row_qkv)
            quantized = work / "quantized.onnx"
            if any(e != "int8-tensor" for e in embeddings):
                quantize(src, quantized, recipe, keep_fp32)
            for emb in embeddings:
                candidate = work / "candidate.onnx"
                if emb == "int8-tensor" and block:  # ONNX Runtime quantizes the embedding op only dynamically
                    log(f"  MatMulNBits, blocks of {block}, embeddings int8-tensor: skipped (dynamic quantization only)")
                    continue
                if emb == "int8-tensor":
                    quantize(src, candidate, replace(recipe, embeddings=True), keep_fp32)
                elif emb == "fp32":
                    shutil.copyfile(quantized, candidate)
                else:
                    compact_embeddings(quantized, candidate, emb)
                for storage in fp32_weights:
                    scored = candidate
                    if storage != "fp32":
                        scored = work / "candidate.stored-weights.onnx"
                        try:
                            store_fp16(candidate, scored, storage)
                        except ValueError as exc:  # every MatMul quantized: no row to add
                            log(f"  fp32 weights stored {storage}: skipped ({exc})")
                            continue
                    t0 = time.perf_counter()
                    clf = candidate_classifier(bundle, scored)
                    probs = clf.classify(texts).probs
                    speed = len(texts) / (time.perf_counter() - t0)
                    del clf
                    if batch1 or batch32:  # timed after the last row, every row's file taking turns
                        timed.append(work / f"row{len(rows)}.onnx")
                        shutil.copyfile(scored, timed[-1])
                    cmp = gate_figures(ref, probs, y, bundle.thresholds, groups)
                    row = StudyRow(wt, emb, ffn_fp32 and not block, storage, threshold, sum(map(len, split.values())),
                                   round(cmp["label_agreement"], 4), round(cmp["max_abs_prob_diff"], 4),
                                   cmp["macro_f1"], cmp["macro_f1_delta"],
                                   round(scored.stat().st_size / 2**20, 1), round(speed, 1),
                                   passes(cmp, gates), files_below_agreement(cmp, gates),
                                   {f: {"label_agreement": round(c["label_agreement"], 4),
                                        "macro_f1_delta": c["macro_f1_delta"]}
                                    for f, c in cmp.get("per_file", {}).items()},
                                   qkv_split=row_qkv and not block, block_int8=block,
                                   layernorm=layernorm, smooth_alpha=alpha, smooth_attention=form == "fused")
                    rows.append(row)
                    outliers = (f"smoothed, alpha {alpha:g}" if alpha is not None else
                                f"threshold {threshold if threshold is not None else 'none'}")
                    log(f"  LayerNorm {layernorm}, weights {wt}{f' (MatMulNBits, blocks of {block})' if block else ''}, "
                        f"outliers {outliers}{' (+QKV)' if row.qkv_split else ''}"
                        f"{' (+fused attention)' if row.smooth_attention else ''}, "
                        f"embeddings {emb}{', FFN fp32' if ffn_fp32 else ''}, fp32 weights stored {storage}: "
                        f"agreement {row.label_agreement:.4f}, ΔF1 {row.macro_f1_delta:+.4f}, {row.size_mb} MB, "
                        f"{row.sentences_per_s} sent/s")
        if timed:
            clfs = [candidate_classifier(bundle, path) for path in timed]
            for size, n in ((1, batch1), (32, batch32)):
                if not n:
                    continue
                log(f"batch {size}: calls on {min(n, len(texts))} sentences, the {len(timed)} rows taking turns")
                medians, ratios = timed_in_turns(clfs, texts, n, batch_size=size)
                for row, ms, ratio in zip(rows, medians, ratios, strict=True):
                    setattr(row, f"batch{size}_ms", ms)
                    setattr(row, f"batch{size}_vs_first", ratio)
                log("  " + ", ".join(f"row {i + 1}: {ms} ms ({ratio}x the first)"
                                     for i, (ms, ratio) in enumerate(zip(medians, ratios, strict=True))))
            del clfs
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {
        "bundle": {"path": str(bundle.path), "name": bundle.name, "version": bundle.version},
        "data": str(data),
        "n": len(texts),
        "calibration_sentences": len(next(iter(graphs.values()))[1].calib),
        "batch1_sentences": min(batch1, len(texts)),
        "batch32_sentences": min(batch32, len(texts)) // 32 * 32,
        "cpu": {"name": cpu_name(), "vnni": has_vnni()},
        "machine": machine(),
        "rows": [asdict(r) for r in rows],
    }


def study_markdown(report: dict[str, Any]) -> str:
    b = report["bundle"]
    lines = [
        f"Bundle `{b['name']}` {b['version']}, {report['n']} sentences from `{report['data']}`, reference ONNX fp32; "
        f"outlier channels from {report['calibration_sentences']} training sentences; batch-1 ms: median of "
        f"{report.get('batch1_sentences', 0)} single-sentence calls (tokenization included), batch-32 ms of the calls of "
        f"32 on the first {report.get('batch32_sentences', 0)} sentences, the rows taking turns on each call; CPU "
        f"{report['cpu']['name']} "
        f"(VNNI: {'yes' if report['cpu']['vnni'] else 'no'}).",
        "",
        "| LayerNorm | weights | FFN | fp32 weights stored | outlier threshold (or smoothing) | channels split | embeddings "
        "| label agreement (sentences) | max \\|Δp\\| | macro-F1 | ΔF1 (points) | size MB | sentences/s | batch-1 ms "
        "| batch 1, × the first row | batch-32 ms | batch 32, × the first row | gate |",
        "|---|---|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in report["rows"]:
        t = "none" if r["outlier_threshold"] is None else f"{r['outlier_threshold']:g}"
        if r.get("smooth_alpha") is not None:  # older reports: never smoothed
            t = f"smoothed, alpha {r['smooth_alpha']:g}"
        t += " (+QKV)" if r.get("qkv_split") else " (+fused attention)" if r.get("smooth_attention") else ""
        emb = {True: "int8-tensor", False: "fp32"}.get(r["embeddings"], r["embeddings"])  # older reports: a bool
        ffn = "fp32" if r.get("ffn_fp32") else "int8"
        agree = f"{r['label_agreement']:.2%} ({r['label_agreement'] * report['n']:.0f})" + "".join(
            f"; {f}: {c['label_agreement']:.2%}" for f, c in r.get("per_file", {}).items())
        gate = {True: "pass", False: "fail"}.get(r.get("passes_gate"), "")  # type: ignore[call-overload]
        if r.get("failed_files"):
            gate += f" ({', '.join(r['failed_files'])})"
        stored = r.get("fp32_weights", "fp32")  # older reports: always fp32
        one = "—" if r.get("batch1_ms") is None else f"{r['batch1_ms']:.2f}"  # older reports: not measured
        vs = "—" if r.get("batch1_vs_first") is None else f"{r['batch1_vs_first']:.3f}×"  # older reports: not paired
        b32 = "—" if r.get("batch32_ms") is None else f"{r['batch32_ms']:.1f}"
        vs32 = "—" if r.get("batch32_vs_first") is None else f"{r['batch32_vs_first']:.3f}×"
        wts = r["weights"] + (f" (MatMulNBits, blocks of {r['block_int8']})" if r.get("block_int8") else "")
        ln = r.get("layernorm", "fused")  # older reports: the optimizer's fused SkipLayerNormalization
        lines.append(f"| {ln} | {wts} | {ffn} | {stored} | {t} | {r['outlier_channels']} | {emb} | {agree} | "
                     f"{r['max_abs_prob_diff']:.3f} | {r['macro_f1']:.4f} | {100 * r['macro_f1_delta']:+.2f} | "
                     f"{r['size_mb']} | {r['sentences_per_s']} | {one} | {vs} | {b32} | {vs32} | {gate} |")
    return "\n".join(lines) + "\n"


def write_study(report: dict[str, Any], json_path: Path | None, markdown_path: Path | None) -> None:
    write_report(report, json_path, study_markdown(report), markdown_path)
