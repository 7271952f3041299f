"""`python -m serving edit IMAGE (--mask MASK.png | --point X,Y[,LABEL] ...) --prompt TEXT -o OUT.png`.

Regenerates the background of a photo with blended SDXL and keeps the subject pixel-exact. The subject comes
from a mask file or from clicks (SAM segmenter); models follow the MOODSHIFT_* settings.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from serving.cli.app import app, fail


def variant_paths(output: Path, variants: int) -> list[Path]:
    """OUT.png for one variant; OUT-1.png, OUT-2.png, ... for several."""
    if variants == 1:
        return [output]
    return [output.with_name(f"{output.stem}-{index}{output.suffix}") for index in range(1, variants + 1)]


@app.command("edit")
def edit(
    image: Annotated[Path, typer.Argument(help="Photo to edit (PNG, JPEG, WebP, GIF, BMP or TIFF).")],
    prompt: Annotated[str, typer.Option("--prompt", help="SDXL prompt for the new background.")],
    output: Annotated[
        Path,
        typer.Option(
            "--output",
            "-o",
            help="Image to write (format from the extension, e.g. .png). With --variants N > 1 the files are "
            "OUT-1.png ... OUT-N.png next to it.",
        ),
    ],
    mask: Annotated[
        Path | None, typer.Option("--mask", help="Subject mask image, same size as IMAGE: white = subject.")
    ] = None,
    points: Annotated[
        list[str] | None,
        typer.Option(
            "--point",
            "-p",
            help="Instead of --mask: a click X,Y[,LABEL] on the subject in image pixels (LABEL 1 = subject, "
            "default; 0 = not subject); repeat in click order. Uses the SAM segmenter.",
        ),
    ] = None,
    box: Annotated[str | None, typer.Option("--box", help="With or instead of --point: box X0,Y0,X1,Y1.")] = None,
    negative_prompt: Annotated[
        str | None, typer.Option("--negative-prompt", help="Negative prompt (default: MOODSHIFT_DEFAULT_...).")
    ] = None,
    seed: Annotated[
        int | None, typer.Option("--seed", help="Seed of the first variant (the others: seed+1, ...); random if unset.")
    ] = None,
    steps: Annotated[int | None, typer.Option("--steps", help="Denoising steps (default: settings).")] = None,
    variants: Annotated[int, typer.Option("--variants", help="Images to make, 1-8.")] = 1,
    guidance: Annotated[float | None, typer.Option("--guidance", help="Classifier-free guidance scale.")] = None,
    strength: Annotated[
        float, typer.Option("--strength", help="1.0 = new background from noise; lower keeps the old layout.")
    ] = 1.0,
    feather: Annotated[
        int | None, typer.Option("--feather", help="Soft edge in pixels, grown outward from the subject.")
    ] = None,
    shrink_steps: Annotated[
        int | None, typer.Option("--shrink-steps", help="Progressive mask shrinking over the first N steps.")
    ] = None,
) -> None:
    """Give IMAGE a new background from --prompt; the subject (--mask or clicks) stays pixel-exact."""
    from serving.core.images import ImageInputError, load_image
    from serving.core.masks import mask_from_png_bytes
    from serving.settings import get_settings

    settings = get_settings()
    if (mask is None) == (not points and box is None):
        fail("give the subject either as --mask MASK.png or as --point X,Y[,LABEL] (and/or --box), not both")
    try:
        picture = load_image(_read(image), settings.max_image_pixels)
        subject_mask = None if mask is None else mask_from_png_bytes(_read(mask), size=picture.size)
    except ImageInputError as exc:
        fail(str(exc))

    from serving.models.blended_sdxl import EditDefaults, EditOptionsError, EditRequest, check_request

    request = EditRequest(
        image=picture,
        subject_mask=subject_mask,
        prompt=prompt,
        negative_prompt=negative_prompt,
        seed=seed,
        variants=variants,
        steps=steps,
        guidance=guidance,
        strength=strength,
        shrink_steps=shrink_steps,
        feather=feather,
    )
    defaults = EditDefaults.from_settings(settings)
    try:  # checked before any model is built: a typo should not cost a model load
        if subject_mask is None:  # options first, with a stand-in mask, then the segmenter's mask
            check_request(replace(request, subject_mask=_stand_in_mask(picture.size)), defaults)
            request.subject_mask = _segment(picture, points or [], box)
        check_request(request, defaults)
    except EditOptionsError as exc:
        fail(str(exc))

    from serving.models.blended_sdxl import BlendedSDXLRunner
    from serving.models.errors import WeightsError

    try:
        runner = BlendedSDXLRunner.from_settings(settings)
    except (WeightsError, RuntimeError) as exc:
        fail(str(exc))
    total = runner.total_steps(steps or runner.defaults.steps, strength)
    with typer.progressbar(length=total, label="denoising") as bar:
        request.progress = lambda step, _total: bar.update(1)
        result = runner.run(request)
    paths = variant_paths(output, len(result.images))
    from PIL import Image

    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        for path, picture_out in zip(paths, result.images, strict=True):
            Image.fromarray(picture_out).save(path)
    except (OSError, ValueError) as exc:  # ValueError: an extension Pillow cannot write
        fail(f"cannot write {output}: {exc}")
    width, height = picture.size
    note = " — random weights, the background is noise" if runner.profile and runner.profile.is_demo else ""
    for path, used_seed in zip(paths, result.seeds, strict=True):
        typer.echo(f"wrote {path} ({width}×{height}, seed {used_seed})")
    typer.echo(
        f"{result.timings['total_s']:.1f} s at {result.working_size[0]}×{result.working_size[1]}, "
        f"{runner.model_name}{note}"
    )


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror or exc}")
        raise  # unreachable: fail exits


def _stand_in_mask(size: tuple[int, int]):
    """A valid subject mask (top rows subject) for checking the other options before segmenting."""
    import numpy as np

    width, height = size
    stand_in = np.zeros((height, width), dtype=bool)
    stand_in[: max(height // 2, 1)] = True
    if stand_in.all():  # a one-row image: split the columns instead
        stand_in[:, width // 2 :] = False
    return stand_in


def _segment(picture, points: list[str], box: str | None):
    """The subject mask from clicks/box with the SAM segmenter (checked before the model is built)."""
    from serving.cli.segment import _numbers, _point
    from serving.core.prompts import PromptError, validate_prompt
    from serving.models.errors import WeightsError
    from serving.settings import get_settings

    settings = get_settings()
    clicks = [_point(text) for text in points]
    box_values = None if box is None else _numbers(box, "--box", "X0,Y0,X1,Y1", (4,))
    try:
        prompt = validate_prompt(clicks, box_values, picture.size, settings.max_points)
    except PromptError as exc:
        fail(str(exc))
    from serving.models.sam import Segmenter

    try:
        segmenter = Segmenter.from_settings(settings)
    except (WeightsError, RuntimeError) as exc:
        fail(str(exc))
    return segmenter.segment(picture, prompt.points, prompt.box).mask
