"""`sitrep eval`: score a model on labeled JSONL and write report.json (then Markdown and HTML from it).

report.json is the contract (``SCHEMA_VERSION``); report.md and report.html are rendered from it
alone (sitrep/eval/render.py), so a report can be re-rendered or diffed without the model. Top-level keys:

    schema_version, created, data{path,sha256,n,languages}, model{name,version,kind}, runtime,
    thresholds{label}, n, macro_f1, macro_f1_ci{level,low,high,samples}, micro_f1, labels_averaged,
    labels_excluded,
    per_label{label}{precision,recall,f1,support,predicted,average_precision,ece},
    per_language{lang}{n,macro_f1,macro_f1_ci,micro_f1,labels_averaged,labels_excluded,ece,per_label},
    ece, calibration{n_bins,binning,ece,per_label,bins}, pr_curves{label}, cooccurrence,
    errors{label}{false_positives,false_negatives}, truncated{n,ids}, notes[], timing_s,
    baseline (the same metric keys for the baseline, or null), deltas (model minus baseline, or
    null), comparison[] (one row per compared metric, `worse` marks a regression)

A label with no positive example in a slice is left out of that slice's macro-F1, listed in the
slice's ``labels_excluded``, and said in ``notes``.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

from sitrep.eval.metrics import (
    bootstrap_macro_f1,
    calibration,
    cooccurrence,
    expected_calibration_error,
    pr_curves,
    slice_with_interval,
    worst_errors,
)
from sitrep.eval.predictors import Predictions, Predictor
from sitrep.models.bundle import sha256_file
from sitrep.models.corpus import Example, label_matrix, read_examples
from sitrep.models.files import write_json_atomic
from sitrep.models.labels import LABELS, multi_hot_matrix
from sitrep.models.scores import language_slices, slice_scores

SCHEMA_VERSION = 1
REPORT_JSON = "report.json"
TOLERANCE = 5e-5  # deltas smaller than the reports' rounding are not regressions


class EvalError(ValueError):
    """Bad input to eval: unreadable data, an empty file, a gate without what it needs."""


def load_examples(path: str | Path) -> list[Example]:
    from sitrep.models.corpus import CorpusError

    p = Path(path)
    if not p.is_file():
        raise EvalError(f"{p}: no such file")
    try:
        examples = read_examples(p)
    except CorpusError as exc:
        raise EvalError(str(exc)) from exc
    if not examples:
        raise EvalError(f"{p}: no labeled sentences")
    dupes = [k for k, c in Counter(e.id for e in examples).items() if c > 1]
    if dupes:
        raise EvalError(f"{p}: duplicate ids {dupes[:5]}{' …' if len(dupes) > 5 else ''}")
    return examples


def score(
    examples: list[Example], preds: Predictions, thresholds: dict[str, float], n_errors: int | None = 5
) -> dict[str, Any]:
    """Every metric section of a report for one model's predictions (no `errors` when n_errors is None)."""
    y = label_matrix(examples)
    pred = multi_hot_matrix(preds.labels)
    probs = preds.probs
    if probs.shape != y.shape:
        raise EvalError(f"predictor returned probabilities of shape {probs.shape} for {y.shape} gold labels")
    overall = slice_scores(y, pred)
    calib = calibration(probs, y)
    curves = pr_curves(probs, y, thresholds)
    for name, row in overall["per_label"].items():
        row["average_precision"] = curves[name]["average_precision"]
        row["ece"] = calib["per_label"][name]
    per_language: dict[str, Any] = {}
    for lang, idx in language_slices([e.lang for e in examples]).items():
        per_language[lang] = slice_with_interval(y[idx], pred[idx])
        per_language[lang]["ece"] = expected_calibration_error(probs[idx], y[idx])
    per_topic: dict[str, Any] = {}
    if any(e.topic for e in examples):
        for topic, idx in _groups([e.topic or NO_TOPIC for e in examples]).items():
            per_topic[topic] = slice_with_interval(y[idx], pred[idx])
    out: dict[str, Any] = {
        "thresholds": {k: round(float(v), 4) for k, v in thresholds.items()},
        **{k: overall[k] for k in ("n", "macro_f1", "micro_f1", "labels_averaged", "labels_excluded")},
        "macro_f1_ci": bootstrap_macro_f1(y, pred),
        "per_label": overall["per_label"],
        "per_language": per_language,
        "per_topic": per_topic,
        "label_sets": label_sets(y, pred),
        "ece": calib["ece"],
        "calibration": calib,
        "pr_curves": curves,
        "cooccurrence": cooccurrence(y, pred),
    }
    if n_errors is not None:
        rows = [{"id": e.id, "lang": e.lang, "text": e.text, "gold": list(e.labels)} for e in examples]
        out["errors"] = worst_errors(probs, y, pred, rows, n_errors)
    return out


NO_TOPIC = "(no topic)"
SET_OUTCOMES = ("exact", "missed_only", "extra_only", "missed_and_extra")


def _groups(keys: list[str]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for i, k in enumerate(keys):
        out.setdefault(k, []).append(i)
    return dict(sorted(out.items()))


def label_sets(y: Any, pred: Any, top: int = 15) -> dict[str, Any]:
    """Multi-label gold vs predicted, per sentence and by whole label set (not one label against another):

    `outcomes`: how many sentences got exactly their gold set, only missed labels, only extra labels, or
    both; `pairs`: the most frequent (gold set, predicted set) combinations, with whether they match."""
    outcomes = dict.fromkeys(SET_OUTCOMES, 0)
    pairs: Counter[tuple[tuple[str, ...], tuple[str, ...]]] = Counter()
    for g_row, p_row in zip(y, pred, strict=True):
        gold = tuple(label for label, v in zip(LABELS, g_row, strict=True) if v)
        got = tuple(label for label, v in zip(LABELS, p_row, strict=True) if v)
        missed, extra = set(gold) - set(got), set(got) - set(gold)
        if missed and extra:
            outcomes["missed_and_extra"] += 1
        elif missed or extra:
            outcomes["missed_only" if missed else "extra_only"] += 1
        else:
            outcomes["exact"] += 1
        pairs[(gold, got)] += 1
    rows = [
        {"gold": list(g), "predicted": list(p), "n": n, "match": g == p}
        for (g, p), n in sorted(pairs.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
    ]
    return {"n": len(y), "outcomes": outcomes, "pairs": rows, "distinct_pairs": len(pairs)}


def exclusion_notes(section: dict[str, Any]) -> list[str]:
    notes = []
    slices = [("all sentences", section)] + [
        (f"language '{k}'", v) for k, v in section["per_language"].items()
    ]
    for where, s in slices:
        if s["labels_excluded"]:
            notes.append(
                f"{where} (n={s['n']}): no positive example of {', '.join(s['labels_excluded'])}; "
                "left out of that slice's macro-F1 (its recall and F1 are undefined)"
            )
    return notes


def _delta(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(a - b, 4)


def compare(main: dict[str, Any], base: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Deltas (model minus baseline) and one comparison row per metric; `worse` marks regressions."""
    rows: list[dict[str, Any]] = []

    def row(
        metric: str, where: str, a: float | None, b: float | None, higher_is_better: bool = True
    ) -> float | None:
        d = _delta(a, b)
        worse = d is not None and (d < -TOLERANCE if higher_is_better else d > TOLERANCE)
        rows.append(
            {
                "metric": metric,
                "slice": where,
                "model": a,
                "baseline": b,
                "delta": d,
                "higher_is_better": higher_is_better,
                "worse": worse,
            }
        )
        return d

    deltas: dict[str, Any] = {
        "macro_f1": row("macro_f1", "all", main["macro_f1"], base["macro_f1"]),
        "micro_f1": row("micro_f1", "all", main["micro_f1"], base["micro_f1"]),
        "ece": row("ece", "all", main["ece"], base["ece"], higher_is_better=False),
        "per_label": {},
        "per_language": {},
    }
    for name in LABELS:
        m, b = main["per_label"][name], base["per_label"][name]
        deltas["per_label"][name] = {
            k: row(k, f"label:{name}", m[k], b[k], higher_is_better=k != "ece")
            for k in ("precision", "recall", "f1", "average_precision", "ece")
        }
    for lang in sorted(set(main["per_language"]) | set(base["per_language"])):
        m, b = main["per_language"].get(lang), base["per_language"].get(lang)
        if m is None or b is None:
            continue
        deltas["per_language"][lang] = {
            "macro_f1": row("macro_f1", f"lang:{lang}", m["macro_f1"], b["macro_f1"]),
            "micro_f1": row("micro_f1", f"lang:{lang}", m["micro_f1"], b["micro_f1"]),
        }
    return deltas, rows


def model_info(predictor: Predictor) -> dict[str, Any]:
    return {"name": predictor.name, "version": predictor.version, "kind": predictor.kind}


def build_report(
    examples: list[Example],
    predictor: Predictor,
    data_path: str | Path,
    baseline: Predictor | None = None,
    n_errors: int = 5,
    command: str | None = None,
) -> dict[str, Any]:
    """Run the model (and the baseline) on the examples and assemble report.json's content."""
    texts, contexts = [e.text for e in examples], [e.context for e in examples]
    t0 = time.perf_counter()
    preds = predictor.predict(texts, contexts)
    elapsed = time.perf_counter() - t0
    main = score(examples, preds, predictor.thresholds, n_errors)
    truncated_ids = [e.id for e, t in zip(examples, preds.truncated, strict=False) if t]
    data_path = Path(data_path)
    report: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "data": {
            "path": str(data_path),
            "sha256": sha256_file(data_path),
            "n": len(examples),
            "languages": dict(sorted(Counter(e.lang for e in examples).items())),
        },
        "model": model_info(predictor),
        "runtime": predictor.runtime,
        **main,
        "truncated": {"n": len(truncated_ids), "ids": truncated_ids[:50]},
        "notes": exclusion_notes(main),
        "timing_s": {"model": round(elapsed, 2)},
        "baseline": None,
        "deltas": None,
        "comparison": [],
    }
    report["provenance"] = provenance(report, predictor, baseline, command)
    if truncated_ids:
        report["notes"].append(
            f"{len(truncated_ids)} sentence(s) were longer than the model's max length and were truncated "
            "(ids in truncated.ids)"
        )
    if baseline is not None:
        t0 = time.perf_counter()
        base_preds = baseline.predict(texts, contexts)  # a bundle baseline may read context too
        report["timing_s"]["baseline"] = round(time.perf_counter() - t0, 2)
        base = score(examples, base_preds, baseline.thresholds, n_errors=None)
        report["baseline"] = {"model": model_info(baseline), "runtime": baseline.runtime, **base}
        report["deltas"], report["comparison"] = compare(main, base)
    return report


def provenance(
    report: dict[str, Any], predictor: Predictor, baseline: Predictor | None, command: str | None
) -> dict[str, Any]:
    """What a reader needs to reproduce the report: the command, the data's hash, the exact model and how
    its runtime's export compared with the reference (the bundle's parity report)."""
    from sitrep import __version__

    def model(p: Predictor) -> dict[str, Any]:
        return {**model_info(p), "runtime": p.runtime, "parity": getattr(p, "parity", None)}

    return {
        "command": command,
        "data_sha256": report["data"]["sha256"],
        "model": model(predictor),
        "baseline": model(baseline) if baseline is not None else None,
        "sitrep_version": __version__,
    }


def gate_failures(
    report: dict[str, Any], fail_under: float | None = None, max_regression: float | None = None
) -> list[str]:
    """Why a retraining pipeline should stop: macro-F1 under a floor, or a macro-F1 drop beyond POINTS.

    `max_regression` is in F1 points (0.5 = 0.005 macro-F1) and applies to the overall macro-F1
    and to each language's macro-F1 against the baseline.
    """
    failures: list[str] = []
    if fail_under is not None:
        f1 = report["macro_f1"]
        if f1 is None:
            failures.append("macro-F1 is undefined (no label has a positive example)")
        elif f1 < fail_under:
            failures.append(f"macro-F1 {f1:.4f} is under --fail-under {fail_under:.4f}")
    if max_regression is not None:
        if report["baseline"] is None:
            raise EvalError("--max-regression needs --baseline")
        for r in report["comparison"]:
            if r["metric"] != "macro_f1" or r["delta"] is None:
                continue
            if r["delta"] * 100 < -max_regression - 1e-9:
                failures.append(
                    f"macro-F1 ({r['slice']}) fell {-r['delta'] * 100:.2f} points "
                    f"({r['baseline']:.4f} -> {r['model']:.4f}), more than --max-regression "
                    f"{max_regression:g}"
                )
    return failures


def write_report(report: dict[str, Any], out_dir: str | Path) -> dict[str, Path]:
    """Write report.json, then report.md (+ plots/*.png) and the self-contained report.html."""
    from sitrep.eval.render import write_rendered

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / REPORT_JSON, report)
    return {"json": out / REPORT_JSON, **write_rendered(report, out)}


def check_report_dir(report_dir: Path) -> None:
    """The report directory exists or can be made, and is writable (EvalError otherwise)."""
    if report_dir.exists() and not report_dir.is_dir():
        raise EvalError(f"--report {report_dir} is a file; give a directory (report.json, .md, .html go in it)")
    try:
        report_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EvalError(f"--report {report_dir}: cannot create it ({exc.strerror or exc})") from exc
    if not os.access(report_dir, os.W_OK):
        raise EvalError(f"--report {report_dir}: not writable")


def run_eval(
    model: str | Path,
    data: str | Path,
    report_dir: str | Path,
    runtime: str = "onnx-int8",
    baseline: str | Path | None = None,
    baseline_runtime: str | None = None,
    threads: int | None = None,
    n_errors: int = 5,
    progress: bool = True,
    command: str | None = None,
    ensemble: list[str | Path] | None = None,
) -> tuple[dict[str, Any], dict[str, Path]]:
    """Load, predict, score, write. Raises EvalError / PredictorError for bad input.

    `ensemble`: more models averaged with `model` (`EnsemblePredictor`), each on `runtime`."""
    from sitrep.eval.predictors import EnsemblePredictor, load_predictor

    if n_errors < 0:
        raise EvalError("--errors must be >= 0")
    check_report_dir(Path(report_dir))  # before any inference: a bad --report is found at once
    examples = load_examples(data)
    predictor = load_predictor(model, runtime, threads=threads, progress=progress)
    if ensemble:
        predictor = EnsemblePredictor(
            [predictor, *(load_predictor(m, runtime, threads=threads, progress=progress) for m in ensemble)])
    base = None
    if baseline is not None:
        base = load_predictor(baseline, baseline_runtime or runtime, threads=threads, progress=progress)
    report = build_report(examples, predictor, data, baseline=base, n_errors=n_errors, command=command)
    return report, write_report(report, report_dir)
