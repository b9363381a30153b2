"""The one error shape every 4xx/5xx uses: `{"error": {"code", "message", "field"}}`.

Client mistakes are 4xx with a stable `code` and the JSON path of the offending value in `field`
(`items[3].text`); a 500 only ever means a bug or a failed runtime, never bad input.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("sitrep.serving")

# pydantic error type -> our code (anything else keeps pydantic's own type name as its code)
_CODES = {
    "missing": "missing_field",
    "extra_forbidden": "unknown_field",
    "string_type": "not_a_string",
    "string_too_short": "too_short",
    "string_too_long": "too_long",
    "too_short": "too_short",
    "list_type": "not_a_list",
    "model_type": "not_an_object",
    "model_attributes_type": "not_an_object",
    "dict_type": "not_an_object",
    "float_type": "not_a_number",
    "float_parsing": "not_a_number",
    "finite_number": "not_a_number",
    "greater_than_equal": "out_of_range",
    "less_than_equal": "out_of_range",
    "json_invalid": "invalid_json",
    "string_unicode": "invalid_unicode",
}
# FastAPI's answer when json.loads raises something other than a JSONDecodeError (nesting deeper than the
# recursion limit, an integer over 4300 digits): still a body that is not usable JSON.
_PARSE_FAILURE = "There was an error parsing the body"
_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
    503: "unavailable",
}


class ApiError(Exception):
    """Raise from a route to answer `status` with the error envelope."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        field: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.headers = headers


def error_body(code: str, message: str, field: str | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "field": field}}


def error_response(
    status: int, code: str, message: str, field: str | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(error_body(code, message, field), status_code=status, headers=headers)


def not_ready(message: str, retry_after_s: float) -> JSONResponse:
    """503 `not_ready` with a Retry-After of at least one second (no model yet, draining, batcher down)."""
    return error_response(503, "not_ready", message, headers={"Retry-After": str(max(1, int(retry_after_s)))})


def field_path(loc: tuple[Any, ...] | list[Any]) -> str | None:
    """("body", "items", 3, "text") -> "items[3].text"; the body itself -> None."""
    parts = list(loc)
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:]
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += ("." if out else "") + str(p)
    return out or None


def _validation_response(exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    first = errors[0] if errors else {"type": "invalid", "loc": (), "msg": "invalid request"}
    kind = str(first.get("type", "invalid"))
    if kind == "json_invalid":
        ctx = first.get("ctx") or {}
        loc = first.get("loc") or ()
        pos = loc[1] if len(loc) > 1 else "?"
        return error_response(
            400,
            "invalid_json",
            f"the body is not valid JSON: {ctx.get('error', 'decode error')} at character {pos}",
        )
    # a cross-field check (schemas.py) raised on a model says in ctx["at"] which field it points to
    loc = tuple(first.get("loc") or ()) + tuple((first.get("ctx") or {}).get("at", ()))
    field = field_path(loc)
    msg = str(first.get("msg", "invalid value"))
    if kind == "missing" and field:
        msg = f"`{field}` is required"
    elif kind == "extra_forbidden" and field:
        msg = f"unknown field `{field}`"
    elif field:
        msg = f"`{field}`: {msg}"
    if len(errors) > 1:
        msg += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    return error_response(422, _CODES.get(kind, kind), msg, field)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, exc.field, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _validation_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400 and exc.detail == _PARSE_FAILURE:
            return error_response(
                400,
                "invalid_json",
                "the body is not usable JSON: nested too deeply or a number with too many digits",
            )
        code = _HTTP_CODES.get(exc.status_code, "client_error" if exc.status_code < 500 else "server_error")
        return error_response(exc.status_code, code, str(exc.detail), None, dict(exc.headers or {}))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        from sitrep.serving.context import request_id

        log.error("unhandled error on %s %s (request_id=%s): %r", request.method, request.url.path, request_id(), exc)
        return error_response(
            500, "internal_error", "the server failed to answer this request; it was logged"
        )
