"""Run the app under uvicorn with the settings' host, port, logging and graceful-shutdown timeout.

Before anything is served, `serve` binds the port (one line, exit 2, when it is taken) and loads, verifies
and warms the model (one line, exit 2, when the bundle is broken or lacks the runtime's file), so both
mistakes show at once and without a traceback; the lifespan then only installs the loaded model.

On SIGTERM/SIGINT uvicorn stops accepting connections, lets in-flight requests finish (up to
SITREP_DRAIN_TIMEOUT_S), then the app drains its batch queue; /readyz answers 503 from the first
signal on. SIGHUP reloads the configured bundle without a restart.
"""

from __future__ import annotations

import json
import logging
import math
import socket
from types import FrameType

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from sitrep.models.bundle import load_bundle
from sitrep.serving.app import create_app
from sitrep.serving.context import install_log_filter
from sitrep.serving.errors import error_body
from sitrep.serving.lifecycle import load_model
from sitrep.serving.settings import Settings


class ServeError(RuntimeError):
    """The service cannot start (port taken, …): a one-line message for the user."""


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, on_exit: object) -> None:
        super().__init__(config)
        self._on_exit = on_exit

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._on_exit()  # type: ignore[operator]
        super().handle_exit(sig, frame)


class JsonErrorsH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, answering a request that is not valid HTTP/1.1 (bad request line, header,
    Content-Length or chunk framing) with the API's JSON error body instead of plain text."""

    def send_400_response(self, msg: str) -> None:
        body = json.dumps(
            error_body("invalid_http", "the request is not valid HTTP/1.1 (request line, headers or body framing)")
        ).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        try:
            self.transport.write(self.conn.send(h11.Response(status_code=400, headers=headers, reason=b"Bad Request")))
            self.transport.write(self.conn.send(h11.Data(data=body)))
            self.transport.write(self.conn.send(h11.EndOfMessage()))
        except h11.LocalProtocolError:  # a response had already started: nothing more can be said
            pass
        self.transport.close()


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound now: a port in use is a one-line error before the model loads."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ServeError(f"cannot listen on {host}:{port}: {exc.strerror or exc} (SITREP_PORT / --port)") from exc
    sock.set_inheritable(True)
    return sock


def serve(settings: Settings) -> None:
    """Check the bundle, bind, load the model, then serve until a signal stops the process (blocking)."""
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    load_bundle(settings.bundle, verify=False)  # fail fast with BundleError before binding a port
    sock = bind(settings.host, settings.port)
    try:
        model = load_model(settings.bundle, settings)
    except BaseException:
        sock.close()
        raise
    app = create_app(settings, preloaded=model)
    state = app.state.sitrep

    def mark_draining() -> None:
        state.draining = True

    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        http=JsonErrorsH11Protocol,
        log_level=settings.log_level.lower(),
        access_log=settings.access_log,
        timeout_graceful_shutdown=math.ceil(settings.drain_timeout_s),
        lifespan="on",
        server_header=False,
    )
    install_log_filter()  # after uvicorn.Config set its loggers up
    server = _Server(config, mark_draining)
    server.run(sockets=[sock])
    if not server.started:
        raise SystemExit(3)  # the lifespan failed; uvicorn logged why
