"""`sitrep thresholds`: the threshold rules compared on held-out articles of one labeled file.

A bundle's logits on the file (its served runtime by default), grouped by article (`article_id`; a sentence
file without one is grouped by topic, else each sentence alone), go through `calibrate.rules_cv`: per split,
calibration and thresholds are fitted on some articles and scored on the others. The figures are what each
rule would score on articles it was not fitted on, which the bundle's own `scores.calibration` (fitted and
scored on the same sentences) cannot tell. Each row's `lang` also gives each rule a held-out figure per language.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from sitrep.models.corpus import Example, label_matrix, read_examples
from sitrep.models.labels import LABELS
from sitrep.training.calibrate import THRESHOLD_RULES, rules_cv


def article_groups(examples: list[Example]) -> list[str]:
    """Each example's article (`article_id`, else `topic`, else its own `id`), in order."""
    return [e.article_id or e.topic or e.id for e in examples]


def compare_rules(
    bundle: Path, data: Path, runtime: str = "onnx-int8", splits: int = 200, holdout: float = 0.5, seed: int = 0,
    rules: tuple[str, ...] = THRESHOLD_RULES,
) -> dict[str, Any]:
    from sitrep.models.runtime import load

    examples = read_examples(data)
    groups = article_groups(examples)
    clf = load(bundle, runtime)
    logits = clf.logits([e.text for e in examples], contexts=[e.context for e in examples])
    langs = [e.lang for e in examples]
    result = rules_cv(logits, label_matrix(examples).astype(np.int64), groups, rules, splits, holdout, seed, langs)
    return {"bundle": str(bundle), "data": str(data), "runtime": runtime, "seed": seed,
            "bundle_rule": clf.bundle.manifest.training.get("config", {}).get("threshold_rule", "f1"),
            "bundle_thresholds": clf.bundle.thresholds, **result}


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def render_markdown(result: dict[str, Any]) -> str:
    first = next(iter(result["rules"]))
    lines = [
        f"Threshold rules on held-out articles: `{result['data']}` ({result['n']} sentences, {result['groups']} "
        f"articles), bundle `{result['bundle']}` ({result['runtime']}); {result['splits']} random splits, "
        f"calibration and thresholds fitted on the other articles, scored on {result['held_out_groups']} "
        f"held-out ones (seed {result['seed']}).",
        "",
        "| rule | held-out macro-F1 (sd) | vs " + first + ": mean Δ, splits better / worse | "
        + " | ".join(f"{name} P / R" for name in LABELS) + " |",
        "|---|---|---|" + "---|" * len(LABELS),
    ]
    for rule, r in result["rules"].items():
        paired = result["paired"][rule]
        vs = "—" if rule == first else f"{paired['mean_delta']:+.4f}, {paired['wins']} / {paired['losses']}"
        cells = [f"{_fmt(r['precision'][name])} / {_fmt(r['recall'][name])}" for name in LABELS]
        lines.append(f"| `{rule}` | {r['macro_f1']:.4f} ({r['macro_f1_sd']:.3f}) | {vs} | " + " | ".join(cells) + " |")
    langs = sorted({lang for r in result["rules"].values() for lang in r.get("per_language", {})})
    if langs:  # older results have no per-language figures
        lines += ["", "Held-out macro-F1 per language (mean over the splits that held out some of its sentences):", "",
                  "| rule | " + " | ".join(langs) + " |", "|---|" + "---|" * len(langs)]
        for rule, r in result["rules"].items():
            per = r.get("per_language", {})
            lines.append(f"| `{rule}` | " + " | ".join(_fmt(per[lg]["macro_f1"]) if lg in per else "—" for lg in langs)
                         + " |")
    lines += ["", f"The bundle's own rule: `{result['bundle_rule']}` (thresholds "
              + ", ".join(f"{t:.3f}" for t in result["bundle_thresholds"]) + ")."]
    return "\n".join(lines) + "\n"


def write(result: dict[str, Any], out: Path) -> tuple[Path, Path, Path]:
    """OUT.json, OUT.md (the table, with the figure linked) and OUT.png (`eval.plots.threshold_rules`)."""
    from sitrep.eval.plots import threshold_rules

    out.parent.mkdir(parents=True, exist_ok=True)
    json_path, md_path, png_path = out.with_suffix(".json"), out.with_suffix(".md"), out.with_suffix(".png")
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    png_path.write_bytes(threshold_rules(result))
    md_path.write_text(render_markdown(result) + f"\n![held-out macro-F1 per split]({png_path.name})\n")
    return json_path, md_path, png_path
