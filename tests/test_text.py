"""models.text.split_sentences: boundaries in en/ar/fa, offsets, and nothing lost or altered."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sitrep.models.text import Sentence, split_sentences


def texts(doc: str) -> list[str]:
    return [s.text for s in split_sentences(doc)]


def check_offsets(doc: str, sentences: list[Sentence]) -> None:
    prev_end = 0
    for s in sentences:
        assert doc[s.start : s.end] == s.text
        assert s.text and s.text == s.text.strip()
        assert s.start >= prev_end
        prev_end = s.end
    # every non-space character is in exactly one sentence
    inside = "".join(s.text for s in sentences)
    keep = lambda t: "".join(c for c in t if not c.isspace() and c not in "\ufeff\u200b")  # noqa: E731
    assert keep(inside) == keep(doc)


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        (
            "The group said it hit the base. Two soldiers were hurt.",
            ["The group said it hit the base.", "Two soldiers were hurt."],
        ),
        ("Was anyone hurt? No! The army denied it.", ["Was anyone hurt?", "No!", "The army denied it."]),
        (
            "Dr. Ali met Gen. Smith and Lt. Col. Jones in the U.S. capital. It was calm.",
            ["Dr. Ali met Gen. Smith and Lt. Col. Jones in the U.S. capital.", "It was calm."],
        ),
        ("It carried 3.5 tons. See No. 7 for details.", ["It carried 3.5 tons.", "See No. 7 for details."]),
        ("The answer was no. Then it rained.", ["The answer was no.", "Then it rained."]),
        ("J. R. Smith spoke. Acme Inc. said nothing.", ["J. R. Smith spoke.", "Acme Inc. said nothing."]),
        (
            "It began at 5 p.m. Officials said the drones came from the east.",
            ["It began at 5 p.m.", "Officials said the drones came from the east."],
        ),
        (
            'He said: "We hit the base." The ministry denied it.',
            ['He said: "We hit the base."', "The ministry denied it."],
        ),
        (
            "Sirens sounded… then silence. Later, calm… The end",
            ["Sirens sounded… then silence.", "Later, calm…", "The end"],
        ),
        ("They waited... And then it came.", ["They waited...", "And then it came."]),
        ("Visit example.com for more. ok then", ["Visit example.com for more. ok then"]),
        (
            "Drone attack on air base\nBy Staff Writer\n\nThe base was hit. Nobody was hurt.\r\nRead more",
            [
                "Drone attack on air base",
                "By Staff Writer",
                "The base was hit.",
                "Nobody was hurt.",
                "Read more",
            ],
        ),
        ("no terminator at all", ["no terminator at all"]),
        ("", []),
        ("  \n\t \r\n ", []),
    ],
)
def test_english(doc: str, expected: list[str]) -> None:
    got = split_sentences(doc)
    assert [s.text for s in got] == expected
    check_offsets(doc, got)


def test_arabic_punctuation_and_abbreviations() -> None:
    doc = "قال د. أحمد إن الهجوم وقع فجراً. هل أصيب أحد؟ لا؛ لم يصب أحد، بحسب المصدر… انتهى"
    got = split_sentences(doc)
    assert [s.text for s in got] == [
        "قال د. أحمد إن الهجوم وقع فجراً.",  # د. (Dr.) is an initial, not a boundary
        "هل أصيب أحد؟",
        "لا؛",  # the Arabic semicolon ends a sentence
        "لم يصب أحد، بحسب المصدر…",  # the Arabic comma does not
        "انتهى",
    ]
    check_offsets(doc, got)


def test_arabic_diacritics_and_quotes_survive() -> None:
    doc = "«تبنّت الفصائل المسلحة الهجوم.» وقالَ مصدرٌ أمنيّ إنّ الدفاعات أسقطت طائرة مسيّرة!"
    got = split_sentences(doc)
    assert [s.text for s in got] == [
        "«تبنّت الفصائل المسلحة الهجوم.»",
        "وقالَ مصدرٌ أمنيّ إنّ الدفاعات أسقطت طائرة مسيّرة!",
    ]
    assert "\u0651" in got[0].text and "\u064e" in got[1].text  # shadda, fatha kept
    check_offsets(doc, got)


def test_persian_zwnj_and_letters_kept_byte_for_byte() -> None:
    doc = (
        "گروه مسلح مسئولیت حمله را بر عهده گرفت. آیا کسی زخمی شد؟ "
        "این گروه می\u200cگوید حمله در واکنش بود۔ پایان"
    )
    got = split_sentences(doc)
    assert [s.text for s in got] == [
        "گروه مسلح مسئولیت حمله را بر عهده گرفت.",
        "آیا کسی زخمی شد؟",
        "این گروه می\u200cگوید حمله در واکنش بود۔",
        "پایان",
    ]
    assert "\u200c" in got[2].text
    joined = "".join(s.text for s in got)
    assert (
        "ی" in joined and "ک" in joined and "ي" not in joined and "ك" not in joined
    )  # Persian letters, not Arabic
    assert unicodedata.is_normalized("NFC", doc)
    check_offsets(doc, got)
    for s in got:
        assert s.text.encode("utf-8") == doc[s.start : s.end].encode("utf-8")


def test_offsets_are_code_points_with_astral_characters() -> None:
    doc = "\ufeffAlert 🚨 drone strike. ✅ Nobody hurt.\u2028Next line"
    got = split_sentences(doc)
    assert [s.text for s in got] == ["Alert 🚨 drone strike.", "✅ Nobody hurt.", "Next line"]
    check_offsets(doc, got)


def test_every_line_break_kind_is_a_boundary() -> None:
    doc = "a\nb\r\nc\rd\u2028e\u2029f\x0bg\x0ch\x85i"
    assert texts(doc) == list("abcdefghi")


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.sampled_from([*list("ab .?!؟؛۔…\n\r\u200cيکی«»\"'3"), "U.S.", "Dr.", " \t"]), max_size=60
    ).map("".join)
)
def test_invariants_on_random_text(doc: str) -> None:
    check_offsets(doc, split_sentences(doc))
