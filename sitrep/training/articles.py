"""Whole articles in the corpus: importing writers' files into `data/articles/` and reading them back.

A writer's file holds one article per line, as paragraphs of labeled sentences::

    {"article_id": "ar-art-001", "lang": "ar", "topic": "syria-rumeilan-base",
     "paragraphs": [[{"text": "headline", "labels": []}], [{"text": "...", "labels": ["claim"]}, ...]]}

`sitrep data import-articles FILE...` turns them into the corpus form, which keeps the article text
and each sentence's place in it:

    data/articles/texts.jsonl        {"article_id", "lang", "topic", "split", "text"}
    data/articles/{train,dev,test}.jsonl
                                     one sentence a line: {"id", "article_id", "position", "start",
                                     "end", "lang", "text", "labels", "topic"}; text == article[start:end]

The article text joins a paragraph's sentences with one space and paragraphs with a blank line. The
split comes from the topic (data/topics.json), so an article never straddles splits.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sitrep.models.files import read_jsonl, write_jsonl_atomic
from sitrep.models.labels import check_labels

ARTICLE_SPLITS = ("train", "dev", "test")
TEXTS_FILE = "texts.jsonl"


class ArticleError(ValueError):
    """A writer's article cannot be imported (the message names the article and why)."""


@dataclass
class ArticleSentence:
    position: int
    start: int
    end: int
    text: str
    labels: list[str]


def assemble(paragraphs: list[list[dict[str, Any]]], where: str = "") -> tuple[str, list[ArticleSentence]]:
    """The article text and its sentences with character offsets into it."""
    parts: list[str] = []
    sentences: list[ArticleSentence] = []
    offset = 0
    for p, paragraph in enumerate(paragraphs):
        if not isinstance(paragraph, list) or not paragraph:
            raise ArticleError(f"{where}: paragraph {p} is not a non-empty list of sentences")
        if p:
            parts.append("\n\n")
            offset += 2
        for k, item in enumerate(paragraph):
            text, labels = item.get("text"), item.get("labels")
            if not isinstance(text, str) or not text.strip() or text != text.strip() or "\n" in text:
                raise ArticleError(f"{where}: sentence {len(sentences)} must be one trimmed line of text")
            if not isinstance(labels, list):
                raise ArticleError(f"{where}: sentence {len(sentences)} has no labels list")
            check_labels(labels)
            if k:
                parts.append(" ")
                offset += 1
            sentences.append(ArticleSentence(len(sentences), offset, offset + len(text), text, list(labels)))
            parts.append(text)
            offset += len(text)
    return "".join(parts), sentences


def import_articles(sources: list[Path], data_dir: Path, topics: dict[str, dict[str, Any]],
                    add: bool = False) -> Counter[str]:
    """Write data/articles/ from writers' files. Returns sentences per split (the whole corpus).

    By default the files replace what data/articles/ holds; with `add` their articles join it (an article
    id already there is an error, so a batch cannot be added twice)."""
    texts: list[dict[str, Any]] = []
    rows: dict[str, list[dict[str, Any]]] = {s: [] for s in ARTICLE_SPLITS}
    if add:
        texts = list(load_article_texts(data_dir).values())
        for split in ARTICLE_SPLITS:
            path = data_dir / "articles" / f"{split}.jsonl"
            rows[split] = [row for _, row in read_jsonl(path)] if path.is_file() else []
    existing: set[str] = {t["article_id"] for t in texts}
    seen = set(existing)
    for src in sources:
        for lineno, art in read_jsonl(src):
            where = f"{src}:{lineno}"
            aid, lang, topic = art.get("article_id"), art.get("lang"), art.get("topic")
            if not isinstance(aid, str) or not aid or aid in seen:
                raise ArticleError(f"{where}: missing or duplicate article_id {aid!r}"
                                   + (" (data/articles/ has it already)" if aid in existing else ""))
            seen.add(aid)
            split = topics.get(topic, {}).get("split")
            if split not in ARTICLE_SPLITS:
                raise ArticleError(f"{where}: topic {topic!r} is not a train/dev/test topic of topics.json")
            text, sentences = assemble(art.get("paragraphs") or [], where)
            texts.append({"article_id": aid, "lang": lang, "topic": topic, "split": split, "text": text})
            rows[split].extend(
                {"id": f"{aid}-{s.position:02d}", "article_id": aid, "position": s.position, "start": s.start,
                 "end": s.end, "lang": lang, "text": s.text, "labels": s.labels, "topic": topic}
                for s in sentences
            )
    out = data_dir / "articles"
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl_atomic(out / TEXTS_FILE, sorted(texts, key=lambda t: t["article_id"]))
    for split, items in rows.items():
        write_jsonl_atomic(out / f"{split}.jsonl", sorted(items, key=lambda r: r["id"]))
    return Counter({split: len(items) for split, items in rows.items()})


def load_article_texts(data_dir: Path) -> dict[str, dict[str, Any]]:
    """{article_id: its texts.jsonl row}."""
    path = data_dir / "articles" / TEXTS_FILE
    return {row["article_id"]: row for _, row in read_jsonl(path)} if path.is_file() else {}
