"""The four labels, in the one order every array, file and report uses (see LABELING.md)."""

from __future__ import annotations

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
