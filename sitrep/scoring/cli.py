"""`sitrep score` and `sitrep bench score` (wired into the root CLI by `register`).

Also runnable on its own: ``python -m sitrep.scoring.cli score BUNDLE -i IN -o OUT``.
"""

from __future__ import annotations

import errno
import json
import shutil
from pathlib import Path

import typer

from sitrep.console import fail
from sitrep.models.runtime import DEFAULT_RUNTIME, RUNTIMES
from sitrep.scoring.options import CPU_BATCH_SIZE, DEFAULT_CHUNK_ROWS, GPU_BATCH_SIZE, ScoreError, ScoreOptions


def score(
    bundle: Path = typer.Argument(..., help="Model bundle folder (from `sitrep train` and `sitrep export`)."),
    input: str = typer.Option(
        ...,
        "--input",
        "-i",
        help="A .jsonl/.csv/.parquet file, a folder (searched recursively) or a quoted glob.",
    ),
    output: Path = typer.Option(
        ..., "--output", "-o", help="Output folder of shards; rerunning the same command resumes it."
    ),
    id_column: str = typer.Option("id", help="Column (JSON field) holding each row's id."),
    text_column: str = typer.Option("text", help="Column (JSON field) holding the sentence or document."),
    input_format: str = typer.Option("auto", help="auto (from each file's suffix), jsonl, csv or parquet."),
    output_format: str = typer.Option("parquet", help="parquet or jsonl (same columns)."),
    documents: bool = typer.Option(
        False,
        "--documents",
        help="Texts are documents: split into sentences; output gets sentence_index/start/end.",
    ),
    include_text: bool = typer.Option(
        False, "--include-text", help="Add the scored sentence as a `text` column."
    ),
    runtime: str = typer.Option(DEFAULT_RUNTIME, help=f"One of {', '.join(RUNTIMES)} (cuda/torch for GPUs)."),
    device: str | None = typer.Option(
        None, help="torch runtime only: cpu, cuda, cuda:1 (default: cuda if any)."
    ),
    batch_size: int | None = typer.Option(
        None, help=f"Sentences per model call (default: {CPU_BATCH_SIZE} on CPU, {GPU_BATCH_SIZE} on GPU; "
        "GPU throughput: 1024-4096)."
    ),
    max_tokens: int | None = typer.Option(None, help="Cap on padded tokens per model call (GPU memory)."),
    chunk_rows: int = typer.Option(
        DEFAULT_CHUNK_ROWS, help="Input rows per committed shard (the resume unit)."
    ),
    tokenize_workers: int | None = typer.Option(
        None, help="Threads that split and tokenize ahead of the model."
    ),
    threads: int | None = typer.Option(None, help="ONNX Runtime / torch threads (default: one per core)."),
    engine: str = typer.Option("local", help="local (streaming, resumable) or ray (Ray Data, scale-out)."),
    ray_address: str | None = typer.Option(
        None, help="Ray cluster address, e.g. ray://head:10001 (default: local)."
    ),
    ray_actors: int = typer.Option(1, help="Ray: scoring actors (each loads the bundle once)."),
    gpu: bool | None = typer.Option(
        None, "--gpu/--no-gpu", help="Ray: one GPU per actor (default: for cuda)."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Delete OUTPUT's previous job and start over."),
    summary_json: Path | None = typer.Option(None, "--summary-json", help="Also write the run summary here."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar (messages still go to stderr)."),
) -> None:
    """Score files of sentences (or documents): one row per sentence, labels + 4 scores.

    Streams the input in chunks of --chunk-rows rows (memory stays flat however
    big the input is) and commits each chunk as a shard. Kill it at any moment
    (even kill -9) and run the same command again: it resumes after the last
    committed chunk, and every input row ends up exactly once in the output or
    in OUTPUT/_rejects.jsonl (no id, empty or non-text text: with the reason).
    A changed input, option or model is refused on resume (see --overwrite).

    Examples:

      sitrep score artifacts/models/default -i archive/2024.jsonl -o scored/2024

      sitrep score artifacts/models/default -i 'archive/*/*.csv' \\
        --id-column doc_id --text-column body --documents -o scored/docs

      sitrep score artifacts/models/default -i archive/ -o scored/all \\
        --runtime cuda --batch-size 2048

      sitrep score artifacts/models/default -i /shared/in/ -o /shared/out \\
        --engine ray --ray-address ray://head:10001 --ray-actors 8 --runtime cuda

    Read the result with pandas.read_parquet(OUTPUT).
    """
    from sitrep.models.bundle import BundleError
    from sitrep.models.runtime import RuntimeUnavailable

    try:
        opts = ScoreOptions(
            bundle=bundle, input=input, output=output, id_column=id_column, text_column=text_column,
            input_format=input_format, output_format=output_format, documents=documents,
            include_text=include_text, runtime=runtime, device=device, batch_size=batch_size,
            max_tokens=max_tokens, chunk_rows=chunk_rows, tokenize_workers=tokenize_workers, threads=threads,
            overwrite=overwrite,
        )  # fmt: skip
        if runtime not in RUNTIMES:
            raise ScoreError(f"--runtime must be one of {', '.join(RUNTIMES)}, not {runtime!r}")

        def log(msg: str) -> None:
            typer.echo(msg, err=True)

        if engine == "local":
            from sitrep.scoring.engine_local import score_local

            summary = score_local(opts, progress=not quiet, log=log)
        elif engine == "ray":
            from sitrep.scoring.engine_ray import score_ray

            summary = score_ray(
                opts, address=ray_address, actors=ray_actors, gpu=gpu, progress=not quiet, log=log
            )
        else:
            raise ScoreError(f"--engine must be 'local' or 'ray', not {engine!r}")
    except (ScoreError, BundleError, RuntimeUnavailable) as exc:
        raise fail(str(exc)) from exc
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise fail(disk_full_message(exc, output)) from exc
    except KeyboardInterrupt as exc:
        raise fail("interrupted; run the same command again to resume", 130) from exc
    if summary_json is not None:
        summary_json.parent.mkdir(parents=True, exist_ok=True)
        summary_json.write_text(json.dumps(summary.to_json(), indent=2) + "\n", encoding="utf-8")
    if not summary.already_done:
        typer.echo(
            f"{summary.rows:,} input rows → {summary.out_rows:,} output rows in {summary.shards:,} shards, "
            f"{summary.rejects:,} rejects ({summary.rows_per_s:,.0f} rows/s; model {summary.model_s:.1f} s, "
            f"tokenize {summary.tokenize_s:.1f} s over workers) → {summary.output}"
        )
    if summary.rejects:
        typer.echo(f"rejected rows and reasons: {Path(summary.output) / '_rejects.jsonl'}")


def disk_full_message(exc: OSError, output: Path) -> str:
    """One line for a full disk: the file being written and what is left on its filesystem."""
    path = Path(exc.filename) if exc.filename else output
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        free = f"{shutil.disk_usage(probe).free / 2**20:.1f} MiB free"
    except OSError:
        free = "free space unknown"
    return (
        f"disk full while writing {path} ({free} on that filesystem); "
        "free some space and run the same command again to resume"
    )


def register(app: typer.Typer, bench: typer.Typer) -> None:
    app.command("score")(score)


def main() -> None:
    """`python -m sitrep.scoring.cli`: the same commands without the root CLI."""
    app = typer.Typer(no_args_is_help=True, rich_markup_mode="rich", pretty_exceptions_show_locals=False)
    bench = typer.Typer(help="Benchmarks.", no_args_is_help=True)
    app.add_typer(bench, name="bench")
    register(app, bench)
    app()


if __name__ == "__main__":
    main()
