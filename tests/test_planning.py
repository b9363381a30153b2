"""POST /classify's planning without HTTP: items → flat sentences → response rows (sitrep/serving/planning.py)."""

from __future__ import annotations

import numpy as np
import pytest

from sitrep.models.documents import FlatPlan
from sitrep.models.labels import LABELS
from sitrep.serving.errors import ApiError
from sitrep.serving.planning import Limits, build_results, plan_request, threshold_cut, too_long_error
from sitrep.serving.schemas import Item

LIMITS = Limits(max_items=4, max_sentences=6, max_text_chars=40, max_document_chars=200, refuse_long=False)


def probs_for(n: int) -> np.ndarray:
    return np.linspace(0.1, 0.9, n * len(LABELS), dtype=np.float32).reshape(n, len(LABELS))


def test_texts_and_documents_flatten_and_regroup_in_order() -> None:
    items = [
        Item(id="t", text="The ministry said two rockets fell."),
        Item(id="d", document="A headline\nThe group said it struck the base. Two soldiers were wounded."),
    ]
    plan = plan_request(LIMITS, items)
    assert plan.texts[0] == "The ministry said two rockets fell." and len(plan.texts) == 4
    labels = [["official_confirmation"], [], ["claim"], ["casualty"]]
    rows = build_results(items, plan, probs_for(4), labels, [False] * 4)
    assert [r["id"] for r in rows] == ["t", "d"]
    assert rows[0]["labels"] == ["official_confirmation"] and "sentences" not in rows[0]
    doc = rows[1]
    assert [s["labels"] for s in doc["sentences"]] == [[], ["claim"], ["casualty"]]
    assert doc["labels"] == ["claim", "casualty"]  # any sentence's labels, in LABELS order
    text = items[1].document
    assert all(text[s["start"] : s["end"]] == s["text"] for s in doc["sentences"])
    assert doc["scores"]["claim"] == pytest.approx(float(probs_for(4)[1:, 0].max()))


def test_limits_name_the_item_and_the_setting() -> None:
    with pytest.raises(ApiError) as exc:
        plan_request(LIMITS, [Item(id=str(i), text="x") for i in range(5)])
    assert exc.value.code == "too_many_items" and "SITREP_MAX_ITEMS" in exc.value.message
    with pytest.raises(ApiError) as exc:
        plan_request(LIMITS, [Item(id="a", document="One. Two. Three. Four."), Item(id="b", document="Five. Six. Seven.")])
    assert exc.value.code == "too_many_sentences"
    refuse = Limits(**{**LIMITS.__dict__, "refuse_long": True})
    with pytest.raises(ApiError) as exc:
        plan_request(refuse, [Item(id="a", text="x" * 41)])
    assert exc.value.code == "text_too_long" and exc.value.field == "items[0].text"


def test_cut_text_is_marked_truncated() -> None:
    items = [Item(id="a", text="y" * 60)]
    plan = plan_request(LIMITS, items)
    assert plan.texts == ["y" * 40] and plan.cut == [True]
    rows = build_results(items, plan, probs_for(1), [[]], [False])
    assert rows[0]["truncated"] is True


def test_threshold_overrides_and_token_errors() -> None:
    assert threshold_cut([0.5] * 4, {}) is None
    cut = threshold_cut([0.5] * 4, {"casualty": 0.9})
    assert cut is not None and cut.tolist() == pytest.approx([0.5, 0.5, 0.9, 0.5])
    items = [Item(id="a", text="ok"), Item(id="b", document="First one. Second one.")]
    plan = plan_request(LIMITS, items)
    err = too_long_error(items, plan, 2, 128)
    assert err.field == "items[1].document" and "sentence 1 of the document" in err.message


def test_flat_plan_locates_positions_and_keeps_empty_documents() -> None:
    plan = FlatPlan()
    plan.add_text("a")
    empty = plan.add_document("   ")
    plan.add_document("One. Two.")
    assert empty.count == 0 and empty.sentences == []
    assert plan.locate(0) == (0, None) and plan.locate(2) == (2, 1)
    with pytest.raises(IndexError):
        plan.locate(3)
