"""`python -m serving bench matte`: the soft edge's quality on the synthetic set and its time per photo size."""

import math
from pathlib import Path
from typing import Annotated

import typer

from serving.cli.app import bench_app, check_writable, fail, parse_list, write_json


@bench_app.command("matte")
def bench_matte(
    sizes: Annotated[
        str | None,
        typer.Option(
            metavar="MP,MP,...",
            help="Photo sizes in megapixels (4:3) (default: the benchmark's own, from a working size to a phone's "
            "photo; the table names them).",
        ),
    ] = None,
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
    megapixels = None if sizes is None else tuple(parse_list(sizes) or ())
    if megapixels is not None and not (megapixels and all(0 < mp < math.inf for mp in megapixels)):
        fail(f"--sizes {sizes!r} is not positive numbers separated by ','")
    if json_path is not None:
        check_writable(json_path)
    try:
        import skimage  # noqa: F401
    except ImportError:
        fail("bench matte builds its photos from scikit-image: pip install scikit-image")
    from serving.bench.matte import SIZES_MP, edge_figure, format_table, run_matte_bench, to_json

    typer.echo("building the synthetic set and timing the matte ...", err=True)
    rows = run_matte_bench(megapixels or SIZES_MP, repeats=repeats)
    typer.echo(format_table(rows))
    if json_path is not None:
        write_json(json_path, to_json(rows))
    if figure is not None:
        try:
            figure.parent.mkdir(parents=True, exist_ok=True)
            edge_figure().save(figure, optimize=True)
        except OSError as exc:
            fail(f"cannot write {figure}: {exc.strerror or exc}")
        typer.echo(f"wrote {figure}", err=True)
