"""`python -m serving weights`: which weights are present or missing, and `--download` to fetch them."""

from typing import Annotated

import typer

from serving.cli.app import app, fail


def _human(size: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return ""


@app.command("weights")
def weights(
    download: Annotated[bool, typer.Option("--download", help="Fetch the selected SAM checkpoint and SDXL.")] = False,
) -> None:
    """List the weights Moodshift uses (present or missing, path, size); optionally download them."""
    from serving.models.errors import WeightsError
    from serving.models.weights import download_file, download_sdxl, list_weights
    from serving.settings import get_settings

    settings = get_settings()
    entries = list_weights(settings)
    typer.echo(f"{'stage':<10} {'model':<14} {'status':<8} {'size':>9}  path")
    for entry in entries:
        status = "present" if entry.present else "missing"
        mark = "*" if entry.selected else " "
        typer.echo(f"{entry.stage:<10} {entry.name:<14} {status:<8} {_human(entry.size_bytes):>9} {mark}{entry.path}")
    typer.echo("* = used by the current settings (MOODSHIFT_SAM_MODEL_TYPE, MOODSHIFT_SDXL_MODEL)")
    if not download:
        missing = [e for e in entries if e.selected and not e.present]
        if missing:
            typer.echo("Missing weights: the `auto` profile runs tiny demo models. Fetch them with --download.")
        return
    failures = []
    for entry in entries:
        if not entry.selected or entry.present:
            continue
        typer.echo(f"downloading {entry.name} from {entry.source} ...")
        try:
            if entry.stage == "segment":
                with typer.progressbar(length=100, label=entry.name) as bar:
                    shown = 0

                    def advance(done: int, total: int) -> None:
                        nonlocal shown
                        percent = int(100 * done / total) if total else 0
                        bar.update(percent - shown)
                        shown = percent

                    download_file(entry.source, entry.path, progress=advance)
            else:
                download_sdxl(entry.path)
        except WeightsError as exc:
            failures.append(str(exc))
            continue
        typer.echo(f"saved {entry.path}")
    if failures:
        fail("\n".join(failures))
