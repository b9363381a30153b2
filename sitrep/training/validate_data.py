"""`sitrep data validate`: the corpus' contract, checked.

Two corpora live in data/: the sentence corpus (train/dev/test/zeroshot/regional.jsonl, balanced
labels) and the article corpus (data/articles/: whole stories with natural label priors, see
sitrep/training/articles.py). Errors (exit 1): schema, unknown labels or topics, wrong script for the
language (e.g. Arabic ي/ك in Persian, Urdu or Sorani text, unless the row carries a `script_exception`
reason), duplicate ids, exact duplicates anywhere, near-duplicates across splits (character n-gram
TF-IDF cosine), a topic in more than one split or in a split topics.json does not give it, an article
topic in the sentence corpus or the reverse, article offsets that do not match the article text, a
language in a split it must not be in, and the size/balance targets of the datasheet. Warnings:
near-duplicates within one split, odd lengths.
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

SENTENCE_SPLITS = ("train", "dev", "test", "zeroshot", "regional")
ARTICLE_SPLITS = ("articles/train", "articles/dev", "articles/test")
SPLITS = SENTENCE_SPLITS + ARTICLE_SPLITS
TRAIN_LANGS = ("en", "ar", "fa")  # the sentence corpus's training languages
ARTICLE_LANGS = ("en", "ar", "fa", "ur", "tr", "ckb", "kmr", "he")  # trained through the article corpus
REGIONAL_LANGS = ("ur", "tr", "ckb", "kmr", "he")
ZEROSHOT_LANGS = ("fr", "de", "es", "ru", "it", "id", "hi")
REQUIRED_KEYS = {"id": str, "lang": str, "text": str, "labels": list, "topic": str}
ARTICLE_KEYS = {"article_id": str, "position": int, "start": int, "end": int}
OPTIONAL_KEYS = {"script_exception"}

# Expected script per language code; anything else must at least be mostly letters of some script.
SCRIPTS = {
    "en": "LATIN", "fr": "LATIN", "de": "LATIN", "es": "LATIN", "tr": "LATIN", "kmr": "LATIN", "it": "LATIN",
    "id": "LATIN", "ru": "CYRILLIC", "ar": "ARABIC", "fa": "ARABIC", "ur": "ARABIC", "ckb": "ARABIC",
    "he": "HEBREW", "hi": "DEVANAGARI",
}
ARABIC_ONLY_LETTERS = {"\u064a": "Arabic yeh ي (use Persian ی U+06CC)", "\u0643": "Arabic kaf ك (use Persian ک U+06A9)"}
PERSIAN_ORTHOGRAPHY = ("fa", "ur", "ckb")


@dataclass
class Targets:
    min_per_train_lang: int = 1200
    min_per_zeroshot_lang: int = 60
    zeroshot_langs: tuple[str, ...] = ZEROSHOT_LANGS
    min_articles_main: int = 60  # ar, fa, en
    min_article_train_regional: int = 400  # sentences in articles/train per regional language
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
        required = {**REQUIRED_KEYS, **(ARTICLE_KEYS if split in ARTICLE_SPLITS else {})}
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            where = f"{split}.jsonl:{lineno}"
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
            bad = [k for k, t in required.items() if not isinstance(row.get(k), t)]
            extra = set(row) - set(required) - OPTIONAL_KEYS
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
            expected = "zeroshot" if split == "regional" else split.removeprefix("articles/")
            if topic is None:
                report.errors.append(f"{where}: topic {row['topic']!r} is not in topics.json")
            elif topic["split"] != expected:
                report.errors.append(
                    f"{where}: topic {row['topic']!r} belongs to {topic['split']}, found in {split} (leakage)"
                )
            elif (topic.get("corpus") == "articles") != (split in ARTICLE_SPLITS):
                report.errors.append(f"{where}: topic {row['topic']!r} is "
                                     f"{'an article' if topic.get('corpus') == 'articles' else 'a sentence-corpus'} "
                                     f"topic, found in {split} (the two corpora share no topic)")
            allowed = {"zeroshot": ZEROSHOT_LANGS, "regional": REGIONAL_LANGS}.get(
                split, ARTICLE_LANGS if split in ARTICLE_SPLITS else TRAIN_LANGS)
            if lang not in allowed:
                report.errors.append(f"{where}: {lang} does not belong in {split} ({', '.join(allowed)})")
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


def check_articles(rows: dict[str, list[dict[str, Any]]], data_dir: Path, report: Report) -> None:
    """Article rows point into their article's text; every article is in one split, positions run 0..n-1."""
    from sitrep.training.articles import load_article_texts

    texts = load_article_texts(data_dir)
    if any(rows.get(s) for s in ARTICLE_SPLITS) and not texts:
        report.errors.append(f"{data_dir / 'articles' / 'texts.jsonl'}: missing or empty")
        return
    positions: dict[str, list[int]] = defaultdict(list)
    for split in ARTICLE_SPLITS:
        for row in rows.get(split, []):
            art = texts.get(row["article_id"])
            where = row["_where"]
            if art is None:
                report.errors.append(f"{where}: article {row['article_id']!r} is not in texts.jsonl")
                continue
            if art["text"][row["start"] : row["end"]] != row["text"]:
                report.errors.append(f"{where}: text is not article[{row['start']}:{row['end']}] of {row['article_id']}")
            if art["split"] != split.removeprefix("articles/") or art["lang"] != row["lang"] or art["topic"] != row["topic"]:
                report.errors.append(f"{where}: split, lang or topic differs from its article's in texts.jsonl")
            positions[row["article_id"]].append(row["position"])
    for aid in texts:
        if sorted(positions.get(aid, [])) != list(range(len(positions.get(aid, [])))) or aid not in positions:
            report.errors.append(f"article {aid}: its sentences' positions are not 0..n-1 (or it has none)")


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


def _shares(items: list[dict[str, Any]]) -> dict[str, float]:
    n = len(items)
    counts = Counter(label for r in items for label in r["labels"])
    background = sum(1 for r in items if not r["labels"])
    labeled = n - background
    multi = sum(1 for r in items if len(r["labels"]) >= 2)
    return {"background": background / n, **{label: counts[label] / n for label in LABELS},
            "multi_of_labeled": multi / labeled if labeled else 0.0}


def build_table(rows: dict[str, list[dict[str, Any]]], targets: Targets, report: Report) -> None:
    """Per language: counts per split; label shares of the sentence corpus (balanced, checked against the
    targets) and of the articles (natural priors, reported as they are)."""
    by_lang: dict[str, list[dict[str, Any]]] = defaultdict(list)
    art_by_lang: dict[str, list[dict[str, Any]]] = defaultdict(list)
    split_counts: dict[str, Counter] = defaultdict(Counter)
    for split, items in rows.items():
        for row in items:
            (art_by_lang if split in ARTICLE_SPLITS else by_lang)[row["lang"]].append(row)
            split_counts[row["lang"]][split] += 1
    langs = set(by_lang) | set(art_by_lang)
    order = [*ARTICLE_LANGS, *sorted(langs - set(ARTICLE_LANGS))]
    for lang in order:
        items, arts = by_lang.get(lang, []), art_by_lang.get(lang, [])
        if not items and not arts:
            continue
        entry: dict[str, Any] = {
            "lang": lang, "n": len(items) + len(arts), **{s: split_counts[lang][s] for s in SPLITS},
            "topics": len({r["topic"] for r in items + arts}),
            "articles": len({r["article_id"] for r in arts}),
            "sentence_corpus": _shares(items) if items else None,
            "article_corpus": _shares(arts) if arts else None,
        }
        report.table.append(entry)
        if items:
            shares = entry["sentence_corpus"]
            minimum = (targets.min_per_train_lang if lang in TRAIN_LANGS
                       else targets.min_per_zeroshot_lang if lang in ZEROSHOT_LANGS else 0)
            if len(items) < minimum:
                report.errors.append(f"{lang}: {len(items)} sentence-corpus sentences, target at least {minimum}")
            lo, hi = targets.background
            if not lo <= shares["background"] <= hi:
                report.errors.append(f"{lang}: background {shares['background']:.0%}, target {lo:.0%}–{hi:.0%}")
            for label in LABELS:
                if shares[label] < targets.min_label_share:
                    report.errors.append(f"{lang}: {label} on {shares[label]:.0%} of sentences, target ≥ "
                                         f"{targets.min_label_share:.0%}")
            if shares["multi_of_labeled"] < targets.min_multi_share:
                report.errors.append(f"{lang}: {shares['multi_of_labeled']:.0%} of labeled sentences are "
                                     f"multi-label, target ≥ {targets.min_multi_share:.0%}")
        if lang in TRAIN_LANGS and entry["articles"] < targets.min_articles_main:
            report.errors.append(f"{lang}: {entry['articles']} articles, target at least {targets.min_articles_main}")
        if lang in REGIONAL_LANGS and split_counts[lang]["articles/train"] < targets.min_article_train_regional:
            report.errors.append(f"{lang}: {split_counts[lang]['articles/train']} article training sentences, "
                                 f"target at least {targets.min_article_train_regional}")
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
    check_articles(rows, data_dir, report)
    check_duplicates(rows, targets.near_duplicate, report)
    build_table(rows, targets, report)
    return report


def _pct(shares: dict[str, float] | None, key: str) -> str:
    return "" if shares is None else f"{shares[key]:.0%}"


def table_rows(report: Report) -> tuple[list[str], list[list[str]]]:
    """The counts table: per language, sentences in each split, articles and topics."""
    head = ["lang", "n", *SPLITS, "articles", "topics"]
    rows = [[e["lang"], str(e["n"]), *(str(e[s]) for s in SPLITS), str(e["articles"]), str(e["topics"])]
            for e in report.table]
    return head, rows


def share_rows(report: Report) -> tuple[list[str], list[list[str]]]:
    """The label-shares table: per language and corpus (balanced sentences; articles as written)."""
    head = ["lang", "corpus", "background", *LABELS, "multi-label (of labeled)"]
    rows = []
    for e in report.table:
        for corpus, key in (("sentences", "sentence_corpus"), ("articles", "article_corpus")):
            shares = e[key]
            if shares is not None:
                rows.append([e["lang"], corpus, *(f"{shares[k]:.0%}" for k in ["background", *LABELS, "multi_of_labeled"])])
    return head, rows


def _markdown(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def table_markdown(report: Report) -> str:
    return _markdown(*table_rows(report)) + "\n\n" + _markdown(*share_rows(report))
