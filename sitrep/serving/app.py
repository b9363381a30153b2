"""The FastAPI app: routes, request limits, and the lifespan (load → warm → ready → drain).

    from sitrep.serving.app import create_app
    from sitrep.serving.settings import Settings
    app = create_app(Settings(bundle="artifacts/models/default"))   # then run it with uvicorn

Routes: POST /classify, GET /healthz, /readyz, /metrics, /v1/model, POST /admin/reload; the OpenAPI
document is at /openapi.json and browsable at /docs.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from fastapi import Body, Depends, FastAPI
from fastapi.responses import JSONResponse, Response

from sitrep import __version__
from sitrep.serving import auth, context
from sitrep.serving.batcher import Overloaded, TooManyTokens
from sitrep.serving.errors import ApiError, error_response, install_error_handlers, not_ready
from sitrep.serving.lifecycle import BundleNotAllowed, LoadedModel, ReloadError, allowed_bundle
from sitrep.serving.middleware import install_middleware, mount_docs
from sitrep.serving.planning import Limits, build_results, plan_request, threshold_cut, too_long_error
from sitrep.serving.prometheus import CONTENT_TYPE_LATEST
from sitrep.serving.schemas import (
    DESCRIPTION,
    ERROR_RESPONSES,
    RELOAD_RESPONSES,
    ClassifyRequest,
    ClassifyResponse,
    ErrorResponse,
    ReloadRequest,
    ReloadResponse,
    Status,
)
from sitrep.serving.service import ServiceState
from sitrep.serving.settings import Settings

log = logging.getLogger("sitrep.serving")

ROUTES = frozenset(
    {"/classify", "/healthz", "/readyz", "/metrics", "/v1/model", "/admin/reload", "/openapi.json", "/docs"}
)
def create_app(settings: Settings | None = None, preloaded: LoadedModel | None = None) -> FastAPI:
    settings = settings or Settings()
    state = ServiceState(settings, preloaded)
    keys = settings.key_values()
    admin_keys = settings.admin_key_values()
    limits = Limits.from_settings(settings)  # the request planner's view of the settings, built once

    app = FastAPI(
        title="sitrep",
        version=__version__,
        description=DESCRIPTION,
        lifespan=state.lifespan,
        docs_url=None,  # served below from local assets: /docs works offline
        redoc_url=None,
        responses={500: {"model": ErrorResponse, "description": "A server fault (never a client mistake)."}},
    )
    app.state.sitrep = state
    install_error_handlers(app)
    install_middleware(app, settings, state.metrics, ROUTES)
    mount_docs(app)

    errors = ERROR_RESPONSES

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
        return await _classify(state, limits, request)

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
            return not_ready(f"not ready: {reason}", settings.retry_after_s)
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
            return not_ready("no model loaded yet", settings.retry_after_s)
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
        dependencies=[Depends(auth.require_key("/admin/reload", keys, admin_keys))],
        responses=RELOAD_RESPONSES,
    )
    async def admin_reload(request: ReloadRequest | None = Body(None)) -> dict[str, Any]:
        """Requests already accepted finish on the old model; new ones get the new model once it is warm.

        `bundle` must lie inside the models root (SITREP_MODELS_ROOT, default the parent of SITREP_BUNDLE);
        a relative path is taken relative to it. Needs a key from SITREP_ADMIN_KEYS.
        Also triggered by `kill -HUP <pid>` (reloads SITREP_BUNDLE, e.g. after moving a symlink).
        """
        target: Path | None = None
        try:
            if request is not None and request.bundle:
                target = allowed_bundle(request.bundle, settings.reload_root)
            previous, current = await state.models.reload(target)
        except BundleNotAllowed as exc:
            raise ApiError(403, "bundle_not_allowed", str(exc), "bundle") from exc
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


# --- POST /classify ----------------------------------------------------------------------------


async def _classify(state: ServiceState, limits: Limits, request: ClassifyRequest) -> Response:
    settings = state.settings
    if state.batcher is None or not state.ready:
        return not_ready("the model is not loaded yet", settings.retry_after_s)
    plan = plan_request(limits, request.items)
    model = state.models.current
    cut = threshold_cut(model.classifier.thresholds, request.threshold_overrides())
    try:
        result = await state.batcher.submit(plan.texts, model, cut, settings.long_text == "refuse", plan.contexts)
    except Overloaded as exc:
        return error_response(
            503,
            "overloaded" if exc.reason == "queue_full" else "shutting_down",
            str(exc),
            headers={"Retry-After": str(settings.retry_after_s)},
        )
    except TooManyTokens as exc:
        raise too_long_error(request.items, plan, exc.position, exc.max_tokens) from exc
    ctx = context.current()
    if ctx is not None:
        ctx.timings.update(queue=result.queue_s, model=result.model_s)
    results = build_results(request.items, plan, result.probs, result.labels, result.truncated)
    return JSONResponse({"model": result.model.info(), "results": results})
