"""`python -m serving bench matte`: the soft edge's quality on the synthetic set and its time per photo size."""

import json
from pathlib import Path
from typing import Annotated

import typer

from serving.cli.app import bench_app, fail


@bench_app.command("matte")
def bench_matte(
    sizes: Annotated[str, typer.Option(metavar="MP,MP,...", help="Photo sizes in megapixels (4:3).")] = "1,12,24",
    repeats: Annotated[int, typer.Option(min=1, help="Timed runs per photo (the median is shown).")] = 1,
    json_path: Annotated[Path | None, typer.Option("--json", help="Also write the numbers to this JSON file.")] = None,
    figure: Annotated[
        Path | None,
        typer.Option(help="Also write the README's before/after edge crop (hard mask vs matte) to this PNG."),
    ] = None,
) -> None:
    """Alpha SAD in the band ÷ the hard mask's, colour error ÷ the raw colours', seconds per photo (CPU).

    The synthetic set is built from scikit-image's photos: it needs scikit-image (pip install scikit-image).
    """
    try:
        megapixels = tuple(float(part) for part in sizes.split(","))
    except ValueError:
        megapixels = ()
    if not megapixels or min(megapixels) <= 0:
        fail(f"--sizes {sizes!r} is not positive numbers separated by ','")
    try:
        import skimage  # noqa: F401
    except ImportError:
        fail("bench matte builds its photos from scikit-image: pip install scikit-image")
    from serving.bench.matte import edge_figure, format_table, run_matte_bench, to_json

    typer.echo("building the synthetic set and timing the matte ...", err=True)
    rows = run_matte_bench(megapixels, repeats=repeats)
    typer.echo(format_table(rows))
    if json_path is not None:
        json_path.write_text(json.dumps(to_json(rows), indent=2) + "\n")
        typer.echo(f"wrote {json_path}", err=True)
    if figure is not None:
        figure.parent.mkdir(parents=True, exist_ok=True)
        edge_figure().save(figure, optimize=True)
        typer.echo(f"wrote {figure}", err=True)
