"""The FastAPI app: routes, request limits, and the lifespan (load → warm → ready → drain).

    from sitrep.serving.app import create_app
    from sitrep.serving.settings import Settings
    app = create_app(Settings(bundle="artifacts/models/default"))   # then run it with uvicorn

Routes: POST /classify, GET /healthz, /readyz, /metrics, /v1/model, POST /admin/reload; the OpenAPI
document is at /openapi.json and browsable at /docs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import Body, Depends, FastAPI
from fastapi.responses import JSONResponse, Response

from sitrep.models.labels import LABEL_INDEX, LABELS
from sitrep.models.text import Sentence, split_sentences
from sitrep.serving import auth
from sitrep.serving.batcher import BatchConfig, Batcher, JobResult, Overloaded, TooManyTokens
from sitrep.serving.errors import ApiError, error_response, install_error_handlers
from sitrep.serving.guard import RequestGuard
from sitrep.serving.lifecycle import LoadedModel, ModelManager, ReloadError
from sitrep.serving.prometheus import CONTENT_TYPE_LATEST, HttpMetricsMiddleware, Metrics
from sitrep.serving.schemas import (
    ClassifyRequest,
    ClassifyResponse,
    ErrorResponse,
    Item,
    ReloadRequest,
    ReloadResponse,
    Status,
    scores_dict,
)
from sitrep.serving.settings import Settings

log = logging.getLogger("sitrep.serving")

ROUTES = frozenset(
    {"/classify", "/healthz", "/readyz", "/metrics", "/v1/model", "/admin/reload", "/openapi.json", "/docs"}
)
DESCRIPTION = """
Tags each sentence with zero or more of `claim`, `official_confirmation`, `casualty` and `retaliation`
(Arabic, Persian, English and other languages). Scores are independent calibrated probabilities, one
per label (never a softmax across labels). Send single sentences as `text`, or whole articles as
`document` to have them split into sentences with character offsets.

Errors always look like `{"error": {"code", "message", "field"}}`. When the service is configured with
API keys, send `Authorization: Bearer KEY` or `X-API-Key: KEY`.
"""


class ServiceState:
    """What the routes share: settings, metrics, the model manager, the batcher, readiness."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.models = ModelManager(settings, self.metrics)
        self.batcher: Batcher | None = None
        self.ready = False
        self.draining = False
        self._background: set[asyncio.Task[Any]] = set()

    def set_ready(self, ready: bool) -> None:
        self.ready = ready
        self.metrics.ready.set(1 if ready else 0)

    def reload_in_background(self) -> None:
        """SIGHUP: reload the configured bundle; the outcome goes to the log and the reload metric."""
        task = asyncio.get_running_loop().create_task(self._reload_quietly())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _reload_quietly(self) -> None:
        with contextlib.suppress(ReloadError):  # logged and counted; the old model keeps serving
            await self.models.reload()


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    state = ServiceState(settings)
    keys = settings.key_values()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        model = await state.models.start()
        log.info(
            "serving %s %s with %s (%d intra-op threads), batching %s",
            model.name,
            model.version,
            model.runtime,
            settings.intra_op_threads,
            "on" if settings.batching else "off",
        )
        state.batcher = Batcher(
            BatchConfig(
                settings.batching,
                settings.max_batch_size,
                settings.max_batch_tokens,
                settings.max_wait_ms,
                settings.queue_limit,
            ),
            state.metrics,
        )
        state.batcher.start()
        loop = asyncio.get_running_loop()
        hup = _add_signal_handler(loop, signal.SIGHUP, state.reload_in_background)
        state.set_ready(True)
        try:
            yield
        finally:
            state.set_ready(False)
            state.draining = True
            if hup:
                loop.remove_signal_handler(signal.SIGHUP)
            await state.batcher.close(timeout=settings.drain_timeout_s)
            log.info("drained; bye")

    app = FastAPI(
        title="sitrep",
        version="1",
        description=DESCRIPTION,
        lifespan=lifespan,
        responses={500: {"model": ErrorResponse, "description": "A server fault (never a client mistake)."}},
    )
    app.state.sitrep = state
    install_error_handlers(app)
    app.add_middleware(RequestGuard, max_body_bytes=settings.max_body_bytes, api_keys=keys)
    app.add_middleware(HttpMetricsMiddleware, metrics=state.metrics, routes=ROUTES)

    errors: dict[int | str, dict[str, Any]] = {
        400: {"model": ErrorResponse, "description": "Invalid JSON or invalid UTF-8."},
        401: {
            "model": ErrorResponse,
            "description": "Missing or invalid API key (when keys are configured).",
        },
        413: {"model": ErrorResponse, "description": "Body over SITREP_MAX_BODY_BYTES."},
        415: {"model": ErrorResponse, "description": "Body not sent as application/json."},
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

    @app.post(
        "/classify",
        response_model=ClassifyResponse,
        responses=errors,
        dependencies=[Depends(auth.require_key("/classify", keys))],
        summary="Classify sentences or documents",
    )
    async def classify(request: ClassifyRequest = Body(...)) -> Response:
        """Labels and per-label probabilities for each item, in input order.

        Items carry `text` (one sentence) or `document` (an article, split into sentences with offsets).
        `thresholds` overrides the model's per-label thresholds for this request only.
        """
        return await _classify(state, request)

    @app.get("/healthz", response_model=Status, response_model_exclude_none=True,
             summary="Liveness: the process answers")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        response_model=Status,
        responses={503: errors[503]},
        summary="Readiness: a model is loaded and warmed and requests are accepted",
    )
    async def readyz() -> Response:
        if not state.ready or state.draining or state.batcher is None or not state.batcher.alive:
            reason = "draining" if state.draining else "loading the model" if not state.ready else "batcher down"
            return error_response(
                503,
                "not_ready",
                f"not ready: {reason}",
                headers={"Retry-After": str(max(1, settings.retry_after_s))},
            )
        return JSONResponse({"status": "ready", "model": state.models.current.info()})

    @app.get(
        "/metrics",
        summary="Prometheus metrics",
        response_class=Response,
        responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format."}},
    )
    async def metrics() -> Response:
        return Response(state.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.get(
        "/v1/model",
        summary="The served model and its manifest",
        dependencies=[Depends(auth.require_key("/v1/model", keys))],
        responses={401: errors[401], 503: errors[503]},
    )
    async def model_manifest() -> Response:
        if not state.models.loaded:
            return error_response(
                503,
                "not_ready",
                "no model loaded yet",
                headers={"Retry-After": str(max(1, settings.retry_after_s))},
            )
        model = state.models.current
        return JSONResponse(
            {
                "model": model.info(),
                "threads": settings.intra_op_threads,
                "manifest": model.classifier.bundle.summary(),
            }
        )

    @app.post(
        "/admin/reload",
        response_model=ReloadResponse,
        summary="Load another bundle (or the configured one again) and swap to it once warm",
        dependencies=[Depends(auth.require_key("/admin/reload", keys))],
        responses={
            401: errors[401],
            403: {"model": ErrorResponse, "description": "No API keys configured."},
            422: {"model": ErrorResponse, "description": "The bundle could not be loaded; nothing changed."},
        },
    )
    async def admin_reload(request: ReloadRequest | None = Body(None)) -> dict[str, Any]:
        """Requests already accepted finish on the old model; new ones get the new model once it is warm.

        Also triggered by `kill -HUP <pid>` (reloads SITREP_BUNDLE, e.g. after moving a symlink).
        """
        target = Path(request.bundle) if request is not None and request.bundle else None
        try:
            previous, current = await state.models.reload(target)
        except ReloadError as exc:
            raise ApiError(
                422, "bundle_invalid", f"reload failed, still serving the previous model: {exc}", "bundle"
            ) from exc
        return {"previous": previous.info(), "current": current.info(), "load_s": round(current.load_s, 3)}

    openapi = app.openapi

    def openapi_with_limits() -> dict[str, Any]:
        """The schema with this instance's configured limits (so clients and fuzzers see them)."""
        schema = openapi()
        items = schema["components"]["schemas"]["ClassifyRequest"]["properties"]["items"]
        items["maxItems"] = settings.max_items
        return schema

    app.openapi = openapi_with_limits  # type: ignore[method-assign]
    return app


def _add_signal_handler(loop: asyncio.AbstractEventLoop, sig: signal.Signals, callback: Any) -> bool:
    try:
        loop.add_signal_handler(sig, callback)
    except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or not a Unix loop
        return False
    return True


# --- POST /classify ----------------------------------------------------------------------------


class _Plan:
    """Where each item's sentences sit in the flat list sent to the batcher."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        # per item: (first index, count, sentences for a document or None, cut by the char limit)
        self.items: list[tuple[int, int, list[Sentence] | None, bool]] = []

    def locate(self, position: int) -> tuple[int, int | None]:
        """Flat position -> (item index, sentence index within a document or None)."""
        for i, (first, count, sentences, _) in enumerate(self.items):
            if first <= position < first + count:
                return i, (position - first) if sentences is not None else None
        raise IndexError(position)


def _plan(settings: Settings, items: list[Item]) -> _Plan:
    if len(items) > settings.max_items:
        raise ApiError(
            422,
            "too_many_items",
            f"{len(items)} items in one request; the limit is "
            f"{settings.max_items} (SITREP_MAX_ITEMS): split the request",
            "items",
        )
    refuse = settings.long_text == "refuse"
    seen: dict[str, int] = {}
    plan = _Plan()
    for i, item in enumerate(items):
        if item.id in seen:
            raise ApiError(
                422,
                "duplicate_id",
                f"id {item.id!r} is used by items[{seen[item.id]}] and items[{i}]; "
                "ids must be unique within a request",
                f"items[{i}].id",
            )
        seen[item.id] = i
        if item.text is None and item.document is None:
            raise ApiError(
                422,
                "missing_text",
                "each item needs `text` (a sentence) or `document` (an article)",
                f"items[{i}].text",
            )
        if item.text is not None and item.document is not None:
            raise ApiError(
                422,
                "text_and_document",
                "send either `text` or `document` in one item, not both",
                f"items[{i}].document",
            )
        if item.text is not None:
            text, cut = _limit(
                item.text, settings.max_text_chars, refuse, f"items[{i}].text", "SITREP_MAX_TEXT_CHARS"
            )
            plan.items.append((len(plan.texts), 1, None, cut))
            plan.texts.append(text)
        else:
            assert item.document is not None
            doc, cut = _limit(
                item.document,
                settings.max_document_chars,
                refuse,
                f"items[{i}].document",
                "SITREP_MAX_DOCUMENT_CHARS",
            )
            sentences = split_sentences(doc)
            plan.items.append((len(plan.texts), len(sentences), sentences, cut))
            plan.texts.extend(s.text for s in sentences)
        if len(plan.texts) > settings.max_sentences:
            raise ApiError(
                422,
                "too_many_sentences",
                f"the request holds more than {settings.max_sentences} "
                "sentences (SITREP_MAX_SENTENCES): send fewer documents per request",
                "items",
            )
    return plan


def _limit(value: str, limit: int, refuse: bool, field: str, env: str) -> tuple[str, bool]:
    if len(value) <= limit:
        return value, False
    if refuse:
        raise ApiError(422, "text_too_long", f"{len(value)} characters; the limit is {limit} ({env})", field)
    return value[:limit], True


def _thresholds(model: LoadedModel, overrides: dict[str, float]) -> np.ndarray | None:
    if not overrides:
        return None
    cut = np.array(model.classifier.thresholds, dtype=np.float32)
    for label, value in overrides.items():
        cut[LABEL_INDEX[label]] = value
    return cut


async def _classify(state: ServiceState, request: ClassifyRequest) -> Response:
    settings = state.settings
    if state.batcher is None or not state.ready:
        return error_response(
            503,
            "not_ready",
            "the model is not loaded yet",
            headers={"Retry-After": str(max(1, settings.retry_after_s))},
        )
    plan = _plan(settings, request.items)
    model = state.models.current
    try:
        result = await state.batcher.submit(
            plan.texts,
            model,
            _thresholds(model, request.threshold_overrides()),
            settings.long_text == "refuse",
        )
    except Overloaded as exc:
        return error_response(
            503,
            "overloaded" if exc.reason == "queue_full" else "shutting_down",
            str(exc),
            headers={"Retry-After": str(settings.retry_after_s)},
        )
    except TooManyTokens as exc:
        i, k = plan.locate(exc.position)
        item = request.items[i]
        where = f"sentence {k} of the document" if k is not None else "the text"
        raise ApiError(
            422,
            "text_too_long",
            f"{where} is longer than the model's {exc.max_tokens} tokens (SITREP_LONG_TEXT=refuse)",
            f"items[{i}].{'document' if item.document else 'text'}",
        ) from exc
    return JSONResponse({"model": result.model.info(), "results": _results(request.items, plan, result)})


def _results(items: list[Item], plan: _Plan, result: JobResult) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for item, (first, count, sentences, cut) in zip(items, plan.items, strict=True):
        probs = result.probs[first : first + count]
        labels = result.labels[first : first + count]
        truncated = result.truncated[first : first + count]
        row: dict[str, Any] = {"id": item.id}
        if item.lang is not None:
            row["lang"] = item.lang
        if sentences is None:
            row.update(labels=labels[0], scores=scores_dict(probs[0]), truncated=cut or truncated[0])
        else:
            present = {label for ls in labels for label in ls}
            best = probs.max(axis=0) if count else np.zeros(len(LABELS), dtype=np.float32)
            row.update(
                labels=[label for label in LABELS if label in present],
                scores=scores_dict(best),
                truncated=cut or any(truncated),
                sentences=[
                    {
                        "text": s.text,
                        "start": s.start,
                        "end": s.end,
                        "labels": labels[k],
                        "scores": scores_dict(probs[k]),
                        # the last sentence of a document cut at SITREP_MAX_DOCUMENT_CHARS is cut too
                        "truncated": truncated[k] or (cut and k == count - 1),
                    }
                    for k, s in enumerate(sentences)
                ],
            )
        out.append(row)
    return out
