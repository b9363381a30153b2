"""After training, on dev: per-label Platt calibration, then per-label F1-maximising thresholds."""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression

from sitrep.models.bundle import Calibration
from sitrep.models.calibration import calibrated_probs
from sitrep.models.labels import LABELS
from sitrep.models.scores import best_f1_threshold


def fit_platt(logits: np.ndarray, y: np.ndarray) -> Calibration:
    """One 1-D logistic regression per label on the raw logit (identity where a label is constant)."""
    a, b = [], []
    for j in range(len(LABELS)):
        if len(np.unique(y[:, j])) < 2:
            a.append(1.0)
            b.append(0.0)
            continue
        lr = LogisticRegression(C=1.0)
        lr.fit(logits[:, j : j + 1].astype(np.float64), y[:, j])
        a.append(float(lr.coef_[0, 0]))
        b.append(float(lr.intercept_[0]))
    return Calibration(a=a, b=b)


def fit_thresholds(probs: np.ndarray, y: np.ndarray) -> dict[str, float]:
    return {name: round(best_f1_threshold(probs[:, j], y[:, j]), 4) for j, name in enumerate(LABELS)}


def calibrate(logits: np.ndarray, y: np.ndarray) -> tuple[Calibration, dict[str, float]]:
    calibration = fit_platt(logits, y)
    thresholds = fit_thresholds(calibrated_probs(logits, calibration), y)
    return calibration, thresholds
