"""`python -m serving segment IMAGE [--auto] [--point X,Y[,LABEL] ...] [--box X0,Y0,X1,Y1] -o MASK.png`: one subject
mask: the automatic subject (no clicks), refined by clicks with --auto, or SAM from the clicks; and the parsing of
clicks, boxes and subject options that `edit` and `matte` share."""

from pathlib import Path
from typing import Annotated

import typer

from serving.cli.app import app, fail, parse_list, read_image, require_png


def parse_numbers(text: str, option: str, shapes: str, counts: tuple[int, ...]) -> list[float]:
    """Comma-separated numbers of one of the `counts` lengths, or a clear error naming the option and text."""
    values = parse_list(text) or []
    if len(values) not in counts:
        fail(f"{option} {text!r} is not {shapes} (comma-separated numbers, no spaces needed)")
    return values


def parse_point(text: str) -> tuple[float, ...]:
    """A click `X,Y[,LABEL]` from the command line (LABEL 1 = subject, the default; 0 = not subject)."""
    values = parse_numbers(text, "--point", "X,Y or X,Y,LABEL", (2, 3))
    if len(values) == 3 and values[2].is_integer():
        values[2] = int(values[2])  # keep a clean 0/1 label; anything else is reported by the click check
    return tuple(values)


def parse_box(text: str) -> list[float]:
    """A box `X0,Y0,X1,Y1` from the command line."""
    return parse_numbers(text, "--box", "X0,Y0,X1,Y1", (4,))


# The subject of `segment`, `edit` and `matte`: clicks and/or a box, or nothing (the automatic subject); `edit` and
# `matte` also take a mask file instead.
MaskOption = Annotated[
    Path | None,
    typer.Option(
        "--mask",
        help="Instead of clicks: a subject mask image, same size as IMAGE: white = subject (grey = a soft edge).",
    ),
]
PointsOption = Annotated[
    list[str] | None,
    typer.Option(
        "--point",
        "-p",
        metavar="X,Y[,LABEL]",
        help="A click X,Y[,LABEL] on the subject in image pixels, origin top-left (LABEL 1 = subject, default; "
        "0 = not subject); repeat in click order. Uses the SAM segmenter (with --auto: refines the automatic one).",
    ),
]
BoxOption = Annotated[
    str | None, typer.Option("--box", metavar="X0,Y0,X1,Y1", help="With or instead of --point: a box around it.")
]
AutoOption = Annotated[
    bool,
    typer.Option(
        "--auto",
        help="Start from the automatic subject (a salient-object model) and refine it with --point/--box, instead "
        "of SAM from the clicks alone. With no subject given at all it is found automatically anyway.",
    ),
]


def parse_subject(
    mask: Path | None, points: list[str] | None, box: str | None, auto: bool = False
) -> tuple[list, list[float] | None]:
    """The clicks and box of --point/--box (none: the automatic subject); a clear error for a mask with them."""
    if mask is not None and (points or box is not None or auto):
        fail("give the subject either as --mask MASK.png or as --point X,Y[,LABEL] and/or --box (or --auto), not both")
    return [parse_point(text) for text in points or []], None if box is None else parse_box(box)


@app.command("segment")
def segment(
    image: Annotated[Path, typer.Argument(help="Photo to segment (PNG, JPEG, WebP, GIF, BMP or TIFF).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Mask .png to write: white = subject, image size.")],
    points: PointsOption = None,
    box: BoxOption = None,
    auto: AutoOption = False,
) -> None:
    """Write the subject mask of IMAGE: the automatic subject with no clicks (or --auto with clicks refining it),
    else SAM from the clicks and/or box (models from the MOODSHIFT_* settings)."""
    import numpy as np

    from serving.core.errors import InputError
    from serving.core.masks import mask_to_png_bytes
    from serving.models.errors import WeightsError
    from serving.pipeline import Pipeline
    from serving.settings import get_settings

    clicks, box_values = parse_subject(None, points, box, auto)
    require_png(output, "a mask")
    settings = get_settings()
    picture = read_image(image, settings.max_image_pixels)
    pipeline = Pipeline.in_process(settings)
    auto = pipeline.wants_auto(clicks, box_values, auto)
    try:  # the clicks are checked before the model is built: a typo should not cost a model load
        pipeline.check_clicks(picture.size, clicks, box_values, auto)
        model = pipeline.segmentation.info()
        result = pipeline.segment(np.asarray(picture), clicks, box_values, auto)
    except (InputError, WeightsError, RuntimeError) as exc:  # RuntimeError: no CUDA, or no salient model
        fail(str(exc))
    subject_mask = result.mask
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_bytes(mask_to_png_bytes(subject_mask))
    except OSError as exc:
        fail(f"cannot write {output}: {exc.strerror or exc}")
    width, height = picture.size
    typer.echo(
        f"wrote {output} ({width}×{height}, subject {100 * subject_mask.mean():.1f}% of pixels, "
        f"score {result.score:.3f}, {result.engine})"
    )
    if model["demo"] and result.engine == model["model"]:  # SAM with random weights made this mask
        typer.echo("note: demo model with random weights; the mask is arbitrary (see `python -m serving weights`)")
