"""`sitrep serve` and `sitrep bench http`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from sitrep.console import fail


def serve(
    bundle: Path | None = typer.Argument(
        None, help="Model bundle directory [env SITREP_BUNDLE; default artifacts/models/default]."
    ),
    host: str | None = typer.Option(None, help="Address to bind [SITREP_HOST, default 127.0.0.1]."),
    port: int | None = typer.Option(None, "--port", "-p", help="Port [SITREP_PORT, default 8000]."),
    runtime: str | None = typer.Option(
        None, help="onnx-int8 (default), onnx, cuda or torch [SITREP_RUNTIME]."
    ),
    threads: int | None = typer.Option(
        None, help="ONNX Runtime intra-op threads [SITREP_THREADS, default: all usable CPUs]."
    ),
    batching: bool | None = typer.Option(
        None, "--batching/--no-batching", help="Merge concurrent requests [SITREP_BATCHING, default on]."
    ),
    max_batch_size: int | None = typer.Option(
        None, help="Sentences per runtime call [SITREP_MAX_BATCH_SIZE]."
    ),
    max_wait_ms: float | None = typer.Option(None, help="Batch collection wait [SITREP_MAX_WAIT_MS]."),
    queue_limit: int | None = typer.Option(None, help="Sentences queued before 503 [SITREP_QUEUE_LIMIT]."),
    long_text: str | None = typer.Option(
        None, help="'truncate' or 'refuse' over-long texts [SITREP_LONG_TEXT]."
    ),
    log_level: str | None = typer.Option(None, help="debug, info, warning … [SITREP_LOG_LEVEL]."),
) -> None:
    """Serve POST /classify (plus /healthz, /readyz, /metrics, /v1/model, /docs) over HTTP.

    Every option can also be set as a SITREP_* environment variable (options win); API keys only
    through SITREP_API_KEYS, so they never show in `ps`. See sitrep/serving/README.md for the full table.

    Examples:

      sitrep serve artifacts/models/default --port 8000

      SITREP_API_KEYS=k1,k2 SITREP_MAX_WAIT_MS=3 sitrep serve artifacts/models/default

      curl -s localhost:8000/classify -H 'Content-Type: application/json' \\
           -d '{"items": [{"id": "a1", "text": "The group said it struck the base."}]}'

      kill -HUP <pid>     # reload the bundle in place (or POST /admin/reload with a key)
    """
    from pydantic import ValidationError

    from sitrep.models.bundle import BundleError
    from sitrep.models.runtime import RuntimeUnavailable
    from sitrep.serving.server import ServeError
    from sitrep.serving.server import serve as run_server
    from sitrep.serving.settings import Settings

    overrides: dict[str, Any] = {
        k: v
        for k, v in dict(
            bundle=bundle,
            host=host,
            port=port,
            runtime=runtime,
            threads=threads,
            batching=batching,
            max_batch_size=max_batch_size,
            max_wait_ms=max_wait_ms,
            queue_limit=queue_limit,
            long_text=long_text,
            log_level=log_level,
        ).items()
        if v is not None
    }
    try:
        settings = Settings(**overrides)
        run_server(settings)
    except ValidationError as exc:
        raise fail("; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in exc.errors())) from exc
    except (BundleError, RuntimeUnavailable, ServeError) as exc:
        raise fail(f"{exc}") from exc


def register(app: typer.Typer, bench: typer.Typer) -> None:
    app.command("serve")(serve)
