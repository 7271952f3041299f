"""`python -m serving edit IMAGE (--mask MASK.png | --point X,Y[,LABEL] ...) (--prompt TEXT | --keyword WORD) -o OUT`.

Regenerates the background of a photo with blended SDXL and keeps the subject pixel-exact, through the pipeline
in this process (models from the MOODSHIFT_* settings) or through a running service (`--server URL`).
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Annotated, Any

import typer

from serving.cli.app import app, fail, read_file, read_image
from serving.cli.options import takes_edit_options
from serving.cli.segment import BoxOption, MaskOption, PointsOption, parse_subject


def variant_paths(output: Path, variants: int) -> list[Path]:
    """OUT.png for one variant; OUT-1.png, OUT-2.png, ... for several."""
    if variants == 1:
        return [output]
    return [output.with_name(f"{output.stem}-{index}{output.suffix}") for index in range(1, variants + 1)]


STAGE_LABELS = {"segment": "finding the subject…", "prompt": "reading the mood and writing the prompt…"}


@app.command("edit")
@takes_edit_options
def edit(
    image: Annotated[Path, typer.Argument(help="Photo to edit (PNG, JPEG, WebP, GIF, BMP or TIFF).")],
    output: Annotated[
        Path,
        typer.Option(
            "--output",
            "-o",
            help="Image to write (format from the extension, e.g. .png). With --variants N > 1 the files are "
            "OUT-1.png ... OUT-N.png next to it.",
        ),
    ],
    prompt: Annotated[str | None, typer.Option("--prompt", help="SDXL prompt for the new background.")] = None,
    keyword: Annotated[
        str | None,
        typer.Option(
            "--keyword",
            "-k",
            help="Instead of --prompt: your word (forest, galaxy...); the prompt is written from it and the photo's "
            "mood (Ollama, or the template fallback), as the service does.",
        ),
    ] = None,
    keywords: Annotated[
        str | None,
        typer.Option("--keywords", help="With --keyword: comma-separated mood keywords instead of reading the photo."),
    ] = None,
    mask: MaskOption = None,
    points: PointsOption = None,
    box: BoxOption = None,
    server: Annotated[
        str | None,
        typer.Option("--server", help="Run the edit on a Moodshift service (e.g. http://127.0.0.1:3000) over HTTP."),
    ] = None,
    preview_path: Annotated[
        Path | None,
        typer.Option(
            "--preview",
            help="Save a small preview of the background forming to this PNG while the edit runs (replaced at each "
            "step; open it in a viewer that reloads).",
        ),
    ] = None,
    edit_options: dict[str, Any] | None = None,
) -> None:
    """Give IMAGE a new background from --prompt or --keyword; the subject (--mask or clicks) stays pixel-exact
    inside its soft edge (--edge matte, the default) or entirely (--edge hard)."""
    from PIL import Image

    if (prompt is None) == (keyword is None):
        fail("give the new background either as --prompt TEXT or as --keyword WORD, not both")
    clicks, box_values = parse_subject(mask, points, box)
    if output.suffix.lower() not in Image.registered_extensions():
        fail(f"cannot tell the image format of {output}: use an extension such as .png or .jpg")
    moods = [word.strip() for word in keywords.split(",") if word.strip()] if keywords is not None else None
    request = {
        "prompt": prompt,
        "user_keyword": keyword,
        "keywords": moods,
        **(edit_options or {}),
        "preview": preview_path is not None,  # pictures nobody watches cost the service a little: only on request
    }
    if server:
        from serving.cli.remote import edit_on_server

        edit_on_server(server, image, mask, clicks, box_values, request, output, preview_path)
    else:
        _edit_in_process(image, mask, clicks, box_values, request, output, preview_path)


def _edit_in_process(
    image: Path,
    mask: Path | None,
    clicks: list,
    box: list[float] | None,
    request: dict[str, Any],
    output: Path,
    preview: Path | None,
) -> None:
    """The edit through the pipeline in this process: checked before any model loads, with a progress bar."""
    import numpy as np
    from PIL import Image

    from serving.cli.app import save_atomically
    from serving.core.errors import InputError
    from serving.core.images import png_bytes
    from serving.core.masks import mask_levels_from_png_bytes
    from serving.models.errors import WeightsError
    from serving.pipeline import Pipeline
    from serving.settings import get_settings

    settings = get_settings()
    picture = read_image(image, settings.max_image_pixels)
    pipeline = Pipeline.in_process(settings)  # models load on first use: a typo should not cost a model load
    texts = {name: request.pop(name) for name in ("prompt", "user_keyword", "keywords")}
    try:
        subject_mask = None if mask is None else mask_levels_from_png_bytes(read_file(mask), size=picture.size)
    except InputError as exc:
        fail(f"{mask}: {exc}")
    try:
        prepared = pipeline.prepare_edit(
            np.asarray(picture),
            subject_mask=subject_mask,
            points=clicks or None,
            box=box,
            options=request,
            **texts,
        )
    except (InputError, WeightsError, RuntimeError) as exc:  # mode fast asks the diffusion stage: it loads then
        fail(str(exc))
    try:
        diffusion = pipeline.diffusion.info()  # loads the models now, before the progress bar
        if prepared.clicks is not None:
            pipeline.segmentation.info()
    except (WeightsError, RuntimeError) as exc:
        fail(str(exc))
    with typer.progressbar(length=prepared.total_steps, label="denoising") as bar:
        shown = 0

        def on_step(step: int, total: int) -> None:
            nonlocal shown
            bar.update(step - shown)
            shown = step

        def on_stage(stage: str) -> None:
            if stage in STAGE_LABELS:
                typer.echo(f"\n{STAGE_LABELS[stage]}", err=True)

        try:
            outcome = pipeline.run_edit(
                prepared,
                job_id=uuid.uuid4().hex,
                on_stage=on_stage,
                on_step=on_step,
                on_preview=None if preview is None else lambda rgb: save_atomically(preview, png_bytes(rgb)),
            )
        except InputError as exc:  # e.g. the clicks gave an empty mask
            fail(str(exc))
        on_step(prepared.total_steps, prepared.total_steps)
    paths = variant_paths(output, len(outcome.images))
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        for path, edited in zip(paths, outcome.images, strict=True):
            Image.fromarray(edited).save(path)
    except (OSError, ValueError) as exc:  # ValueError: an extension Pillow cannot write
        fail(f"cannot write {output}: {exc}")
    width, height = picture.size
    for path, seed in zip(paths, outcome.seeds, strict=True):
        typer.echo(f"wrote {path} ({width}×{height}, seed {seed})")
    note = " — random weights, the background is noise" if diffusion.get("demo") else ""
    source = "" if outcome.prompt_source == "user" else f"; prompt ({outcome.prompt_source}): {outcome.prompt}"
    mode = f"{outcome.mode} mode" + (f" ({diffusion['fast']['model']})" if outcome.mode == "fast" else "")
    ran = f"{mode}, {outcome.steps} steps, guidance {outcome.guidance:g}"
    typer.echo(f"{outcome.timings['total_s']:.1f} s, {diffusion['model']}{note}, {ran}{source}")
