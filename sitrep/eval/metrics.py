"""Report metrics on top of sitrep/models/scores.py: slices, calibration error, PR curves, co-occurrence, errors.

Everything returns plain JSON-ready values (floats, ints, lists, dicts; ``None`` where a value is
undefined, never NaN), so report.json can be written as is.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score, multilabel_confusion_matrix, precision_recall_curve

from sitrep.models.labels import LABELS
from sitrep.models.scores import rounded as _r
from sitrep.models.scores import slice_scores

NONE = "(none)"  # the row / column for "no label" in the confusion table
N_BINS = 10
MAX_CURVE_POINTS = 200


def calibration_bins(probs: np.ndarray, y: np.ndarray, n_bins: int = N_BINS) -> list[dict[str, Any]]:
    """Equal-width bins over [0, 1] of (probability, outcome) pairs: count, mean prob, positive rate."""
    p = np.asarray(probs, dtype=np.float64).ravel()
    t = np.asarray(y, dtype=np.float64).ravel()
    idx = np.minimum((p * n_bins).astype(np.int64), n_bins - 1)
    bins = []
    for b in range(n_bins):
        sel = idx == b
        n = int(sel.sum())
        bins.append(
            {
                "lo": round(b / n_bins, 4),
                "hi": round((b + 1) / n_bins, 4),
                "n": n,
                "mean_prob": _r(p[sel].mean()) if n else None,
                "positive_rate": _r(t[sel].mean()) if n else None,
            }
        )
    return bins


def expected_calibration_error(probs: np.ndarray, y: np.ndarray, n_bins: int = N_BINS) -> float | None:
    """ECE: sum over equal-width bins of (bin share) x |positive rate - mean probability|."""
    p = np.asarray(probs, dtype=np.float64).ravel()
    t = np.asarray(y, dtype=np.float64).ravel()
    if not len(p):
        return None
    idx = np.minimum((p * n_bins).astype(np.int64), n_bins - 1)
    total = 0.0
    for b in range(n_bins):
        sel = idx == b
        if sel.any():
            total += sel.sum() / len(p) * abs(t[sel].mean() - p[sel].mean())
    return _r(total)


def calibration(probs: np.ndarray, y: np.ndarray, n_bins: int = N_BINS) -> dict[str, Any]:
    """ECE over all (sentence, label) pairs, per label, and the bins of the reliability diagram."""
    return {
        "n_bins": n_bins,
        "binning": "equal-width",
        "ece": expected_calibration_error(probs, y, n_bins),
        "per_label": {
            name: expected_calibration_error(probs[:, j], y[:, j], n_bins) for j, name in enumerate(LABELS)
        },
        "bins": calibration_bins(probs, y, n_bins),
    }


def _thin(idx_count: int, limit: int) -> np.ndarray:
    if idx_count <= limit:
        return np.arange(idx_count)
    return np.unique(np.linspace(0, idx_count - 1, limit).round().astype(np.int64))


def pr_curves(probs: np.ndarray, y: np.ndarray, thresholds: dict[str, float]) -> dict[str, Any]:
    """Per label: the precision-recall curve (thinned to at most 200 points), AP, and the operating point."""
    out: dict[str, Any] = {}
    for j, name in enumerate(LABELS):
        yj, pj = y[:, j], probs[:, j]
        cut = thresholds[name]
        pred = pj >= cut
        tp = int((pred & (yj == 1)).sum())
        op = {
            "threshold": _r(cut),
            "precision": _r(tp / pred.sum()) if pred.sum() else None,
            "recall": _r(tp / yj.sum()) if yj.sum() else None,
        }
        if yj.sum() == 0:
            out[name] = {
                "average_precision": None,
                "precision": [],
                "recall": [],
                "thresholds": [],
                "operating_point": op,
                "note": "no positive example: curve undefined",
            }
            continue
        prec, rec, thr = precision_recall_curve(yj, pj)
        keep = _thin(len(prec), MAX_CURVE_POINTS)
        out[name] = {
            "average_precision": _r(average_precision_score(yj, pj)),
            "precision": [round(float(v), 4) for v in prec[keep]],
            "recall": [round(float(v), 4) for v in rec[keep]],
            # precision_recall_curve has one threshold fewer than points; the last point has none.
            "thresholds": [round(float(thr[i]), 4) if i < len(thr) else None for i in keep],
            "operating_point": op,
        }
    return out


def cooccurrence(y: np.ndarray, pred: np.ndarray) -> dict[str, Any]:
    """Label co-occurrence (gold and predicted) and the gold x predicted label table.

    ``gold_vs_predicted[i][j]``: sentences with gold label i (or none) for which label j (or none)
    was predicted. Its diagonal holds the true positives; row ``(none)`` holds false positives on
    background sentences; column ``(none)`` holds sentences where nothing was predicted.
    """
    names = [*LABELS, NONE]

    def with_none(m: np.ndarray) -> np.ndarray:
        return np.concatenate([m, (m.sum(axis=1) == 0)[:, None].astype(np.int64)], axis=1)

    g, p = with_none(np.asarray(y, dtype=np.int64)), with_none(np.asarray(pred, dtype=np.int64))
    mcm = (
        multilabel_confusion_matrix(y, pred, labels=list(range(len(LABELS))))
        if len(y)
        else np.zeros((4, 2, 2))
    )
    return {
        "labels": names,
        "gold": (y.T @ y).astype(int).tolist(),
        "predicted": (pred.T @ pred).astype(int).tolist(),
        "gold_vs_predicted": (g.T @ p).astype(int).tolist(),
        "per_label_counts": {
            name: {
                "tp": int(mcm[j][1][1]),
                "fp": int(mcm[j][0][1]),
                "fn": int(mcm[j][1][0]),
                "tn": int(mcm[j][0][0]),
            }
            for j, name in enumerate(LABELS)
        },
    }


def worst_errors(
    probs: np.ndarray,
    y: np.ndarray,
    pred: np.ndarray,
    rows: list[dict[str, Any]],
    k: int,
) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Per label: the k most confident false positives and the k least confident false negatives.

    ``rows`` holds one dict per sentence (id, lang, text, gold labels); text is kept as is.
    """
    out: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for j, name in enumerate(LABELS):
        fp = np.flatnonzero((pred[:, j] == 1) & (y[:, j] == 0))
        fn = np.flatnonzero((pred[:, j] == 0) & (y[:, j] == 1))
        fp = fp[np.argsort(-probs[fp, j], kind="stable")][:k]
        fn = fn[np.argsort(probs[fn, j], kind="stable")][:k]

        def item(i: int, j: int = j) -> dict[str, Any]:
            predicted = [LABELS[c] for c in np.flatnonzero(pred[i])]
            return {
                **rows[i],
                "prob": round(float(probs[i, j]), 4),
                "predicted": predicted,
                "probs": {lab: round(float(probs[i, c]), 4) for c, lab in enumerate(LABELS)},
            }

        out[name] = {
            "false_positives": [item(int(i)) for i in fp],
            "false_negatives": [item(int(i)) for i in fn],
        }
    return out


BOOTSTRAP_SAMPLES = 1000


def _macro_f1_counts(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Macro-F1 per bootstrap sample from per-label counts [samples, labels]; labels absent from a sample's
    gold are left out of its average (as `macro_f1` does); NaN where no label is present."""
    denom = 2 * tp + fp + fn
    f1 = np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)
    n_present = present.sum(axis=1)
    total = np.where(present, f1, 0.0).sum(axis=1)
    return np.where(n_present > 0, total / np.maximum(n_present, 1), np.nan)


def bootstrap_macro_f1(y: np.ndarray, pred: np.ndarray, samples: int = BOOTSTRAP_SAMPLES, seed: int = 0,
                       level: float = 0.95) -> dict[str, Any] | None:
    """Percentile bootstrap interval of macro-F1: sentences resampled with replacement `samples` times.
    None for an empty slice. Small sets (15-60 sentences) give wide intervals: that is the point."""
    n = len(y)
    if n == 0:
        return None
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(samples, n))
    yb, pb = y[idx].astype(bool), pred[idx].astype(bool)  # [samples, n, labels]
    tp = (yb & pb).sum(axis=1)
    fp = (~yb & pb).sum(axis=1)
    fn = (yb & ~pb).sum(axis=1)
    scores = _macro_f1_counts(tp, fp, fn, yb.any(axis=1))
    scores = scores[np.isfinite(scores)]
    if not len(scores):
        return None
    alpha = (1 - level) / 2
    lo, hi = np.quantile(scores, [alpha, 1 - alpha])
    return {"level": level, "low": _r(lo), "high": _r(hi), "samples": samples}


def slice_with_interval(y: np.ndarray, pred: np.ndarray) -> dict[str, Any]:
    """A slice's scores (`slice_scores`: macro-F1, per label, …) with its macro-F1's bootstrap interval
    (`macro_f1_ci`): what the eval report gives each language and topic, and `eval-compare` each language."""
    out = slice_scores(y, pred)
    out["macro_f1_ci"] = bootstrap_macro_f1(y, pred)
    return out
