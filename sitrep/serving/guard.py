"""The checks every request passes before FastAPI parses it, cheapest first (a pure ASGI middleware).

1. API key, for protected routes (401/403) — before a byte of the body is read.
2. Body size: `Content-Length` over `max_body_bytes`, or more bytes than that arriving (413).
3. Read deadline: the whole body must arrive within `body_timeout_s` of the first read (408, and the
   connection is closed), so a client that sends half a body holds a connection and a task only that long.
4. `Content-Encoding: gzip` bodies are inflated (at most `max_body_bytes` once inflated: 413; corrupt: 400
   `invalid_gzip`; another coding: 415 `unsupported_content_encoding`).
5. Media type: a body must be `application/json` (415), so `curl -d` without `-H` gets a clear answer.
6. Encoding: the body must be valid UTF-8 (400 `invalid_utf8`, with the byte offset).

A body that passes is handed on (read once, inflated if it came gzipped, replayed to the app).
"""

from __future__ import annotations

import asyncio
import zlib

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sitrep.serving import auth
from sitrep.serving.errors import ApiError, error_response

_BODY_METHODS = {"POST", "PUT", "PATCH"}


class RequestGuard:
    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        api_keys: list[str],
        admin_keys: list[str] | None = None,
        body_timeout_s: float = 30.0,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.api_keys = api_keys
        self.admin_keys = admin_keys or []
        self.body_timeout_s = body_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        error = auth.check(
            scope["path"],
            auth.presented_key(headers.get("authorization"), headers.get(auth.API_KEY_HEADER)),
            self.api_keys,
            self.admin_keys,
        )
        if error is None and scope["method"] in _BODY_METHODS:
            error, body = await self._read_body(headers, receive)
            if error is None:
                receive = _replay(body, receive)
                if headers.get("content-encoding"):  # inflated: the app sees a plain body
                    scope = dict(scope)
                    scope["headers"] = [
                        (k, v) for k, v in scope["headers"] if k not in (b"content-encoding", b"content-length")
                    ] + [(b"content-length", str(len(body)).encode())]
        if error is not None:
            response = error_response(error.status, error.code, error.message, error.field, error.headers)
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    async def _read_body(self, headers: Headers, receive: Receive) -> tuple[ApiError | None, bytes]:
        limit = self.max_body_bytes
        too_large = ApiError(
            413,
            "body_too_large",
            f"the request body is over the limit of {limit} bytes "
            "(SITREP_MAX_BODY_BYTES); send fewer or shorter items",
        )
        declared = headers.get("content-length")
        if declared is not None:
            try:
                if int(declared) > limit:
                    return too_large, b""
            except ValueError:
                return ApiError(400, "bad_request", "Content-Length is not a number"), b""
        coding = headers.get("content-encoding", "identity").strip().lower()
        if coding not in ("identity", "gzip", "x-gzip"):
            return ApiError(
                415,
                "unsupported_content_encoding",
                f"Content-Encoding {coding!r} is not supported; send the body plain or gzip-compressed",
            ), b""
        chunks: list[bytes] = []
        size = 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.body_timeout_s
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                return ApiError(
                    408,
                    "body_timeout",
                    f"the request body did not arrive within {self.body_timeout_s:g} s (SITREP_BODY_TIMEOUT_S)",
                    headers={"Connection": "close"},
                ), b""
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return too_large, b""
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if body and coding != "identity":
            try:
                body = _gunzip(body, limit)
            except ValueError:
                return too_large, b""
            except (OSError, EOFError, zlib.error):
                return ApiError(400, "invalid_gzip", "Content-Encoding is gzip but the body is not valid gzip"), b""
        if body:
            media = headers.get("content-type", "").split(";")[0].strip().lower()
            if not (
                media == "application/json" or (media.startswith("application/") and media.endswith("+json"))
            ):
                shown = media or "none"
                return ApiError(
                    415,
                    "unsupported_media_type",
                    f"send the body as JSON with `Content-Type: application/json` (got {shown})",
                ), b""
            try:
                body.decode("utf-8")
            except UnicodeDecodeError as exc:
                return ApiError(
                    400,
                    "invalid_utf8",
                    f"the body is not valid UTF-8 (bad byte at offset {exc.start}); encode text as UTF-8",
                ), b""
        return None, body


def _gunzip(data: bytes, limit: int) -> bytes:
    """Inflate a gzip body, never to more than `limit` bytes (ValueError beyond: a zip bomb stays small)."""
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    out = d.decompress(data, limit + 1)
    if len(out) > limit or d.unconsumed_tail:
        raise ValueError("over the limit")
    if not d.eof:
        raise EOFError("truncated gzip stream")
    return out


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
