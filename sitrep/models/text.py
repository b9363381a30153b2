"""Sentence splitting with character offsets, for Arabic, Persian and Latin-script text.

    >>> [(s.text, s.start, s.end) for s in split_sentences("Dr. Ali said 3.5 tons fell. No one was hurt.")]
    [('Dr. Ali said 3.5 tons fell.', 0, 27), ('No one was hurt.', 28, 44)]

Rules, in order:

- Every line break (``\\n``, ``\\r\\n``, ``\\r``, U+2028/2029 and the other characters
  :meth:`str.splitlines` breaks on) ends a sentence, so headings, bylines and list items stand alone.
- Inside a line a sentence ends after a run of terminators (``. ! ?``, Arabic/Persian ``؟`` and
  the Arabic semicolon ``؛``, the Urdu/Arabic full stop ``۔``, the ellipsis ``…`` or ``...``, CJK
  ``。！？``), plus any closing quotes or brackets (``" ' ” ’ » ) ] }``), when whitespace or the end
  of the line follows. The Arabic comma ``،`` is a comma, not a boundary.
- A single ``.`` or an ellipsis does not end a sentence when the next word starts with a lower-case
  letter ("approx. five", "Acme Inc. said"), nor a ``.`` after a title or other abbreviation
  ("Dr.", "Gen.", "No.", "Jan."), an initial ("J. Smith", Arabic "د. أحمد") or a dotted acronym
  ("U.S.", "e.g."). A ``.`` between digits (3.5) or inside a word (example.com) is never followed by
  whitespace and so never ends one.

Offsets are indices into the original Python string (code points, not bytes or UTF-16 units), and
``text[s.start:s.end] == s.text`` always holds. Sentences are stripped of surrounding whitespace
(and of a byte-order mark or zero-width space at their edges); nothing else is touched: ZWNJ
(U+200C), diacritics, tatweel and Persian ی/ک versus Arabic ي/ك come back exactly as sent. Every
character that is not whitespace belongs to exactly one sentence: nothing is dropped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Sentence", "is_blank", "lone_surrogate", "split_sentences"]


# Characters that show nothing: a text made only of them (and whitespace) is blank.
INVISIBLE = frozenset("\u200b\u200c\u200d\u2060\ufeff\u200e\u200f\u00ad\u180e\u2061\u2062\u2063\u2064")


def is_blank(text: str) -> bool:
    """True when `text` holds nothing but whitespace and invisible characters (zero-width space, ZWNJ, BOM…)."""
    return all(c.isspace() or c in INVISIBLE for c in text)


def lone_surrogate(text: str) -> int | None:
    """The index of the first lone surrogate (valid in JSON as `"\\ud800"`, not Unicode text), or None."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return exc.start
    return None


@dataclass(frozen=True)
class Sentence:
    text: str
    start: int  # offset of the first character in the original string
    end: int  # offset one past the last character: original[start:end] == text


# Runs of characters that are not line breaks (the set str.splitlines() breaks on).
_LINE = re.compile(r"[^\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]+")
# A run of terminators, then closing quotes/brackets, then whitespace or the end of the line.
_END = re.compile(r"(?P<run>[.!?؟؛۔…。！？‼⁇⁈⁉]+)[\"'”’»›)\]}]*(?=\s|$)")
# Characters stripped from a sentence's edges besides str.isspace() ones. ZWNJ/ZWJ are never stripped.
_EDGE = "\ufeff\u200b"
_OPENERS = "\"'“‘«‹([{"
# Words that are followed by a name or a number, so their period does not end a sentence.
_TITLES = ("mr", "mrs", "ms", "mx", "dr", "prof", "gen", "lt", "col", "maj", "capt", "cpt", "sgt", "cpl",
           "pte", "pvt", "adm", "cmdr", "brig", "gov", "sen", "rep", "rev", "hon", "pres", "amb", "sec")
_MONTHS = ("jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec")
_ARABIC = ("هـ", "ق.م")  # hijri year, "before Christ"
_ABBREVIATIONS = frozenset((*_TITLES, *_MONTHS, *_ARABIC, "st", "mt", "ft", "vs", "approx"))
# Abbreviations that stand before a number ("No. 5", "Fig. 2"); before a word they end a sentence.
_NUMBER_ABBREVIATIONS = frozenset({"no", "nos", "vol", "fig", "art", "p", "pp"})
# Dotted acronyms: U.S, e.g, i.e, U.N, a.m (the final period is the candidate terminator).
_DOTTED = re.compile(r"(?:[^\W\d_]{1,2}\.)+[^\W\d_]{1,2}")
# Dotted times can end a sentence ("at 5 p.m. Officials said"): the lower-case rule still applies.
_TIMES = frozenset({"a.m", "p.m"})


def split_sentences(text: str) -> list[Sentence]:
    """Split `text` into sentences with character offsets (see the module docstring for the rules).

    Returns an empty list for an empty or whitespace-only string.
    """
    out: list[Sentence] = []
    for line in _LINE.finditer(text):
        start, end = line.span()
        cut = start
        for m in _END.finditer(text, start, end):
            if _ends_sentence(text, m, end):
                _append(out, text, cut, m.end())
                cut = m.end()
        _append(out, text, cut, end)
    return out


def _append(out: list[Sentence], text: str, start: int, end: int) -> None:
    while start < end and (text[start].isspace() or text[start] in _EDGE):
        start += 1
    while end > start and (text[end - 1].isspace() or text[end - 1] in _EDGE):
        end -= 1
    if start < end:
        out.append(Sentence(text[start:end], start, end))


def _ends_sentence(text: str, m: re.Match[str], line_end: int) -> bool:
    run = m.group("run")
    i = m.end()
    while i < line_end and text[i].isspace():
        i += 1
    if i >= line_end:
        return True
    if set(run) <= {".", "…"}:
        if text[i].islower():
            return False
        if run == "." and _is_abbreviation(_word_before(text, m.start()), text[i]):
            return False
    return True


def _word_before(text: str, pos: int) -> str:
    i = pos
    while i > 0 and not text[i - 1].isspace():
        i -= 1
    return text[i:pos].lstrip(_OPENERS)


def _is_abbreviation(word: str, next_char: str) -> bool:
    if not word:
        return False
    lower = word.lower()
    if lower in _ABBREVIATIONS:
        return True
    if lower in _NUMBER_ABBREVIATIONS and next_char.isdigit():
        return True
    if len(word) == 1 and word.isalpha():
        return True  # an initial: "J. Smith", "د. أحمد"
    return _DOTTED.fullmatch(word) is not None and lower not in _TIMES
