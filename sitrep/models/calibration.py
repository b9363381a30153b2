"""Turning logits into calibrated probabilities and labels. The one place thresholds are applied."""

from __future__ import annotations

import numpy as np

from sitrep.models.bundle import Calibration
from sitrep.models.labels import LABELS


def calibrated_probs(logits: np.ndarray, calibration: Calibration) -> np.ndarray:
    """Independent per-label probabilities (sigmoid, never a softmax across labels)."""
    a = np.asarray(calibration.a, dtype=np.float64)
    b = np.asarray(calibration.b, dtype=np.float64)
    z = logits.astype(np.float64) * a + b
    return (1.0 / (1.0 + np.exp(-z))).astype(np.float32)


def decisions(probs: np.ndarray, thresholds: list[float] | np.ndarray) -> np.ndarray:
    """[n, len(LABELS)] 0/1 int64: a label is on where its probability reaches its threshold."""
    return (np.asarray(probs) >= np.asarray(thresholds, dtype=np.float32)[None, :]).astype(np.int64)


def labels_above(probs: np.ndarray, thresholds: list[float] | np.ndarray) -> list[list[str]]:
    """Labels whose probability reaches the label's threshold, in LABELS order."""
    return [[LABELS[j] for j in np.flatnonzero(row)] for row in decisions(probs, thresholds)]
