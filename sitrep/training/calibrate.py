"""After training, on the calibration split: per-label Platt calibration, then per-label thresholds.

Two threshold rules (`TrainConfig.threshold_rule`):

- ``f1``: each label's F1-maximising threshold on the calibration split (`best_f1_threshold`);
- ``calibrated``: 0.5 on every label, i.e. a label is given where its Platt-calibrated probability says it
  is more likely than not. Nothing is fitted beyond the calibration's two numbers a label.

`rules_cv` compares them on held-out articles (`sitrep thresholds`): the F1 maximum of a few hundred
sentences is a noisy argmax, and on held-out halves of the article dev split it scored below the plain 0.5
cut (sitrep/models/README.md, "Threshold rule").
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression

from sitrep.models.bundle import Calibration
from sitrep.models.calibration import calibrated_probs
from sitrep.models.labels import LABELS
from sitrep.models.scores import best_f1_threshold, language_slices, macro_f1, per_label_scores

THRESHOLD_RULES = ("f1", "calibrated")


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


def fit_thresholds(probs: np.ndarray, y: np.ndarray, rule: str = "f1") -> dict[str, float]:
    """Per-label thresholds on (probabilities, labels) by `rule` (see the module docstring)."""
    if rule not in THRESHOLD_RULES:
        raise ValueError(f"unknown threshold rule {rule!r}; choose one of {', '.join(THRESHOLD_RULES)}")
    if rule == "calibrated":
        return dict.fromkeys(LABELS, 0.5)
    return {name: round(best_f1_threshold(probs[:, j], y[:, j]), 4) for j, name in enumerate(LABELS)}


def calibrate(logits: np.ndarray, y: np.ndarray, rule: str = "f1") -> tuple[Calibration, dict[str, float]]:
    calibration = fit_platt(logits, y)
    thresholds = fit_thresholds(calibrated_probs(logits, calibration), y, rule)
    return calibration, thresholds


def _nanmean(values: np.ndarray, axis: int | None = None) -> np.ndarray:
    """Mean over the defined values (NaN where none is defined, without numpy's warning)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(values, axis=axis)


def _rounded(value: float) -> float | None:
    return round(float(value), 4) if np.isfinite(value) else None


def rules_cv(
    logits: np.ndarray, y: np.ndarray, groups: list[str], rules: tuple[str, ...] = THRESHOLD_RULES,
    splits: int = 200, holdout: float = 0.5, seed: int = 0, langs: list[str] | None = None,
) -> dict[str, Any]:
    """Held-out comparison of threshold rules: split the groups (articles) at random, fit calibration and
    thresholds on one part by each rule, score the other part; repeat `splits` times.

    With `langs` (each row's language), each rule also gets "per_language": {lang: {"macro_f1", "splits"}},
    that language's held-out macro-F1 averaged over the splits that held out any of its sentences.

    Returns {"rules": {rule: {macro_f1, macro_f1_sd, precision, recall, f1 (per label, mean over splits)}},
    "paired": {rule: {mean_delta, wins, losses}} against the first rule, "per_split": {rule: [held-out
    macro-F1 of each split]}, "splits", "groups", "held_out_groups", "n"}. A label
    with no positive in a held-out part is left out of that split's macro-F1; a per-label figure no split
    defines is None.
    """
    if len(rules) < 1 or any(r not in THRESHOLD_RULES for r in rules):
        raise ValueError(f"rules must be among {', '.join(THRESHOLD_RULES)}")
    names = np.asarray(groups)
    unique = np.unique(names)
    if len(unique) < 2:
        raise ValueError("need at least two groups (articles) to hold some out")
    k = min(len(unique) - 1, max(1, round(len(unique) * holdout)))
    rng = np.random.default_rng(seed)
    macro: dict[str, list[float]] = {r: [] for r in rules}
    per_label: dict[str, list[np.ndarray]] = {r: [] for r in rules}
    lang_of = None if langs is None else np.asarray(langs)
    per_lang: dict[str, dict[str, list[float]]] = {r: {} for r in rules}  # rule -> language -> split scores
    for _ in range(splits):
        held = np.isin(names, rng.permutation(unique)[:k])
        fit, test = ~held, held
        calibration = fit_platt(logits[fit], y[fit])
        p_fit, p_test = calibrated_probs(logits[fit], calibration), calibrated_probs(logits[test], calibration)
        for rule in rules:
            fitted = fit_thresholds(p_fit, y[fit], rule)  # once per rule and split: all labels at a time
            cut = np.asarray([fitted[name] for name in LABELS])
            pred = (p_test >= cut[None, :]).astype(np.int64)
            scores = per_label_scores(y[test], pred)
            # Undefined (NaN, left out of the means): precision without a prediction, recall and F1 without a
            # positive — as `macro_f1` leaves such a label out.
            stats = np.asarray([[sc.precision if pred[:, j].any() else np.nan,
                                 sc.recall if sc.support else np.nan, sc.f1 if sc.support else np.nan]
                                for j, sc in enumerate(scores.values())]).T
            macro[rule].append(macro_f1(y[test], pred)[0])
            per_label[rule].append(stats)
            if lang_of is not None:
                for lang, rows in language_slices(list(lang_of[test])).items():
                    score = macro_f1(y[test][rows], pred[rows])[0]
                    if not np.isnan(score):  # no positive of any label held out in this language
                        per_lang[rule].setdefault(str(lang), []).append(score)
    out: dict[str, Any] = {"rules": {}, "paired": {}, "splits": splits, "groups": len(unique),
                           "held_out_groups": k, "n": len(names),
                           "per_split": {r: [round(v, 4) for v in macro[r]] for r in rules}}
    for rule in rules:
        stats = _nanmean(np.stack(per_label[rule]), axis=0)  # [3, labels]
        out["rules"][rule] = {
            "macro_f1": round(float(np.mean(macro[rule])), 4),
            "macro_f1_sd": round(float(np.std(macro[rule])), 4),
            **{kind: {name: _rounded(v) for name, v in zip(LABELS, stats[i], strict=True)}
               for i, kind in enumerate(("precision", "recall", "f1"))},
        }
        if lang_of is not None:
            out["rules"][rule]["per_language"] = {
                lang: {"macro_f1": round(float(np.mean(v)), 4), "splits": len(v)}
                for lang, v in sorted(per_lang[rule].items())
            }
        delta = np.asarray(macro[rule]) - np.asarray(macro[rules[0]])
        out["paired"][rule] = {"mean_delta": round(float(delta.mean()), 4), "wins": int((delta > 1e-12).sum()),
                               "losses": int((delta < -1e-12).sum())}
    return out
