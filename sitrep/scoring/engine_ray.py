"""The Ray engine: the same scoring, scaled out over a Ray cluster with Ray Data.

    read (Ray Data)          parse + validate          RayScorer actors               write
    read_parquet /     ──►   map_batches: rows    ──►  map_batches(callable class,  ──► write_parquet
    read_binary_files        or rejects                one bundle load per actor,      + _rejects.jsonl
                                                       num_gpus=1 with --gpu)

JSONL and CSV files are read whole by one task each and parsed with the local engine's reader (so a
malformed line is a reject, not a failed job); Parquet is read by Ray Data, id and text columns only.
Row validation, sentence splitting, scoring and the output rows are the local engine's
(`reader.validate_row`, `scorer.ChunkScorer`), so both engines write the same rows.

The output is all-or-nothing: Ray writes into a hidden temporary folder beside OUTPUT, which is
renamed to OUTPUT when every row is written. A killed Ray job leaves no partial output; rerunning
the command starts it again (the local engine instead resumes shard by shard). Every node must
see BUNDLE, the input and OUTPUT's parent at the same paths (a shared filesystem), and have this
package installed.
"""

from __future__ import annotations

import datetime as dt
import io
import shutil
import time
from collections.abc import Callable, Iterator
from itertools import islice
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from sitrep.models.files import write_json_atomic
from sitrep.models.runtime import load, runtime_files
from sitrep.scoring.job import FORMAT, MANIFEST, REJECTS, ScoreSummary, claim_output, job_fingerprint, plan
from sitrep.scoring.options import ScoreError, ScoreOptions
from sitrep.scoring.reader import CheckedRow, InputFile, Position, iter_file_rows, validate_row
from sitrep.scoring.scorer import ChunkScorer

REJECT_COLUMN = "_reject"  # the reject's JSON line, or null for an output row
PARSED_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("text", pa.string()),
        ("source", pa.string()),
        ("row", pa.int64()),
        ("line", pa.int64()),
        (REJECT_COLUMN, pa.string()),
    ]
)
PARSE_BLOCK_ROWS = 16384


def _parsed_table(rows: list[CheckedRow]) -> pa.Table:
    return pa.table(
        {
            "id": [r.id for r in rows],
            "text": [r.text for r in rows],
            "source": [r.source for r in rows],
            "row": [r.row for r in rows],
            "line": [r.line for r in rows],
            REJECT_COLUMN: [r.reject.to_json_line().rstrip("\n") if r.reject else None for r in rows],
        },
        schema=PARSED_SCHEMA,
    )


def parse_files(batch: pa.Table, fmt: str, id_column: str, text_column: str) -> Iterator[pa.Table]:
    """Whole JSONL/CSV files (Ray's `bytes` + `path` columns) -> validated rows, in blocks."""
    for path, data in zip(batch["path"].to_pylist(), batch["bytes"].to_pylist(), strict=True):
        rows = iter_file_rows(io.BytesIO(data), fmt, id_column, text_column, name=path)
        while block := list(islice(rows, PARSE_BLOCK_ROWS)):
            yield _parsed_table(block)


def validate_parquet(batch: pa.Table, id_column: str, text_column: str) -> pa.Table:
    """Parquet rows (id, text, path columns) -> validated rows (the row number is not known here)."""
    ids, texts, paths = (batch[c].to_pylist() for c in (id_column, text_column, "path"))
    return _parsed_table(
        [
            validate_row(i, t, id_column, text_column, p, None, None, Position())
            for i, t, p in zip(ids, texts, paths, strict=True)
        ]
    )


class RayScorer:
    """Loads the bundle once per actor; each call scores one batch of validated rows."""

    def __init__(
        self,
        bundle: str,
        runtime: str,
        device: str | None,
        threads: int | None,
        documents: bool,
        include_text: bool,
        batch_size: int | None,
        max_tokens: int | None,
    ) -> None:
        clf = load(bundle, runtime, threads=threads, device=device)
        self.scorer = ChunkScorer(
            clf, documents=documents, include_text=include_text, batch_size=batch_size, max_tokens=max_tokens
        )
        self.schema = self.scorer.schema.append(pa.field(REJECT_COLUMN, pa.string()))

    def __call__(self, batch: pa.Table) -> pa.Table:
        cols = {c: batch[c].to_pylist() for c in PARSED_SCHEMA.names}
        good = [
            CheckedRow(i, t, None, s, r, ln, Position())
            for i, t, s, r, ln, rej in zip(*cols.values(), strict=True)
            if rej is None
        ]
        rejects = [rej for rej in cols[REJECT_COLUMN] if rej is not None]
        parts = []
        prepared = self.scorer.prepare(good)
        rejects += [r.to_json_line().rstrip("\n") for r in prepared.rejects]
        if prepared.texts:
            table = self.scorer.table(prepared, self.scorer.run(prepared))
            parts.append(table.append_column(REJECT_COLUMN, pa.nulls(table.num_rows, pa.string())))
        if rejects:
            n = len(rejects)
            arrays = [pa.nulls(n, f.type) for f in self.scorer.schema] + [pa.array(rejects, pa.string())]
            parts.append(pa.table(arrays, schema=self.schema))
        if not parts:
            return self.schema.empty_table()
        return pa.concat_tables(parts)


def _only_output(batch: pa.Table) -> pa.Table:
    return batch.filter(pc.is_null(batch[REJECT_COLUMN])).drop_columns([REJECT_COLUMN])


def _only_rejects(batch: pa.Table) -> pa.Table:
    return batch.filter(pc.is_valid(batch[REJECT_COLUMN])).select([REJECT_COLUMN])


def _read(files: list[InputFile], opts: ScoreOptions) -> Any:
    import ray.data

    datasets = []
    for fmt in ("jsonl", "csv", "parquet"):
        paths = [str(f.path) for f in files if f.format == fmt]
        if not paths:
            continue
        if fmt == "parquet":
            ds = ray.data.read_parquet(paths, include_paths=True)
            ds = ds.select_columns([opts.id_column, opts.text_column, "path"])
            ds = ds.map_batches(
                validate_parquet, fn_args=(opts.id_column, opts.text_column), batch_format="pyarrow"
            )
        else:
            ds = ray.data.read_binary_files(paths, include_paths=True)
            ds = ds.map_batches(
                parse_files,
                fn_args=(fmt, opts.id_column, opts.text_column),
                batch_size=1,
                batch_format="pyarrow",
            )
        datasets.append(ds)
    return datasets[0] if len(datasets) == 1 else datasets[0].union(*datasets[1:])


def score_ray(
    opts: ScoreOptions,
    *,
    address: str | None = None,
    actors: int = 1,
    gpu: bool | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> ScoreSummary:
    """Run one scoring job on Ray (`address` None: a local Ray instance, or the one already initialised)."""
    say = log or (lambda _msg: None)
    if opts.output_format != "parquet":
        raise ScoreError("--engine ray writes Parquet only; use the local engine for JSONL output")
    if actors < 1:
        raise ScoreError("--ray-actors must be at least 1")
    files, bundle = plan(opts)
    bundle.verify(runtime_files(opts.runtime, bundle))  # fail here, not in every actor
    job = job_fingerprint(opts, files, bundle, "ray")
    out = opts.output
    finished = claim_output(out, job, opts.overwrite)
    if finished is not None and not finished.get("done"):
        raise ScoreError(f"{out} holds an unfinished run of this job; rerun with --overwrite")
    if finished is not None:
        done = finished["done"]
        say(f"{out} is complete already ({done['rows']:,} rows); use --overwrite to score again")
        return ScoreSummary(
            str(out),
            "ray",
            done["rows"],
            done["out_rows"],
            done["rejects"],
            done["shards"],
            resumed_rows=done["rows"],
            already_done=True,
        )
    use_gpu = opts.runtime == "cuda" if gpu is None else gpu

    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(address=address, include_dashboard=False, log_to_driver=progress)
    cpus_per_actor = opts.threads or 1
    if address is None and actors * cpus_per_actor >= ray.cluster_resources().get("CPU", 0):
        if started:
            ray.shutdown()
        raise ScoreError(
            f"--ray-actors {actors} × {cpus_per_actor} CPU leaves no CPU of this machine's Ray instance "
            f"({ray.cluster_resources().get('CPU', 0):.0f} CPUs) for reading; use fewer actors or threads"
        )
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = progress
    tmp = out.parent / f".{out.name}.ray-tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        t0 = time.perf_counter()
        scored = (
            _read(files, opts)
            .map_batches(
                RayScorer,
                fn_constructor_kwargs={
                    "bundle": str(bundle.path.resolve()),
                    "runtime": opts.runtime,
                    "device": opts.device,
                    "threads": opts.threads,
                    "documents": opts.documents,
                    "include_text": opts.include_text,
                    "batch_size": opts.batch_size,
                    "max_tokens": opts.max_tokens,
                },
                batch_size=opts.chunk_rows,
                batch_format="pyarrow",
                compute=ray.data.ActorPoolStrategy(size=actors),
                num_gpus=1 if use_gpu else 0,
                num_cpus=cpus_per_actor,
            )
            .materialize()
        )
        output = scored.map_batches(_only_output, batch_format="pyarrow")
        output.write_parquet(str(tmp))
        tmp.mkdir(parents=True, exist_ok=True)  # no output rows at all: Ray writes nothing
        n_rejects = 0
        with (tmp / REJECTS).open("w", encoding="utf-8") as f:
            for batch in scored.map_batches(_only_rejects, batch_format="pyarrow").iter_batches(
                batch_format="pyarrow"
            ):
                for line in batch[REJECT_COLUMN].to_pylist():
                    f.write(line + "\n")
                    n_rejects += 1
        shards = sum(1 for p in tmp.glob("*.parquet"))
        written = pads.dataset(tmp, format="parquet") if shards else None
        out_rows = written.count_rows() if written else 0
        first_sentences = pc.field("sentence_index") == 0
        scored_rows = written.count_rows(filter=first_sentences) if written and opts.documents else out_rows
        rows = scored_rows + n_rejects
        wall = time.perf_counter() - t0
        done = {
            "rows": rows,
            "out_rows": out_rows,
            "rejects": n_rejects,
            "shards": shards,
            "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }
        write_json_atomic(tmp / MANIFEST, {"format": FORMAT, "job": job, "done": done}, durable=True)
        if out.is_dir():
            out.rmdir()  # empty (checked above); a rename cannot replace a directory on every OS
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if started:
            ray.shutdown()
    return ScoreSummary(str(out), "ray", rows, out_rows, n_rejects, shards, wall_s=wall)
