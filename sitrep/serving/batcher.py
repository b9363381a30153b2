"""Dynamic (micro-)batching: one bounded queue in front of the runtime, one inference thread behind it.

Requests put a `Job` (their sentences, their thresholds, the model they were accepted with) on the
queue and await a future. One collector task on the event loop takes the oldest job and, while the
batch holds fewer than `max_batch_size` sentences, waits up to `max_wait_ms` (counted from that job's
arrival) for more work — but only while requests have recently been arriving more often than once per
`max_wait_ms` (a moving average of the gaps), so a lone client never waits for company. Then it hands
the merged jobs to the inference thread: one tokenizer call and one `Classifier.classify_encoded` call
(which splits the work into length-sorted forward passes of at most `max_batch_size` texts and
`max_batch_tokens` padded tokens), and each job gets its slice back. While that thread runs, new
requests queue up and form the next batch, so under load batches fill without waiting. With batching
off, each request is its own runtime call, in arrival order, on the same thread.

The queue is bounded in sentences (`queue_limit`, counting everything accepted and not yet answered):
a request that would overflow it is refused at once with `Overloaded` (HTTP 503 + Retry-After), so
latency stays bounded. A request whose client went away before its batch started is skipped. Every
other accepted job is answered: with results, or with the exception its runtime call raised; on
shutdown the queue is drained before the thread stops.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from sitrep.models.calibration import labels_above
from sitrep.models.encoding import Encoded
from sitrep.serving.lifecycle import LoadedModel
from sitrep.serving.prometheus import Metrics

log = logging.getLogger("sitrep.serving")


class Overloaded(RuntimeError):
    """The queue is full (or the service is shutting down): refuse now rather than answer late."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class TooManyTokens(ValueError):
    """Refuse mode: the sentence at `position` in the job is longer than the model's max tokens."""

    def __init__(self, position: int, max_tokens: int) -> None:
        super().__init__(f"sentence {position} is longer than the model's {max_tokens} tokens")
        self.position = position
        self.max_tokens = max_tokens


@dataclass
class BatchConfig:
    batching: bool = True
    max_batch_size: int = 64
    max_batch_tokens: int | None = 512
    max_wait_ms: float = 2.0
    queue_limit: int = 1024


@dataclass
class JobResult:
    probs: np.ndarray  # [n, len(LABELS)] calibrated probabilities
    labels: list[list[str]]
    truncated: list[bool]
    model: LoadedModel
    queue_s: float = 0.0  # waited in the queue before its runtime call began
    model_s: float = 0.0  # the runtime call it was part of (tokenize + model + calibration)


@dataclass(eq=False)
class Job:
    texts: list[str]
    model: LoadedModel
    thresholds: np.ndarray | None  # None: the model's own
    refuse_truncated: bool
    future: asyncio.Future[JobResult]
    enqueued: float = field(default_factory=time.perf_counter)
    contexts: list[str] | None = None  # each text's previous sentence in its document (document mode)


class Batcher:
    def __init__(self, config: BatchConfig, metrics: Metrics) -> None:
        self.config = config
        self.metrics = metrics
        self._pending: deque[Job] = deque()
        self._pending_sentences = 0
        self._accepted_sentences = 0  # queued or running, not yet answered
        self._wakeup = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sitrep-inference")
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        # Moving average of the time between arrivals: the collector waits for company only when requests
        # have been arriving faster than one per max wait, so a lone client is never delayed.
        self._last_arrival = 0.0
        self._gap_s = 0.0

    # --- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._collect(), name="sitrep-batcher")
        self._task.add_done_callback(self._collector_ended)

    def _collector_ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("the batch collector died: %r; failing queued requests", task.exception())
            self._fail_pending(RuntimeError("the batch collector stopped"))

    @property
    def alive(self) -> bool:
        """The collector runs (readiness depends on it)."""
        return self._task is not None and not self._task.done()

    async def close(self, timeout: float | None = None) -> None:
        """Stop accepting work, answer everything already accepted, then stop the inference thread."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout)
            except TimeoutError:
                log.error("drain timed out with %d sentences still queued", self._pending_sentences)
                self._task.cancel()
                self._fail_pending(Overloaded("the service shut down before this request ran", "shutdown"))
        self._executor.shutdown(wait=True)

    @property
    def accepted_sentences(self) -> int:
        return self._accepted_sentences

    # --- the request side -------------------------------------------------------------------
    async def submit(
        self,
        texts: list[str],
        model: LoadedModel,
        thresholds: np.ndarray | None = None,
        refuse_truncated: bool = False,
        contexts: list[str] | None = None,
    ) -> JobResult:
        """Classify `texts` with `model` in the next batch; raises Overloaded when the queue is full.

        `contexts`: each text's previous sentence in its document ("" for none), read where the model was trained
        with document context."""
        n = len(texts)
        if not self.alive and not self._closing:
            raise RuntimeError("the batch collector is not running")
        if self._closing:
            self.metrics.shed.labels("shutdown").inc()
            raise Overloaded("the service is shutting down; retry on another instance", "shutdown")
        if self._accepted_sentences and self._accepted_sentences + n > self.config.queue_limit:
            self.metrics.shed.labels("queue_full").inc()
            raise Overloaded(
                f"queue full ({self._accepted_sentences} sentences waiting, "
                f"limit {self.config.queue_limit}); retry after the delay in Retry-After",
                "queue_full",
            )
        job = Job(texts, model, thresholds, refuse_truncated, asyncio.get_running_loop().create_future(),
                  contexts=contexts)
        gap = min(10 * self.config.max_wait_ms / 1000, job.enqueued - self._last_arrival)
        self._gap_s = 0.5 * self._gap_s + 0.5 * gap
        self._last_arrival = job.enqueued
        self._pending.append(job)
        self._pending_sentences += n
        self._accepted_sentences += n
        self._gauges()
        self._wakeup.set()
        return await job.future

    # --- the collector ----------------------------------------------------------------------
    async def _collect(self) -> None:
        cfg = self.config
        while True:
            while not self._pending:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
            if cfg.batching and cfg.max_wait_ms > 0 and self._gap_s < cfg.max_wait_ms / 1000:
                deadline = self._pending[0].enqueued + cfg.max_wait_ms / 1000
                while self._pending_sentences < cfg.max_batch_size and not self._closing:
                    remaining = deadline - time.perf_counter()
                    if remaining <= 0:
                        break
                    self._wakeup.clear()
                    try:
                        await asyncio.wait_for(self._wakeup.wait(), remaining)
                    except TimeoutError:
                        break
            jobs = self._take()
            if jobs:
                await self._execute(jobs)

    def _take(self) -> list[Job]:
        """The oldest live job plus, with batching on, following jobs for the same model that fit."""
        jobs: list[Job] = []
        size = 0
        while self._pending:
            job = self._pending[0]
            n = len(job.texts)
            if job.future.done():  # the client went away before its batch started
                self._pending.popleft()
                self._pending_sentences -= n
                self._accepted_sentences -= n
                continue
            if jobs and (
                not self.config.batching
                or job.model is not jobs[0].model
                or size + n > self.config.max_batch_size
            ):
                break
            self._pending.popleft()
            self._pending_sentences -= n
            jobs.append(job)
            size += n
        self._gauges()
        return jobs

    async def _execute(self, jobs: list[Job]) -> None:
        now = time.perf_counter()
        for job in jobs:
            self.metrics.queue_wait.observe(now - job.enqueued)
        total = sum(len(j.texts) for j in jobs)
        self.metrics.batch_sentences.observe(total)
        self.metrics.batch_requests.observe(len(jobs))
        loop = asyncio.get_running_loop()
        try:
            outcomes = await loop.run_in_executor(self._executor, self._infer, jobs)
        except Exception as exc:  # the runtime failed: every job of this batch learns it
            log.exception("runtime call failed for a batch of %d sentences", total)
            outcomes = [exc] * len(jobs)
        finally:
            model_s = time.perf_counter() - now
            self.metrics.inference.observe(model_s)
            self._accepted_sentences -= total
            self._gauges()
        for job, outcome in zip(jobs, outcomes, strict=True):
            if job.future.done():
                continue
            if isinstance(outcome, BaseException):
                job.future.set_exception(outcome)
            else:
                outcome.queue_s, outcome.model_s = now - job.enqueued, model_s
                self.metrics.observe_labels(outcome.labels, outcome.truncated)
                job.future.set_result(outcome)

    def _infer(self, jobs: list[Job]) -> list[JobResult | Exception]:
        """Runs on the inference thread: one tokenizer call, one runtime call, results split per job."""
        clf = jobs[0].model.classifier
        contexts = ([c for j in jobs for c in (j.contexts or [""] * len(j.texts))] if clf.uses_context else None)
        encoded = clf.encode([t for j in jobs for t in j.texts], contexts)
        outcomes: list[JobResult | Exception | None] = [None] * len(jobs)
        keep: list[int] = []
        offset = 0
        for k, job in enumerate(jobs):
            n = len(job.texts)
            cut = encoded.truncated[offset : offset + n]
            if job.refuse_truncated and any(cut):
                outcomes[k] = TooManyTokens(cut.index(True), clf.bundle.max_length)
            else:
                keep.extend(range(offset, offset + n))
            offset += n
        if len(keep) < len(encoded.ids):
            encoded = Encoded(
                ids=[encoded.ids[i] for i in keep], truncated=[encoded.truncated[i] for i in keep]
            )
        result = clf.classify_encoded(
            encoded, batch_size=self.config.max_batch_size, max_tokens=self.config.max_batch_tokens
        )
        offset = 0
        for k, job in enumerate(jobs):
            if outcomes[k] is not None:
                continue
            n = len(job.texts)
            probs = result.probs[offset : offset + n]
            labels = (
                result.labels[offset : offset + n]
                if job.thresholds is None
                else labels_above(probs, job.thresholds)
            )
            outcomes[k] = JobResult(probs, labels, result.truncated[offset : offset + n], job.model)
            offset += n
        return [o for o in outcomes if o is not None]

    def _fail_pending(self, exc: Exception) -> None:
        while self._pending:
            job = self._pending.popleft()
            if not job.future.done():
                job.future.set_exception(exc)
        self._pending_sentences = 0
        self._gauges()

    def _gauges(self) -> None:
        self.metrics.queue_depth.set(self._pending_sentences)
        self.metrics.inflight.set(self._accepted_sentences)
