"""The Typer application that every command module registers on, and what its commands share: clear errors,
reading images and lists, writing files."""

import json
import os
from pathlib import Path
from typing import Any

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


def parse_list(text: str, kind: type[int] | type[float] = float, separator: str = ",") -> list[Any] | None:
    """The numbers of a list such as "1,4,8" (each read as `kind`), or None when some part is not one; the caller
    checks their count and range and names what it wanted."""
    try:
        return [kind(part) for part in text.split(separator)]
    except ValueError:
        return None


def require_png(output: Path, what: str) -> None:
    """Refuse an output that is not named .png: the command writes PNG bytes whatever the name says."""
    if output.suffix.lower() != ".png":
        fail(f"{what} is a PNG: name the output .png, not {output.name}")


def check_writable(path: Path, option: str = "--json") -> None:
    """Before a long run: a clear error when the file it ends by writing could not be written (no such folder, a
    folder of that name, no permission), rather than a traceback after minutes of work."""
    folder = path.parent
    if path.is_dir():
        fail(f"{option} {path} is a folder: name a file")
    if not folder.is_dir():
        fail(f"{option} {path}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        fail(f"{option} {path}: no permission to write there")


def write_json(path: Path, data: Any) -> None:
    """The numbers of a benchmark as indented JSON, said on stderr (stdout keeps the table)."""
    save_atomically(path, (json.dumps(data, indent=2) + "\n").encode())
    typer.echo(f"wrote {path}", err=True)


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
