"""A small Python client for the sitrep HTTP API (sync and async), in the `client` extra (httpx only).

    from sitrep.client import Client
    with Client("http://localhost:8000", key="k1") as c:
        results = c.classify(["The group said it struck the base.", "قالت الوزارة إن …"])
        results[0]["labels"], results[0]["scores"]["claim"]

    async with AsyncClient("http://localhost:8000") as c:
        results = await c.classify(texts)

- Texts are sent in batches of the server's item limit (`maxItems` in its /openapi.json, read once), so a
  list of any length works; results come back in input order, one per text, as the API returns them
  (`id` is the text's index as a string).
- A 503 (overloaded, not ready, shutting down) is retried after the server's `Retry-After` seconds (at
  most `max_retry_wait_s`), up to `max_retries` times; any other error raises `SitrepError` with the
  API's `code`, `message` and `field`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import httpx

DEFAULT_MAX_ITEMS = 256


class SitrepError(RuntimeError):
    """The API answered with an error (after retries, for a 503)."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(f"{status} {code}: {message}" + (f" ({field})" if field else ""))
        self.status = status
        self.code = code
        self.message = message
        self.field = field


def _headers(key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"} if key else {}


def _error(r: httpx.Response) -> SitrepError:
    try:
        err = r.json()["error"]
        return SitrepError(r.status_code, err["code"], err["message"], err.get("field"))
    except (ValueError, KeyError, TypeError):
        return SitrepError(r.status_code, "http_error", r.text[:200])


def _retry_after(r: httpx.Response, cap: float) -> float:
    try:
        return min(cap, max(0.0, float(r.headers.get("retry-after", "1"))))
    except ValueError:
        return min(cap, 1.0)


def _max_items(spec: Mapping[str, Any]) -> int:
    try:
        return int(spec["components"]["schemas"]["ClassifyRequest"]["properties"]["items"]["maxItems"])
    except (KeyError, TypeError, ValueError):
        return DEFAULT_MAX_ITEMS


def _batches(texts: Sequence[str], size: int) -> Iterator[tuple[int, list[dict[str, str]]]]:
    for start in range(0, len(texts), size):
        chunk = texts[start : start + size]
        yield start, [{"id": str(start + i), "text": t} for i, t in enumerate(chunk)]


def _body(items: list[dict[str, str]], thresholds: Mapping[str, float] | None) -> dict[str, Any]:
    return {"items": items, **({"thresholds": dict(thresholds)} if thresholds else {})}


class Client:
    """Blocking client. `max_items`: batch size (default: the server's limit)."""

    def __init__(
        self,
        url: str,
        key: str | None = None,
        *,
        timeout: float = 60.0,
        max_retries: int = 5,
        max_retry_wait_s: float = 30.0,
        max_items: int | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._http = httpx.Client(base_url=url.rstrip("/"), headers=_headers(key), timeout=timeout, transport=transport)
        self.max_retries = max_retries
        self.max_retry_wait_s = max_retry_wait_s
        self.max_items = max_items
        self.retries = 0  # 503s retried so far (for monitoring)

    def _limit(self) -> int:
        if self.max_items is None:
            r = self._http.get("/openapi.json")
            self.max_items = _max_items(r.json()) if r.status_code == 200 else DEFAULT_MAX_ITEMS
        return self.max_items

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        for attempt in range(self.max_retries + 1):
            r = self._http.post("/classify", json=body)
            if r.status_code == 200:
                return r.json()
            if r.status_code != 503 or attempt == self.max_retries:
                raise _error(r)
            self.retries += 1
            time.sleep(_retry_after(r, self.max_retry_wait_s))
        raise AssertionError("unreachable")

    def classify(self, texts: Sequence[str], thresholds: Mapping[str, float] | None = None) -> list[dict[str, Any]]:
        """One result per text, in order: `labels`, `scores`, `truncated` (see the API's README)."""
        out: list[dict[str, Any]] = []
        for _, items in _batches(list(texts), self._limit()):
            out.extend(self._post(_body(items, thresholds))["results"])
        return out

    def model(self) -> dict[str, Any]:
        r = self._http.get("/v1/model")
        if r.status_code != 200:
            raise _error(r)
        return r.json()

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncClient:
    """asyncio client; `concurrency` batches are in flight at once (results still in input order)."""

    def __init__(
        self,
        url: str,
        key: str | None = None,
        *,
        timeout: float = 60.0,
        max_retries: int = 5,
        max_retry_wait_s: float = 30.0,
        max_items: int | None = None,
        concurrency: int = 4,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._http = httpx.AsyncClient(
            base_url=url.rstrip("/"), headers=_headers(key), timeout=timeout, transport=transport
        )
        self.max_retries = max_retries
        self.max_retry_wait_s = max_retry_wait_s
        self.max_items = max_items
        self.retries = 0
        self._slots = asyncio.Semaphore(max(1, concurrency))

    async def _limit(self) -> int:
        if self.max_items is None:
            r = await self._http.get("/openapi.json")
            self.max_items = _max_items(r.json()) if r.status_code == 200 else DEFAULT_MAX_ITEMS
        return self.max_items

    async def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        async with self._slots:
            for attempt in range(self.max_retries + 1):
                r = await self._http.post("/classify", json=body)
                if r.status_code == 200:
                    return r.json()
                if r.status_code != 503 or attempt == self.max_retries:
                    raise _error(r)
                self.retries += 1
                await asyncio.sleep(_retry_after(r, self.max_retry_wait_s))
        raise AssertionError("unreachable")

    async def classify(
        self, texts: Sequence[str], thresholds: Mapping[str, float] | None = None
    ) -> list[dict[str, Any]]:
        limit = await self._limit()
        answers = await asyncio.gather(
            *(self._post(_body(items, thresholds)) for _, items in _batches(list(texts), limit))
        )
        return [x for a in answers for x in a["results"]]

    async def model(self) -> dict[str, Any]:
        r = await self._http.get("/v1/model")
        if r.status_code != 200:
            raise _error(r)
        return r.json()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
