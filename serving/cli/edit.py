"""`python -m serving edit PHOTO... (--prompt TEXT | --keyword WORD) -o OUT` — one photo, or a folder of them.

Regenerates the background of each photo with blended SDXL and keeps the subject pixel-exact: the subject is found
automatically unless --mask or clicks name it. Runs the pipeline in this process (models from the MOODSHIFT_*
settings) or on a running service (`--server URL`, with `--concurrency N` edits in flight so the service's adaptive
batching has something to batch). Several photos (or `-o FOLDER/`) write one output per photo, named after it, under
one progress bar; a photo that fails is reported and skipped, a rerun skips the outputs already there.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from serving.cli.app import UnreadableImage, app, fail, open_image
from serving.cli.options import takes_edit_options
from serving.cli.segment import AutoOption, BoxOption, MaskOption, PointsOption, parse_subject

STAGE_LABELS = {"segment": "finding the subject…", "prompt": "reading the mood and writing the prompt…"}
POLL_S = 0.2
MAX_CONCURRENCY = 32  # edits in flight from one command line (`edit --server`, `bench serve --folder`)
Progress = Callable[[float], None]  # the fraction of one photo's edit done so far


class PhotoFailed(Exception):
    """One photo could not be edited; the message says why. The other photos go on."""


class EditorUnavailable(Exception):
    """No photo can be edited (models that do not load, a service that does not answer): everything stops."""


@dataclass(frozen=True)
class Subject:
    """What to keep, as the command line gave it: a mask file, clicks and/or a box, and --auto."""

    mask: Path | None
    clicks: list[tuple[float, ...]]
    box: list[float] | None
    auto: bool


@dataclass(frozen=True)
class Edited:
    """One photo's results (HWC uint8 each), their seeds, and what to say after them (time, model, prompt)."""

    images: list[np.ndarray]
    seeds: list[int]
    detail: str


@dataclass
class PhotoJob:
    """A photo, the files it writes (one per variant), and how far its edit is (0 to 1)."""

    photo: Path
    outputs: list[Path]
    done: float = 0.0
    error: str | None = None


def variant_paths(output: Path, variants: int) -> list[Path]:
    """OUT.png for one variant; OUT-1.png, OUT-2.png, ... for several."""
    if variants == 1:
        return [output]
    return [output.with_name(f"{output.stem}-{index}{output.suffix}") for index in range(1, variants + 1)]


def is_folder_output(output: Path, photos: int) -> bool:
    """Several photos, or an output that names a folder (existing, or written with a trailing slash)."""
    return photos > 1 or output.is_dir() or str(output).endswith(("/", os.sep))


@app.command("edit")
@takes_edit_options
def edit(
    images: Annotated[
        list[Path],
        typer.Argument(
            help="Photo(s) to edit (PNG, JPEG, WebP, GIF, BMP or TIFF). Several photos write one output each into "
            "the -o folder, named after the photo.",
            show_default=False,
        ),
    ],
    output: Annotated[
        Path,
        typer.Option(
            "--output",
            "-o",
            help="Image to write (format from the extension, e.g. .png); with --variants N > 1 the files are "
            "OUT-1.png ... OUT-N.png next to it. For several photos a folder (OUTDIR/): OUTDIR/PHOTO.png each.",
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
    auto: AutoOption = False,
    server: Annotated[
        str | None,
        typer.Option("--server", help="Run the edit on a Moodshift service (e.g. http://127.0.0.1:3000) over HTTP."),
    ] = None,
    concurrency: Annotated[
        int,
        typer.Option(
            min=1,
            max=MAX_CONCURRENCY,
            help="With --server: photos in flight at once, so the service can batch them (default 1).",
        ),
    ] = 1,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="With a folder: edit again photos whose outputs are already there.")
    ] = False,
    preview_path: Annotated[
        Path | None,
        typer.Option(
            "--preview",
            help="One photo: save a small preview of the background forming to this PNG while the edit runs "
            "(replaced at each step; open it in a viewer that reloads).",
        ),
    ] = None,
    edit_options: dict[str, Any] | None = None,
) -> None:
    """Give each photo a new background from --prompt or --keyword; the subject (found automatically, or from --mask
    or clicks) stays pixel-exact inside its soft edge (--edge matte, the default) or entirely (--edge hard). Exit
    status 1 when some photos of a folder failed."""
    from PIL import Image

    from serving.core.edit_options import EDIT_OPTIONS
    from serving.core.errors import InputError

    if prompt is None and keyword is None:
        fail("give the new background as --prompt TEXT or as --keyword WORD")
    if prompt is not None and keyword is not None:
        fail("give the new background either as --prompt TEXT or as --keyword WORD, not both")
    clicks, box_values = parse_subject(mask, points, box, auto)
    folder = is_folder_output(output, len(images))
    if folder and (mask is not None or points or box is not None):
        fail("--mask, --point and --box are in one photo's pixels: for several photos the subject is found "
             "automatically in each")  # fmt: skip
    if concurrency > 1 and not server:
        fail("--concurrency needs --server: in this process the photos are edited one after another")
    if folder and preview_path is not None:
        fail("--preview watches one photo's edit: give one photo, or leave it out for a folder")
    if not folder and output.suffix.lower() not in Image.registered_extensions():
        fail(f"cannot tell the image format of {output}: use an extension such as .png or .jpg")
    options = {name: value for name, value in (edit_options or {}).items() if value is not None}
    options["preview"] = preview_path is not None  # pictures nobody watches cost the service a little
    try:  # once, before any photo: a typo should be named once, not once per photo
        check_options_early(options, server is not None)
    except InputError as exc:
        fail(str(exc))
    subject = Subject(mask, clicks, box_values, auto)
    moods = [word.strip() for word in keywords.split(",") if word.strip()] if keywords is not None else None
    texts = {"prompt": prompt, "user_keyword": keyword, "keywords": moods}
    variants = int(options.get("variants") or EDIT_OPTIONS["variants"].default)
    jobs = [
        PhotoJob(photo, variant_paths(output / f"{photo.stem}.png" if folder else output, variants)) for photo in images
    ]
    _check_distinct(jobs)
    if folder and not overwrite:
        skipped = [job for job in jobs if all(path.exists() for path in job.outputs)]
        for job in skipped:
            typer.echo(f"skipped {job.photo}: {job.outputs[0]} is already there (--overwrite edits it again)")
        jobs = [job for job in jobs if job not in skipped]
    else:
        skipped = []
    if server:
        from serving.cli.remote import RemoteEditor

        editor = RemoteEditor(server, {**texts, **options}, subject, preview_path)
    else:
        editor = InProcessEditor({**texts, **options}, subject, announce_stages=not folder, preview=preview_path)
    run_jobs(jobs, editor, concurrency)
    failed = [job for job in jobs if job.error]
    if not folder:
        if failed:
            fail(failed[0].error or "the edit failed")
        return
    typer.echo(
        f"{len(jobs) - len(failed)} edited, {len(failed)} failed, {len(skipped)} skipped (already there) "
        f"of {len(jobs) + len(skipped)} photos"
    )
    if failed:
        raise typer.Exit(1)


def check_options_early(options: dict[str, Any], remote: bool) -> None:
    """What can be known of the options before any photo, without asking a model; the whole check still runs per
    photo where the edit enters (`Pipeline.prepare_edit`, in this process or in the service).

    Each option's own type and range always. The rules between options (shrink_steps below the steps made, a strength
    that leaves a step) only where the defaults they meet are known here: in this process and in quality mode,
    with the settings' defaults, exactly as the pipeline will. A service has its own settings, and mode fast its
    few-step model's steps, which only the loaded diffusion stage knows."""
    from serving.core.edit_options import EDIT_OPTIONS, check_edit_options
    from serving.settings import get_settings

    for name, value in options.items():
        EDIT_OPTIONS[name].check(value)
    if not remote and options.get("mode", EDIT_OPTIONS["mode"].default) == "quality":
        check_edit_options(options, get_settings().edit_defaults())


def _check_distinct(jobs: list[PhotoJob]) -> None:
    seen: dict[Path, Path] = {}
    for job in jobs:
        for path in job.outputs:
            if path in seen:
                fail(f"{seen[path]} and {job.photo} would both write {path}: rename one, or edit them separately")
            seen[path] = job.photo


def run_jobs(jobs: list[PhotoJob], editor: Any, concurrency: int, quiet: bool = False) -> None:
    """Edit every job's photo (`concurrency` at a time) under one progress bar; each job ends written or with its
    `error` (printed; `quiet`: only those). An `EditorUnavailable` stops everything with that message."""
    if not jobs:
        return
    lock = threading.Lock()

    def work(job: PhotoJob) -> Edited:
        def progress(fraction: float) -> None:
            with lock:
                job.done = min(max(fraction, 0.0), 1.0)

        edited = editor.edit(job.photo, progress)
        write_images(job.outputs, edited.images)
        return edited

    with typer.progressbar(length=100 * len(jobs), label="denoising") as bar, ThreadPoolExecutor(concurrency) as pool:
        pending: dict[Future[Edited], PhotoJob] = {pool.submit(work, job): job for job in jobs}
        shown = 0
        try:
            while pending:
                finished, _ = wait(pending, timeout=POLL_S, return_when=FIRST_COMPLETED)
                for future in finished:
                    _report(pending.pop(future), future, quiet)
                with lock:
                    reached = round(100 * sum(job.done for job in jobs))
                bar.update(reached - shown)
                shown = reached
        except EditorUnavailable as exc:
            for future in pending:
                future.cancel()
            fail(str(exc))


def _report(job: PhotoJob, future: Future[Edited], quiet: bool) -> None:
    """Say how one photo's edit ended; a failure is kept on the job (and printed) and the others go on."""
    job.done = 1.0
    try:
        edited = future.result()
    except PhotoFailed as exc:  # its message never names the photo: it is named here
        job.error = f"{job.photo}: {exc}"
    except EditorUnavailable:
        raise
    except Exception as exc:  # one photo's unexpected failure (a model fault) must not lose the others' work
        job.error = f"{job.photo}: {type(exc).__name__}: {str(exc)[:300]}"
    else:
        if quiet:
            return
        height, width = edited.images[0].shape[:2]
        for path, seed in zip(job.outputs, edited.seeds, strict=True):
            typer.echo(f"\nwrote {path} ({width}×{height}, seed {seed})")
        typer.echo(edited.detail)
        return
    typer.secho(f"\nfailed: {job.error}", fg=typer.colors.RED, err=True)


def write_images(paths: list[Path], images: list[np.ndarray]) -> None:
    """Each image to its path, in the format of its extension; `PhotoFailed` when one cannot be written."""
    from PIL import Image

    try:
        paths[0].parent.mkdir(parents=True, exist_ok=True)
        for path, image in zip(paths, images, strict=True):
            Image.fromarray(image).save(path)
    except (OSError, ValueError) as exc:  # ValueError: an extension Pillow cannot write
        raise PhotoFailed(f"cannot write {paths[0]}: {exc}") from None


def read_photo(path: Path, max_pixels: int) -> np.ndarray:
    """An upright RGB photo (HWC uint8) from a file; `PhotoFailed` saying what is wrong with it."""
    try:
        return np.asarray(open_image(path, max_pixels))
    except UnreadableImage as exc:
        raise PhotoFailed(str(exc)) from None


class InProcessEditor:
    """Edits through the pipeline in this process: each photo is checked before any model loads; the models load
    with the first photo that passes (a `WeightsError` then stops everything)."""

    def __init__(
        self, request: dict[str, Any], subject: Subject, announce_stages: bool, preview: Path | None = None
    ) -> None:
        from serving.pipeline import Pipeline
        from serving.settings import get_settings

        self.settings = get_settings()
        self.pipeline = Pipeline.in_process(self.settings)
        self.texts = {name: request[name] for name in ("prompt", "user_keyword", "keywords")}
        self.options = {name: value for name, value in request.items() if name not in self.texts}
        self.subject = subject
        self.announce_stages = announce_stages
        self.preview = preview  # where to save the preview of the background forming (one photo)
        self._models: dict[str, Any] | None = None
        self._lock = threading.Lock()

    def edit(self, photo: Path, progress: Progress) -> Edited:
        from serving.core.errors import InputError
        from serving.core.masks import mask_levels_from_png_bytes
        from serving.models.errors import WeightsError

        rgb = read_photo(photo, self.settings.max_image_pixels)
        subject_mask = None
        if self.subject.mask is not None:
            try:  # grey levels are kept: the matte's soft prior
                levels = self.subject.mask.read_bytes()
                subject_mask = mask_levels_from_png_bytes(levels, size=(rgb.shape[1], rgb.shape[0]))
            except (OSError, InputError) as exc:
                raise PhotoFailed(f"mask {self.subject.mask}: {getattr(exc, 'strerror', None) or exc}") from None
        try:
            prepared = self.pipeline.prepare_edit(
                rgb,
                subject_mask=subject_mask,
                points=self.subject.clicks or None,
                box=self.subject.box,
                auto=self.subject.auto,
                options=dict(self.options),
                **self.texts,
            )
        except InputError as exc:
            raise PhotoFailed(str(exc)) from None
        except (WeightsError, RuntimeError) as exc:  # mode fast asks the diffusion stage: its models load then
            raise EditorUnavailable(str(exc)) from None
        models = self._load_models(needs_segmentation=prepared.subject_mask is None, auto=prepared.auto)
        started = time.perf_counter()
        try:
            outcome = self.pipeline.run_edit(
                prepared,
                job_id=uuid.uuid4().hex,
                on_stage=self._announce,
                on_step=lambda step, total: progress(step / total),
                on_preview=self._save_preview if self.preview is not None else None,
            )
        except InputError as exc:  # e.g. the clicks gave an empty mask
            raise PhotoFailed(str(exc)) from None
        note = " — random weights, the background is noise" if models["diffusion"].get("demo") else ""
        source = "" if outcome.prompt_source == "user" else f"; prompt ({outcome.prompt_source}): {outcome.prompt}"
        seconds = outcome.timings.get("total_s", time.perf_counter() - started)
        diffusion = models["diffusion"]
        mode = f"{outcome.mode} mode" + (f" ({diffusion['fast']['model']})" if outcome.mode == "fast" else "")
        ran = f"{mode}, {outcome.steps} steps, guidance {outcome.guidance:g}"
        return Edited(outcome.images, outcome.seeds, f"{seconds:.1f} s, {diffusion['model']}{note}, {ran}{source}")

    def _load_models(self, needs_segmentation: bool, auto: bool) -> dict[str, Any]:
        """Load the models once (the stage infos say what runs); a model that cannot load stops every photo."""
        from serving.models.errors import WeightsError

        with self._lock:
            try:
                if self._models is None:
                    self._models = {"diffusion": self.pipeline.diffusion.info()}
                if needs_segmentation and "segment" not in self._models:
                    self._models["segment"] = self.pipeline.segmentation.info()
            except (WeightsError, RuntimeError) as exc:
                raise EditorUnavailable(str(exc)) from None
            salient = self._models.get("segment", {}).get("salient", {})
            if needs_segmentation and auto and salient.get("problem"):
                raise EditorUnavailable(f"the automatic subject is not available: {salient['problem']}")
            return self._models

    def _save_preview(self, rgb: np.ndarray) -> None:
        from serving.cli.app import save_atomically
        from serving.core.images import png_bytes

        save_atomically(self.preview, png_bytes(rgb))

    def _announce(self, stage: str) -> None:
        if self.announce_stages and stage in STAGE_LABELS:
            typer.echo(f"\n{STAGE_LABELS[stage]}", err=True)
