"""`python -m serving matte IMAGE [--mask MASK.png | --point X,Y[,LABEL] ... [--box X0,Y0,X1,Y1] [--auto]] -o OUT.png`.

Cuts the subject (a mask, clicks, or found automatically when neither is given) out as an RGBA PNG at the photo's
size: straight (not premultiplied) alpha, soft at the subject's edge, where the colours are the subject's own (the
old background's tint taken out).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from serving.cli.app import app, fail, read_file, read_image, require_png
from serving.cli.segment import AutoOption, BoxOption, MaskOption, PointsOption, parse_subject


@app.command("matte")
def matte(
    image: Annotated[Path, typer.Argument(help="Photo to cut the subject out of (PNG, JPEG, WebP, GIF, BMP or TIFF).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Cut-out to write: a .png with transparency.")],
    mask: MaskOption = None,
    points: PointsOption = None,
    box: BoxOption = None,
    auto: AutoOption = False,
) -> None:
    """Write the subject of IMAGE as a PNG with transparency: a soft edge with the subject's own colours."""
    import numpy as np

    from serving.core.errors import InputError
    from serving.core.images import png_bytes
    from serving.core.masks import mask_levels_from_png_bytes
    from serving.models.errors import WeightsError
    from serving.pipeline import Pipeline
    from serving.settings import get_settings

    clicks, box_values = parse_subject(mask, points, box, auto)
    require_png(output, "a cut-out (with transparency)")
    settings = get_settings()
    picture = read_image(image, settings.max_image_pixels)
    subject_mask = None
    if mask is not None:
        try:
            subject_mask = mask_levels_from_png_bytes(read_file(mask, "mask "), size=picture.size)
        except InputError as exc:
            fail(f"{mask}: {exc}")
    pipeline = Pipeline.in_process(settings)  # SAM loads only for clicks, after they are checked
    try:
        cutout = pipeline.cutout(
            np.asarray(picture), subject_mask=subject_mask, points=clicks or None, box=box_values, auto=auto
        )
    except (InputError, WeightsError, RuntimeError) as exc:
        fail(str(exc))
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_bytes(png_bytes(cutout.rgba))
    except OSError as exc:
        fail(f"cannot write {output}: {exc.strerror or exc}")
    alpha = cutout.rgba[..., 3]
    width, height = picture.size
    typer.echo(
        f"wrote {output} ({width}×{height} RGBA: {100 * (alpha == 255).mean():.1f}% opaque subject, "
        f"{100 * ((alpha > 0) & (alpha < 255)).mean():.1f}% soft edge)"
    )
