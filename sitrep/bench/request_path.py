"""`sitrep bench request-path`: where a single-sentence POST /classify spends its time, stage by stage.

The stages are the service's own functions, called in process in the order a request meets them
(HTTP parsing, the event loop and the batcher's queue are `sitrep bench http`'s): the request body
validated (`schemas.ClassifyRequest`), planned (`planning.plan_request`), tokenized (the bundle's
`TextEncoder`), then the runtime call the batcher makes (`Classifier.classify_encoded`: padding, the
backend call — ONNX Runtime or torch — and calibration with thresholds, told apart by its `Timings`),
the results built (`planning.build_results`) and rendered as the JSON response. For each stage: the
median and p90 over the requests and its share of the median total; "not the model" is everything but
the model call, the per-request overhead the issue asks to remove.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from sitrep.bench.common import corpus_sentences, machine, sample_sentences

STAGES = ("validate", "plan", "tokenize", "pad", "model", "calibrate", "build", "json")


def run_request_path(
    bundle: Path,
    runtime: str,
    data: Path,
    requests: int = 300,
    threads: int | None = None,
) -> dict[str, Any]:
    from fastapi.responses import JSONResponse

    from sitrep.models.runtime import Timings, load
    from sitrep.serving.planning import Limits, build_results, plan_request
    from sitrep.serving.schemas import ClassifyRequest
    from sitrep.serving.settings import Settings

    if requests < 1:
        raise ValueError("--requests must be at least 1")
    clf = load(bundle, runtime, threads=threads)
    clf.warmup()
    limits = Limits.from_settings(Settings())
    texts = sample_sentences(corpus_sentences(data), requests)
    info = {"name": clf.bundle.manifest.name, "version": clf.bundle.manifest.version}
    times: dict[str, list[float]] = {s: [] for s in STAGES}

    def timed(stage: str, fn: Callable[[], Any]) -> Any:
        t0 = time.perf_counter()
        out = fn()
        times[stage].append(time.perf_counter() - t0)
        return out

    tokens = []
    for i, text in enumerate(tqdm(texts, desc="requests", unit="request", dynamic_ncols=True)):
        body = {"items": [{"id": f"r{i}", "text": text}]}
        request = timed("validate", lambda body=body: ClassifyRequest.model_validate(body))
        plan = timed("plan", lambda request=request: plan_request(limits, request.items))
        encoded = timed("tokenize", lambda plan=plan: clf.encode(plan.texts))
        tokens.append(int(encoded.lengths.sum()))
        # The batcher's runtime call; its Timings split the model call and calibration from the padding.
        run = Timings()
        t0 = time.perf_counter()
        result = clf.classify_encoded(encoded, batch_size=1, timings=run)
        times["model"].append(run.model_s)
        times["calibrate"].append(run.calibrate_s)
        times["pad"].append(time.perf_counter() - t0 - run.model_s - run.calibrate_s)
        results = timed(
            "build",
            lambda request=request, plan=plan, result=result: build_results(
                request.items, plan, result.probs, result.labels, result.truncated
            ),
        )
        timed("json", lambda results=results: JSONResponse({"model": info, "results": results}).body)
    ms = {s: np.asarray(v) * 1000 for s, v in times.items()}
    total = np.sum([ms[s] for s in STAGES], axis=0)
    med_total = float(np.median(total))
    rows = [
        {
            "stage": s,
            "median_ms": round(float(np.median(ms[s])), 4),
            "p90_ms": round(float(np.percentile(ms[s], 90)), 4),
            "share_of_total": round(float(np.median(ms[s])) / med_total, 4),
        }
        for s in STAGES
    ]
    not_model = total - ms["model"]
    return {
        "bundle": str(bundle),
        "runtime": runtime,
        "requests": requests,
        "mean_tokens": round(float(np.mean(tokens)), 1),
        "machine": machine(threads),
        "rows": rows,
        "total_median_ms": round(med_total, 3),
        "not_model_median_ms": round(float(np.median(not_model)), 4),
        "not_model_share": round(float(np.median(not_model / total)), 4),
    }


def request_path_markdown(report: dict[str, Any]) -> str:
    lines = [
        f"`sitrep bench request-path` — {report['runtime']}, {report['requests']} single-sentence requests "
        f"(mean {report['mean_tokens']} tokens), {report['machine']['cpu']}, threads "
        f"{report['machine']['threads'] or 'all'}",
        "",
        "| stage | median ms | p90 ms | share of the median total |",
        "|---|---:|---:|---:|",
        *[
            f"| {r['stage']} | {r['median_ms']:.3f} | {r['p90_ms']:.3f} | {r['share_of_total']:.1%} |"
            for r in report["rows"]
        ],
        "",
        f"Median total {report['total_median_ms']:.2f} ms; everything but the model call "
        f"{report['not_model_median_ms']:.3f} ms ({report['not_model_share']:.1%} of a request).",
    ]
    return "\n".join(lines)
