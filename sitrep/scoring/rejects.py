"""Rows that cannot be scored: why, and where they came from. They go to the rejects file, never away.

A reject is one JSON line in ``OUTPUT/_rejects.jsonl``::

    {"id": "a-17", "reason": "empty_text", "detail": "text is empty or whitespace",
     "source": "/data/in/2024-05.jsonl", "row": 16, "line": 18, "value": "   "}

``reason`` is one of the codes below (stable, for filtering); ``detail`` is for people. ``row`` is the
0-based data row in its file (None where the engine cannot know it, e.g. Parquet under Ray) and
``line`` the 1-based physical line for JSONL and CSV.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from sitrep.models.text import lone_surrogate

MISSING_ID = "missing_id"
BAD_ID = "bad_id"
MISSING_TEXT = "missing_text"
EMPTY_TEXT = "empty_text"
NON_TEXT = "non_text"
INVALID_JSON = "invalid_json"
INVALID_CSV_ROW = "invalid_csv_row"
NO_SENTENCES = "no_sentences"
INVALID_UNICODE = "invalid_unicode"
REASONS = (
    MISSING_ID,
    BAD_ID,
    MISSING_TEXT,
    EMPTY_TEXT,
    NON_TEXT,
    INVALID_JSON,
    INVALID_CSV_ROW,
    NO_SENTENCES,
    INVALID_UNICODE,
)

PREVIEW_CHARS = 200


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


MISSING: Any = _Missing()  # a field absent from its record (as opposed to present and null)


@dataclass(frozen=True)
class Reject:
    id: str | None
    reason: str
    detail: str
    source: str
    row: int | None = None
    line: int | None = None
    value: str | None = None

    def to_json_line(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False) + "\n"


def preview(value: Any) -> str | None:
    """A short, printable form of an offending value (text is kept as is, only cut; lone surrogates
    become U+FFFD so that the rejects file stays valid UTF-8)."""
    if value is MISSING or value is None:
        return None
    s = value if isinstance(value, str) else repr(value)
    if lone_surrogate(s) is not None:
        s = "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in s)
    return s if len(s) <= PREVIEW_CHARS else s[:PREVIEW_CHARS] + "…"



def check_id(value: Any, column: str) -> tuple[str | None, str | None, str | None]:
    """(id as a string, reason, detail). Strings and integers are ids; anything else is rejected."""
    if value is MISSING:
        return None, MISSING_ID, f"no {column!r} field"
    if value is None:
        return None, MISSING_ID, f"{column!r} is null"
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return None, BAD_ID, f"{column!r} must be a string or an integer, got {type(value).__name__}"
    s = value if isinstance(value, str) else str(value)
    if not s.strip():
        return None, MISSING_ID, f"{column!r} is empty"
    bad = lone_surrogate(s)
    if bad is not None:
        return None, INVALID_UNICODE, f"{column!r} holds a lone surrogate at character {bad}"
    return s, None, None


def check_text(value: Any, column: str) -> tuple[str | None, str | None]:
    """(reason, detail) for a text value that cannot be scored, else (None, None)."""
    if value is MISSING:
        return MISSING_TEXT, f"no {column!r} field"
    if value is None:
        return MISSING_TEXT, f"{column!r} is null"
    if not isinstance(value, str):
        return NON_TEXT, f"{column!r} must be a string, got {type(value).__name__}"
    if not value.strip():
        return EMPTY_TEXT, f"{column!r} is empty or whitespace"
    bad = lone_surrogate(value)
    if bad is not None:  # valid JSON ("\\ud800"), but not text: the tokenizer cannot take it
        return INVALID_UNICODE, f"{column!r} holds a lone surrogate at character {bad}"
    return None, None
