"""The local engine: stream the input through one runtime on this machine, committing shard by shard.

Three stages run at once, joined by bounded queues (so memory holds a few chunks, whatever the input):

    reader thread ──► tokenize workers ──► model (this thread) ──► committer thread
    read, validate,    split + encode;      classify_encoded,        build rows, write the
    cut chunk k        HF tokenizers        length-bucketed          shard, append the commit
                       release the GIL      batches

Chunks reach the model and the committer in input order, so the commit log is a prefix of the input
and a rerun after a crash continues from the last committed chunk (see writer.py).
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from tqdm.auto import tqdm

from sitrep.models.runtime import Classifier, Result, Timings, load
from sitrep.scoring.job import ScoreSummary, job_fingerprint, plan
from sitrep.scoring.options import ScoreOptions
from sitrep.scoring.reader import Chunk, estimate_rows, read_chunks
from sitrep.scoring.scorer import ChunkScorer, Prepared
from sitrep.scoring.writer import OutputJob


def default_workers() -> int:
    return max(1, min(8, (os.cpu_count() or 2) // 2))


def score_local(
    opts: ScoreOptions,
    *,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    classifier: Classifier | None = None,
) -> ScoreSummary:
    """Run (or resume) one scoring job with the local engine and return its summary.

    `classifier`: an already loaded (and warmed-up) runtime for opts.bundle and opts.runtime, to reuse.
    """
    say = log or (lambda _msg: None)
    files, bundle = plan(opts)
    if classifier is None:  # raises RuntimeUnavailable / BundleError before anything is written
        classifier = load(bundle, opts.runtime, threads=opts.threads, device=opts.device)
    elif classifier.runtime != opts.runtime or classifier.bundle.summary() != bundle.summary():
        raise ValueError("the classifier passed in is not the job's bundle and runtime")
    clf = classifier
    job = OutputJob.open(
        opts.output, job_fingerprint(opts, files, bundle, "local"), opts.output_format, opts.overwrite
    )
    try:
        state = job.state
        if state.cleaned:
            say(f"removed uncommitted leftovers of the interrupted run: {', '.join(state.cleaned)}")
        summary = ScoreSummary(
            str(opts.output),
            "local",
            state.rows,
            state.out_rows,
            state.rejects,
            sum(1 for c in state.commits if c.shard),
            resumed_rows=state.rows,
            already_done=state.done is not None,
            cleaned=state.cleaned,
        )
        if state.done is not None:
            say(f"{opts.output} is complete already ({state.rows:,} rows); use --overwrite to score again")
            return summary
        if state.commits:
            say(f"resuming: {len(state.commits):,} chunks ({state.rows:,} rows) were committed before")
        scorer = ChunkScorer(
            clf,
            documents=opts.documents,
            include_text=opts.include_text,
            batch_size=opts.batch_size,
            max_tokens=opts.max_tokens,
        )
        chunks = read_chunks(
            files,
            opts.id_column,
            opts.text_column,
            opts.chunk_rows,
            state.cursor,
            state.next_chunk,
            state.rows,
        )
        total = estimate_rows(files) if progress else None
        timings = Timings()
        tokenize_s = [0.0]
        with tqdm(
            total=total,
            initial=state.rows,
            unit="row",
            unit_scale=True,
            desc="score",
            disable=not progress,
            dynamic_ncols=True,
            smoothing=0.05,
        ) as bar:

            def on_commit(chunk: Chunk, prepared: Prepared) -> None:
                tokenize_s[0] += prepared.tokenize_s
                bar.update(chunk.n_rows)
                bar.set_postfix(rejects=job.state.rejects, refresh=False)

            t0 = time.perf_counter()
            run_pipeline(chunks, scorer, job, opts.tokenize_workers or default_workers(), timings, on_commit)
            summary.wall_s = time.perf_counter() - t0
            if total is not None and bar.n != total:  # the estimate counted blank lines or quoted newlines
                bar.total = bar.n
                bar.refresh()
        state = job.state
        summary.rows, summary.out_rows, summary.rejects = state.rows, state.out_rows, state.rejects
        summary.shards = sum(1 for c in state.commits if c.shard)
        summary.tokenize_s, summary.model_s = tokenize_s[0], timings.model_s
        job.finish({"rows": state.rows, "out_rows": state.out_rows, "rejects": state.rejects})
        return summary
    finally:
        job.close()


# --- the pipeline ------------------------------------------------------------------------------------

_DONE = object()
_POLL_S = 0.1


class _Stopped(Exception):
    """Another stage failed or the run was interrupted."""


def _put(q: queue.Queue[Any], item: Any, stop: threading.Event) -> None:
    while True:
        if stop.is_set():
            raise _Stopped
        try:
            q.put(item, timeout=_POLL_S)
            return
        except queue.Full:
            continue


def _get(q: queue.Queue[Any], stop: threading.Event) -> Any:
    while True:
        if stop.is_set():
            raise _Stopped
        try:
            return q.get(timeout=_POLL_S)
        except queue.Empty:
            continue


def run_pipeline(
    chunks: Iterator[Chunk],
    scorer: ChunkScorer,
    job: OutputJob,
    workers: int,
    timings: Timings,
    on_commit: Callable[[Chunk, Prepared], None],
) -> None:
    """Read → tokenize (workers) → model (this thread) → commit, in order, with bounded queues."""
    stop = threading.Event()
    errors: list[BaseException] = []
    to_model: queue.Queue[Any] = queue.Queue(maxsize=workers + 1)
    to_commit: queue.Queue[Any] = queue.Queue(maxsize=2)
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="score-tokenize")

    def fail(exc: BaseException) -> None:
        errors.append(exc)
        stop.set()

    def read() -> None:
        try:
            for chunk in chunks:
                future: Future[Prepared] = pool.submit(scorer.prepare, chunk.good)
                _put(to_model, (chunk, future), stop)
            _put(to_model, _DONE, stop)
        except _Stopped:
            pass
        except BaseException as exc:
            fail(exc)

    def commit() -> None:
        try:
            while True:
                item = _get(to_commit, stop)
                if item is _DONE:
                    return
                chunk, prepared, result = item
                table = scorer.table(prepared, result) if result is not None else None
                job.commit(
                    chunk.index,
                    chunk.start_row,
                    chunk.n_rows,
                    chunk.end,
                    table,
                    chunk.rejects + prepared.rejects,
                )
                on_commit(chunk, prepared)
        except _Stopped:
            pass
        except BaseException as exc:
            fail(exc)

    reader = threading.Thread(target=read, name="score-read", daemon=True)
    committer = threading.Thread(target=commit, name="score-commit", daemon=True)
    reader.start()
    committer.start()
    try:
        while True:
            item = _get(to_model, stop)
            if item is _DONE:
                break
            chunk, future = item
            prepared = future.result()
            result: Result | None = scorer.run(prepared, timings) if prepared.texts else None
            _put(to_commit, (chunk, prepared, result), stop)
        _put(to_commit, _DONE, stop)
        committer.join()
    except _Stopped:
        pass
    except BaseException as exc:
        fail(exc)
    finally:
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)
        reader.join()
        committer.join()  # a commit in progress finishes; the next run starts after it
    if errors:
        raise errors[0]
