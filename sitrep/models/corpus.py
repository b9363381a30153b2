"""Reading labeled sentences (the data/ JSONL format) for training and eval."""

from __future__ import annotations

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


class CorpusError(ValueError):
    """A labeled file has a line that cannot be used."""


def read_examples(path: str | Path, langs: list[str] | None = None) -> list[Example]:
    """Read labeled JSONL (`id`, `text`, `labels`, optional `lang`, `topic`; extra fields are ignored)."""
    p = Path(path)
    out: list[Example] = []
    try:
        for lineno, row in read_jsonl(p):
            try:
                ex = Example(
                    id=str(row["id"]),
                    text=row["text"],
                    labels=list(row.get("labels") or []),
                    lang=str(row.get("lang") or "und"),
                    topic=str(row.get("topic") or ""),
                )
                if not isinstance(ex.text, str) or not ex.text.strip():
                    raise CorpusError("empty or non-string text")
                check_labels(ex.labels)
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                raise CorpusError(f"{p}:{lineno}: {exc}") from exc
            if langs is None or ex.lang in langs:
                out.append(ex)
    except JsonlError as exc:
        raise CorpusError(str(exc)) from exc
    return out


def read_many(paths: str | Path | list[str] | list[Path], langs: list[str] | None = None) -> list[Example]:
    """The examples of one labeled file or several, in order (a config may name either)."""
    items = [paths] if isinstance(paths, (str, Path)) else list(paths)
    return [e for p in items for e in read_examples(p, langs)]


def label_matrix(examples: list[Example]) -> np.ndarray:
    """[n, len(LABELS)] 0/1 int array."""
    return multi_hot_matrix(e.labels for e in examples)
