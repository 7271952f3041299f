"""`python -m serving edit IMAGE (--mask MASK.png | --point X,Y[,LABEL] ...) --prompt TEXT -o OUT.png`.

Regenerates the background of a photo with blended SDXL and keeps the subject pixel-exact. The subject comes
from a mask file or from clicks (SAM segmenter); models follow the MOODSHIFT_* settings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from serving.cli.app import app, fail, read_file, read_image
from serving.cli.segment import parse_numbers, parse_point, segment_clicks


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
        str | None,
        typer.Option("--negative-prompt", help="Negative prompt (default: MOODSHIFT_DEFAULT_NEGATIVE_PROMPT)."),
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
    server: Annotated[
        str | None,
        typer.Option("--server", help="Run the edit on a Moodshift service (e.g. http://127.0.0.1:3000) over HTTP."),
    ] = None,
) -> None:
    """Give IMAGE a new background from --prompt; the subject (--mask or clicks) stays pixel-exact."""
    from PIL import Image

    from serving.core.images import ImageInputError
    from serving.core.masks import mask_from_png_bytes
    from serving.settings import get_settings

    settings = get_settings()
    if (mask is None) == (not points and box is None):
        fail("give the subject either as --mask MASK.png or as --point X,Y[,LABEL] (and/or --box), not both")
    if output.suffix.lower() not in Image.registered_extensions():
        fail(f"cannot tell the image format of {output}: use an extension such as .png or .jpg")
    if server:
        options = {
            "negative_prompt": negative_prompt,
            "seed": seed,
            "steps": steps,
            "variants": variants,
            "guidance": guidance,
            "strength": strength,
            "feather": feather,
        }
        _edit_on_server(server, image, mask, points or [], box, prompt, options, output)
        return
    picture = read_image(image, settings.max_image_pixels)
    try:
        subject_mask = None if mask is None else mask_from_png_bytes(read_file(mask), size=picture.size)
    except ImageInputError as exc:
        fail(f"{mask}: {exc}")

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
        if subject_mask is None:  # the options first, then the segmenter's mask
            check_request(request, defaults, require_mask=False)
            request.subject_mask = segment_clicks(picture, points or [], box)[0].mask
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


def _edit_on_server(
    url: str,
    image: Path,
    mask: Path | None,
    points: list[str],
    box: str | None,
    prompt: str,
    options: dict,
    output: Path,
) -> None:
    """The same edit through the service's job API, with a progress bar fed by /edit_status."""
    import time

    from ui.client import ServiceClient, ServiceError, encode_image

    body = {"image": encode_image(read_file(image)), "prompt": prompt}
    body.update({key: value for key, value in options.items() if value is not None})
    if mask is not None:
        body["mask"] = encode_image(read_file(mask))
    else:
        body["points"] = [dict(zip(("x", "y", "label"), (*parse_point(text), 1)[:3], strict=True)) for text in points]
        if box is not None:
            body["box"] = parse_numbers(box, "--box", "X0,Y0,X1,Y1", (4,))
    client = ServiceClient(url)
    try:
        job = client.submit_edit(body)
        with typer.progressbar(length=job.total_steps, label="denoising") as bar:
            shown = 0
            while not (status := client.edit_status(job.job_id)).finished:
                bar.update(status.step - shown)
                shown = status.step
                time.sleep(0.25)
            bar.update(status.total - shown)
    except ServiceError as exc:
        fail(str(exc))
    if status.state != "done" or status.result is None:
        fail(f"the edit {status.state}: {status.error}")
    paths = variant_paths(output, len(status.result.images))
    output.parent.mkdir(parents=True, exist_ok=True)
    for path, data, used_seed in zip(paths, status.result.images, status.result.seeds, strict=True):
        _write_image(path, data)
        typer.echo(f"wrote {path} (seed {used_seed}) via {url}")


def _write_image(path: Path, png: bytes) -> None:
    """Write a PNG from the service in the format the path's extension asks for."""
    import io

    from PIL import Image

    try:
        Image.open(io.BytesIO(png)).save(path)
    except (OSError, ValueError) as exc:
        fail(f"cannot write {path}: {exc}")
