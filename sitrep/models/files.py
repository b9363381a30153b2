"""Files every job reads and writes: JSONL line by line, JSON and text written atomically.

    for lineno, row in read_jsonl("data/train.jsonl"): ...
    write_json_atomic(path, report)                      # tmp file + rename: readers never see half a file
    write_json_atomic(path, manifest, durable=True)      # + fsync of the file and its folder (crash-safe)
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class JsonlError(ValueError):
    """A JSONL line is not valid JSON. The message names the file and line."""

    def __init__(self, path: Path, lineno: int, reason: str) -> None:
        super().__init__(f"{path}:{lineno}: {reason}")
        self.path, self.lineno, self.reason = path, lineno, reason


def read_jsonl(path: str | os.PathLike[str], errors: list[JsonlError] | None = None) -> Iterator[tuple[int, Any]]:
    """(line number, parsed value) for each non-blank line.

    A line that is not JSON raises JsonlError, or, when `errors` is given, is appended to it and skipped
    (a validator that reports every bad line).
    """
    p = Path(path)
    with p.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                err = JsonlError(p, lineno, f"invalid JSON ({exc.msg})")
                if errors is None:
                    raise err from exc
                errors.append(err)
                continue
            yield lineno, value


def jsonl_texts(paths: list[Path]) -> list[str]:
    """The non-blank `text` field of every JSON-object line of the files, in order (benchmarks' sentences).
    Lines that are not JSON objects with a text are skipped."""
    texts: list[str] = []
    for p in paths:
        for _, row in read_jsonl(p, errors=[]):
            text = row.get("text") if isinstance(row, dict) else None
            if isinstance(text, str) and text.strip():
                texts.append(text)
    return texts


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_text_atomic(path: str | os.PathLike[str], text: str, durable: bool = False) -> None:
    """Write to PATH.tmp, then rename over PATH. `durable`: fsync the file and its folder as well."""
    p = Path(path)
    tmp = p.with_name(p.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        f.write(text)
        if durable:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, p)
    if durable:
        fsync_dir(p.parent)


def write_jsonl_atomic(path: str | os.PathLike[str], rows: list[Any], durable: bool = False) -> None:
    """One JSON value a line (non-ASCII kept as is), written atomically."""
    write_text_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), durable=durable)


def write_json_atomic(path: str | os.PathLike[str], data: Any, durable: bool = False) -> None:
    """Indented UTF-8 JSON (non-ASCII kept as is), written atomically."""
    write_text_atomic(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n", durable=durable)
