"""The middleware stack around the routes, and /docs served from local assets (works offline)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.middleware.gzip import GZipMiddleware
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from sitrep.serving.context import RequestContextMiddleware
from sitrep.serving.guard import RequestGuard
from sitrep.serving.prometheus import HttpMetricsMiddleware
from sitrep.serving.settings import Settings


def install_middleware(app: FastAPI, settings: Settings, metrics: Any, routes: frozenset[str]) -> None:
    """Request id → metrics → CORS → gzip → guard → routes (added innermost first)."""
    keys, admin_keys = settings.key_values(), settings.admin_key_values()
    app.add_middleware(
        RequestGuard,
        max_body_bytes=settings.max_body_bytes,
        api_keys=keys,
        admin_keys=admin_keys,
        body_timeout_s=settings.body_timeout_s,
    )
    if settings.gzip:
        app.add_middleware(GZipMiddleware, minimum_size=1024)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type", "Content-Encoding", "X-Request-ID"],
            expose_headers=["X-Request-ID", "Server-Timing", "Retry-After"],
            max_age=600,
        )
    app.add_middleware(HttpMetricsMiddleware, metrics=metrics, routes=routes)
    app.add_middleware(RequestContextMiddleware)


DOCS_ASSETS = "/docs-assets"


def mount_docs(app: FastAPI) -> None:
    """/docs (Swagger UI) from the assets of the `swagger-ui-bundle` package: nothing is fetched from a CDN.
    Without the package (not a `serve` install) it falls back to FastAPI's CDN links."""
    try:
        from swagger_ui_bundle import swagger_ui_path
    except ImportError:  # pragma: no cover - the serve extra pins it
        swagger_ui_path = None
    if swagger_ui_path is not None:
        app.mount(DOCS_ASSETS, StaticFiles(directory=str(swagger_ui_path)), name="docs-assets")
        assets = {
            "swagger_js_url": f"{DOCS_ASSETS}/swagger-ui-bundle.js",
            "swagger_css_url": f"{DOCS_ASSETS}/swagger-ui.css",
            "swagger_favicon_url": f"{DOCS_ASSETS}/favicon-32x32.png",
        }
    else:
        assets = {}

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="sitrep — API docs", **assets)
