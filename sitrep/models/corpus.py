"""Reading labeled sentences (the data/ JSONL format) for training and eval."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sitrep.models.files import JsonlError, read_jsonl
from sitrep.models.labels import check_labels, multi_hot_matrix


@dataclass
class Example:
    id: str
    text: str
    labels: list[str]
    lang: str = "und"
    topic: str = ""
    extra: dict = field(default_factory=dict)
    article_id: str = ""  # whole-article corpus: the article the sentence belongs to
    position: int = -1  # whole-article corpus: the sentence's place in its article (0 = first)
    context: str = ""  # whole-article corpus: the article's previous sentence ("" for the first, or none)


class CorpusError(ValueError):
    """A labeled file has a line that cannot be used."""


def read_examples(path: str | Path, langs: list[str] | None = None) -> list[Example]:
    """Read labeled JSONL (`id`, `text`, `labels`, optional `lang`, `topic`, `article_id`, `position`; other
    fields are ignored). Article sentences get their article's previous sentence as `context`.

    Every row needs `labels`, a list (`[]` for a sentence with none of the labels): a row without it is an
    error, not a silent background sentence, and `"labels": "claim"` is not read as five one-letter labels.
    """
    p = Path(path)
    out: list[Example] = []
    try:
        for lineno, row in read_jsonl(p):
            try:
                ex = _example(row)
                if langs is None or ex.lang in langs:
                    out.append(ex)
            except CorpusError as exc:
                raise CorpusError(f"{p}:{lineno}: {exc}") from exc
    except JsonlError as exc:
        raise CorpusError(str(exc)) from exc
    attach_context(out)
    return out


def attach_context(examples: list[Example]) -> None:
    """Give each article sentence the text of the sentence before it in its article (`context`), where that
    sentence is among `examples`; a sentence corpus line (no `article_id`) keeps an empty context."""
    text_at = {(e.article_id, e.position): e.text for e in examples if e.article_id and e.position >= 0}
    for e in examples:
        if e.article_id and e.position > 0:
            e.context = text_at.get((e.article_id, e.position - 1), "")


def _example(row: dict) -> Example:
    if not isinstance(row, dict):
        raise CorpusError(f"a line must be a JSON object, got {type(row).__name__}")
    missing = [k for k in ("id", "text", "labels") if row.get(k) is None]
    if missing:
        hint = " (use [] for a sentence with no label)" if "labels" in missing else ""
        raise CorpusError(f"missing field{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))}{hint}")
    if not isinstance(row["text"], str) or not row["text"].strip():
        raise CorpusError("'text' must be a non-empty string")
    labels = row["labels"]
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
        raise CorpusError(f"'labels' must be a list of label names, got {json.dumps(labels, ensure_ascii=False)[:80]}")
    try:
        check_labels(labels)
    except (KeyError, TypeError, ValueError) as exc:
        raise CorpusError(str(exc)) from exc
    return Example(
        id=str(row["id"]),
        text=row["text"],
        labels=list(labels),
        lang=str(row.get("lang") or "und"),
        topic=str(row.get("topic") or ""),
        article_id=str(row.get("article_id") or ""),
        position=_position(row.get("position")),
    )


def _position(value: object) -> int:
    if value is None:
        return -1
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise CorpusError(f"'position' must be a non-negative integer, got {json.dumps(value)[:40]}")
    return value


def _files(paths: str | Path | list[str] | list[Path]) -> list[str | Path]:
    """One labeled file or several (a config may name either), as a list."""
    return [paths] if isinstance(paths, (str, Path)) else list(paths)


def read_many(paths: str | Path | list[str] | list[Path], langs: list[str] | None = None) -> list[Example]:
    """The examples of one labeled file or several, in order."""
    return [e for p in _files(paths) for e in read_examples(p, langs)]


def read_with_sources(
    paths: str | Path | list[str] | list[Path], limit: int | None = None
) -> tuple[list[Example], list[str]]:
    """`read_many`'s examples (the first `limit`), and the file each one came from, in the same order."""
    per_file = [(str(p), read_examples(p)) for p in _files(paths)]
    examples = [e for _, ex in per_file for e in ex]
    sources = [name for name, ex in per_file for _ in ex]
    return (examples[:limit], sources[:limit]) if limit else (examples, sources)


def label_matrix(examples: list[Example]) -> np.ndarray:
    """[n, len(LABELS)] 0/1 int array."""
    return multi_hot_matrix(e.labels for e in examples)
