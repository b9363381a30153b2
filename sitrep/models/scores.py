"""Multi-label scores shared by training (early stopping, thresholds), export (parity) and eval: the one place
per-label, per-slice and per-language scores are computed.

A label with no positive example in a slice is left out of that slice's macro average: its F1 is
undefined, not zero. `macro_f1` reports which labels were averaged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.metrics import f1_score, precision_recall_fscore_support

from sitrep.models.labels import LABELS


@dataclass
class LabelScores:
    precision: float
    recall: float
    f1: float
    support: int


def per_label_scores(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, LabelScores]:
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, average=None, zero_division=0,
                                                 labels=list(range(len(LABELS))))
    return {
        name: LabelScores(float(p[i]), float(r[i]), float(f[i]), int(s[i])) for i, name in enumerate(LABELS)
    }


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[float, list[str]]:
    """Macro-F1 over the labels that have at least one positive; returns (score, labels averaged)."""
    present = [i for i in range(len(LABELS)) if y_true[:, i].sum() > 0]
    if not present:
        return float("nan"), []
    score = f1_score(y_true[:, present], y_pred[:, present], average="macro", zero_division=0)
    return float(score), [LABELS[i] for i in present]


def micro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(f1_score(y_true, y_pred, average="micro", zero_division=0))


def best_f1_threshold(probs: np.ndarray, y: np.ndarray, lo: float = 0.05, hi: float = 0.95) -> float:
    """The threshold in [lo, hi] that maximises F1 of one label on (probs, y); 0.5 without positives."""
    if y.sum() == 0:
        return 0.5
    # Candidates are midpoints between consecutive distinct scores: a threshold never sits exactly on
    # a dev score, so tiny numeric differences between runtimes do not flip decisions at the cut.
    values = np.unique(probs)
    mids = (values[1:] + values[:-1]) / 2 if len(values) > 1 else values
    candidates = np.unique(np.clip(np.concatenate([mids, [0.5]]), lo, hi))
    best_t, best_f = 0.5, -1.0
    for t in candidates:
        pred = probs >= t
        tp = float(np.sum(pred & (y == 1)))
        f = 2 * tp / (pred.sum() + y.sum()) if (pred.sum() + y.sum()) else 0.0
        # Ties go to the threshold closest to 0.5 (less overfit to the dev set's extremes).
        if f > best_f + 1e-12 or (abs(f - best_f) <= 1e-12 and abs(t - 0.5) < abs(best_t - 0.5)):
            best_t, best_f = float(t), f
    return best_t


def tuned_macro_f1(probs: np.ndarray, y: np.ndarray) -> float:
    """Macro-F1 with each label at its own F1-maximising threshold (`best_f1_threshold`): what a model
    scores once thresholds are fitted, so early stopping does not wait for rare labels to cross 0.5."""
    pred = np.zeros_like(y)
    for j in range(y.shape[1]):
        pred[:, j] = probs[:, j] >= best_f1_threshold(probs[:, j], y[:, j])
    score, _ = macro_f1(y, pred)
    return 0.0 if np.isnan(score) else score


def rounded(x: float | None, nd: int = 4) -> float | None:
    """JSON-ready: rounded, and None (never NaN) where undefined."""
    return None if x is None or not np.isfinite(x) else round(float(x), nd)


def slice_scores(y: np.ndarray, pred: np.ndarray) -> dict[str, Any]:
    """Scores of one slice. Labels with no positive example are left out of macro-F1 and listed.

    For such a label recall and F1 are undefined (``None``); precision is ``None`` too unless the
    model predicted it (then it is 0: every prediction was a false positive).
    """
    score, averaged = macro_f1(y, pred) if len(y) else (float("nan"), [])
    per_label: dict[str, dict[str, Any]] = {}
    for j, (name, s) in enumerate(per_label_scores(y, pred).items()):
        predicted = int(pred[:, j].sum()) if len(pred) else 0
        per_label[name] = {
            "precision": rounded(s.precision) if predicted else None,
            "recall": rounded(s.recall) if s.support else None,
            "f1": rounded(s.f1) if s.support else None,
            "support": s.support,
            "predicted": predicted,
        }
    return {
        "n": len(y),
        "macro_f1": rounded(score),
        "micro_f1": rounded(micro_f1(y, pred)) if len(y) else None,
        "labels_averaged": averaged,
        "labels_excluded": [name for name in LABELS if name not in averaged],
        "per_label": per_label,
    }


def language_slices(langs: list[str]) -> dict[str, np.ndarray]:
    """{language: row indices}, languages sorted."""
    arr = np.asarray(langs)
    return {lang: np.flatnonzero(arr == lang) for lang in sorted(set(langs))}


def split_summary(y: np.ndarray, pred: np.ndarray, langs: list[str]) -> dict[str, Any]:
    """The compact scores a bundle's manifest keeps per split: macro-F1, per-label F1, per-language macro-F1."""
    overall = slice_scores(y, pred)
    return {
        "n": len(y),
        "macro_f1": overall["macro_f1"],
        "labels_averaged": overall["labels_averaged"],
        "per_label_f1": {k: round(v.f1, 4) for k, v in per_label_scores(y, pred).items()},
        "per_language_macro_f1": {
            lang: rounded(macro_f1(y[idx], pred[idx])[0]) for lang, idx in language_slices(langs).items()
        },
    }
