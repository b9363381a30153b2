"""`sitrep eval`, `sitrep eval-crosslingual` and `sitrep bench models`. No logic here: see eval/*.py."""

from __future__ import annotations

import shlex
from pathlib import Path

import typer

from sitrep.console import fail

RUNTIME_HELP = "onnx-int8 (default), onnx, cuda or torch; ignored for a TF-IDF baseline directory."


def eval_command(
    ctx: typer.Context,
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
    ensemble: list[Path] | None = typer.Option(
        None, help="Another model to average with BUNDLE (repeat for more): the report scores the mean of their "
        "calibrated probabilities against the mean of their thresholds. Analysis only: what N models' inference "
        "would buy; the service runs one.",
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

    DIR/report.json has a stable schema (sitrep/eval/README.md); DIR/report.html is self-contained (plots
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

      # what two seeds averaged would buy, against the same baseline
      sitrep eval artifacts/models/default -d data/articles/dev.jsonl -r artifacts/reports/ens \\
          --ensemble artifacts/recipes/seed13 --runtime torch --baseline artifacts/models/tfidf
    """
    from sitrep.eval.predictors import PredictorError
    from sitrep.eval.report import EvalError, gate_failures, run_eval

    if max_regression is not None and baseline is None:
        raise fail("--max-regression needs --baseline")
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
            command=_command_line(ctx),
            ensemble=ensemble,
        )
        failures = gate_failures(result, fail_under=fail_under, max_regression=max_regression)
    except (EvalError, PredictorError) as exc:
        raise fail(str(exc)) from exc
    _print_summary(result, paths)
    if failures:
        for f in failures:
            typer.secho(f"gate failed: {f}", fg="red", err=True)
        raise typer.Exit(1)


def _command_line(ctx: typer.Context) -> str:
    """The `sitrep eval` command that reproduces this run: the bundle and every option not at its default."""
    parts = ["sitrep", "eval", shlex.quote(str(ctx.params["bundle"]))]
    for param in ctx.command.params:
        if param.name in ("bundle", "quiet") or not getattr(param, "opts", None):
            continue
        value = ctx.params.get(param.name)
        if value is None or value == param.default:
            continue
        flag = max(param.opts, key=len)
        if isinstance(value, list | tuple):
            parts += [x for v in value for x in (flag, shlex.quote(str(v)))]
        else:
            parts += [flag] if value is True else [flag, shlex.quote(str(value))]
    return " ".join(parts)


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


def compare_command(
    models: list[str] = typer.Argument(..., help="NAME=DIR (or DIR): bundles and/or TF-IDF baseline folders."),
    data: list[str] = typer.Option(
        ["articles=data/articles/test.jsonl", "test=data/test.jsonl", "zeroshot=data/zeroshot.jsonl"],
        "--data", "-d", help="NAME=FILE.jsonl labeled sets (repeat the option).",
    ),
    runtime: str = typer.Option("onnx-int8", help=RUNTIME_HELP),
    out: Path | None = typer.Option(None, "--out", "-o", help="Write OUT.json and OUT.md (OUT without suffix)."),
    threads: int | None = typer.Option(None, help="Inference threads."),
) -> None:
    """Several models side by side on several sets: macro-F1 with bootstrap 95% intervals, per-label
    precision/recall/F1, per-language macro-F1, ECE. The recipe table in sitrep/models/README.md comes
    from this command.

    Examples:

      sitrep eval-compare default=artifacts/models/default tfidf=artifacts/models/tfidf

      sitrep eval-compare a=artifacts/recipes/articles-cls b=artifacts/recipes/articles-mean \\
          --runtime torch -d articles=data/articles/test.jsonl -o artifacts/reports/recipes
    """
    from sitrep.eval.compare import compare_models, render_markdown
    from sitrep.eval.predictors import PredictorError
    from sitrep.eval.report import EvalError
    from sitrep.models.files import write_json_atomic, write_text_atomic

    def pairs(values: list[str], what: str) -> dict[str, Path]:
        out_: dict[str, Path] = {}
        for v in values:
            name, _, path = v.rpartition("=")
            name = name or Path(path).name
            if name in out_:
                raise fail(f"two {what} are named {name!r}; use NAME=PATH")
            out_[name] = Path(path)
        return out_

    try:
        result = compare_models(pairs(models, "models"), pairs(data, "sets"), runtime, threads,
                                log=lambda m: typer.echo(m, err=True))
    except (EvalError, PredictorError) as exc:
        raise fail(exc) from exc
    md = render_markdown(result)
    typer.echo(md)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out.with_suffix(".json"), result)
        write_text_atomic(out.with_suffix(".md"), md)
        typer.echo(f"written: {out.with_suffix('.json')}, {out.with_suffix('.md')}")


def register(app: typer.Typer, bench: typer.Typer) -> None:
    app.command("eval")(eval_command)
    app.command("eval-compare")(compare_command)
