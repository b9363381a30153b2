"""The four labels, in the one order every array, file and report uses (defined in docs/labels.md)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

LABELS: tuple[str, ...] = ("claim", "official_confirmation", "casualty", "retaliation")
LABEL_INDEX: dict[str, int] = {name: i for i, name in enumerate(LABELS)}


def check_labels(labels: list[str] | tuple[str, ...]) -> None:
    """Raise ValueError if any label is not one of LABELS."""
    unknown = [x for x in labels if x not in LABEL_INDEX]
    if unknown:
        raise ValueError(f"unknown label(s) {unknown}; expected some of {list(LABELS)}")


def to_multi_hot(labels: list[str]) -> list[int]:
    """['casualty'] -> [0, 0, 1, 0] in LABELS order."""
    check_labels(labels)
    present = set(labels)
    return [1 if name in present else 0 for name in LABELS]


def multi_hot_matrix(label_lists: Iterable[Sequence[str]]) -> np.ndarray:
    """[n, len(LABELS)] 0/1 int64 array, one row per label list (gold or predicted)."""
    rows = [to_multi_hot(list(labels)) for labels in label_lists]
    return np.asarray(rows, dtype=np.int64).reshape(len(rows), len(LABELS))
