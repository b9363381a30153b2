"""The output folder: committed shards, a commit log and a manifest, so a killed job resumes exactly once.

Layout of OUTPUT/ (names starting with ``_`` or ``.`` are skipped by Parquet dataset readers, so
``pyarrow.parquet.read_table(OUTPUT)`` or ``pandas.read_parquet(OUTPUT)`` read only the rows)::

    _manifest.json        what the job is: inputs (path, size, mtime), options, model; written first
    _commits.jsonl        one line per committed chunk: input rows, end cursor, shard, rejects offset
    _rejects.jsonl        rows that could not be scored, with the reason (see rejects.py)
    part-000000.parquet   the output rows of chunk 0 (``.jsonl`` with --output-format jsonl)
    part-000001.parquet   ...

Committing chunk k: its shard is written to ``.part-k.tmp``, fsynced and renamed into place; its
rejects are appended to ``_rejects.jsonl`` and fsynced; then one line is appended to
``_commits.jsonl`` and fsynced. That last write is the commit point. On restart, anything after
the last complete commit line is undone: shards that were renamed but not committed are deleted,
temp files are deleted, the rejects file is cut back to the committed length, a torn last line of
the commit log is dropped. The job then continues from the committed cursor, so every input row
ends up in exactly one committed shard or in the rejects file, once.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from sitrep.models.files import fsync_dir, write_json_atomic
from sitrep.scoring.job import COMMITS, FORMAT, MANIFEST, REJECTS, claim_output
from sitrep.scoring.options import ScoreError
from sitrep.scoring.output import table_to_jsonl
from sitrep.scoring.reader import Cursor
from sitrep.scoring.rejects import Reject

SHARD_RE = re.compile(r"^part-\d+\.(parquet|jsonl)$")


@dataclass
class Commit:
    chunk: int
    start_row: int
    n_rows: int
    out_rows: int
    rejects: int
    shard: str | None
    rejects_end: int
    cursor: Cursor

    def to_json(self) -> dict[str, Any]:
        return {
            "chunk": self.chunk,
            "start_row": self.start_row,
            "n_rows": self.n_rows,
            "out_rows": self.out_rows,
            "rejects": self.rejects,
            "shard": self.shard,
            "rejects_end": self.rejects_end,
            "cursor": self.cursor.to_json(),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Commit:
        return cls(
            int(d["chunk"]),
            int(d["start_row"]),
            int(d["n_rows"]),
            int(d["out_rows"]),
            int(d["rejects"]),
            d["shard"],
            int(d["rejects_end"]),
            Cursor.from_json(d["cursor"]),
        )


@dataclass
class JobState:
    """What is already committed."""

    commits: list[Commit] = field(default_factory=list)
    done: dict[str, Any] | None = None
    cleaned: list[str] = field(default_factory=list)  # uncommitted leftovers removed on resume

    @property
    def next_chunk(self) -> int:
        return len(self.commits)

    @property
    def rows(self) -> int:
        return sum(c.n_rows for c in self.commits)

    @property
    def out_rows(self) -> int:
        return sum(c.out_rows for c in self.commits)

    @property
    def rejects(self) -> int:
        return sum(c.rejects for c in self.commits)

    @property
    def cursor(self) -> Cursor:
        return self.commits[-1].cursor if self.commits else Cursor()

    @property
    def rejects_end(self) -> int:
        return self.commits[-1].rejects_end if self.commits else 0


class OutputJob:
    """An output folder being written by the local engine. Create or resume it with :meth:`open`."""

    def __init__(self, root: Path, output_format: str, state: JobState) -> None:
        self.root = root
        self.output_format = output_format
        self.state = state
        self._rejects_end = state.rejects_end
        self._rejects = (root / REJECTS).open("ab")
        self._commits = (root / COMMITS).open("ab")

    # --- opening ---------------------------------------------------------------------------
    @classmethod
    def open(cls, root: Path, job: dict[str, Any], output_format: str, overwrite: bool = False) -> OutputJob:
        """Start a new job in `root`, or resume the one there if it is the same job."""
        if claim_output(root, job, overwrite) is not None:
            return cls(root, output_format, cls._resume(root))
        root.mkdir(parents=True, exist_ok=True)
        manifest = {
            "format": FORMAT,
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "job": job,
        }
        write_json_atomic(root / MANIFEST, manifest, durable=True)
        for name in (COMMITS, REJECTS):
            (root / name).unlink(missing_ok=True)
        return cls(root, output_format, JobState())

    @staticmethod
    def _resume(root: Path) -> JobState:
        state = JobState()
        state.commits, state.done = _read_commit_log(root / COMMITS)
        committed = {c.shard for c in state.commits if c.shard}
        for name in sorted(committed):
            if not (root / name).is_file():
                raise ScoreError(f"{root / name} is committed but missing; rerun with --overwrite")
        for p in sorted(root.iterdir()):
            if (SHARD_RE.match(p.name) and p.name not in committed) or (
                p.name.startswith(".") and p.name.endswith(".tmp")
            ):
                p.unlink()
                state.cleaned.append(p.name)
        rejects = root / REJECTS
        size = rejects.stat().st_size if rejects.exists() else 0
        if size < state.rejects_end:
            raise ScoreError(
                f"{rejects} is shorter than committed ({size} < {state.rejects_end} bytes); "
                "rerun with --overwrite"
            )
        if size > state.rejects_end:
            with rejects.open("r+b") as f:
                f.truncate(state.rejects_end)
                os.fsync(f.fileno())
            state.cleaned.append(f"{REJECTS} (uncommitted tail of {size - state.rejects_end} bytes)")
        return state

    # --- writing ---------------------------------------------------------------------------
    def commit(
        self,
        chunk_index: int,
        start_row: int,
        n_rows: int,
        cursor: Cursor,
        table: pa.Table | None,
        rejects: list[Reject],
    ) -> Commit:
        """Make one chunk's output and rejects durable, then record it as committed (atomic as a whole)."""
        if chunk_index != self.state.next_chunk:
            raise RuntimeError(
                f"chunk {chunk_index} committed out of order (expected {self.state.next_chunk})"
            )
        shard = None
        if table is not None and table.num_rows:
            shard = f"part-{chunk_index:06d}.{self.output_format}"
            self._write_shard(shard, table)
        if rejects:
            data = "".join(r.to_json_line() for r in rejects).encode("utf-8")
            try:
                self._rejects.write(data)
                self._rejects.flush()
                os.fsync(self._rejects.fileno())
            except OSError as exc:
                if exc.filename is None:
                    exc.filename = str(self.root / REJECTS)
                raise
            self._rejects_end += len(data)
        c = Commit(
            chunk_index,
            start_row,
            n_rows,
            table.num_rows if table is not None else 0,
            len(rejects),
            shard,
            self._rejects_end,
            cursor,
        )
        self._append_commit(c.to_json())
        self.state.commits.append(c)
        return c

    def finish(self, summary: dict[str, Any]) -> None:
        """Record that every input row is committed (a rerun then has nothing to do)."""
        done = {"done": True, "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), **summary}
        self._append_commit(done)
        self.state.done = done

    def close(self) -> None:
        self._rejects.close()
        self._commits.close()

    def _write_shard(self, name: str, table: pa.Table) -> None:
        tmp = self.root / f".{name}.tmp"
        try:
            self._write_tmp(tmp, table)
        except OSError as exc:
            tmp.unlink(missing_ok=True)  # a partial shard must not fill what space is left
            if exc.filename is None:
                exc.filename = str(self.root / name)
            raise
        os.replace(tmp, self.root / name)
        fsync_dir(self.root)

    def _write_tmp(self, tmp: Path, table: pa.Table) -> None:
        with tmp.open("wb") as f:
            if self.output_format == "parquet":
                import pyarrow.parquet as pq

                pq.write_table(table, f, compression="zstd")
            else:
                f.write(table_to_jsonl(table).encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())

    def _append_commit(self, record: dict[str, Any]) -> None:
        try:
            self._commits.write((json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8"))
            self._commits.flush()
            os.fsync(self._commits.fileno())
        except OSError as exc:
            if exc.filename is None:
                exc.filename = str(self.root / COMMITS)
            raise


def _read_commit_log(path: Path) -> tuple[list[Commit], dict[str, Any] | None]:
    """Committed chunks in order; a torn last line (killed mid-write) is cut off the file."""
    if not path.exists():
        return [], None
    data = path.read_bytes()
    commits: list[Commit] = []
    done = None
    good_end = 0
    pos = 0
    while pos < len(data):
        nl = data.find(b"\n", pos)
        if nl < 0:
            break  # no newline: the write was cut short, so this line never committed
        try:
            record = json.loads(data[pos:nl])
        except json.JSONDecodeError as exc:
            raise ScoreError(
                f"{path} line {len(commits) + 1} is corrupt ({exc}); rerun with --overwrite"
            ) from exc
        if record.get("done"):
            done = record
        else:
            c = Commit.from_json(record)
            if c.chunk != len(commits):
                raise ScoreError(
                    f"{path}: chunk {c.chunk} follows chunk {len(commits) - 1}; rerun with --overwrite"
                )
            commits.append(c)
        pos = good_end = nl + 1
    if good_end < len(data):
        with path.open("r+b") as f:
            f.truncate(good_end)
            os.fsync(f.fileno())
    return commits, done
