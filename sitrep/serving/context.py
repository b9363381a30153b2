"""Per-request context (a pure ASGI middleware, outermost): the request id and the Server-Timing header.

- `X-Request-ID`: the client's value when it is a plausible id (1-128 of `A-Z a-z 0-9 . _ : -`), else a new
  one (32 hex digits); echoed on every response, put on the access-log line and on logged errors.
- `Server-Timing`: `queue;dur=…, model;dur=…` (milliseconds) for /classify — time waiting for a batch and
  the runtime call it ran in — and `total;dur=…` on every response.
"""

from __future__ import annotations

import contextvars
import logging
import re
import time
import uuid

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUEST_ID_HEADER = "x-request-id"
_VALID_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")


class RequestContext:
    """What one request's handlers may add to (`timings`, in seconds), and its id."""

    def __init__(self, request_id: str) -> None:
        self.request_id = request_id
        self.timings: dict[str, float] = {}


_current: contextvars.ContextVar[RequestContext | None] = contextvars.ContextVar("sitrep_request", default=None)


def current() -> RequestContext | None:
    return _current.get()


def request_id() -> str:
    ctx = _current.get()
    return ctx.request_id if ctx is not None else "-"


def server_timing(timings: dict[str, float]) -> str:
    return ", ".join(f"{name};dur={seconds * 1000:.2f}" for name, seconds in timings.items())


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                given = value.decode("latin-1")
                break
        ctx = RequestContext(given if given and _VALID_ID.fullmatch(given) else uuid.uuid4().hex)
        token = _current.set(ctx)
        t0 = time.perf_counter()

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["X-Request-ID"] = ctx.request_id
                headers["Server-Timing"] = server_timing({**ctx.timings, "total": time.perf_counter() - t0})
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            _current.reset(token)


class RequestIdLogFilter(logging.Filter):
    """Puts the request's id on the log record (`record.request_id`; "-" outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id()
        return True


class _WithRequestId(logging.Formatter):
    """Wraps a handler's formatter: the same line, then ` request_id=…`."""

    def __init__(self, inner: logging.Formatter | None) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        return f"{self.inner.format(record)} request_id={getattr(record, 'request_id', '-')}"


def install_log_filter() -> None:
    """uvicorn's access-log lines end in ` request_id=…` (they are logged while the response starts, inside
    the request's context). Call after uvicorn.Config has configured its loggers."""
    access = logging.getLogger("uvicorn.access")
    access.addFilter(RequestIdLogFilter())
    for handler in access.handlers:
        if not isinstance(handler.formatter, _WithRequestId):
            handler.setFormatter(_WithRequestId(handler.formatter))
