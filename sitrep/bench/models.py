"""`sitrep bench models`: the transformers pipeline vs our runtimes, side by side on the same sentences.

Every variant runs in its own subprocess (sitrep/bench/worker.py) on the same list of news-length
sentences, batch by batch in the same order, after a warm-up: sentences/s, p50/p99 latency per
batch, peak RSS of that process, the ratio of each to the pipeline, and macro-F1 on the sentences'
gold labels (with its difference to ONNX fp32, so the int8 accuracy gate is checked in the same
run). The machine's fp32 and int8 GEMM peak through ONNX Runtime (sitrep/bench/gemm_peak.py) puts the
models' achieved GFLOP/s in proportion.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sitrep.bench.common import NEWS_MIN_CHARS, load_average, machine, select_sentences, write_report
from sitrep.bench.gemm_peak import encoder_flops, gemm_peak, int8_kernel
from sitrep.eval.report import EvalError, load_examples
from sitrep.models.bundle import ONNX_FILES, BundleError, load_bundle
from sitrep.models.corpus import label_matrix
from sitrep.models.encoding import CALL_OVERHEAD_TOKENS, TextEncoder, length_batches
from sitrep.models.labels import LABELS, multi_hot_matrix
from sitrep.models.scores import macro_f1

VARIANTS = ("pipeline", "torch", "onnx", "onnx-int8", "onnx-int8-padded", "cuda")
VARIANT_INFO = {
    "pipeline": "transformers text-classification pipeline, fp32, CPU",
    "torch": "sitrep runtime, torch fp32",
    "onnx": "sitrep runtime, ONNX Runtime fp32",
    "onnx-int8": "sitrep runtime, ONNX Runtime int8 (dynamic quantization)",
    "onnx-int8-padded": "sitrep runtime, ONNX Runtime int8, each batch one padded call (no cost-based split)",
    "cuda": "sitrep runtime, ONNX Runtime fp16 on the CUDA execution provider",
}
PEAK_FOR = {"pipeline": "fp32", "torch": "fp32", "onnx": "fp32", "onnx-int8": "int8", "onnx-int8-padded": "int8"}
# Variants that run each batch as one padded call: the pipeline and the runtime with the split turned off.
PADDED = ("pipeline", "onnx-int8-padded", "cuda")
TARGET_SPEEDUP = 4.0
TARGET_F1_POINTS = 0.5
REPO = Path(__file__).resolve().parent.parent


class BenchError(RuntimeError):
    """Bad bundle, data or options."""


@dataclass
class BenchSpec:
    bundle: Path
    data: Path = Path("data/test.jsonl")
    sentences: int = 256
    batch_sizes: list[int] = field(default_factory=lambda: [1, 32])
    variants: list[str] = field(default_factory=lambda: list(VARIANTS))
    min_batches: int = 24
    rounds: int = 3
    threads: int | None = None
    gemm_size: int = 1024
    seed: int = 0

    def check(self) -> None:
        unknown = [v for v in self.variants if v not in VARIANTS]
        if unknown:
            raise BenchError(f"unknown variant(s) {unknown}; choose from {', '.join(VARIANTS)}")
        if not self.variants:
            raise BenchError("no variants to run")
        if not self.batch_sizes or any(b < 1 for b in self.batch_sizes):
            raise BenchError(f"batch sizes must be >= 1, got {self.batch_sizes}")
        if self.sentences < 1 or self.min_batches < 1 or self.gemm_size < 1 or self.rounds < 1:
            raise BenchError("--sentences, --min-batches, --rounds and --gemm-size must be >= 1")


def model_shape(bundle_hf_dir: Path) -> dict[str, int]:
    config = json.loads((bundle_hf_dir / "config.json").read_text())
    return {
        k: int(config[k])
        for k in ("num_hidden_layers", "hidden_size", "intermediate_size", "num_attention_heads")
    }


def flops_profile(lengths: np.ndarray, shape: dict[str, int], batch_sizes: list[int]) -> dict[str, Any]:
    """Useful FLOPs per sentence (real tokens) and, per batch size, executed FLOPs (padded to the batch).

    ``executed_flops_per_sentence`` (= ``bulk_input_order``): consecutive batches in input order, as
    in request mode and in the pipeline's bulk mode; ``bulk_length_sorted``: the batches our runtime
    forms from the whole list (``models.encoding.length_batches``); ``requests_split`` and
    ``bulk_length_sorted_split``: the same with our CPU runtime's cost-based split of each batch.
    """

    def f(t: int) -> int:
        return encoder_flops(
            int(t), shape["num_hidden_layers"], shape["hidden_size"], shape["intermediate_size"], len(LABELS)
        )

    useful = float(np.mean([f(t) for t in lengths]))
    sorted_bulk = {
        str(bs): sum(f(int(lengths[idx].max())) * len(idx) for idx in length_batches(lengths, bs))
        / len(lengths)
        for bs in batch_sizes
    }
    sorted_split = {
        str(bs): sum(
            f(int(lengths[idx].max())) * len(idx)
            for idx in length_batches(lengths, bs, overhead_tokens=CALL_OVERHEAD_TOKENS)
        )
        / len(lengths)
        for bs in batch_sizes
    }
    executed, split = {}, {}
    for bs in batch_sizes:
        requests = [lengths[i : i + bs] for i in range(0, len(lengths), bs)]
        executed[str(bs)] = sum(f(int(r.max())) * len(r) for r in requests) / len(lengths)
        split[str(bs)] = sum(
            f(int(r[idx].max())) * len(idx)
            for r in requests
            for idx in length_batches(r, bs, overhead_tokens=CALL_OVERHEAD_TOKENS)
        ) / len(lengths)
    return {
        "shape": shape,
        "mean_tokens": round(float(lengths.mean()), 2),
        "max_tokens": int(lengths.max()),
        "useful_flops_per_sentence": round(useful),
        "executed_flops_per_sentence": {k: round(v) for k, v in executed.items()},
        "bulk_input_order": {k: round(v) for k, v in executed.items()},
        "bulk_length_sorted": {k: round(v) for k, v in sorted_bulk.items()},
        "requests_split": {k: round(v) for k, v in split.items()},
        "bulk_length_sorted_split": {k: round(v) for k, v in sorted_split.items()},
    }


class WorkerFailed(RuntimeError):
    pass


class Worker:
    """One variant's subprocess (sitrep/bench/worker.py), driven by JSON-line commands."""

    def __init__(self, variant: str, spec: BenchSpec, texts: list[str], work: Path) -> None:
        self.variant = variant
        spec_path = work / f"{variant}.spec.json"
        spec_path.write_text(
            json.dumps(
                {"variant": variant, "bundle": str(spec.bundle.resolve()), "texts": texts,
                 "batch_sizes": spec.batch_sizes, "threads": spec.threads},
                ensure_ascii=False,
            ),
            encoding="utf-8",
        )  # fmt: skip
        env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        }
        self.stderr = (work / f"{variant}.stderr").open("w+", encoding="utf-8")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sitrep.bench.worker", str(spec_path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
            encoding="utf-8",
            env=env,
        )
        try:
            self.hello = self._read()
        except WorkerFailed as exc:
            self.hello = {"status": "failed", "reason": str(exc)}

    def _stderr_tail(self) -> str:
        self.stderr.flush()
        self.stderr.seek(0)
        return self.stderr.read().strip()[-1500:]

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise WorkerFailed(f"worker exited ({self.proc.wait()}): {self._stderr_tail()}")
        return json.loads(line)

    def ask(self, cmd: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps(cmd) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError as exc:
            raise WorkerFailed(f"worker exited ({self.proc.wait()}): {self._stderr_tail()}") from exc
        reply = self._read()
        if not reply.get("ok"):
            raise WorkerFailed(reply.get("reason", "unknown error"))
        return reply

    def close(self) -> None:
        try:
            if self.proc.poll() is None and self.proc.stdin is not None:
                self.proc.stdin.write(json.dumps({"cmd": "exit"}) + "\n")
                self.proc.stdin.close()
            self.proc.wait(timeout=60)
        except (BrokenPipeError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()
        self.stderr.close()


def _percentile_ms(values: list[float], q: float) -> float:
    return round(float(np.percentile(np.asarray(values), q)) * 1e3, 3)


def measure_interleaved(
    workers: dict[str, Worker], texts: list[str], spec: BenchSpec, log: Callable[[str], Any]
) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """Time every variant round by round, in a rotating order, so background load hits all alike.

    Per batch size, each round gives every variant the same slice of request batches (and, for
    batch sizes above 1, one bulk pass over the whole list). Returns per-variant measurements in
    the shape `summarize` reads, and the variants that failed on the way with the reason.
    """
    from tqdm.auto import tqdm

    live = dict(workers)
    failed: dict[str, str] = {}
    acc: dict[str, dict[int, dict[str, Any]]] = {v: {} for v in live}
    for bs in spec.batch_sizes:
        sizes = [len(texts[i : i + bs]) for i in range(0, len(texts), bs)]
        total = max(spec.min_batches, len(sizes))
        per_round = math.ceil(total / spec.rounds)
        for v in live:
            acc[v][bs] = {"lat": [], "sentences": 0, "probs": {}, "labels": {}, "bulk": []}
        bar = tqdm(
            total=spec.rounds * len(live), desc=f"batch {bs}", unit="variant-round", dynamic_ncols=True
        )
        for r in range(spec.rounds):
            names = list(live)
            for v in names[r % len(names) :] + names[: r % len(names)]:
                try:
                    reply = live[v].ask(
                        {"cmd": "requests", "bs": bs, "start": r * per_round, "count": per_round}
                    )
                    a = acc[v][bs]
                    a["lat"].extend(reply["latencies"])
                    a["sentences"] += sum(sizes[i] for i in reply["batches"])
                    for idx, p, lab in zip(reply["batches"], reply["probs"], reply["labels"], strict=True):
                        a["probs"].setdefault(idx, p)
                        a["labels"].setdefault(idx, lab)
                    if bs > 1:
                        a["bulk"].append(live[v].ask({"cmd": "bulk", "bs": bs})["seconds"])
                except WorkerFailed as exc:
                    failed[v] = str(exc)
                    log(f"[{v}] failed: {exc}")
                    live.pop(v).close()
                bar.update(1)
        bar.close()
    results: dict[str, dict[str, Any]] = {}
    for v in workers:
        if v in failed:
            continue
        per_bs = {}
        for bs, a in acc[v].items():
            n_batches = len(a["probs"])
            per_bs[str(bs)] = {
                "batch_size": bs,
                "batches": len(a["lat"]),
                "sentences": a["sentences"],
                "seconds": round(sum(a["lat"]), 4),
                "sentences_per_s": round(a["sentences"] / sum(a["lat"]), 2),
                "p50_ms": _percentile_ms(a["lat"], 50),
                "p99_ms": _percentile_ms(a["lat"], 99),
                "mean_ms": round(sum(a["lat"]) / len(a["lat"]) * 1e3, 3),
                "probs": [row for i in range(n_batches) for row in a["probs"][i]],
                "labels": [lab for i in range(n_batches) for lab in a["labels"][i]],
                "bulk": {
                    "passes": len(a["bulk"]),
                    "seconds": round(sum(a["bulk"]), 4),
                    "sentences_per_s": round(len(texts) * len(a["bulk"]) / sum(a["bulk"]), 2),
                }
                if a["bulk"]
                else None,
            }
        results[v] = {"per_batch_size": per_bs}
    return results, failed


def _cuda_skip_reason() -> str | None:
    import onnxruntime as ort

    providers = ort.get_available_providers()
    if "CUDAExecutionProvider" not in providers:
        return f"no GPU here: ONNX Runtime has no CUDAExecutionProvider (providers: {', '.join(providers)})"
    return None


def summarize(
    results: dict[str, dict[str, Any]],
    y: np.ndarray,
    flops: dict[str, Any],
    peak: dict[str, Any],
    batch_sizes: list[int],
    int8_kernel_name: str | None = None,
) -> list[dict[str, Any]]:
    """One row per (variant, batch size): speed, ratios to the pipeline, memory, macro-F1, share of peak.

    fp32 variants are compared with the fp32 GEMM peak; onnx-int8 with the peak of the integer kernel
    its weights select (u8s8 or u8u8) and, in `fraction_of_int8_peak`, with the faster of the two.
    """
    rows: list[dict[str, Any]] = []
    ref_variant = "onnx" if results.get("onnx", {}).get("status") == "ok" else "torch"
    for bs in batch_sizes:
        key = str(bs)
        pipe = results.get("pipeline", {})
        pipe_m = pipe.get("per_batch_size", {}).get(key) if pipe.get("status") == "ok" else None
        ref = results.get(ref_variant, {})
        ref_f1, ref_pred, ref_probs = None, None, None
        if ref.get("status") == "ok":
            ref_pred = multi_hot_matrix(ref["per_batch_size"][key]["labels"])
            ref_probs = np.asarray(ref["per_batch_size"][key]["probs"])
            ref_f1 = macro_f1(y, ref_pred)[0]
        for variant, r in results.items():
            row: dict[str, Any] = {
                "variant": variant,
                "batch_size": bs,
                "what": VARIANT_INFO[variant],
                "status": r["status"],
            }
            if r["status"] != "ok":
                row["reason"] = r.get("reason", "")
                rows.append(row)
                continue
            m = r["per_batch_size"][key]
            bulk = m.get("bulk")
            pipe_bulk = (pipe_m or {}).get("bulk")
            # Executed FLOPs: our runtime sorts by length in bulk mode (less padding), the pipeline does not;
            # on CPU it also cuts mixed-length batches (`Classifier`), unless the variant turns that off.
            padded = variant in PADDED
            bulk_key = "bulk_input_order" if variant == "pipeline" else (
                "bulk_length_sorted" if padded else "bulk_length_sorted_split"
            )
            bulk_gflops = bulk["sentences_per_s"] * flops[bulk_key][key] / 1e9 if bulk else None
            pred = multi_hot_matrix(m["labels"])
            f1 = macro_f1(y, pred)[0]
            sps = m["sentences_per_s"]
            executed = flops["executed_flops_per_sentence" if padded else "requests_split"][key]
            gflops = sps * executed / 1e9
            kind = PEAK_FOR.get(variant)
            if kind == "int8" and int8_kernel_name:
                kind = int8_kernel_name
            row.update(
                {
                    "sentences_per_s": sps,
                    "p50_ms": m["p50_ms"],
                    "p99_ms": m["p99_ms"],
                    "batches": m["batches"],
                    "peak_rss_mb": r["peak_rss_mb"],
                    "steady_rss_mb": r.get("rss_end_mb"),  # after warm-up and every timed request and bulk run
                    "load_s": r["load_s"],
                    "speedup_vs_pipeline": round(sps / pipe_m["sentences_per_s"], 2) if pipe_m else None,
                    "p50_ratio_vs_pipeline": round(m["p50_ms"] / pipe_m["p50_ms"], 3) if pipe_m else None,
                    "rss_ratio_vs_pipeline": round(r["peak_rss_mb"] / pipe["peak_rss_mb"], 3)
                    if pipe_m
                    else None,
                    "macro_f1": round(f1, 4),
                    "f1_delta_points_vs_fp32": round((f1 - ref_f1) * 100, 2) if ref_f1 is not None else None,
                    "fp32_reference": ref_variant if ref_pred is not None else None,
                    "label_agreement_vs_fp32": round(float(np.mean(np.all(pred == ref_pred, axis=1))), 4)
                    if ref_pred is not None
                    else None,
                    "max_abs_prob_diff_vs_fp32": round(
                        float(np.max(np.abs(np.asarray(m["probs"]) - ref_probs))), 6
                    )
                    if ref_probs is not None
                    else None,
                    "executed_gflops_per_s": round(gflops, 2),
                    "useful_gflops_per_s": round(sps * flops["useful_flops_per_sentence"] / 1e9, 2),
                    "peak_kind": kind,
                    "fraction_of_peak": round(gflops / peak[kind]["peak_gflops"], 4) if kind else None,
                    "fraction_of_int8_peak": round(gflops / peak["int8"]["peak_gflops"], 4)
                    if PEAK_FOR.get(variant) == "int8"
                    else None,
                    "bulk_sentences_per_s": bulk["sentences_per_s"] if bulk else None,
                    "bulk_speedup_vs_pipeline": round(
                        bulk["sentences_per_s"] / pipe_bulk["sentences_per_s"], 2
                    )
                    if bulk and pipe_bulk
                    else None,
                    "bulk_executed_gflops_per_s": round(bulk_gflops, 2) if bulk_gflops is not None else None,
                    "bulk_fraction_of_peak": round(bulk_gflops / peak[kind]["peak_gflops"], 4)
                    if bulk_gflops is not None and kind
                    else None,
                }
            )
            rows.append(row)
    return rows


def target_check(rows: list[dict[str, Any]], batch_sizes: list[int]) -> dict[str, Any]:
    """The target: onnx-int8 >= 4x the pipeline's sentences/s at batch 32, macro-F1 within 0.5 point of fp32.

    Speed is judged on bulk throughput (the whole list at that batch size, each side batching it
    its own way) where measured, else on request mode; both are recorded. Accuracy is one-sided like
    export's int8 gate: at most 0.5 point below fp32. Checked at batch 32, or at the largest batch
    size measured when 32 was not.
    """
    batch_size = 32 if 32 in batch_sizes else max(batch_sizes)
    row = next((r for r in rows if r["variant"] == "onnx-int8" and r["batch_size"] == batch_size), None)
    if row is None or row["status"] != "ok":
        return {
            "batch_size": batch_size,
            "met": None,
            "reason": "onnx-int8 not measured at this batch size" + (f": {row['reason']}" if row else ""),
        }
    bulk, requests = row["bulk_speedup_vs_pipeline"], row["speedup_vs_pipeline"]
    speed = bulk if bulk is not None else requests
    delta = row["f1_delta_points_vs_fp32"]
    speed_ok = speed is not None and speed >= TARGET_SPEEDUP
    mode = "bulk" if bulk is not None else "requests"
    result = {
        "batch_size": batch_size,
        "speedup": speed,
        "speedup_mode": mode,
        "speedup_requests": requests,
        "speedup_target": TARGET_SPEEDUP,
        "speedup_met": speed_ok,
        "f1_delta_points": delta,
        "f1_target_points": TARGET_F1_POINTS,
    }
    if delta is None:  # no fp32 (`onnx`) row to compare with: the accuracy half of the target is unknown
        return result | {"f1_met": None, "met": None,
                         "reason": f"macro-F1 vs fp32 needs the `onnx` variant (onnx-int8 is {speed}× the "
                                   f"pipeline in {mode} mode; target ≥ {TARGET_SPEEDUP}×)"}
    f1_ok = delta >= -TARGET_F1_POINTS
    return result | {"f1_met": f1_ok, "met": speed_ok and f1_ok}


def target_verdict(t: dict[str, Any]) -> str:
    """One line on `target_check`'s result."""
    if t["met"] is None:
        return "not measured: " + t["reason"]
    return (f"{'met' if t['met'] else 'NOT met'}: onnx-int8 is {t['speedup']}× the pipeline in "
            f"{t['speedup_mode']} mode ({t['speedup_requests']}× in request mode; target ≥ "
            f"{t['speedup_target']}×), macro-F1 {t['f1_delta_points']:+.2f} points vs fp32 (target: at most "
            f"{t['f1_target_points']} below)")


def _fmt(v: Any, pattern: str = "{:.2f}") -> str:
    return "—" if v is None else pattern.format(v)


def _share(fraction: float | None, kind: str | None) -> str:
    return "—" if fraction is None else f"{fraction * 100:.1f}% of {kind}"


def render_markdown(result: dict[str, Any]) -> str:
    fl, pk, m = result["flops"], result["gemm_peak"], result["machine"]
    lines = [
        f"Bundle `{result['model']['name']}` {result['model']['version']}, {result['n_sentences']} sentences "
        f"from `{result['data']}` (mean {fl['mean_tokens']} tokens, max {fl['max_tokens']}); {m['cpu']}, "
        f"{m['logical_cpus']} CPUs, threads: {result['threads']}; "
        f"load average {m['load_average_1m_at_start']} at the start, {result['load_average_1m_at_end']} "
        "at the end (other processes distort timings).",
        "",
        "| variant | batch | requests: sentences/s | × pipeline | p50 ms/batch | p99 ms/batch | "
        "bulk: sentences/s | × pipeline | peak RSS MB | macro-F1 | ΔF1 vs fp32 (points) | GFLOP/s | "
        "% of GEMM peak |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        if r["status"] != "ok":
            continue
        # GFLOP/s and share of peak: bulk mode where measured (the best each side does), else requests.
        bulk = r["bulk_executed_gflops_per_s"] is not None
        gflops = r["bulk_executed_gflops_per_s"] if bulk else r["executed_gflops_per_s"]
        share = _share(r["bulk_fraction_of_peak"] if bulk else r["fraction_of_peak"], r["peak_kind"])
        lines.append(
            f"| {r['variant']} | {r['batch_size']} | {r['sentences_per_s']:.1f} | "
            f"{_fmt(r['speedup_vs_pipeline'])}× | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
            f"{_fmt(r['bulk_sentences_per_s'], '{:.1f}')} | "
            f"{_fmt(r['bulk_speedup_vs_pipeline'], '{:.2f}×')} | {r['peak_rss_mb']:.0f} | "
            f"{r['macro_f1']:.4f} | {_fmt(r['f1_delta_points_vs_fp32'], '{:+.2f}')} | "
            f"{gflops:.1f} | {share} |"
        )
    verdict = target_verdict(result["target"])
    not_run = {r["variant"]: f"{r['status']}: {r['reason']}" for r in result["rows"] if r["status"] != "ok"}
    executed = ", ".join(
        f"batch {k}: {v / 1e9:.3f} in input order ({fl['requests_split'][k] / 1e9:.3f} with the runtime's "
        f"split), {fl['bulk_length_sorted'][k] / 1e9:.3f} length-sorted "
        f"({fl['bulk_length_sorted_split'][k] / 1e9:.3f} split)"
        for k, v in fl["executed_flops_per_sentence"].items()
    )
    lines += [""] + [f"- `{v}` {why}" for v, why in not_run.items()]
    lines += [
        "",
        f"GEMM peak through ONNX Runtime ({pk['size']}³, {result['threads']} threads): fp32 "
        f"{pk['fp32']['peak_gflops']:.1f} GFLOP/s, int8 MatMulInteger u8×s8 "
        f"{pk['u8s8']['peak_gflops']:.1f} and u8×u8 {pk['u8u8']['peak_gflops']:.1f} GOP/s"
        + (f" (the int8 model's weights use {result['int8_kernel']})" if result.get("int8_kernel") else "")
        + f". Model FLOPs per sentence: {fl['useful_flops_per_sentence'] / 1e9:.3f} GFLOP on real tokens; "
        f"GFLOP/s and % of peak count the FLOPs executed on padded batches ({executed} GFLOP/sentence) "
        "in bulk mode where measured.",
        "",
        f"Target at batch {result['target']['batch_size']}: {verdict}.",
        "",
        "Requests: consecutive batches in input order, one call each (tokenization included), latency per "
        "call. Bulk: the whole list in one call at that batch size; our runtime sorts by length, the "
        "pipeline keeps input order. Peak RSS: the variant's own process (VmHWM: imports + model + run). "
        "Pipeline macro-F1: its sigmoid scores through the bundle's calibration and thresholds.",
    ]
    return "\n".join(lines) + "\n"


def run_bench(spec: BenchSpec, out: str | Path, log: Callable[[str], Any] = print) -> dict[str, Any]:
    """Run every variant, the GEMM peak, write bench.json and bench.md into `out`."""
    spec.check()
    spec.threads = spec.threads or os.cpu_count() or 1
    try:
        bundle = load_bundle(spec.bundle, verify=False)
        examples = load_examples(spec.data)
    except (BundleError, EvalError) as exc:
        raise BenchError(str(exc)) from exc
    picked = select_sentences(examples, spec.sentences, spec.seed)
    if not picked:
        raise BenchError(f"{spec.data}: no sentence of at least {NEWS_MIN_CHARS} characters")
    if len(picked) < spec.sentences:
        log(f"note: {spec.data} has only {len(picked)} sentences of >= {NEWS_MIN_CHARS} characters; using those")
    texts = [e.text for e in picked]
    y = label_matrix(picked)
    lengths = TextEncoder.for_bundle(bundle).encode(texts).lengths
    flops = flops_profile(lengths, model_shape(bundle.hf_dir), spec.batch_sizes)
    machine_ = machine(spec.threads)  # before the runs: it records the load average at the start
    t0 = time.perf_counter()
    results: dict[str, dict[str, Any]] = {}
    workers: dict[str, Worker] = {}
    with tempfile.TemporaryDirectory(prefix="sitrep-bench-") as tmp:
        try:
            for variant in spec.variants:
                reason = _cuda_skip_reason() if variant == "cuda" else None
                if reason:
                    results[variant] = {"variant": variant, "status": "skipped", "reason": reason}
                    log(f"[{variant}] skipped: {reason}")
                    continue
                log(f"[{variant}] {VARIANT_INFO[variant]}: loading and warming up …")
                w = Worker(variant, spec, texts, Path(tmp))
                if w.hello["status"] != "ready":
                    results[variant] = {"variant": variant, **w.hello}
                    log(f"[{variant}] {w.hello['status']}: {w.hello.get('reason', '')}")
                    w.close()
                    continue
                workers[variant] = w
                results[variant] = {"variant": variant, "status": "ok",
                                    **{k: v for k, v in w.hello.items() if k != "status"}}  # fmt: skip
            log(
                f"timing {', '.join(workers)} interleaved in {spec.rounds} rounds, "
                f"batch sizes {spec.batch_sizes} …"
            )
            measured, failed = measure_interleaved(workers, texts, spec, log)
            for variant, w in workers.items():
                if variant in failed:
                    results[variant] = {"variant": variant, "status": "failed", "reason": failed[variant]}
                    continue
                stats = w.ask({"cmd": "stats"})
                results[variant].update(
                    measured[variant], peak_rss_mb=stats["peak_rss_mb"], rss_end_mb=stats["rss_mb"]
                )
                r = results[variant]
                log(
                    f"[{variant}] "
                    + ", ".join(
                        f"batch {k}: {m['sentences_per_s']:.1f} sentences/s"
                        for k, m in r["per_batch_size"].items()
                    )
                    + f", peak RSS {r['peak_rss_mb']:.0f} MB"
                )
        finally:
            for w in workers.values():
                w.close()
    log(f"GEMM peak ({spec.gemm_size}³, {spec.threads} threads) …")
    peak = gemm_peak(spec.gemm_size, spec.threads)
    kernel = int8_kernel(bundle.onnx_file("onnx-int8")) if bundle.has(ONNX_FILES["onnx-int8"]) else None
    rows = summarize(results, y, flops, peak, spec.batch_sizes, kernel)
    result: dict[str, Any] = {
        "schema_version": 1,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "model": {"name": bundle.name, "version": bundle.version, "path": str(spec.bundle)},
        "data": str(spec.data),
        "n_sentences": len(texts),
        "sentence_ids": [e.id for e in picked],
        "languages": {lang: sum(e.lang == lang for e in picked) for lang in sorted({e.lang for e in picked})},
        "threads": spec.threads,
        "spec": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(spec).items()},
        "machine": machine_,
        "flops": flops,
        "int8_kernel": kernel,
        "gemm_peak": peak,
        "rows": rows,
        "target": target_check(rows, spec.batch_sizes),
        "variants": {
            k: {kk: vv for kk, vv in v.items() if kk != "per_batch_size"} for k, v in results.items()
        },
        "time_s": round(time.perf_counter() - t0, 1),
        "load_average_1m_at_end": load_average(),
    }
    md = render_markdown(result)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "bench.json", "markdown": out / "bench.md"}
    write_report(result, paths["json"], md, paths["markdown"])
    return {**result, "markdown": md, "paths": paths}
