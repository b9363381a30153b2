"""POST /classify without HTTP: a request's items planned into sentences for the batcher, and the
batcher's output built back into the response body. Unit-tested on its own (tests/test_planning.py).

Field-level and cross-field validation (types, blank text, exactly one of text/document, unique ids)
is the schema's (schemas.py); what depends on this instance's settings (item, sentence and length
limits, SITREP_LONG_TEXT) is checked here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sitrep.models.documents import FlatPlan
from sitrep.models.labels import LABEL_INDEX, LABELS
from sitrep.serving.errors import ApiError
from sitrep.serving.schemas import Item, scores_dict


@dataclass(frozen=True)
class Limits:
    """The settings planning needs (see settings.py: SITREP_MAX_*, SITREP_LONG_TEXT)."""

    max_items: int
    max_sentences: int
    max_text_chars: int
    max_document_chars: int
    refuse_long: bool

    @classmethod
    def from_settings(cls, settings: Any) -> Limits:
        return cls(
            settings.max_items,
            settings.max_sentences,
            settings.max_text_chars,
            settings.max_document_chars,
            settings.long_text == "refuse",
        )


@dataclass
class RequestPlan:
    """The items flattened into sentences (`flat.texts` go to the batcher), and which items were cut."""

    flat: FlatPlan = field(default_factory=FlatPlan)
    cut: list[bool] = field(default_factory=list)

    @property
    def texts(self) -> list[str]:
        return self.flat.texts

    @property
    def contexts(self) -> list[str]:
        """Each sentence's previous sentence in its document ("" for none): for bundles trained with context."""
        return self.flat.contexts


def plan_request(limits: Limits, items: list[Item]) -> RequestPlan:
    """Check the instance's limits and flatten the items. Raises ApiError (422) naming the item."""
    if len(items) > limits.max_items:
        raise ApiError(
            422,
            "too_many_items",
            f"{len(items)} items in one request; the limit is "
            f"{limits.max_items} (SITREP_MAX_ITEMS): split the request",
            "items",
        )
    plan = RequestPlan()
    for i, item in enumerate(items):
        if item.text is not None:
            text, cut = _limit(item.text, limits.max_text_chars, limits.refuse_long, f"items[{i}].text",
                               "SITREP_MAX_TEXT_CHARS")
            plan.flat.add_text(text)
        else:
            assert item.document is not None  # the schema guarantees exactly one of the two
            doc, cut = _limit(item.document, limits.max_document_chars, limits.refuse_long,
                              f"items[{i}].document", "SITREP_MAX_DOCUMENT_CHARS")
            plan.flat.add_document(doc)
        plan.cut.append(cut)
        if len(plan.flat) > limits.max_sentences:
            raise ApiError(
                422,
                "too_many_sentences",
                f"the request holds more than {limits.max_sentences} "
                "sentences (SITREP_MAX_SENTENCES): send fewer documents per request",
                "items",
            )
    return plan


def _limit(value: str, limit: int, refuse: bool, where: str, env: str) -> tuple[str, bool]:
    if len(value) <= limit:
        return value, False
    if refuse:
        raise ApiError(422, "text_too_long", f"{len(value)} characters; the limit is {limit} ({env})", where)
    return value[:limit], True


def threshold_cut(model_thresholds: list[float] | np.ndarray, overrides: dict[str, float]) -> np.ndarray | None:
    """The model's per-label thresholds with this request's overrides; None when there are none."""
    if not overrides:
        return None
    cut = np.array(model_thresholds, dtype=np.float32)
    for label, value in overrides.items():
        cut[LABEL_INDEX[label]] = value
    return cut


def too_long_error(items: list[Item], plan: RequestPlan, position: int, max_tokens: int) -> ApiError:
    """The 422 for a sentence over the model's max tokens under SITREP_LONG_TEXT=refuse."""
    i, k = plan.flat.locate(position)
    item = items[i]
    where = f"sentence {k} of the document" if k is not None else "the text"
    return ApiError(
        422,
        "text_too_long",
        f"{where} is longer than the model's {max_tokens} tokens (SITREP_LONG_TEXT=refuse)",
        f"items[{i}].{'document' if item.document else 'text'}",
    )


def build_results(
    items: list[Item], plan: RequestPlan, probs: np.ndarray, labels: list[list[str]], truncated: list[bool]
) -> list[dict[str, Any]]:
    """One result per item, in input order: a text's labels and scores, or a document's per sentence."""
    out: list[dict[str, Any]] = []
    for item, part, cut in zip(items, plan.flat.parts, plan.cut, strict=True):
        p, ls, tr = part.slice(probs), part.slice(labels), part.slice(truncated)
        row: dict[str, Any] = {"id": item.id}
        if item.lang is not None:
            row["lang"] = item.lang
        if part.sentences is None:
            row.update(labels=ls[0], scores=scores_dict(p[0]), truncated=cut or tr[0])
        else:
            present = {label for sentence_labels in ls for label in sentence_labels}
            best = p.max(axis=0) if part.count else np.zeros(len(LABELS), dtype=np.float32)
            row.update(
                labels=[label for label in LABELS if label in present],
                scores=scores_dict(best),
                truncated=cut or any(tr),
                sentences=[
                    {
                        "text": s.text,
                        "start": s.start,
                        "end": s.end,
                        "labels": ls[k],
                        "scores": scores_dict(p[k]),
                        # the last sentence of a document cut at SITREP_MAX_DOCUMENT_CHARS is cut too
                        "truncated": tr[k] or (cut and k == part.count - 1),
                    }
                    for k, s in enumerate(part.sentences)
                ],
            )
        out.append(row)
    return out
