"""`sitrep eval-compare`: several models side by side on several labeled sets, in one table.

For each model (a bundle or a TF-IDF baseline) and each set: macro-F1 with its bootstrap 95%
interval, per-label precision / recall / F1, per-language macro-F1 with its bootstrap 95% interval (a
language's share of a set is often small) and ECE. The recipe table in sitrep/models/README.md is this
command's Markdown.
"""

from __future__ import annotations

import datetime as dt
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from sitrep.eval.metrics import bootstrap_macro_f1, expected_calibration_error, slice_with_interval
from sitrep.eval.predictors import load_predictor
from sitrep.eval.report import load_examples
from sitrep.models.bundle import sha256_file
from sitrep.models.corpus import label_matrix
from sitrep.models.labels import LABELS, multi_hot_matrix
from sitrep.models.scores import language_slices, slice_scores


def score_set(examples: list[Any], probs: Any, labels: list[list[str]]) -> dict[str, Any]:
    y, pred = label_matrix(examples), multi_hot_matrix(labels)
    overall = slice_scores(y, pred)
    langs = {lang: slice_with_interval(y[idx], pred[idx])
             for lang, idx in language_slices([e.lang for e in examples]).items()}
    return {
        "n": len(examples),
        "macro_f1": overall["macro_f1"],
        "macro_f1_ci": bootstrap_macro_f1(y, pred),
        "ece": expected_calibration_error(probs, y),
        "per_label": {k: {m: v[m] for m in ("precision", "recall", "f1", "support")}
                      for k, v in overall["per_label"].items()},
        "per_language": {lang: s["macro_f1"] for lang, s in langs.items()},
        "per_language_ci": {lang: s["macro_f1_ci"] for lang, s in langs.items()},
    }


def compare_models(models: dict[str, Path], datasets: dict[str, Path], runtime: str = "onnx-int8",
                   threads: int | None = None, log: Any = None) -> dict[str, Any]:
    """Every model on every set. Raises EvalError / PredictorError for bad input."""
    say = log or (lambda _m: None)
    sets = {name: load_examples(path) for name, path in datasets.items()}
    rows: list[dict[str, Any]] = []
    for name, path in models.items():
        predictor = load_predictor(path, runtime, threads=threads)
        for set_name, examples in sets.items():
            t0 = time.perf_counter()
            preds = predictor.predict([e.text for e in examples], [e.context for e in examples])
            rows.append({"model": name, "path": str(path), "kind": predictor.kind, "runtime": predictor.runtime,
                         "version": predictor.version, "set": set_name,
                         **score_set(examples, preds.probs, preds.labels)})
            say(f"{name} on {set_name}: macro-F1 {rows[-1]['macro_f1']} ({time.perf_counter() - t0:.1f} s)")
    return {
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": "sitrep " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "sets": {k: {"path": str(p), "sha256": sha256_file(Path(p)), "n": len(sets[k])} for k, p in datasets.items()},
        "rows": rows,
    }


def _f(v: float | None) -> str:
    return "—" if v is None else f"{v:.3f}"


def _ci(ci: dict[str, Any] | None) -> str:
    return "" if not ci else f" ({ci['low']:.2f}–{ci['high']:.2f})"


def render_markdown(result: dict[str, Any]) -> str:
    rows = result["rows"]
    models = list(dict.fromkeys(r["model"] for r in rows))
    sets = list(result["sets"])
    by = {(r["model"], r["set"]): r for r in rows}
    out = [f"`{result['command']}` ({result['created']}); macro-F1 with its bootstrap 95% interval", ""]
    out.append("| model | " + " | ".join(f"{s} (n={result['sets'][s]['n']})" for s in sets) + " |")
    out.append("|---|" + "---|" * len(sets))
    for m in models:
        cells = [_f(by[m, s]["macro_f1"]) + _ci(by[m, s].get("macro_f1_ci")) for s in sets]
        out.append(f"| {m} | " + " | ".join(cells) + " |")
    for s in sets:
        langs = sorted({lang for m in models for lang in by[m, s]["per_language"]})
        out += ["", f"**{s}**: precision / recall / F1 per label, macro-F1 per language (bootstrap 95% interval), ECE",
                ""]
        head = ["model", *LABELS, *langs, "ECE"]
        out.append("| " + " | ".join(head) + " |")
        out.append("|---|" + "---|" * (len(head) - 1))
        for m in models:
            r = by[m, s]
            cells = [f"{_f(r['per_label'][k]['precision'])} / {_f(r['per_label'][k]['recall'])} / "
                     f"{_f(r['per_label'][k]['f1'])}" for k in LABELS]
            # results written before the intervals existed have no `per_language_ci`: their cells show the figure alone
            cis = r.get("per_language_ci") or {}
            cells += [_f(r["per_language"].get(lang)) + _ci(cis.get(lang)) for lang in langs]
            out.append(f"| {m} | " + " | ".join([*cells, _f(r["ece"])]) + " |")
    return "\n".join(out) + "\n"
