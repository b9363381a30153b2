"""`sitrep bench shapes`: what one model call costs, by batch size and padded length.

Times the runtime's model call (no tokenization) on batches of B texts padded to L tokens, for every
(B, L) asked, and fits ``ms = overhead + per_token × B × L`` by least squares. ``overhead / per_token``
is a call's fixed cost in tokens: the figure behind the runtime's cost-based split of mixed-length
batches (``models.encoding.CALL_OVERHEAD_TOKENS``), which this report sets beside the fitted one.
Speed does not depend on the token ids, so each row is one real sentence's ids cut or repeated to L.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from sitrep.bench.common import machine
from sitrep.models.encoding import CALL_OVERHEAD_TOKENS


def fit_call_cost(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Least-squares ``ms = overhead_ms + ms_per_token × B × L`` over the rows' median times, in relative
    error (each row weighted by 1 / its time): in absolute error the largest shapes, whose few percent of
    noise exceed a call's whole overhead, would decide the intercept."""
    tokens = np.asarray([r["batch_size"] * r["length"] for r in rows], dtype=np.float64)
    ms = np.asarray([r["median_ms"] for r in rows], dtype=np.float64)
    design = np.stack([np.ones_like(tokens), tokens], axis=1) / ms[:, None]
    (overhead, per_token), *_ = np.linalg.lstsq(design, np.ones_like(ms), rcond=None)
    return {
        "overhead_ms": round(float(overhead), 3),
        "ms_per_token": round(float(per_token), 5),
        "overhead_tokens": round(float(overhead / per_token), 1) if per_token > 0 else float("nan"),
    }


def shape_batch(ids: np.ndarray, batch_size: int, length: int) -> tuple[np.ndarray, np.ndarray]:
    """B copies of `ids` (<s> pieces </s>) with the pieces cut or repeated to exactly `length` tokens."""
    inner = np.resize(ids[1:-1], max(length - 2, 0))
    row = np.concatenate([ids[:1], inner, ids[-1:]])[:length]
    input_ids = np.tile(row, (batch_size, 1)).astype(np.int64)
    return input_ids, np.ones_like(input_ids)


def run_shapes(
    bundle: Path,
    runtime: str,
    batch_sizes: list[int],
    lengths: list[int],
    repeats: int = 5,
    threads: int | None = None,
) -> dict[str, Any]:
    from sitrep.models.runtime import load

    if not batch_sizes or not lengths or min(batch_sizes) < 1 or min(lengths) < 2:
        raise ValueError("--batch-sizes need values >= 1 and --lengths values >= 2 (the two special tokens)")
    clf = load(bundle, runtime, threads=threads)
    if max(lengths) > clf.bundle.max_length:
        raise ValueError(f"--lengths: at most the model's max_length, {clf.bundle.max_length}")
    ids = clf.encode(["The defence ministry said two drones were shot down near the base on Tuesday."]).ids[0]
    rows: list[dict[str, Any]] = []
    shapes = [(b, n) for n in lengths for b in batch_sizes]
    for b, n in tqdm(shapes, desc="shapes", unit="shape", dynamic_ncols=True):
        input_ids, mask = shape_batch(ids, b, n)
        clf.backend(input_ids, mask)  # warm this shape
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            clf.backend(input_ids, mask)
            times.append((time.perf_counter() - t0) * 1000)
        med = float(np.median(times))
        rows.append({"batch_size": b, "length": n, "median_ms": round(med, 3),
                     "us_per_token": round(med * 1000 / (b * n), 1)})  # fmt: skip
    return {
        "bundle": str(bundle),
        "runtime": runtime,
        "repeats": repeats,
        "machine": machine(threads),
        "rows": rows,
        "fit": fit_call_cost(rows),
        "runtime_overhead_tokens": CALL_OVERHEAD_TOKENS,
    }


def shapes_markdown(report: dict[str, Any]) -> str:
    fit = report["fit"]
    lines = [
        f"`sitrep bench shapes` — {report['runtime']}, {report['machine']['cpu']}, "
        f"threads {report['machine']['threads'] or 'all'}, median of {report['repeats']} calls per shape",
        "",
        "| batch | length | ms per call | µs per token |",
        "|---:|---:|---:|---:|",
        *[f"| {r['batch_size']} | {r['length']} | {r['median_ms']:.2f} | {r['us_per_token']:.1f} |"
          for r in report["rows"]],
        "",
        f"Fit ms = {fit['overhead_ms']:.2f} + {fit['ms_per_token']:.4f} × B × L: a call's fixed cost is "
        f"{fit['overhead_tokens']} tokens (the runtime splits batches with "
        f"CALL_OVERHEAD_TOKENS = {report['runtime_overhead_tokens']}).",
    ]
    return "\n".join(lines)
