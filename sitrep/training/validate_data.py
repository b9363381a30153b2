"""`sitrep data validate`: the corpus' contract, checked.

Errors (exit 1): schema, unknown labels or topics, wrong script for the language (e.g. Arabic ي/ك in
Persian, Urdu or Sorani text, unless the row carries a `script_exception` reason), duplicate ids,
exact duplicates anywhere, near-duplicates across splits (character n-gram TF-IDF cosine), a topic
in more than one split or in a split topics.json does not give it, and the size/balance targets of
the datasheet. Warnings: near-duplicates within one split, odd lengths.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sitrep.models.labels import LABELS

SPLITS = ("train", "dev", "test", "zeroshot")
TRAIN_LANGS = ("en", "ar", "fa")
REQUIRED_KEYS = {"id": str, "lang": str, "text": str, "labels": list, "topic": str}
OPTIONAL_KEYS = {"script_exception"}

# Expected script per language code; anything else must at least be mostly letters of some script.
SCRIPTS = {
    "en": "LATIN", "fr": "LATIN", "de": "LATIN", "es": "LATIN", "tr": "LATIN",
    "ru": "CYRILLIC", "ar": "ARABIC", "fa": "ARABIC", "ur": "ARABIC", "ckb": "ARABIC",
}
ARABIC_ONLY_LETTERS = {"\u064a": "Arabic yeh ي (use Persian ی U+06CC)", "\u0643": "Arabic kaf ك (use Persian ک U+06A9)"}
PERSIAN_ORTHOGRAPHY = ("fa", "ur", "ckb")


@dataclass
class Targets:
    min_per_train_lang: int = 1200
    min_per_zeroshot_lang: int = 40
    zeroshot_langs: tuple[str, ...] = ("fr", "tr", "ur", "ru", "de", "es", "ckb")
    background: tuple[float, float] = (0.35, 0.45)
    min_label_share: float = 0.15
    min_multi_share: float = 0.20
    min_topics: int = 40
    near_duplicate: float = 0.85  # cosine of character 3-5-gram TF-IDF vectors


@dataclass
class Report:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    table: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


def _script_share(text: str, script: str) -> float:
    letters = [c for c in text if c.isalpha()]
    if not letters:
        return 0.0
    hits = sum(1 for c in letters if unicodedata.name(c, "").startswith(script))
    return hits / len(letters)


def _norm(text: str) -> str:
    return re.sub(r"\W+", " ", text.casefold()).strip()


def load_rows(data_dir: Path, report: Report) -> dict[str, list[dict[str, Any]]]:
    rows: dict[str, list[dict[str, Any]]] = {}
    for split in SPLITS:
        path = data_dir / f"{split}.jsonl"
        if not path.exists():
            report.errors.append(f"{path}: missing")
            continue
        rows[split] = []
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            where = f"{path.name}:{lineno}"
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                report.errors.append(f"{where}: invalid JSON ({exc.msg})")
                continue
            if not isinstance(row, dict):
                report.errors.append(f"{where}: not a JSON object")
                continue
            bad = [k for k, t in REQUIRED_KEYS.items() if not isinstance(row.get(k), t)]
            extra = set(row) - set(REQUIRED_KEYS) - OPTIONAL_KEYS
            if bad:
                report.errors.append(f"{where}: missing or mistyped {bad}")
                continue
            if extra:
                report.errors.append(f"{where}: unknown keys {sorted(extra)}")
            row["_where"] = where
            rows[split].append(row)
    return rows


def check_rows(rows: dict[str, list[dict[str, Any]]], topics: dict[str, dict], report: Report) -> None:
    ids: dict[str, str] = {}
    for split, items in rows.items():
        for row in items:
            where, text, lang = row["_where"], row["text"], row["lang"]
            if row["id"] in ids:
                report.errors.append(f"{where}: duplicate id {row['id']!r} (also {ids[row['id']]})")
            ids[row["id"]] = where
            if not text.strip():
                report.errors.append(f"{where}: empty text")
            if text != text.strip():
                report.warnings.append(f"{where}: leading/trailing whitespace")
            unknown = [x for x in row["labels"] if x not in LABELS]
            if unknown:
                report.errors.append(f"{where}: unknown labels {unknown}")
            if len(set(row["labels"])) != len(row["labels"]):
                report.errors.append(f"{where}: repeated label")
            topic = topics.get(row["topic"])
            if topic is None:
                report.errors.append(f"{where}: topic {row['topic']!r} is not in topics.json")
            elif topic["split"] != split:
                report.errors.append(
                    f"{where}: topic {row['topic']!r} belongs to {topic['split']}, found in {split} (leakage)"
                )
            if split == "zeroshot" and lang in TRAIN_LANGS:
                report.errors.append(f"{where}: {lang} is a training language; zeroshot must not contain it")
            if split != "zeroshot" and lang not in TRAIN_LANGS:
                report.errors.append(f"{where}: {lang} is not a training language ({', '.join(TRAIN_LANGS)})")
            script = SCRIPTS.get(lang)
            if script is None:
                report.errors.append(f"{where}: unknown language code {lang!r}")
            elif _script_share(text, script) < 0.6:
                report.errors.append(f"{where}: text is not mostly {script} script, as {lang} should be")
            if lang in PERSIAN_ORTHOGRAPHY and "script_exception" not in row:
                for ch, what in ARABIC_ONLY_LETTERS.items():
                    if ch in text:
                        report.errors.append(f"{where}: {what} in {lang} text")
            n_words = len(text.split())
            if n_words > 80:
                report.warnings.append(f"{where}: {n_words} words")


def check_duplicates(rows: dict[str, list[dict[str, Any]]], threshold: float, report: Report) -> None:
    from sklearn.feature_extraction.text import TfidfVectorizer

    flat = [(split, row) for split, items in rows.items() for row in items]
    seen: dict[str, str] = {}
    for _, row in flat:
        key = _norm(row["text"])
        if key in seen:
            report.errors.append(f"{row['_where']}: exact duplicate of {seen[key]}")
        else:
            seen[key] = row["_where"]
    if len(flat) < 2:
        return
    vec = TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 5), sublinear_tf=True)
    x = vec.fit_transform([_norm(r["text"]) for _, r in flat])
    splits = np.asarray([s for s, _ in flat])
    step = 1024
    for start in range(0, x.shape[0], step):
        sims = (x[start : start + step] @ x.T).tocoo()
        for i, j, v in zip(sims.row, sims.col, sims.data, strict=True):
            a, b = start + int(i), int(j)
            if b <= a or v < threshold:
                continue
            msg = f"{flat[a][1]['_where']} ~ {flat[b][1]['_where']} (cosine {v:.2f})"
            if splits[a] != splits[b]:
                report.errors.append(f"near-duplicate across splits: {msg}")
            elif _norm(flat[a][1]["text"]) != _norm(flat[b][1]["text"]):
                report.warnings.append(f"near-duplicate within {splits[a]}: {msg}")


def build_table(rows: dict[str, list[dict[str, Any]]], targets: Targets, report: Report) -> None:
    by_lang: dict[str, list[dict[str, Any]]] = defaultdict(list)
    split_counts: dict[str, Counter] = defaultdict(Counter)
    for split, items in rows.items():
        for row in items:
            by_lang[row["lang"]].append(row)
            split_counts[row["lang"]][split] += 1
    order = [*TRAIN_LANGS, *sorted(set(by_lang) - set(TRAIN_LANGS))]
    for lang in order:
        items = by_lang.get(lang, [])
        n = len(items)
        if not n:
            continue
        counts = Counter(label for r in items for label in r["labels"])
        background = sum(1 for r in items if not r["labels"])
        labeled = n - background
        multi = sum(1 for r in items if len(r["labels"]) >= 2)
        entry = {
            "lang": lang, "n": n, **{s: split_counts[lang][s] for s in SPLITS},
            "background": background / n, **{label: counts[label] / n for label in LABELS},
            "multi_of_labeled": multi / labeled if labeled else 0.0,
            "topics": len({r["topic"] for r in items}),
        }
        report.table.append(entry)
        minimum = targets.min_per_train_lang if lang in TRAIN_LANGS else targets.min_per_zeroshot_lang
        if n < minimum:
            report.errors.append(f"{lang}: {n} sentences, target at least {minimum}")
        lo, hi = targets.background
        if not lo <= entry["background"] <= hi:
            report.errors.append(f"{lang}: background {entry['background']:.0%}, target {lo:.0%}–{hi:.0%}")
        for label in LABELS:
            if entry[label] < targets.min_label_share:
                report.errors.append(f"{lang}: {label} on {entry[label]:.0%} of sentences, target ≥ "
                                     f"{targets.min_label_share:.0%}")
        if entry["multi_of_labeled"] < targets.min_multi_share:
            report.errors.append(f"{lang}: {entry['multi_of_labeled']:.0%} of labeled sentences are multi-label, "
                                 f"target ≥ {targets.min_multi_share:.0%}")
    for lang in targets.zeroshot_langs:
        if lang not in by_lang:
            report.errors.append(f"zero-shot language {lang} is missing")
    n_topics = len({r["topic"] for items in rows.values() for r in items})
    if n_topics < targets.min_topics:
        report.errors.append(f"{n_topics} topics, target at least {targets.min_topics}")


def validate(data_dir: Path, targets: Targets | None = None) -> Report:
    targets = targets or Targets()
    report = Report()
    topics_path = data_dir / "topics.json"
    topics = json.loads(topics_path.read_text(encoding="utf-8"))["topics"] if topics_path.exists() else {}
    if not topics:
        report.errors.append(f"{topics_path}: missing or empty")
    rows = load_rows(data_dir, report)
    check_rows(rows, topics, report)
    check_duplicates(rows, targets.near_duplicate, report)
    build_table(rows, targets, report)
    return report


def table_markdown(report: Report) -> str:
    head = ["lang", "n", *SPLITS, "background", *LABELS, "multi-label (of labeled)", "topics"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for e in report.table:
        cells = [e["lang"], str(e["n"]), *(str(e[s]) for s in SPLITS), f"{e['background']:.0%}",
                 *(f"{e[label]:.0%}" for label in LABELS), f"{e['multi_of_labeled']:.0%}", str(e["topics"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
