"""The Typer application that every command module registers on."""

from pathlib import Path

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


def read_file(path: Path, what: str = "") -> bytes:
    """A file's bytes, or a clear error naming it (`what`: "mask " -> "cannot read mask PATH")."""
    try:
        return path.read_bytes()
    except OSError as exc:
        fail(f"cannot read {what}{path}: {exc.strerror or exc}")
        raise  # unreachable: fail exits


class UnreadableImage(Exception):
    """An image file that cannot be used; the message says why (the caller names the file)."""


def open_image(path: Path, max_pixels: int):
    """An upright RGB PIL image from a file (see `serving.core.images.load_image`); `UnreadableImage` if not."""
    from serving.core.images import ImageInputError, load_image

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UnreadableImage(f"cannot read image: {exc.strerror or exc}") from None
    try:
        return load_image(data, max_pixels)
    except ImageInputError as exc:
        raise UnreadableImage(str(exc)) from None


def read_image(path: Path, max_pixels: int):
    """`open_image`, or a clear error naming the file."""
    try:
        return open_image(path, max_pixels)
    except UnreadableImage as exc:
        fail(f"{path}: {exc}")


def save_atomically(path: Path, data: bytes) -> None:
    """Replace `path` in one step, so a viewer watching it never reads half a file; or a clear error."""
    partial = path.with_name(path.name + ".part")
    try:
        partial.write_bytes(data)
        partial.replace(path)
    except OSError as exc:
        fail(f"cannot write {path}: {exc.strerror or exc}")
