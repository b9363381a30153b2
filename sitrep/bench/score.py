"""`sitrep bench score`: rows/s of the local engine per runtime and batch size, side by side.

For every runtime (skipped, with the reason, where it cannot run here) and batch size it measures:

- end to end: `score_local` on a generated Parquet file of news-length sentences (read, tokenize
  in the worker threads, model, write and commit shards), model load excluded;
- model only: `classify_encoded` on chunks tokenized beforehand (padding and calibration included);
- tokenization only: `encode` on the same chunks in one thread (once per runtime).

With `--repeats R` every variant is measured R times, in interleaved rounds (all variants, then all
again), and the medians are reported with the end-to-end range: on a shared machine a busy spell
then hits every variant alike instead of one.

Ratios: each end-to-end rate against the first row's, and end to end against model only (how much
of the model's speed the pipeline keeps; 1.0 means the model is never starved).
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sitrep.bench.common import corpus_sentences, gpu_name, machine, sample_sentences
from sitrep.models.bundle import BundleError, load_bundle
from sitrep.models.cpu import cpu_name
from sitrep.models.encoding import Encoded
from sitrep.models.runtime import Classifier, RuntimeUnavailable, Timings, load
from sitrep.scoring.engine_local import default_workers, score_local
from sitrep.scoring.options import DEFAULT_CHUNK_ROWS, ScoreError, ScoreOptions


def runtime_device(clf: Classifier) -> str:
    if clf.runtime == "cuda":
        return f"GPU: {gpu_name() or 'CUDA device'} (ONNX Runtime CUDA EP)"
    device = getattr(clf.backend, "device", None)
    if device is not None and getattr(device, "type", "cpu") == "cuda":
        return f"GPU: {gpu_name() or device} (torch)"
    return f"CPU: {cpu_name()}, {os.cpu_count()} cores"


def run_bench(
    bundle: Path,
    runtimes: list[str],
    batch_sizes: list[int],
    rows: int,
    data: str = "data/*.jsonl",
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    tokenize_workers: int | None = None,
    threads: int | None = None,
    device: str | None = None,
    seed: int = 0,
    repeats: int = 1,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Measure every (runtime, batch size) `repeats` times, interleaved; report medians (and `--json`)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    say = log or (lambda _msg: None)
    if rows < 1 or repeats < 1 or not batch_sizes or not runtimes:
        raise ScoreError("need --rows >= 1, --repeats >= 1, at least one runtime and one batch size")
    b = load_bundle(bundle, verify=False)
    try:
        texts = sample_sentences(corpus_sentences(data), rows, seed)
    except (FileNotFoundError, ValueError) as exc:
        raise ScoreError(str(exc)) from exc
    workers = tokenize_workers or default_workers()
    report: dict[str, Any] = {
        "bundle": {
            "path": str(bundle),
            "name": b.name,
            "version": b.version,
            "base_model": b.manifest.base_model,
        },
        "machine": machine(),
        "rows": rows,
        "mean_chars": round(sum(map(len, texts)) / len(texts), 1),
        "chunk_rows": chunk_rows,
        "tokenize_workers": workers,
        "repeats": repeats,
        "devices": {},
        "results": [],
        "skipped": [],
        "load_avg_1m": {"start": round(os.getloadavg()[0], 2)},  # other work on the machine skews timings
    }
    work = Path(tempfile.mkdtemp(prefix="sitrep-bench-score-"))
    try:
        src = work / "input.parquet"
        ids = [f"s{i:09d}" for i in range(rows)]
        pq.write_table(pa.table({"id": ids, "text": texts}), src, row_group_size=chunk_rows)
        loaded: dict[str, tuple[Classifier, list[Encoded], float]] = {}
        for runtime in runtimes:
            try:
                clf = load(bundle, runtime, threads=threads, device=device)
                clf.warmup()
            except (RuntimeUnavailable, BundleError) as exc:
                say(f"{runtime}: skipped ({exc})")
                report["skipped"].append({"runtime": runtime, "reason": str(exc)})
                continue
            report["devices"][runtime] = runtime_device(clf)
            say(f"{runtime}: {report['devices'][runtime]}")
            t0 = time.perf_counter()
            encoded = [clf.encode(texts[i : i + chunk_rows]) for i in range(0, rows, chunk_rows)]
            loaded[runtime] = (clf, encoded, rows / (time.perf_counter() - t0))
            report.setdefault("mean_tokens", round(sum(int(e.lengths.sum()) for e in encoded) / rows, 1))
            for bs in batch_sizes:
                clf.classify_encoded(encoded[0], bs)  # untimed: the first runs of new shapes allocate
        samples: dict[tuple[str, int], list[dict[str, float]]] = {}
        for rnd in range(repeats):  # variants interleaved, so a busy spell on the machine hits all of them
            for runtime, (clf, encoded, _) in loaded.items():
                for bs in batch_sizes:
                    timings = Timings()
                    t0 = time.perf_counter()
                    for enc in encoded:
                        clf.classify_encoded(enc, bs, timings=timings)
                    model_rps = rows / (time.perf_counter() - t0)
                    opts = ScoreOptions(bundle=bundle, input=str(src), output=work / f"out-{runtime}-{bs}",
                                        runtime=runtime, device=device, batch_size=bs, chunk_rows=chunk_rows,
                                        tokenize_workers=workers, threads=threads)  # fmt: skip
                    summary = score_local(opts, progress=False, classifier=clf)
                    shutil.rmtree(opts.output)
                    samples.setdefault((runtime, bs), []).append({
                        "e2e": summary.rows_per_s, "model": model_rps, "wall": summary.wall_s,
                        "model_s": summary.model_s, "tokenize_s": summary.tokenize_s,
                    })  # fmt: skip
                    say(f"  round {rnd + 1}/{repeats} {runtime} batch {bs:>5}: end to end "
                        f"{summary.rows_per_s:,.0f} rows/s, model only {model_rps:,.0f} rows/s")  # fmt: skip
        for (runtime, bs), runs in samples.items():
            med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
            report["results"].append({
                "runtime": runtime,
                "device": report["devices"][runtime].split(":", 1)[0],
                "batch_size": bs,
                "end_to_end_rows_per_s": round(med["e2e"], 1),
                "end_to_end_rows_per_s_range": [round(min(r["e2e"] for r in runs), 1),
                                                round(max(r["e2e"] for r in runs), 1)],
                "model_only_rows_per_s": round(med["model"], 1),
                "tokenize_rows_per_s_1_thread": round(loaded[runtime][2], 1),
                "model_busy": round(med["model_s"] / med["wall"], 3) if med["wall"] else None,
                "end_to_end_s": round(med["wall"], 3),
                "tokenize_s_workers_sum": round(med["tokenize_s"], 3),
                "model_s": round(med["model_s"], 3),
            })  # fmt: skip
        del loaded
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report["load_avg_1m"]["end"] = round(os.getloadavg()[0], 2)
    if report["results"]:
        base = report["results"][0]["end_to_end_rows_per_s"]
        for row in report["results"]:
            row["vs_first"] = round(row["end_to_end_rows_per_s"] / base, 3) if base else None
            m = row["model_only_rows_per_s"]
            row["end_to_end_vs_model_only"] = round(row["end_to_end_rows_per_s"] / m, 3) if m else None
    return report


def render_table(report: dict[str, Any]) -> Any:
    """A rich Table of the results (the CLI prints it; README tables are copied from it)."""
    from rich.table import Table

    b = report["bundle"]
    table = Table(
        title=f"sitrep bench score: bundle {b['name']} {b['version']}, {report['rows']:,} sentences "
        f"(mean {report['mean_chars']} chars, {report.get('mean_tokens', '?')} tokens)",
        caption="\n".join(
            [f"{rt}: {dev}" for rt, dev in report["devices"].items()]
            + [f"{s['runtime']}: skipped ({s['reason']})" for s in report["skipped"]]
        ),
    )
    for col in (
        "runtime",
        "batch",
        "e2e rows/s",
        "× first",
        "model rows/s",
        "e2e/model",
        "tok rows/s 1 thr",
        "model busy",
    ):
        table.add_column(col, justify="left" if col == "runtime" else "right", no_wrap=col == "runtime")
    for r in report["results"]:
        table.add_row(
            r["runtime"],
            str(r["batch_size"]),
            f"{r['end_to_end_rows_per_s']:,.0f}",
            f"{r['vs_first']:.2f}",
            f"{r['model_only_rows_per_s']:,.0f}",
            f"{r['end_to_end_vs_model_only']:.2f}",
            f"{r['tokenize_rows_per_s_1_thread']:,.0f}",
            f"{r['model_busy']:.0%}" if r["model_busy"] is not None else "-",
        )
    return table


def render_markdown(report: dict[str, Any]) -> str:
    """The same table as Markdown (what sitrep/scoring/README.md quotes)."""
    b = report["bundle"]
    lines = [
        f"bundle `{b['name']}` {b['version']} ({b['base_model']}); {report['rows']:,} sentences, mean "
        f"{report['mean_chars']} chars / {report.get('mean_tokens', '?')} tokens; "
        f"chunk {report['chunk_rows']} rows, {report['tokenize_workers']} tokenize worker(s); "
        f"median of {report['repeats']} interleaved round(s); 1-min load "
        f"average {report['load_avg_1m']['start']} at start, {report['load_avg_1m']['end']} at end",
        "",
        "| runtime | device | batch | end-to-end rows/s (range) | × first | model-only rows/s | e2e / model "
        "| tokenize rows/s (1 thread) | model busy |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in report["results"]:
        lo, hi = r["end_to_end_rows_per_s_range"]
        lines.append(
            f"| {r['runtime']} | {report['devices'][r['runtime']]} | {r['batch_size']} "
            f"| {r['end_to_end_rows_per_s']:,.0f} ({lo:,.0f}–{hi:,.0f}) | {r['vs_first']:.2f} "
            f"| {r['model_only_rows_per_s']:,.0f} "
            f"| {r['end_to_end_vs_model_only']:.2f} | {r['tokenize_rows_per_s_1_thread']:,.0f} "
            f"| {r['model_busy']:.0%} |"
        )
    lines += [f"| {s['runtime']} | skipped: {s['reason']} | | | | | | | |" for s in report["skipped"]]
    return "\n".join(lines) + "\n"
