"""Inputs: find the files, check their columns, and stream validated rows in fixed-size chunks.

Three formats, picked per file from its suffix (or forced with ``--input-format``):

- JSONL (``.jsonl``, ``.ndjson``, ``.json``): one JSON object per line; blank lines are skipped.
  Read line by line, so a malformed line is a reject, not a failed job.
- CSV (``.csv``): header row, quoted fields may hold newlines; both columns are read as strings.
  Rows with the wrong number of fields are rejects (``invalid_csv_row``).
- Parquet (``.parquet``, ``.pq``): only the id and text columns are read, row group by row group.

A directory is searched recursively for those suffixes; a glob (``data/2024-*/*.jsonl``) is expanded.
Files are sorted by path so every run of a job sees the same sequence of rows, and a
:class:`Cursor` (file, row, byte offset) says where a resumed job starts reading again.
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, NamedTuple

from sitrep.scoring.options import ScoreError
from sitrep.scoring.rejects import (
    BAD_ID,
    INVALID_CSV_ROW,
    INVALID_JSON,
    INVALID_UNICODE,
    MISSING,
    Reject,
    check_id,
    check_text,
    preview,
)

SUFFIXES = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
}
PARQUET_BATCH_ROWS = 16384
CSV_BLOCK_BYTES = 1 << 20


@dataclass(frozen=True)
class InputFile:
    path: Path
    format: str
    size: int
    mtime_ns: int

    def fingerprint(self) -> dict[str, Any]:
        return {"path": str(self.path), "format": self.format, "size": self.size, "mtime_ns": self.mtime_ns}


@dataclass(frozen=True)
class Position:
    """How far into one file a reader has got."""

    row: int = 0  # data rows consumed (JSONL: non-blank lines; CSV: well-formed rows; Parquet: rows)
    offset: int = 0  # JSONL: byte offset of the next line
    line: int = 0  # JSONL: physical lines consumed
    bad: int = 0  # CSV: malformed rows consumed (the parser reports them apart from the good ones)


@dataclass(frozen=True)
class Cursor:
    """How far into the whole (sorted) input a job has got."""

    file: int = 0
    pos: Position = field(default_factory=Position)

    def to_json(self) -> dict[str, int]:
        return {"file": self.file, **asdict(self.pos)}

    @classmethod
    def from_json(cls, data: dict[str, int]) -> Cursor:
        return cls(
            int(data["file"]),
            Position(int(data["row"]), int(data["offset"]), int(data["line"]), int(data["bad"])),
        )


class CheckedRow(NamedTuple):
    """One input row after validation: either (id, text) to score, or a reject (never both)."""

    id: str | None
    text: str | None
    reject: Reject | None
    source: str
    row: int | None
    line: int | None
    after: Position


@dataclass
class Chunk:
    """Input rows [start_row, start_row + n_rows) of the job: the unit of work and of commit."""

    index: int
    start_row: int
    good: list[CheckedRow]
    rejects: list[Reject]
    end: Cursor

    @property
    def n_rows(self) -> int:
        return len(self.good) + len(self.rejects)


# --- finding inputs -------------------------------------------------------------------------------


def discover(spec: str | os.PathLike[str], input_format: str = "auto") -> list[InputFile]:
    """The input files named by a file, a directory (searched recursively) or a glob, sorted by path."""
    text = str(spec)
    p = Path(text)
    if p.is_file():
        paths = [p]
    elif p.is_dir():
        paths = [
            f
            for f in p.rglob("*")
            if f.is_file()
            and f.suffix.lower() in SUFFIXES
            and not any(part.startswith((".", "_")) for part in f.relative_to(p).parts)
        ]
        if not paths:
            raise ScoreError(f"{p}: no input files in this directory (looked for {', '.join(SUFFIXES)})")
    elif glob.has_magic(text):
        paths = [Path(x) for x in glob.glob(text, recursive=True) if Path(x).is_file()]
        if not paths:
            raise ScoreError(f"{text}: the pattern matches no files")
    else:
        raise ScoreError(f"{text}: no such file, directory or glob")
    out = []
    for path in sorted({x.resolve() for x in paths}):
        fmt = input_format if input_format != "auto" else SUFFIXES.get(path.suffix.lower())
        if fmt is None:
            raise ScoreError(
                f"{path}: cannot tell the format from the suffix {path.suffix!r}; "
                "pass --input-format jsonl|csv|parquet"
            )
        st = path.stat()
        out.append(InputFile(path, fmt, st.st_size, st.st_mtime_ns))
    return out


def check_columns(files: list[InputFile], id_column: str, text_column: str) -> None:
    """Fail before any work when a CSV or Parquet file lacks the id or text column (JSONL: per row)."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    for f in files:
        if f.format == "parquet":
            try:
                names = pq.read_schema(f.path).names
            except Exception as exc:  # pyarrow raises ArrowInvalid / OSError for a non-Parquet file
                raise ScoreError(f"{f.path}: not a readable Parquet file ({exc})") from exc
        elif f.format == "csv":
            if f.size == 0:
                raise ScoreError(f"{f.path}: empty CSV file (a header row is needed)")
            try:
                names = pacsv.open_csv(
                    f.path,
                    read_options=_csv_read_options(),
                    parse_options=_csv_parse_options(lambda _row: "skip"),
                ).schema.names
            except Exception as exc:
                raise ScoreError(f"{f.path}: not a readable CSV file ({exc})") from exc
        else:
            continue
        missing = [c for c in (id_column, text_column) if c not in names]
        if missing:
            raise ScoreError(
                f"{f.path}: no column {', '.join(map(repr, missing))} (columns: {', '.join(names)}); "
                "pass --id-column / --text-column"
            )


def estimate_rows(files: list[InputFile], sample_bytes: int = 1 << 22) -> int:
    """Rows in the input, for the progress bar's ETA: exact for Parquet and for small text files; for
    large JSONL/CSV files, the file size over the mean line length of the first `sample_bytes`."""
    import pyarrow.parquet as pq

    total = 0
    for f in files:
        if f.format == "parquet":
            total += pq.ParquetFile(f.path).metadata.num_rows
            continue
        with f.path.open("rb") as fh:
            sample = fh.read(sample_bytes)
        lines = sample.count(b"\n") + (
            len(sample) == f.size and not sample.endswith(b"\n") and len(sample) > 0
        )
        if len(sample) < f.size and lines:
            lines = round(f.size * lines / len(sample))
        total += max(0, lines - 1) if f.format == "csv" else lines
    return total


# --- reading one file ---------------------------------------------------------------------------------


def validate_row(
    id_value: Any,
    text_value: Any,
    id_column: str,
    text_column: str,
    source: str,
    row: int | None,
    line: int | None,
    after: Position,
) -> CheckedRow:
    """A CheckedRow to score, or one carrying the reason it cannot be scored."""
    ident, reason, detail = check_id(id_value, id_column)
    if reason is None:
        reason, detail = check_text(text_value, text_column)
    if reason is None:
        return CheckedRow(ident, text_value, None, source, row, line, after)
    rid = ident if ident is not None else (preview(id_value) if reason in (BAD_ID, INVALID_UNICODE) else None)
    reject = Reject(rid, reason, detail or reason, source, row, line, preview(text_value))
    return CheckedRow(None, None, reject, source, row, line, after)


def parse_jsonl_line(raw: bytes, id_column: str, text_column: str) -> tuple[Any, Any, str | None, str | None]:
    """(id value, text value, reason, detail) for one JSONL line; missing fields are MISSING."""
    try:
        obj = json.loads(raw)
    except UnicodeDecodeError as exc:
        return MISSING, MISSING, INVALID_JSON, f"not UTF-8: {exc.reason} at byte {exc.start}"
    except json.JSONDecodeError as exc:
        return MISSING, MISSING, INVALID_JSON, f"invalid JSON: {exc.msg} (column {exc.colno})"
    if not isinstance(obj, dict):
        return MISSING, MISSING, INVALID_JSON, f"a line must be a JSON object, got {type(obj).__name__}"
    return obj.get(id_column, MISSING), obj.get(text_column, MISSING), None, None


def _jsonl_rows(
    f: IO[bytes], id_column: str, text_column: str, start: Position, source: str
) -> Iterator[CheckedRow]:
    f.seek(start.offset)
    row, offset, line = start.row, start.offset, start.line
    for raw in f:
        offset += len(raw)
        line += 1
        if not raw.strip():
            continue
        id_value, text_value, reason, detail = parse_jsonl_line(raw, id_column, text_column)
        after = Position(row + 1, offset, line)
        if reason is not None:
            text = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            yield CheckedRow(
                None,
                None,
                Reject(None, reason, detail or reason, source, row, line, preview(text)),
                source,
                row,
                line,
                after,
            )
        else:
            yield validate_row(id_value, text_value, id_column, text_column, source, row, line, after)
        row += 1


def _csv_read_options() -> Any:
    import pyarrow.csv as pacsv

    return pacsv.ReadOptions(use_threads=False, block_size=CSV_BLOCK_BYTES)


def _csv_parse_options(handler: Any) -> Any:
    import pyarrow.csv as pacsv

    return pacsv.ParseOptions(newlines_in_values=True, invalid_row_handler=handler)


def _csv_rows(
    f: IO[bytes] | Path, id_column: str, text_column: str, start: Position, source: str
) -> Iterator[CheckedRow]:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    # Malformed rows as (physical line, expected fields, actual fields, preview of the row): the streaming
    # parser reports them when it parses their block, and it parses ahead of the batches it has handed out
    # at a moment that varies from run to run (observed: a block's malformed rows reported before the
    # previous block's good rows). They are therefore yielded after the file's last good row, so that the
    # same file always gives the same sequence (and the same chunks); their line numbers say where they were.
    malformed: list[tuple[int, int, int, str | None]] = []

    def on_invalid(row: Any) -> str:
        malformed.append((row.number, row.expected_columns, row.actual_columns, preview(row.text)))
        return "skip"

    reader = pacsv.open_csv(
        f,
        read_options=_csv_read_options(),
        parse_options=_csv_parse_options(on_invalid),
        convert_options=pacsv.ConvertOptions(
            include_columns=[id_column, text_column],
            column_types={id_column: pa.string(), text_column: pa.string()},
        ),
    )
    parsed = 0  # good rows, counted from the start of the file
    for batch in reader:
        ids = batch.column(id_column).to_pylist()
        texts = batch.column(text_column).to_pylist()
        first = max(0, start.row - parsed)
        for i in range(first, len(ids)):
            row = parsed + i
            # Malformed rows before the resume point stay consumed (a cursor from a reader that interleaved them).
            yield validate_row(
                ids[i], texts[i], id_column, text_column, source, row, None, Position(row + 1, 0, 0, start.bad)
            )
        parsed += len(ids)
    for bad, (line, expected, actual, shown) in enumerate(malformed, 1):
        if bad <= start.bad:
            continue  # reported before the resume point
        detail = f"expected {expected} fields, got {actual}"
        reject = Reject(None, INVALID_CSV_ROW, detail, source, None, line, shown)
        yield CheckedRow(None, None, reject, source, None, line, Position(max(parsed, start.row), 0, 0, bad))


def _parquet_rows(
    f: IO[bytes] | Path, id_column: str, text_column: str, start: Position, source: str
) -> Iterator[CheckedRow]:
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(f)
    groups, base = list(range(pf.num_row_groups)), 0
    while groups and base + pf.metadata.row_group(groups[0]).num_rows <= start.row:
        base += pf.metadata.row_group(groups.pop(0)).num_rows  # skip whole row groups without reading them
    if not groups:
        return
    row = base
    for batch in pf.iter_batches(
        batch_size=PARQUET_BATCH_ROWS, row_groups=groups, columns=[id_column, text_column], use_threads=False
    ):
        ids = batch.column(id_column).to_pylist()
        texts = batch.column(text_column).to_pylist()
        first = max(0, start.row - row)
        for i in range(first, len(ids)):
            r = row + i
            yield validate_row(ids[i], texts[i], id_column, text_column, source, r, None, Position(r + 1))
        row += len(ids)


def iter_file_rows(
    source: Path | IO[bytes],
    fmt: str,
    id_column: str,
    text_column: str,
    start: Position | None = None,
    name: str | None = None,
) -> Iterator[CheckedRow]:
    """Validated rows of one file (a path or a binary file object) from `start` on."""
    start = start or Position()
    label = name or str(source)
    if fmt == "jsonl":
        if isinstance(source, Path):
            with source.open("rb") as fh:
                yield from _jsonl_rows(fh, id_column, text_column, start, label)
        else:
            yield from _jsonl_rows(source, id_column, text_column, start, label)
    elif fmt == "csv":
        yield from _csv_rows(source, id_column, text_column, start, label)
    elif fmt == "parquet":
        yield from _parquet_rows(source, id_column, text_column, start, label)
    else:
        raise ScoreError(f"unknown input format {fmt!r}")


# --- the whole input, chunk by chunk -----------------------------------------------------------------


def read_chunks(
    files: list[InputFile],
    id_column: str,
    text_column: str,
    chunk_rows: int,
    start: Cursor | None = None,
    first_index: int = 0,
    first_row: int = 0,
) -> Iterator[Chunk]:
    """Chunks of exactly `chunk_rows` input rows (the last may be shorter), crossing file boundaries.

    Chunk k always covers the same rows of the same input, so a resumed job (start = the end cursor of
    its last committed chunk, first_index = its number of chunks) continues with identical chunks.
    """
    cursor = start or Cursor()
    index, row0 = first_index, first_row
    good: list[CheckedRow] = []
    rejects: list[Reject] = []
    for fi in range(cursor.file, len(files)):
        f = files[fi]
        pos = cursor.pos if fi == cursor.file else Position()
        end = Cursor(fi, pos)
        for raw in iter_file_rows(f.path, f.format, id_column, text_column, pos, str(f.path)):
            if raw.reject is None:
                good.append(raw)
            else:
                rejects.append(raw.reject)
            end = Cursor(fi, raw.after)
            if len(good) + len(rejects) == chunk_rows:
                yield Chunk(index, row0, good, rejects, end)
                index, row0 = index + 1, row0 + chunk_rows
                good, rejects = [], []
    if good or rejects:
        yield Chunk(index, row0, good, rejects, Cursor(len(files)))
