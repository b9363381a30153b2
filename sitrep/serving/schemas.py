"""Request and response models of the HTTP API (they are the OpenAPI schema, examples included)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, Strict, create_model, field_validator, model_validator
from pydantic_core import PydanticCustomError

from sitrep.models.labels import LABELS
from sitrep.models.text import is_blank

EXAMPLE_TEXT_EN = "The group said in a Telegram statement that its fighters struck the base with two drones."
EXAMPLE_TEXT_AR = "قالت خلية الإعلام الأمني إن الدفاعات الجوية أسقطت طائرة مسيرة قرب المطار"
EXAMPLE_DOCUMENT = (
    "Drone attack on air base\n"
    "A defense ministry spokesman confirmed that two rockets landed inside the compound. "
    "Eight service members suffered minor injuries."
)



def _non_blank_string_schema(schema: dict[str, Any]) -> None:
    """JSON schema of an optional, non-null, non-blank string: no `default: null`, a non-space character."""
    schema.pop("default", None)
    schema["pattern"] = r"[^\s\u00ad\u180e\u200b-\u200f\u2060-\u2064\ufeff]"  # what `_not_blank` checks


def _optional_string_schema(schema: dict[str, Any]) -> None:
    schema.pop("default", None)


def _not_blank(value: str | None, what: str) -> str | None:
    if value is not None and is_blank(value):  # whitespace, zero-width spaces, ZWNJ, BOM…: nothing to classify
        raise PydanticCustomError(f"empty_{what}", f"`{what}` must contain at least one visible character")
    return value


def _encodable(value: str | None) -> str | None:
    """Refuse lone surrogates (`"\\ud800"` is valid JSON but not Unicode text): they cannot be tokenized."""
    if value is not None:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise PydanticCustomError(
                "invalid_unicode", "contains a lone surrogate escape at character {pos}; send valid Unicode",
                {"pos": exc.start},
            ) from None
    return value


class Item(BaseModel):
    """One sentence (`text`) or one whole article (`document`), never both."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"id": "a1", "text": EXAMPLE_TEXT_EN, "lang": "en"}],
            "oneOf": [{"required": ["text"]}, {"required": ["document"]}],
        },
    )

    id: str = Field(
        ..., min_length=1, max_length=256, description="Caller's id, echoed back; unique per request."
    )
    # Optional but not nullable (leave a field out rather than send null): typed `str` so that an explicit
    # null is a type error, defaulting to None when absent (defaults are not validated).
    text: str = Field(  # type: ignore[assignment]
        None,
        description="One sentence to classify.",
        examples=[EXAMPLE_TEXT_AR],
        json_schema_extra=_non_blank_string_schema,
    )
    document: str = Field(  # type: ignore[assignment]
        None,
        description=(
            "A whole article: split into sentences (Arabic, Persian and Latin punctuation, newlines); "
            "each sentence comes back with its character offsets and labels."
        ),
        examples=[EXAMPLE_DOCUMENT],
        json_schema_extra=_non_blank_string_schema,
    )
    lang: str = Field(  # type: ignore[assignment]
        None,
        min_length=1,
        max_length=35,
        description="Optional language tag (e.g. `ar`, `fa`, `en`), echoed back. The model is "
        "cross-lingual and does not need it.",
        json_schema_extra=_optional_string_schema,
    )

    @field_validator("id", "text", "document", "lang")
    @classmethod
    def _valid_unicode(cls, value: str | None) -> str | None:
        return _encodable(value)

    @field_validator("text")
    @classmethod
    def _text_not_blank(cls, value: str | None) -> str | None:
        return _not_blank(value, "text")

    @field_validator("document")
    @classmethod
    def _document_not_blank(cls, value: str | None) -> str | None:
        return _not_blank(value, "document")

    @model_validator(mode="after")
    def _text_or_document(self) -> Item:
        # ctx["at"]: where under this item the error points (errors.py appends it to the location)
        if self.text is None and self.document is None:
            raise PydanticCustomError(
                "missing_text", "each item needs `text` (a sentence) or `document` (an article)", {"at": ["text"]}
            )
        if self.text is not None and self.document is not None:
            raise PydanticCustomError(
                "text_and_document", "send either `text` or `document` in one item, not both", {"at": ["document"]}
            )
        return self


Thresholds = create_model(
    "Thresholds",
    __config__=ConfigDict(
        extra="forbid",
        json_schema_extra={
            "description": "Per-label decision thresholds for this request; labels left out "
            "keep the model's own.",
            "examples": [{"claim": 0.7}],
        },
    ),
    **{label: (Annotated[float, Strict()] | None, Field(None, ge=0.0, le=1.0)) for label in LABELS},  # type: ignore[call-overload]
)

Scores = create_model(
    "Scores",
    __config__=ConfigDict(
        json_schema_extra={
            "description": "Calibrated probability of each label, independently (sigmoid per "
            "label, never a softmax across labels: they need not sum to 1)."
        },
    ),
    **{label: (float, Field(..., ge=0.0, le=1.0)) for label in LABELS},  # type: ignore[call-overload]
)


class ClassifyRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "items": [
                        {"id": "a1", "text": EXAMPLE_TEXT_EN, "lang": "en"},
                        {"id": "a2", "text": EXAMPLE_TEXT_AR, "lang": "ar"},
                    ]
                },
                {"items": [{"id": "doc-7", "document": EXAMPLE_DOCUMENT}], "thresholds": {"casualty": 0.6}},
            ]
        },
    )

    items: list[Item] = Field(
        ...,
        min_length=1,
        description="Sentences or documents, answered in the same order (limit: SITREP_MAX_ITEMS).",
    )
    thresholds: Thresholds | None = Field(
        None, description="Override the model's thresholds for this request."
    )  # type: ignore[valid-type]

    @model_validator(mode="after")
    def _unique_ids(self) -> ClassifyRequest:
        seen: dict[str, int] = {}
        for i, item in enumerate(self.items):
            if item.id in seen:
                raise PydanticCustomError(
                    "duplicate_id",
                    "id {id!r} is used by items[{first}] and items[{i}]; ids must be unique within a request",
                    {"id": item.id, "first": seen[item.id], "i": i, "at": ["items", i, "id"]},
                )
            seen[item.id] = i
        return self

    def threshold_overrides(self) -> dict[str, float]:
        if self.thresholds is None:
            return {}
        return {k: v for k, v in self.thresholds.model_dump().items() if v is not None}


class ModelInfo(BaseModel):
    name: str
    version: str
    runtime: str


class SentenceResult(BaseModel):
    text: str = Field(..., description="The sentence, exactly as it appears in the document.")
    start: int = Field(..., ge=0, description="Offset of its first character (Unicode code points).")
    end: int = Field(
        ..., ge=0, description="Offset one past its last character: document[start:end] == text."
    )
    labels: list[str]
    scores: Scores  # type: ignore[valid-type]
    truncated: bool = Field(
        ..., description="The sentence was longer than the model's max tokens and was cut."
    )


class ItemResult(BaseModel):
    id: str
    lang: str | None = None
    labels: list[str] = Field(
        ..., description="Labels at or above threshold (for a document: any sentence's labels)."
    )
    scores: Scores = Field(  # type: ignore[valid-type]
        ..., description="Per-label probabilities (for a document: the highest over its sentences)."
    )
    truncated: bool = Field(
        ...,
        description="The input was cut (over SITREP_MAX_TEXT_CHARS / SITREP_MAX_DOCUMENT_CHARS, or over "
        "the model's max tokens).",
    )
    sentences: list[SentenceResult] | None = Field(
        None, description="Document mode only: one entry per sentence."
    )


class ClassifyResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "model": {"name": "default", "version": "2026-05-01T10:00:00", "runtime": "onnx-int8"},
                    "results": [
                        {
                            "id": "a1",
                            "lang": "en",
                            "labels": ["claim"],
                            "truncated": False,
                            "scores": {
                                "claim": 0.93,
                                "official_confirmation": 0.04,
                                "casualty": 0.02,
                                "retaliation": 0.11,
                            },
                        }
                    ],
                }
            ]
        }
    )

    model: ModelInfo
    results: list[ItemResult]


class ErrorBody(BaseModel):
    code: str = Field(..., description="Stable machine-readable code, e.g. `empty_text`, `too_many_items`.")
    message: str = Field(..., description="What is wrong and how to fix it.")
    field: str | None = Field(
        None, description="Where in the request, e.g. `items[3].text`; null when not one field."
    )


class ErrorResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "error": {
                        "code": "empty_text",
                        "field": "items[0].text",
                        "message": "`text` must contain at least one visible character",
                    }
                }
            ]
        }
    )

    error: ErrorBody


class ReloadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    bundle: str | None = Field(
        None,
        min_length=1,
        description="Bundle directory inside the models root (SITREP_MODELS_ROOT), relative to it or absolute; "
        "default: the configured SITREP_BUNDLE.",
    )


class ReloadResponse(BaseModel):
    previous: ModelInfo
    current: ModelInfo
    load_s: float = Field(..., description="Seconds spent loading, verifying and warming the new model.")


class Status(BaseModel):
    status: str
    model: ModelInfo | None = None


def scores_dict(row: Any) -> dict[str, float]:
    """One row of probabilities as {label: float}, in LABELS order (exact float32 values, not rounded)."""
    return {label: float(row[j]) for j, label in enumerate(LABELS)}


DESCRIPTION = """
Tags each sentence with zero or more of `claim`, `official_confirmation`, `casualty` and `retaliation`
(Arabic, Persian, English and other languages). Scores are independent calibrated probabilities, one
per label (never a softmax across labels). Send single sentences as `text`, or whole articles as
`document` to have them split into sentences with character offsets.

What each label means, with the boundary rules (who counts as a state, identified speakers, blame vs
confirmation, vow vs threat): the label guide, `docs/labels.md` in the sitrep repository.

Errors always look like `{"error": {"code", "message", "field"}}`. When the service is configured with
API keys, send `Authorization: Bearer KEY` or `X-API-Key: KEY`.
"""

# The error responses the routes document in the OpenAPI schema.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "Invalid JSON, invalid UTF-8, invalid gzip or invalid HTTP."},
    401: {
        "model": ErrorResponse,
        "description": "Missing or invalid API key (when keys are configured).",
    },
    408: {"model": ErrorResponse, "description": "The body did not arrive within SITREP_BODY_TIMEOUT_S."},
    413: {"model": ErrorResponse, "description": "Body over SITREP_MAX_BODY_BYTES."},
    415: {
        "model": ErrorResponse,
        "description": "Body not sent as application/json, or with a Content-Encoding other than gzip.",
    },
    422: {
        "model": ErrorResponse,
        "description": "A field is missing, empty, of the wrong type or over a limit.",
    },
    503: {
        "model": ErrorResponse,
        "description": "Overloaded or not ready: retry after `Retry-After` seconds.",
        "headers": {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait."}},
    },
}

# POST /admin/reload's error responses.
RELOAD_RESPONSES: dict[int | str, dict[str, Any]] = {
    **{k: ERROR_RESPONSES[k] for k in (400, 401, 408, 413, 415)},
    403: {
        "model": ErrorResponse,
        "description": "No admin keys configured (`admin_disabled`), or the bundle is outside the "
        "models root (`bundle_not_allowed`).",
    },
    422: {"model": ErrorResponse, "description": "The bundle could not be loaded; nothing changed."},
}
