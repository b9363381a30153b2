"""`sitrep serve` and `sitrep bench http`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer


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
    through SITREP_API_KEYS, so they never show in `ps`. See serving/README.md for the full table.

    Examples:

      sitrep serve artifacts/models/default --port 8000

      SITREP_API_KEYS=k1,k2 SITREP_MAX_WAIT_MS=3 sitrep serve artifacts/models/default

      curl -s localhost:8000/classify -H 'Content-Type: application/json' \\
           -d '{"items": [{"id": "a1", "text": "The group said it struck the base."}]}'

      kill -HUP <pid>     # reload the bundle in place (or POST /admin/reload with a key)
    """
    from pydantic import ValidationError

    from sitrep.models.bundle import BundleError
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
        for err in exc.errors():
            typer.secho(f"error: {'.'.join(map(str, err['loc']))}: {err['msg']}", fg="red", err=True)
        raise typer.Exit(2) from exc
    except BundleError as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(2) from exc


def bench_http(
    bundle: Path = typer.Argument(..., help="Model bundle directory."),
    concurrency: str = typer.Option("1,8,32", help="Comma-separated client concurrency levels."),
    sizes: str = typer.Option("1,32", help="Comma-separated sentences per request."),
    seconds: float = typer.Option(8.0, help="Measured seconds per cell (after a warm-up)."),
    runtime: str = typer.Option("onnx-int8", help="Runtime the server and the in-process baseline use."),
    threads: int | None = typer.Option(
        None, help="ONNX Runtime threads for both (default: all usable CPUs, in both)."
    ),
    max_batch_size: int = typer.Option(64, help="Server SITREP_MAX_BATCH_SIZE."),
    max_batch_tokens: int = typer.Option(512, help="Server SITREP_MAX_BATCH_TOKENS."),
    max_wait_ms: float = typer.Option(2.0, help="Server SITREP_MAX_WAIT_MS (batching on)."),
    data: list[Path] = typer.Option([Path("data/test.jsonl")], help="JSONL file(s) with a `text` field."),
    modes: str = typer.Option("on,off", help="Dynamic batching modes to compare: on, off or both."),
    json_out: Path | None = typer.Option(None, "--json", help="Write all measurements as JSON here."),
    markdown: Path | None = typer.Option(None, help="Write the result tables as Markdown here."),
) -> None:
    """Load-test the HTTP service from this process against servers on loopback, batching on vs off.

    For each mode a server subprocess is started on a free loopback port; every (request size,
    concurrency) cell then runs for SECONDS with a pool of keep-alive connections. Reported per cell:
    requests/s, sentences/s, p50/p95/p99 latency, errors, and the server's peak RSS in that cell;
    then the ratio of batching on to off, and of HTTP to the in-process runtime
    (`Classifier.classify` on the same sentences, measured first in this process).

    Examples:

      sitrep bench http artifacts/models/default

      sitrep bench http artifacts/models/default --seconds 5 --concurrency 32 --sizes 1 --json bench.json
    """
    from sitrep.bench.http import BenchConfig, render_markdown, run_bench

    def ints(text: str) -> list[int]:
        try:
            values = [int(x) for x in text.split(",") if x.strip()]
        except ValueError as exc:
            raise typer.BadParameter(f"expected comma-separated integers, got {text!r}") from exc
        if not values or min(values) < 1:
            raise typer.BadParameter(f"expected positive integers, got {text!r}")
        return values

    mode_list = [m.strip() for m in modes.split(",") if m.strip()]
    if not mode_list or any(m not in ("on", "off") for m in mode_list):
        raise typer.BadParameter("--modes takes 'on', 'off' or 'on,off'")
    config = BenchConfig(
        bundle=bundle,
        concurrency=ints(concurrency),
        sizes=ints(sizes),
        seconds=seconds,
        runtime=runtime,
        threads=threads,
        max_batch_size=max_batch_size,
        max_batch_tokens=max_batch_tokens,
        max_wait_ms=max_wait_ms,
        data=data,
        modes=mode_list,
    )
    try:
        report = run_bench(config)
    except (RuntimeError, FileNotFoundError, ValueError) as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(2) from exc
    text = render_markdown(report)
    typer.echo(text)
    if json_out:
        import json

        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    if markdown:
        markdown.parent.mkdir(parents=True, exist_ok=True)
        markdown.write_text(text + "\n", encoding="utf-8")


def register(app: typer.Typer, bench: typer.Typer) -> None:
    app.command("serve")(serve)
    bench.command("http")(bench_http)
