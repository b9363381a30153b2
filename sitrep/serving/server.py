"""Run the app under uvicorn with the settings' host, port, logging and graceful-shutdown timeout.

On SIGTERM/SIGINT uvicorn stops accepting connections, lets in-flight requests finish (up to
SITREP_DRAIN_TIMEOUT_S), then the app drains its batch queue; /readyz answers 503 from the first
signal on. SIGHUP reloads the configured bundle without a restart.
"""

from __future__ import annotations

import logging
import math
from types import FrameType

import uvicorn

from sitrep.models.bundle import load_bundle
from sitrep.serving.app import create_app
from sitrep.serving.settings import Settings


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, on_exit: object) -> None:
        super().__init__(config)
        self._on_exit = on_exit

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._on_exit()  # type: ignore[operator]
        super().handle_exit(sig, frame)


def serve(settings: Settings) -> None:
    """Check the bundle, then serve until a signal stops the process (blocking)."""
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    load_bundle(settings.bundle, verify=False)  # fail fast with BundleError before binding a port
    app = create_app(settings)
    state = app.state.sitrep

    def mark_draining() -> None:
        state.draining = True

    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        access_log=settings.access_log,
        timeout_graceful_shutdown=math.ceil(settings.drain_timeout_s),
        lifespan="on",
        server_header=False,
    )
    server = _Server(config, mark_draining)
    server.run()
    if not server.started:
        raise SystemExit(3)  # the lifespan (model load) failed; uvicorn logged why
