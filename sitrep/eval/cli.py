"""`sitrep eval`, `sitrep eval-crosslingual` and `sitrep bench models`. No logic here: see eval/*.py."""

from __future__ import annotations

from pathlib import Path

import typer

RUNTIME_HELP = "onnx-int8 (default), onnx, cuda or torch; ignored for a TF-IDF baseline directory."


def _fail(msg: str, code: int = 2) -> typer.Exit:
    typer.secho(f"error: {msg}", fg="red", err=True)
    return typer.Exit(code)


def eval_command(
    bundle: Path = typer.Argument(..., help="Model bundle directory (or a TF-IDF baseline directory)."),
    data: Path = typer.Option(..., "--data", "-d", help="Labeled JSONL: id, text, labels, optional lang."),
    report: Path = typer.Option(
        ..., "--report", "-r", help="Directory for report.json, report.md, report.html."
    ),
    runtime: str = typer.Option("onnx-int8", help=RUNTIME_HELP),
    baseline: Path | None = typer.Option(
        None, help="A second model to compare against: a bundle or `sitrep train --arch tfidf` output."
    ),
    baseline_runtime: str | None = typer.Option(
        None, help="Runtime for a bundle baseline (default: --runtime)."
    ),
    fail_under: float | None = typer.Option(
        None, help="Exit 1 when macro-F1 (0-1) is below this, e.g. 0.85.", min=0.0, max=1.0
    ),
    max_regression: float | None = typer.Option(
        None,
        help="Exit 1 when macro-F1, overall or in any language, fell more than this many F1 points "
        "(0.5 = 0.005) below --baseline.",
        min=0.0,
    ),
    errors: int = typer.Option(5, help="Worst false positives and false negatives listed per label.", min=0),
    threads: int | None = typer.Option(None, help="Inference threads (default: one per physical core)."),
    quiet: bool = typer.Option(False, help="No progress bar."),
) -> None:
    """Score a model on labeled JSONL and write an eval report (JSON first, then Markdown and HTML).

    DIR/report.json has a stable schema (eval/README.md); DIR/report.html is self-contained (plots
    inlined) and opens in a browser; DIR/report.md links DIR/plots/*.png. A label with no positive
    example in a slice (e.g. one language) is left out of that slice's macro-F1, and the report says so.

    Exit status: 0 report written, 1 a --fail-under / --max-regression gate failed (the report is
    still written), 2 bad input (unreadable data, not a bundle, runtime not available).

    Examples:

      sitrep eval artifacts/models/default --data data/test.jsonl --report artifacts/reports/test

      sitrep eval artifacts/models/default -d data/zeroshot.jsonl -r artifacts/reports/zeroshot --runtime onnx

      # gate a retrained model: no language may lose more than 1 point, macro-F1 at least 0.85
      sitrep eval artifacts/models/new -d data/test.jsonl -r artifacts/reports/new \\
          --baseline artifacts/models/default --max-regression 1.0 --fail-under 0.85

      sitrep eval artifacts/models/default -d data/test.jsonl -r artifacts/reports/vs-tfidf \\
          --baseline artifacts/models/tfidf
    """
    from sitrep.eval.predictors import PredictorError
    from sitrep.eval.report import EvalError, gate_failures, run_eval

    if max_regression is not None and baseline is None:
        raise _fail("--max-regression needs --baseline")
    try:
        result, paths = run_eval(
            bundle,
            data,
            report,
            runtime=runtime,
            baseline=baseline,
            baseline_runtime=baseline_runtime,
            threads=threads,
            n_errors=errors,
            progress=not quiet,
        )
        failures = gate_failures(result, fail_under=fail_under, max_regression=max_regression)
    except (EvalError, PredictorError) as exc:
        raise _fail(str(exc)) from exc
    _print_summary(result, paths)
    if failures:
        for f in failures:
            typer.secho(f"gate failed: {f}", fg="red", err=True)
        raise typer.Exit(1)


def _print_summary(report: dict, paths: dict[str, Path]) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from sitrep.eval.render import console_tables

    console = Console()
    for header, rows in console_tables(report):
        table = Table(*header)
        for row in rows:
            table.add_row(*row)
        console.print(table)
    for note in report["notes"]:
        console.print(Text.assemble(("note", "yellow"), f": {note}"), soft_wrap=True)
    worse = [r for r in report["comparison"] if r["worse"]]
    if report["comparison"]:
        console.print(
            f"{len(worse)} of {len(report['comparison'])} compared metrics got worse than the baseline"
        )
    console.print(f"report: {paths['json']}  {paths['markdown']}  {paths['html']}", soft_wrap=True)


def crosslingual_command(
    out: Path = typer.Option(
        Path("artifacts/crosslingual"),
        "--out",
        "-o",
        help="Directory for the two bundles and crosslingual.json / .md.",
    ),
    config: Path | None = typer.Option(
        None, "--config", "-c", help="Training TOML (default: sitrep/training/configs/default.toml)."
    ),
    test: Path = typer.Option(Path("data/test.jsonl"), help="In-language test set (the training languages)."),
    zeroshot: Path = typer.Option(Path("data/zeroshot.jsonl"), help="Languages never trained on."),
    source_lang: str = typer.Option("en", help="The one language of the source-only model."),
    runtime: str = typer.Option(
        "torch", help="Runtime to score with; an ONNX runtime exports each bundle first."
    ),
    epochs: int | None = typer.Option(None, help="Override the config's epochs."),
    max_steps: int | None = typer.Option(
        None, help="Stop each training run after this many optimizer steps."
    ),
    base_model: str | None = typer.Option(None, help="Override the config's base model."),
    threads: int | None = typer.Option(None, help="torch / ONNX Runtime threads."),
    force: bool = typer.Option(
        False, help="Retrain bundles that already exist under OUT (default: reuse them)."
    ),
    quiet: bool = typer.Option(False, help="No progress bars."),
) -> None:
    """The cross-lingual protocol: train on English only and on all training languages, compare per language.

    Trains OUT/en-only (train and dev filtered to --source-lang) and OUT/all (every language in the
    training file) with the same config, scores both on --test and --zeroshot through the runtime,
    and writes OUT/crosslingual.json and OUT/crosslingual.md: macro-F1 per language for each
    model, the transfer gap (en-only minus all, per language; negative = what target-language
    training data buys) and each model's drop from its English score. Existing bundles are
    reused, so an interrupted run continues; --force retrains. On 2 CPU cores with the default
    config each training run takes about 15 minutes.

    Examples:

      sitrep eval-crosslingual --out artifacts/crosslingual

      sitrep eval-crosslingual -c sitrep/training/configs/default.toml --epochs 2 --out /tmp/xl

      # the default model was trained on all languages with the default config: reuse it as `all`
      cp -al artifacts/models/default artifacts/crosslingual/all && sitrep eval-crosslingual
    """
    from sitrep.training.crosslingual import CrosslingualError, run_crosslingual

    try:
        result = run_crosslingual(
            out,
            config=config,
            eval_files={"test": test, "zeroshot": zeroshot},
            source_lang=source_lang,
            runtime=runtime,
            overrides={
                "epochs": epochs,
                "max_steps": max_steps,
                "base_model": base_model,
                "threads": threads,
            },
            force=force,
            progress=not quiet,
            log=typer.echo,
        )
    except CrosslingualError as exc:
        raise _fail(str(exc)) from exc
    typer.echo(result["markdown"])
    typer.echo(f"written: {result['paths']['json']}  {result['paths']['markdown']}")


def bench_models_command(
    bundle: Path = typer.Argument(..., help="Model bundle directory (exported: onnx/*.onnx)."),
    data: Path = typer.Option(Path("data/test.jsonl"), help="Labeled JSONL to draw the sentences from."),
    sentences: int = typer.Option(
        256, min=1, help="How many news-length sentences (same list for every variant)."
    ),
    batch_sizes: str = typer.Option("1,32", help="Comma-separated batch sizes."),
    variants: str = typer.Option(
        "pipeline,torch,onnx,onnx-int8,cuda",
        help="Comma-separated: pipeline (transformers fp32), torch, onnx, onnx-int8, cuda (fp16, GPU only).",
    ),
    min_batches: int = typer.Option(
        24, min=1, help="Time at least this many request batches per variant and batch size."
    ),
    rounds: int = typer.Option(
        3, min=1, help="Interleave the variants in this many rounds (each gets one bulk pass per round)."
    ),
    threads: int | None = typer.Option(
        None, help="Threads for every variant and the GEMM (default: all CPUs)."
    ),
    gemm_size: int = typer.Option(1024, min=16, help="M = N = K of the peak GEMM measurement."),
    out: Path = typer.Option(
        Path("artifacts/reports/bench-models"), "--out", "-o", help="Directory for bench.json and bench.md."
    ),
) -> None:
    """Side by side on the same sentences: the transformers pipeline vs our runtimes, batch 1 and 32.

    Variants: `pipeline` (transformers text-classification pipeline, fp32 — what a user would pick
    instead), our runtime with `torch`, `onnx` (fp32), `onnx-int8`, and `cuda` (fp16, only with a GPU;
    otherwise the JSON says why it was skipped). Each variant runs in its own subprocess (so peak
    RSS is that variant's) and warms up; then the variants are timed interleaved, round by round in
    a rotating order, so load from other processes falls on all of them alike. Request mode: the
    sentences in consecutive batches, one call each — sentences/s and p50/p99 latency per batch
    (tokenization included); bulk mode: the whole list in one call at that batch size (our runtime
    sorts by length, the pipeline keeps input order) — sentences/s. Also: peak RSS, each one's
    ratios to the pipeline, and macro-F1 on the sentences' gold labels (Δ to onnx fp32).

    It also times a fp32 MatMul and int8 MatMulInteger (u8×s8, u8×u8) of size --gemm-size through
    ONNX Runtime and reports which fraction of that peak the fp32 / int8 models reach (model FLOPs
    per sentence from the config's shapes and the token counts), and whether onnx-int8 meets ≥ 4×
    the pipeline's bulk sentences/s at batch 32 with macro-F1 at most 0.5 point below fp32.
    Timings are wall-clock; the load average at the start and end is recorded.

    Examples:

      sitrep bench models artifacts/models/default

      sitrep bench models artifacts/models/default --sentences 512 --variants pipeline,onnx,onnx-int8
    """
    from sitrep.bench.models import BenchError, BenchSpec, run_bench

    try:
        spec = BenchSpec(
            bundle=bundle,
            data=data,
            sentences=sentences,
            batch_sizes=[int(x) for x in batch_sizes.split(",") if x.strip()],
            variants=[x.strip() for x in variants.split(",") if x.strip()],
            min_batches=min_batches,
            rounds=rounds,
            threads=threads,
            gemm_size=gemm_size,
        )
        result = run_bench(spec, out, log=typer.echo)
    except ValueError as exc:
        raise _fail(str(exc)) from exc
    except BenchError as exc:
        raise _fail(str(exc)) from exc
    typer.echo(result["markdown"])
    typer.echo(f"written: {result['paths']['json']}  {result['paths']['markdown']}")


def register(app: typer.Typer, bench: typer.Typer) -> None:
    app.command("eval")(eval_command)
    app.command("eval-crosslingual")(crosslingual_command)
    bench.command("models")(bench_models_command)
