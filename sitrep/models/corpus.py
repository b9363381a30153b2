"""Reading labeled sentences (the data/ JSONL format) for training and eval."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sitrep.models.labels import LABELS, check_labels, to_multi_hot


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
    with p.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
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
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                raise CorpusError(f"{p}:{lineno}: {exc}") from exc
            if langs is None or ex.lang in langs:
                out.append(ex)
    return out


def label_matrix(examples: list[Example]) -> np.ndarray:
    """[n, len(LABELS)] 0/1 int array."""
    if not examples:
        return np.zeros((0, len(LABELS)), dtype=np.int64)
    return np.asarray([to_multi_hot(e.labels) for e in examples], dtype=np.int64)
