"""The report's figures, drawn with matplotlib from report.json alone, returned as PNG bytes.

PR curves per label, the reliability diagram, per-language macro-F1 bars and the gold x predicted
label table. With a baseline in the report, its curves and bars are drawn beside the model's.
"""

from __future__ import annotations

import io
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from sitrep.models.labels import LABELS

MODEL_COLOR = "#1f6fb4"
BASE_COLOR = "#d9822b"
DPI = 96


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def _name(section: dict[str, Any]) -> str:
    return f"{section['model']['name']} {section['model']['version']} ({section['runtime']})"


def pr_curves(report: dict[str, Any]) -> bytes:
    fig, axes = plt.subplots(2, 2, figsize=(9, 7.5), sharex=True, sharey=True)
    base = report.get("baseline")
    for ax, label in zip(axes.ravel(), LABELS, strict=True):
        for section, color, style in ((report, MODEL_COLOR, "-"), (base, BASE_COLOR, "--")):
            if section is None:
                continue
            c = section["pr_curves"][label]
            ap = c["average_precision"]
            who = "model" if section is report else "baseline"
            if c["recall"]:
                ax.step(
                    c["recall"],
                    c["precision"],
                    where="post",
                    color=color,
                    linestyle=style,
                    label=f"{who} AP {ap:.3f}",
                )
            op = c["operating_point"]
            if op["recall"] is not None and op["precision"] is not None:
                ax.plot(
                    op["recall"],
                    op["precision"],
                    "o",
                    color=color,
                    label=f"{who} threshold {op['threshold']:.2f}",
                )
        if not section_has_positives(report, label):
            ax.text(0.5, 0.5, "no positive example", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(f"{label} (support {report['per_label'][label]['support']})")
        ax.set_xlim(0, 1.02)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower left", fontsize=8)
    for ax in axes[1]:
        ax.set_xlabel("recall")
    for ax in axes[:, 0]:
        ax.set_ylabel("precision")
    fig.suptitle("Precision-recall per label (dot: the bundle's threshold)")
    return _png(fig)


def section_has_positives(section: dict[str, Any], label: str) -> bool:
    return section["per_label"][label]["support"] > 0


def reliability(report: dict[str, Any]) -> bytes:
    fig, (ax, hist) = plt.subplots(2, 1, figsize=(6.5, 7), height_ratios=[3, 1], sharex=True)
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfectly calibrated")
    sections = [(report, MODEL_COLOR, "model")]
    if report.get("baseline"):
        sections.append((report["baseline"], BASE_COLOR, "baseline"))
    width = 1 / report["calibration"]["n_bins"]
    for k, (section, color, who) in enumerate(sections):
        bins = [b for b in section["calibration"]["bins"] if b["n"]]
        ax.plot(
            [b["mean_prob"] for b in bins],
            [b["positive_rate"] for b in bins],
            "o-",
            color=color,
            label=f"{who}: ECE {section['calibration']['ece']:.4f}",
        )
        offset = (k - (len(sections) - 1) / 2) * width / len(sections)
        hist.bar(
            [(b["lo"] + b["hi"]) / 2 + offset for b in section["calibration"]["bins"]],
            [b["n"] for b in section["calibration"]["bins"]],
            width=width / len(sections) * 0.9,
            color=color,
            alpha=0.8,
            label=who,
        )
    ax.set_ylabel("fraction positive")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title(
        f"Reliability: all (sentence, label) pairs, {report['calibration']['n_bins']} equal-width bins"
    )
    hist.set_yscale("log")
    hist.set_xlabel("predicted probability")
    hist.set_ylabel("pairs")
    hist.grid(alpha=0.3)
    return _png(fig)


def language_f1(report: dict[str, Any]) -> bytes:
    langs = list(report["per_language"])
    base = report.get("baseline")
    fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * len(langs) + 2), 4))
    x = np.arange(len(langs))
    series = [(report, MODEL_COLOR, "model")] + ([(base, BASE_COLOR, "baseline")] if base else [])
    width = 0.8 / len(series)
    for k, (section, color, who) in enumerate(series):
        vals = [(section["per_language"].get(lang) or {}).get("macro_f1") for lang in langs]
        pos = x + (k - (len(series) - 1) / 2) * width
        bars = ax.bar(pos, [v or 0.0 for v in vals], width=width * 0.95, color=color, label=who)
        for bar, v in zip(bars, vals, strict=True):
            ax.annotate(
                "n/a" if v is None else f"{v:.2f}",
                (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                ha="center",
                va="bottom",
                fontsize=7,
            )
    if report["macro_f1"] is not None:
        ax.axhline(
            report["macro_f1"],
            color=MODEL_COLOR,
            linestyle=":",
            linewidth=1,
            label=f"all: {report['macro_f1']:.3f}",
        )
    ax.set_xticks(x, [f"{lang}\n(n={report['per_language'][lang]['n']})" for lang in langs])
    ax.set_ylim(0, 1.08)
    ax.set_ylabel("macro-F1")
    ax.set_title("Macro-F1 per language")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return _png(fig)


def label_tables(report: dict[str, Any]) -> bytes:
    co = report["cooccurrence"]
    names = co["labels"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 5.2))
    gold = np.asarray(co["gold"], dtype=float)
    _heatmap(left, gold, names[:-1], names[:-1], gold.astype(int), "Gold label co-occurrence (sentences)")
    left.set_xlabel("label")
    left.set_ylabel("label")
    gvp = np.asarray(co["gold_vs_predicted"], dtype=float)
    share = gvp / np.maximum(gvp.sum(axis=1, keepdims=True), 1) if gvp.size else gvp
    _heatmap(right, share, names, names, gvp.astype(int), "Gold x predicted (colour: share of the gold row)")
    right.set_xlabel("predicted label")
    right.set_ylabel("gold label")
    fig.tight_layout()
    return _png(fig)


def _heatmap(
    ax: Any, values: np.ndarray, rows: list[str], cols: list[str], counts: np.ndarray, title: str
) -> None:
    vmax = float(values.max()) if values.size and values.max() > 0 else 1.0
    ax.imshow(values, cmap="Blues", vmin=0, vmax=vmax)
    ax.set_xticks(range(len(cols)), cols, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    for i in range(len(rows)):
        for j in range(len(cols)):
            ax.text(
                j,
                i,
                str(counts[i, j]),
                ha="center",
                va="center",
                fontsize=8,
                color="white" if values[i, j] > vmax * 0.6 else "black",
            )
    ax.set_title(title, fontsize=10)


FIGURES = {
    "pr_curves": (pr_curves, "Precision-recall curves per label"),
    "reliability": (reliability, "Reliability diagram"),
    "language_f1": (language_f1, "Macro-F1 per language"),
    "labels": (label_tables, "Label co-occurrence and gold x predicted"),
}


def render_all(report: dict[str, Any]) -> dict[str, bytes]:
    """Every figure of the report: {name: PNG bytes}."""
    return {name: fn(report) for name, (fn, _) in FIGURES.items()}


def threshold_rules(result: dict[str, Any]) -> bytes:
    """`sitrep thresholds`' figure: each rule's held-out macro-F1 over the splits, and the paired difference
    of every other rule against the first one (right of 0: that rule scored higher on the same held-out
    articles)."""
    rules = list(result["rules"])
    per_split = result["per_split"]
    first = rules[0]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8), gridspec_kw={"width_ratios": [1, 1.3]})
    colors = [BASE_COLOR if i == 0 else MODEL_COLOR for i in range(len(rules))]
    box = left.boxplot([per_split[r] for r in rules], vert=False, patch_artist=True, widths=0.5)
    for patch, color in zip(box["boxes"], colors, strict=True):
        patch.set_facecolor(color)
        patch.set_alpha(0.5)
    left.set_yticks(range(1, len(rules) + 1), [f"{r}\nmean {result['rules'][r]['macro_f1']:.3f}" for r in rules])
    left.set_xlabel("held-out macro-F1 per split")
    left.grid(axis="x", alpha=0.3)
    for rule in rules[1:]:
        delta = np.asarray(per_split[rule]) - np.asarray(per_split[first])
        paired = result["paired"][rule]
        right.hist(delta, bins=30, color=MODEL_COLOR, alpha=0.6,
                   label=f"{rule} − {first}: mean {paired['mean_delta']:+.4f}, "
                         f"{paired['wins']} better / {paired['losses']} worse")
    right.axvline(0.0, color="black", linewidth=1)
    right.set_xlabel(f"held-out macro-F1 difference against '{first}', same split")
    right.set_ylabel("splits")
    if len(rules) > 1:
        right.legend(loc="upper left", fontsize=8)
    fig.suptitle(f"Threshold rules on held-out articles of {result['data']} ({result['splits']} splits, "
                 f"{result['held_out_groups']} of {result['groups']} articles held out)", fontsize=10)
    return _png(fig)
