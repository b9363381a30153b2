"""`sitrep`: the one console script. Each job package registers its own subcommands; no logic here."""

from __future__ import annotations

import typer

import sitrep.bench.cli as bench_cli
import sitrep.eval.cli as eval_cli
import sitrep.models.cli as models_cli
import sitrep.scoring.cli as batch_cli
import sitrep.serving.cli as serving_cli
import sitrep.training.cli as training_cli

app = typer.Typer(
    name="sitrep",
    help=(
        "Cross-lingual sentence classifier for conflict-news monitoring.\n\n"
        "Labels: claim, official_confirmation, casualty, retaliation — what each means, with the boundary rules: "
        "docs/labels.md in the repository.\n\n"
        "Typical flow: [bold]sitrep base build[/] → [bold]sitrep train[/] → [bold]sitrep export[/] → "
        "[bold]sitrep serve[/] / [bold]sitrep score[/] / [bold]sitrep eval[/]."
    ),
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_show_locals=False,
)


def _version(value: bool) -> None:
    if value:
        from sitrep import __version__

        typer.echo(f"sitrep {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    pass


bench = typer.Typer(help="Benchmarks: each compares its variants side by side in one run.", no_args_is_help=True)
app.add_typer(bench, name="bench")

models_cli.register(app, bench)
training_cli.register(app, bench)
serving_cli.register(app, bench)
batch_cli.register(app, bench)
eval_cli.register(app, bench)
bench_cli.register(app, bench)

if __name__ == "__main__":
    app()
