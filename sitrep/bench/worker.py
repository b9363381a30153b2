"""One `sitrep bench models` variant, in its own process so its peak RSS is its own.

    python -m sitrep.bench.worker SPEC.json

SPEC: {"variant", "bundle", "texts", "batch_sizes", "threads"}. The worker loads the variant, warms
it up, answers ``{"status": "ready" | "skipped", ...}`` and then serves JSON-line commands on stdin,
one JSON-line answer each on stdout (library output is sent to stderr):

- ``{"cmd": "requests", "bs": B, "start": i, "count": k}``: batch i, i+1, … (k of them, wrapping
  around) of the texts cut into consecutive batches of B in input order (as a client would send
  them), one timed call each (tokenization included) → latencies, probabilities, label sets;
- ``{"cmd": "bulk", "bs": B}``: the whole list in one call with batch size B, each variant
  batching it its own way (our runtime sorts by length; the pipeline keeps input order) → seconds;
- ``{"cmd": "stats"}``: RSS now and peak (VmHWM); ``{"cmd": "exit"}``.

The parent (sitrep/bench/models.py) interleaves the variants command by command, so load from other
processes falls on all of them alike.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from sitrep.models.labels import LABELS

Runner = Callable[[list[str], int], tuple[np.ndarray, list[list[str]]]]  # (texts, batch size)


class Skip(Exception):
    """This variant cannot run here (no GPU, no int8 file…); the reason goes into the result."""


def pipeline_runner(bundle_path: Path, threads: int | None) -> Runner:
    """The transformers text-classification pipeline, fp32 on CPU: what a user would run instead.

    The pipeline gets the bundle's own torch model (`models.torch_model.load_classifier`, so a
    mean-pooled bundle is mean-pooled: `transformers` alone would build its default head, whose
    pooler layer the bundle does not train) and its tokenizer. Its sigmoid scores are mapped through
    the bundle's calibration and thresholds (models.calibration) only to score macro-F1 on the same
    decision rule as our runtime; the timed call is the pipeline's.
    """
    import torch
    from transformers import AutoTokenizer, pipeline
    from transformers.utils import logging as hf_logging

    from sitrep.models.bundle import load_bundle
    from sitrep.models.calibration import calibrated_probs, labels_above
    from sitrep.models.torch_model import load_classifier

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    if threads:
        torch.set_num_threads(threads)
    bundle = load_bundle(bundle_path, verify=False)
    pipe = pipeline(
        "text-classification",
        model=load_classifier(bundle.hf_dir).eval(),
        tokenizer=AutoTokenizer.from_pretrained(str(bundle.hf_dir)),
        top_k=None,
        function_to_apply="sigmoid",
        device="cpu",
        dtype=torch.float32,
    )

    def run(texts: list[str], batch_size: int) -> tuple[np.ndarray, list[list[str]]]:
        out = pipe(texts, batch_size=batch_size, truncation=True, max_length=bundle.max_length)
        scores = np.asarray(
            [[{d["label"]: d["score"] for d in row}[name] for name in LABELS] for row in out],
            dtype=np.float64,
        )
        p = np.clip(scores, 1e-7, 1 - 1e-7)
        probs = calibrated_probs(np.log(p) - np.log1p(-p), bundle.calibration)
        return probs, labels_above(probs, bundle.thresholds)

    return run


def runtime_runner(bundle_path: Path, variant: str, threads: int | None) -> Runner:
    """Our runtime; variant `<runtime>-padded` turns off its cost-based split (one padded call a batch)."""
    from sitrep.models.bundle import BundleError
    from sitrep.models.runtime import RuntimeUnavailable, load

    runtime = variant.removesuffix("-padded")
    try:
        clf = load(bundle_path, runtime, threads=threads, split_batches=not variant.endswith("-padded"))
    except (RuntimeUnavailable, BundleError) as exc:
        raise Skip(str(exc)) from exc
    clf.warmup()

    def run(texts: list[str], batch_size: int) -> tuple[np.ndarray, list[list[str]]]:
        result = clf.classify(texts, batch_size=batch_size)
        return result.probs, result.labels

    return run


def rss_mb() -> float:
    import psutil

    return round(psutil.Process().memory_info().rss / 2**20, 1)


def peak_rss_mb() -> float:
    """This process's peak resident set size.

    Linux: VmHWM of /proc/self/status, the high-water mark of this process's own address space.
    Not ru_maxrss: Linux carries the parent's high-water mark over fork + exec, so a worker started
    from a large parent (a test runner) would report the parent's peak.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)  # kB
    except OSError:
        pass
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB elsewhere
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20, 1)


def batches_of(texts: list[str], bs: int) -> list[list[str]]:
    return [texts[i : i + bs] for i in range(0, len(texts), bs)]


def handle(cmd: dict[str, Any], run: Runner, texts: list[str]) -> dict[str, Any]:
    if cmd["cmd"] == "requests":
        batches = batches_of(texts, cmd["bs"])
        out: dict[str, Any] = {"batches": [], "latencies": [], "probs": [], "labels": []}
        for j in range(cmd["start"], cmd["start"] + cmd["count"]):
            idx = j % len(batches)
            t0 = time.perf_counter()
            probs, labels = run(batches[idx], len(batches[idx]))
            out["latencies"].append(time.perf_counter() - t0)
            out["batches"].append(idx)
            out["probs"].append(np.asarray(probs).round(6).tolist())
            out["labels"].append(labels)
        return out
    if cmd["cmd"] == "bulk":
        t0 = time.perf_counter()
        run(texts, cmd["bs"])
        return {"seconds": time.perf_counter() - t0}
    if cmd["cmd"] == "stats":
        return {"rss_mb": rss_mb(), "peak_rss_mb": peak_rss_mb()}
    raise ValueError(f"unknown command {cmd!r}")


def main(argv: list[str]) -> int:
    proto = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)  # anything a library prints goes to stderr, not into the protocol
    sys.stdout = sys.stderr

    def send(obj: dict[str, Any]) -> None:
        proto.write(json.dumps(obj, ensure_ascii=False) + "\n")
        proto.flush()

    spec = json.loads(Path(argv[1]).read_text(encoding="utf-8"))
    variant, bundle, threads = spec["variant"], Path(spec["bundle"]), spec.get("threads")
    texts: list[str] = spec["texts"]
    start_rss = rss_mb()
    t0 = time.perf_counter()
    try:
        run = (
            pipeline_runner(bundle, threads)
            if variant == "pipeline"
            else runtime_runner(bundle, variant, threads)
        )
        for bs in spec["batch_sizes"]:  # warm up at each shape before anything is timed
            run(batches_of(texts, bs)[0], bs)
    except Skip as exc:
        send({"status": "skipped", "reason": str(exc)})
        return 0
    except Exception as exc:  # reported to the parent, which shows it in the table
        send(
            {
                "status": "failed",
                "reason": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc()[-4000:],
            }
        )
        return 1
    send({"status": "ready", "load_s": round(time.perf_counter() - t0, 2), "rss_start_mb": start_rss,
          "rss_after_load_mb": rss_mb()})  # fmt: skip
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["cmd"] == "exit":
            break
        try:
            send({"ok": True, **handle(cmd, run, texts)})
        except Exception as exc:
            send(
                {
                    "ok": False,
                    "reason": f"{type(exc).__name__}: {exc}",
                    "traceback": traceback.format_exc()[-4000:],
                }
            )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
