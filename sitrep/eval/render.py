"""report.md and report.html, rendered from report.json alone.

report.html is self-contained: CSS inline, every figure an inline base64 PNG, no external src or
href, so it opens from disk or as a CI artifact. report.md links the same figures as files in
``plots/``. Sentences are shown exactly as in the data (only HTML-escaped); right-to-left text
(Arabic, Persian, Urdu, Sorani…) gets ``dir="rtl"``, everything else ``dir="auto"``.
"""

from __future__ import annotations

import base64
import html
import unicodedata
from pathlib import Path
from typing import Any

from sitrep.eval.plots import FIGURES, render_all
from sitrep.models.labels import LABELS

PLOTS_DIR = "plots"
RTL_LANGS = {"ar", "fa", "ur", "ckb", "he", "ps", "sd", "ug", "yi", "dv", "arz", "apc", "ary", "azb", "mzn"}


def text_dir(text: str, lang: str = "") -> str:
    """'rtl' when the language is written right-to-left or most strong characters are RTL, else 'auto'."""
    if lang.split("-")[0].lower() in RTL_LANGS:
        return "rtl"
    rtl = ltr = 0
    for ch in text:
        bidi = unicodedata.bidirectional(ch)
        if bidi in ("R", "AL"):
            rtl += 1
        elif bidi == "L":
            ltr += 1
    return "rtl" if rtl > ltr else "auto"


def f4(v: float | None) -> str:
    return "—" if v is None else f"{v:.4f}"


def interval(ci: dict[str, Any] | None) -> str:
    """A bootstrap interval as "0.812–0.901" ("—" where there is none)."""
    return "—" if not ci else f"{ci['low']:.3f}–{ci['high']:.3f}"


def signed(v: float | None) -> str:
    return "—" if v is None else f"{v:+.4f}"


def title(report: dict[str, Any]) -> str:
    m = report["model"]
    return f"Eval report: {m['name']} {m['version']} on {Path(report['data']['path']).name}"


# --- the tables, as (header, rows) so Markdown and HTML render the same content -----------------
Table = tuple[list[str], list[list[str]]]


def headline_table(report: dict[str, Any]) -> Table:
    base = report.get("baseline")
    metrics = [
        ("sentences", report["n"], base and base["n"], False),
        ("macro-F1", report["macro_f1"], base and base["macro_f1"], True),
        ("micro-F1", report["micro_f1"], base and base["micro_f1"], True),
        ("ECE (10 bins, lower is better)", report["ece"], base and base["ece"], True),
    ]
    header = ["metric", "model"] + (["baseline", "Δ"] if base else [])
    rows = []
    for name, v, b, is_float in metrics:
        cells = [name, f4(v) if is_float else str(v)]
        if base:
            cells += [
                f4(b) if is_float else str(b),
                signed(v - b) if is_float and v is not None and b is not None else "",
            ]
        rows.append(cells)
    ci = report.get("macro_f1_ci")
    if ci:
        rows.insert(2, [f"macro-F1, {ci['level']:.0%} bootstrap interval", interval(ci)]
                    + ([interval(base.get("macro_f1_ci")), ""] if base else []))
    rows.append(["truncated sentences", str(report["truncated"]["n"])] + (["", ""] if base else []))
    return header, rows


def per_label_table(report: dict[str, Any]) -> Table:
    base = report.get("baseline")
    header = ["label", "threshold", "precision", "recall", "F1", "support", "predicted", "AP", "ECE"]
    if base:
        header += ["baseline F1", "Δ F1"]
    rows = []
    for label in LABELS:
        s = report["per_label"][label]
        row = [
            label,
            f"{report['thresholds'][label]:.4f}",
            f4(s["precision"]),
            f4(s["recall"]),
            f4(s["f1"]),
            str(s["support"]),
            str(s["predicted"]),
            f4(s["average_precision"]),
            f4(s["ece"]),
        ]
        if base:
            row += [f4(base["per_label"][label]["f1"]), signed(report["deltas"]["per_label"][label]["f1"])]
        rows.append(row)
    return header, rows


def per_language_table(report: dict[str, Any]) -> Table:
    base = report.get("baseline")
    header = ["lang", "n", "macro-F1", "95% interval", "micro-F1", *(f"F1 {x}" for x in LABELS), "ECE",
              "left out of macro"]
    if base:
        header += ["baseline macro-F1", "Δ macro-F1"]
    rows = []
    for lang, s in report["per_language"].items():
        row = [
            lang,
            str(s["n"]),
            f4(s["macro_f1"]),
            interval(s.get("macro_f1_ci")),
            f4(s["micro_f1"]),
            *(f4(s["per_label"][x]["f1"]) for x in LABELS),
            f4(s["ece"]),
            ", ".join(s["labels_excluded"]) or "",
        ]
        if base:
            b = base["per_language"].get(lang)
            d = (report["deltas"]["per_language"].get(lang) or {}).get("macro_f1")
            row += [f4(b and b["macro_f1"]), signed(d)]
        rows.append(row)
    return header, rows


def per_topic_table(report: dict[str, Any]) -> Table:
    header = ["topic", "n", "macro-F1", "95% interval", "micro-F1", *(f"F1 {x}" for x in LABELS), "left out of macro"]
    rows = [
        [
            topic,
            str(s["n"]),
            f4(s["macro_f1"]),
            interval(s.get("macro_f1_ci")),
            f4(s["micro_f1"]),
            *(f4(s["per_label"][x]["f1"]) for x in LABELS),
            ", ".join(s["labels_excluded"]) or "",
        ]
        for topic, s in (report.get("per_topic") or {}).items()
    ]
    return header, rows


SET_OUTCOME_TEXT = {
    "exact": "predicted exactly the gold labels",
    "missed_only": "missed a gold label, nothing extra",
    "extra_only": "all gold labels, plus an extra one",
    "missed_and_extra": "missed one and added another",
}


def _label_set(labels: list[str]) -> str:
    return " + ".join(labels) if labels else "(none)"


def label_set_tables(report: dict[str, Any]) -> tuple[Table, Table]:
    """Gold vs predicted as whole label sets: the per-sentence outcomes, then the most frequent pairs."""
    ls = report["label_sets"]
    n = max(1, ls["n"])
    outcomes = (
        ["sentences that…", "n", "share"],
        [[SET_OUTCOME_TEXT[k], str(v), f"{v / n:.1%}"] for k, v in ls["outcomes"].items()],
    )
    pairs = (
        ["gold labels", "predicted labels", "n", ""],
        [[_label_set(r["gold"]), _label_set(r["predicted"]), str(r["n"]), "✓" if r["match"] else "✗"]
         for r in ls["pairs"]],
    )  # fmt: skip
    return outcomes, pairs


def provenance_lines(report: dict[str, Any]) -> list[str]:
    """The footer, as plain text lines: command, data hash, models with their parity, sitrep version."""
    p = report.get("provenance")
    if not p:
        return []

    def model(m: dict[str, Any]) -> str:
        par = m.get("parity")
        if par:
            agreement = f"{par['label_agreement']:.4f}" if par.get("label_agreement") is not None else "—"
            diff = f"{par['max_abs_prob_diff']:.1e}" if par.get("max_abs_prob_diff") is not None else "—"
            verdict = {True: "passed", False: "not passed"}.get(par.get("passed"), "not checked")
            parity = f"export parity ({m['runtime']} vs torch): label agreement {agreement}, max |Δp| {diff}, {verdict}"
        else:
            parity = "no export parity report for this runtime"
        return f"{m['name']} {m['version']} ({m['kind']}, runtime {m['runtime']}); {parity}"

    lines = [
        f"command: {p['command'] or '(not run from the command line)'}",
        f"data: {report['data']['path']} sha256 {p['data_sha256']}",
        f"model: {model(p['model'])}",
    ]
    if p.get("baseline"):
        lines.append(f"baseline: {model(p['baseline'])}")
    lines.append(f"sitrep {p['sitrep_version']}, report created {report['created']}")
    return lines


def console_tables(report: dict[str, Any]) -> list[Table]:
    """What `sitrep eval` prints: the headline and a narrow per-language table."""
    header, rows = per_language_table(report)
    keep = [header.index(h) for h in ("lang", "n", "macro-F1", "95% interval", "micro-F1", "ECE", "left out of macro")]
    keep += [header.index("Δ macro-F1")] if report.get("baseline") else []
    return [headline_table(report), ([header[i] for i in keep], [[r[i] for i in keep] for r in rows])]


def confusion_table(report: dict[str, Any]) -> Table:
    co = report["cooccurrence"]
    header = ["gold \\ predicted", *co["labels"]]
    rows = [
        [name, *(str(v) for v in row)]
        for name, row in zip(co["labels"], co["gold_vs_predicted"], strict=True)
    ]
    return header, rows


def comparison_table(report: dict[str, Any]) -> Table:
    header = ["slice", "metric", "model", "baseline", "Δ", ""]
    rows = []
    for r in report["comparison"]:
        mark = "▼ worse" if r["worse"] else ("▲ better" if r["delta"] else "")
        rows.append(
            [
                r["slice"],
                r["metric"] + ("" if r["higher_is_better"] else " (lower is better)"),
                f4(r["model"]),
                f4(r["baseline"]),
                signed(r["delta"]),
                mark,
            ]
        )
    return header, rows


def error_rows(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "prob": f"{it['prob']:.4f}",
            "id": it["id"],
            "lang": it["lang"],
            "gold": ", ".join(it["gold"]) or "(none)",
            "predicted": ", ".join(it["predicted"]) or "(none)",
            "text": it["text"],
        }
        for it in items
    ]


# --- Markdown ----------------------------------------------------------------------------------
def _md_cell(s: str) -> str:
    return html.escape(s, quote=False).replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def _md_table(table: Table, raw_cols: frozenset[int] = frozenset()) -> str:
    """A Markdown table; cells in `raw_cols` are already Markdown/HTML and are not escaped."""
    header, rows = table
    lines = ["| " + " | ".join(_md_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += [
        "| " + " | ".join(c if j in raw_cols else _md_cell(c) for j, c in enumerate(row)) + " |"
        for row in rows
    ]
    return "\n".join(lines)


def _md_text(text: str, lang: str) -> str:
    return f'<span dir="{text_dir(text, lang)}">{_md_cell(text)}</span>'


def render_markdown(report: dict[str, Any], plot_files: dict[str, str]) -> str:
    """report.md; `plot_files` maps figure name to its path relative to the report."""
    m = report["model"]
    out = [
        f"# {title(report)}",
        "",
        f"- model: `{m['name']}` version `{m['version']}` ({m['kind']}), runtime `{report['runtime']}`",
        f"- data: `{report['data']['path']}` ({report['data']['n']} sentences; "
        + ", ".join(f"{k} {v}" for k, v in report["data"]["languages"].items())
        + ")",
        f"- created: {report['created']}",
    ]
    if report.get("baseline"):
        b = report["baseline"]["model"]
        out.append(
            f"- baseline: `{b['name']}` version `{b['version']}` ({b['kind']}), "
            f"runtime `{report['baseline']['runtime']}`"
        )
    out += ["", "## Headline", "", _md_table(headline_table(report)), ""]
    if report["notes"]:
        out += ["Notes:", "", *(f"- {_md_cell(n)}" for n in report["notes"]), ""]
    out += [
        "## Per label",
        "",
        _md_table(per_label_table(report)),
        "",
        "## Per language",
        "",
        _md_table(per_language_table(report)),
        "",
        f"![{FIGURES['language_f1'][1]}]({plot_files['language_f1']})",
        "",
    ]
    if report.get("per_topic"):
        out += ["## Per topic", "", _md_table(per_topic_table(report)), ""]
    outcomes, pairs = label_set_tables(report)
    out += [
        "## Gold vs predicted label sets",
        "",
        "Each sentence has a set of gold labels (possibly none) and a set of predicted ones; this compares the "
        "sets whole, so a sentence with two labels counts once.",
        "",
        _md_table(outcomes),
        "",
        f"The most frequent (gold, predicted) pairs ({len(pairs[1])} of {report['label_sets']['distinct_pairs']}):",
        "",
        _md_table(pairs),
        "",
        "## Label co-occurrence and confusion",
        "",
        "Rows: gold labels, columns: predicted labels (a sentence counts once per gold x predicted pair; "
        "`(none)` is no label).",
        "",
        _md_table(confusion_table(report)),
        "",
        f"![{FIGURES['labels'][1]}]({plot_files['labels']})",
        "",
        "## Precision-recall curves",
        "",
        f"![{FIGURES['pr_curves'][1]}]({plot_files['pr_curves']})",
        "",
        "## Calibration",
        "",
        f"ECE over all (sentence, label) pairs: {f4(report['ece'])}",
        "",
        f"![{FIGURES['reliability'][1]}]({plot_files['reliability']})",
        "",
    ]
    if report.get("comparison"):
        worse = sum(r["worse"] for r in report["comparison"])
        out += [
            "## Regressions against the baseline",
            "",
            f"{worse} of {len(report['comparison'])} metrics got worse (marked ▼).",
            "",
            _md_table(comparison_table(report)),
            "",
        ]
    if report.get("errors"):
        out += [
            "## Worst errors",
            "",
            "Per label: the most confident false positives and the least confident false negatives "
            "(prob: the label's calibrated probability).",
            "",
        ]
        for label in LABELS:
            for kind, head in (
                ("false_positives", "false positives"),
                ("false_negatives", "false negatives"),
            ):
                items = report["errors"][label][kind]
                out += [f"### {label}: {head}", ""]
                if not items:
                    out += ["none", ""]
                    continue
                rows = [
                    [r["prob"], r["id"], r["lang"], r["gold"], r["predicted"], _md_text(r["text"], r["lang"])]
                    for r in error_rows(items)
                ]
                out += [
                    _md_table((["prob", "id", "lang", "gold", "predicted", "text"], rows), frozenset({5})),
                    "",
                ]
    footer = provenance_lines(report)
    if footer:
        out += ["---", "", "Provenance:", "", *(f"- {_md_cell(line)}" for line in footer), ""]
    return "\n".join(out) + "\n"


# --- HTML --------------------------------------------------------------------------------------
CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"Noto Sans","Noto Naskh Arabic",Tahoma,sans-serif;
margin:2rem auto;max-width:1200px;padding:0 1rem;color:#1b1f24;line-height:1.45}
h1{font-size:1.6rem}h2{margin-top:2.2rem;border-bottom:1px solid #d0d7de;padding-bottom:.3rem}
table{border-collapse:collapse;margin:.6rem 0;font-size:.9rem}
th,td{border:1px solid #d0d7de;padding:.3rem .55rem;vertical-align:top}
th{background:#f6f8fa;text-align:left}td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.worse td{background:#ffebe9}tr.worse td.mark{color:#b3261e;font-weight:600}td.mark{white-space:nowrap}
td.text{max-width:46rem;unicode-bidi:plaintext}td.text[dir=rtl]{text-align:right}
img{max-width:100%;height:auto;border:1px solid #eaeef2}.meta{color:#57606a}
nav a{margin-right:1rem}ul.notes li{color:#7d4e00}
"""


def _esc(s: str) -> str:
    return html.escape(s, quote=True)


def _is_num(s: str) -> bool:
    return bool(s) and (s[0].isdigit() or (s[0] in "+-" and len(s) > 1 and s[1].isdigit()) or s == "—")


def _html_table(table: Table, row_classes: list[str] | None = None, mark_col: int | None = None) -> str:
    header, rows = table
    out = [
        "<table>",
        "<thead><tr>" + "".join(f"<th>{_esc(h)}</th>" for h in header) + "</tr></thead>",
        "<tbody>",
    ]
    for i, row in enumerate(rows):
        cls = f' class="{row_classes[i]}"' if row_classes and row_classes[i] else ""
        cells = []
        for j, c in enumerate(row):
            kind = "mark" if j == mark_col else ("num" if _is_num(c) else "")
            cells.append(f'<td class="{kind}">{_esc(c)}</td>' if kind else f"<td>{_esc(c)}</td>")
        out.append(f"<tr{cls}>" + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{_esc(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'


def _error_table(items: list[dict[str, Any]]) -> str:
    if not items:
        return "<p>none</p>"
    out = [
        "<table>",
        "<thead><tr><th>prob</th><th>id</th><th>lang</th><th>gold</th><th>predicted</th><th>text</th></tr></thead>",
        "<tbody>",
    ]
    for r in error_rows(items):
        d = text_dir(r["text"], r["lang"])
        out.append(
            f'<tr><td class="num">{_esc(r["prob"])}</td><td>{_esc(r["id"])}</td><td>{_esc(r["lang"])}</td>'
            f"<td>{_esc(r['gold'])}</td><td>{_esc(r['predicted'])}</td>"
            f'<td class="text" dir="{d}" lang="{_esc(r["lang"])}">{_esc(r["text"])}</td></tr>'
        )
    out.append("</tbody></table>")
    return "\n".join(out)


def render_html(report: dict[str, Any], pngs: dict[str, bytes]) -> str:
    m = report["model"]
    sections = [
        ("headline", "Headline"),
        ("per-label", "Per label"),
        ("per-language", "Per language"),
        *([("per-topic", "Per topic")] if report.get("per_topic") else []),
        ("label-sets", "Label sets"),
        ("labels", "Co-occurrence"),
        ("pr", "PR curves"),
        ("calibration", "Calibration"),
    ]
    if report.get("comparison"):
        sections.append(("regressions", "Regressions"))
    if report.get("errors"):
        sections.append(("errors", "Worst errors"))
    meta = [
        f"model <b>{_esc(m['name'])}</b> version {_esc(m['version'])} ({_esc(m['kind'])}), "
        f"runtime <code>{_esc(report['runtime'])}</code>",
        f"data <code>{_esc(report['data']['path'])}</code>: {report['data']['n']} sentences ("
        + ", ".join(f"{_esc(k)} {v}" for k, v in report["data"]["languages"].items())
        + ")",
        f"created {_esc(report['created'])}",
    ]
    if report.get("baseline"):
        b = report["baseline"]["model"]
        meta.append(
            f"baseline <b>{_esc(b['name'])}</b> version {_esc(b['version'])} ({_esc(b['kind'])}), "
            f"runtime <code>{_esc(report['baseline']['runtime'])}</code>"
        )
    body = [
        f"<h1>{_esc(title(report))}</h1>",
        '<p class="meta">' + "<br>".join(meta) + "</p>",
        "<nav>" + "".join(f'<a href="#{a}">{_esc(t)}</a>' for a, t in sections) + "</nav>",
        '<h2 id="headline">Headline</h2>',
        _html_table(headline_table(report)),
    ]
    if report["notes"]:
        body.append('<ul class="notes">' + "".join(f"<li>{_esc(n)}</li>" for n in report["notes"]) + "</ul>")
    body += [
        '<h2 id="per-label">Per label</h2>',
        _html_table(per_label_table(report)),
        '<h2 id="per-language">Per language</h2>',
        _html_table(per_language_table(report)),
        _img(pngs["language_f1"], FIGURES["language_f1"][1]),
    ]
    if report.get("per_topic"):
        body += ['<h2 id="per-topic">Per topic</h2>', _html_table(per_topic_table(report))]
    outcomes, pairs = label_set_tables(report)
    body += [
        '<h2 id="label-sets">Gold vs predicted label sets</h2>',
        "<p>Each sentence has a set of gold labels (possibly none) and a set of predicted ones; this compares "
        "the sets whole, so a sentence with two labels counts once.</p>",
        _html_table(outcomes),
        f"<p>The most frequent (gold, predicted) pairs ({len(pairs[1])} of "
        f"{report['label_sets']['distinct_pairs']}):</p>",
        _html_table(pairs),
        '<h2 id="labels">Label co-occurrence and confusion</h2>',
        "<p>Rows: gold labels, columns: predicted labels; <code>(none)</code> is no label.</p>",
        _html_table(confusion_table(report)),
        _img(pngs["labels"], FIGURES["labels"][1]),
        '<h2 id="pr">Precision-recall curves</h2>',
        _img(pngs["pr_curves"], FIGURES["pr_curves"][1]),
        '<h2 id="calibration">Calibration</h2>',
        f"<p>ECE over all (sentence, label) pairs: {f4(report['ece'])}</p>",
        _img(pngs["reliability"], FIGURES["reliability"][1]),
    ]
    if report.get("comparison"):
        worse = [r["worse"] for r in report["comparison"]]
        body += [
            '<h2 id="regressions">Regressions against the baseline</h2>',
            f"<p>{sum(worse)} of {len(worse)} metrics got worse (marked ▼, red rows).</p>",
            _html_table(comparison_table(report), ["worse" if w else "" for w in worse], mark_col=5),
        ]
    if report.get("errors"):
        body += [
            '<h2 id="errors">Worst errors</h2>',
            "<p>Per label: the most confident false positives and the least confident false negatives "
            "(prob: the label's calibrated probability).</p>",
        ]
        for label in LABELS:
            body.append(f"<h3>{_esc(label)}</h3>")
            for kind, head in (
                ("false_positives", "False positives"),
                ("false_negatives", "False negatives"),
            ):
                body += [f"<h4>{head}</h4>", _error_table(report["errors"][label][kind])]
    footer = provenance_lines(report)
    if footer:
        body.append('<footer class="meta"><hr><b>Provenance</b><br>' + "<br>".join(_esc(x) for x in footer) + "</footer>")
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{_esc(title(report))}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )


def write_rendered(report: dict[str, Any], out: Path) -> dict[str, Path]:
    """Draw the figures, write plots/*.png, report.md and report.html into `out`."""
    pngs = render_all(report)
    plots = out / PLOTS_DIR
    plots.mkdir(parents=True, exist_ok=True)
    rel = {}
    for name, data in pngs.items():
        (plots / f"{name}.png").write_bytes(data)
        rel[name] = f"{PLOTS_DIR}/{name}.png"
    md, page = out / "report.md", out / "report.html"
    md.write_text(render_markdown(report, rel), encoding="utf-8")
    page.write_text(render_html(report, pngs), encoding="utf-8")
    return {"markdown": md, "html": page, "plots": plots}
