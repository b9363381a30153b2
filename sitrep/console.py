"""What every subcommand does with a user's mistake: one red line on stderr, exit code 2, no traceback."""

from __future__ import annotations

import typer


def fail(message: object, code: int = 2) -> typer.Exit:
    """Print `error: MESSAGE` and return the Exit to raise: `raise fail(exc) from exc`."""
    typer.secho(f"error: {message}", fg="red", err=True)
    return typer.Exit(code)
