"""Items to classify — single sentences or whole documents — flattened into one list of sentences, and back.

    plan = FlatPlan()
    plan.add_text("One sentence.")                 # item 0: one entry
    plan.add_document(article)                     # item 1: one entry per sentence, with offsets
    result = classifier.classify(plan.texts)       # one call for every sentence of every item
    plan.parts[1].slice(result.probs)              # item 1's rows, in sentence order
    classifier.classify(plan.texts, contexts=plan.contexts)  # each document sentence with the one before it

The HTTP API (document mode) and `sitrep score --documents` both plan their work with this class.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypeVar

from sitrep.models.text import Sentence, split_sentences

T = TypeVar("T")


@dataclass
class Part:
    """One item's place in the flat list: `count` entries from `first`; `sentences` for a document."""

    first: int
    count: int
    sentences: list[Sentence] | None = None

    @property
    def is_document(self) -> bool:
        return self.sentences is not None

    def slice(self, values: Any) -> Any:
        """This item's rows of anything indexed like the flat list (arrays, lists)."""
        return values[self.first : self.first + self.count]


@dataclass
class FlatPlan:
    texts: list[str] = field(default_factory=list)
    parts: list[Part] = field(default_factory=list)
    # Each entry's previous sentence in its document ("" for a single text and a document's first sentence): read
    # by bundles trained with document context (`Classifier.uses_context`), ignored by the others.
    contexts: list[str] = field(default_factory=list)

    def add_text(self, text: str) -> Part:
        part = Part(len(self.texts), 1)
        self.texts.append(text)
        self.contexts.append("")
        self.parts.append(part)
        return part

    def add_document(self, document: str) -> Part:
        """Split into sentences (with character offsets); a document with none adds an empty part."""
        sentences = split_sentences(document)
        part = Part(len(self.texts), len(sentences), sentences)
        self.texts.extend(s.text for s in sentences)
        self.contexts.extend(["", *(s.text for s in sentences[:-1])] if sentences else [])
        self.parts.append(part)
        return part

    def locate(self, position: int) -> tuple[int, int | None]:
        """Flat position -> (item index, sentence index within a document, or None for a single text)."""
        for i, part in enumerate(self.parts):
            if part.first <= position < part.first + part.count:
                return i, (position - part.first) if part.is_document else None
        raise IndexError(position)

    def __len__(self) -> int:
        return len(self.texts)
