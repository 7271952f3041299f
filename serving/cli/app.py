"""The Typer application that every command module registers on."""

import typer

app = typer.Typer(
    name="moodshift",
    help="Moodshift: new background, same subject. Commands for weights, editing, serving and benchmarks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
bench_app = typer.Typer(help="Benchmarks: print a table, optionally write JSON.", no_args_is_help=True)


def fail(message: str, code: int = 2) -> None:
    """Print a clear error (no traceback) and exit."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


@app.callback()
def _root() -> None:
    """Moodshift: new background, same subject. Settings come from MOODSHIFT_* variables (see README)."""
