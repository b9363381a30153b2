"""Prometheus metrics of one app instance (its own registry, so several apps can live in one process).

Per-label positive rate: `rate(sitrep_label_positive_total[5m]) / ignoring(label) group_left
rate(sitrep_sentences_total[5m])`, or the `sitrep_label_positive_ratio` gauge (since the model loaded).
"""

from __future__ import annotations

import time

import numpy as np
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sitrep.models.labels import LABELS

LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)

__all__ = ["CONTENT_TYPE_LATEST", "HttpMetricsMiddleware", "Metrics"]


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        # the standard process_* (CPU seconds, resident memory, open fds, start time) and python_info
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        self.requests = Counter(
            "sitrep_http_requests",
            "HTTP requests answered, by route and status code.",
            ["route", "method", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "sitrep_http_request_duration_seconds",
            "Time from request received to response sent, by route.",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_wait = Histogram(
            "sitrep_queue_wait_seconds",
            "Time a request waited in the batch queue before its runtime call began.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.inference = Histogram(
            "sitrep_inference_seconds",
            "Duration of one runtime call (tokenize + model + calibration).",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_sentences = Histogram(
            "sitrep_batch_size_sentences",
            "Sentences per runtime call (after merging requests).",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.batch_requests = Histogram(
            "sitrep_batch_size_requests",
            "Requests merged into one runtime call.",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "sitrep_queue_depth",
            "Sentences waiting for a runtime call.",
            registry=r,
        )
        self.inflight = Gauge(
            "sitrep_inflight_sentences",
            "Sentences accepted and not yet answered (queued or running).",
            registry=r,
        )
        self.shed = Counter(
            "sitrep_shed_requests",
            "Requests refused with 503 because the queue was full or the service draining.",
            ["reason"],
            registry=r,
        )
        self.sentences = Counter("sitrep_sentences", "Sentences classified.", registry=r)
        self.truncated = Counter(
            "sitrep_truncated_sentences", "Sentences cut to fit a length limit.", registry=r
        )
        self.positives = Counter(
            "sitrep_label_positive",
            "Sentences that got each label.",
            ["label"],
            registry=r,
        )
        self.positive_ratio = Gauge(
            "sitrep_label_positive_ratio",
            "Share of sentences given each label since the current model loaded.",
            ["label"],
            registry=r,
        )
        self.model_info = Info("sitrep_model", "The model being served.", registry=r)
        self.reloads = Counter("sitrep_model_reloads", "Model reloads, by result.", ["result"], registry=r)
        self.ready = Gauge(
            "sitrep_ready", "1 when a model is loaded and warmed and the service accepts work.", registry=r
        )
        self._since_load_total = 0
        self._since_load_pos = np.zeros(len(LABELS), dtype=np.int64)
        for label in LABELS:  # export every series from the start, at zero
            self.positives.labels(label)
            self.positive_ratio.labels(label).set(0)

    def set_model(self, name: str, version: str, runtime: str) -> None:
        self.model_info.info({"name": name, "version": version, "runtime": runtime})
        self._since_load_total = 0
        self._since_load_pos[:] = 0
        for label in LABELS:
            self.positive_ratio.labels(label).set(0)

    def observe_labels(self, labels: list[list[str]], truncated: list[bool]) -> None:
        n = len(labels)
        if not n:
            return
        self.sentences.inc(n)
        cut = sum(truncated)
        if cut:
            self.truncated.inc(cut)
        counts = np.zeros(len(LABELS), dtype=np.int64)
        for row in labels:
            for label in row:
                counts[LABELS.index(label)] += 1
        self._since_load_total += n
        self._since_load_pos += counts
        for j, label in enumerate(LABELS):
            if counts[j]:
                self.positives.labels(label).inc(int(counts[j]))
            self.positive_ratio.labels(label).set(self._since_load_pos[j] / self._since_load_total)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class HttpMetricsMiddleware:
    """Counts every answer by route and status (errors from middleware included) and times it."""

    def __init__(self, app: ASGIApp, metrics: Metrics, routes: frozenset[str]) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = scope["path"] if scope["path"] in self.routes else "other"
        method = scope["method"]
        status = 500
        t0 = time.perf_counter()

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            self.metrics.requests.labels(route, method, str(status)).inc()
            self.metrics.latency.labels(route, method).observe(time.perf_counter() - t0)
