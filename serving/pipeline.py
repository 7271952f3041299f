"""The end-to-end edit as plain Python: segment -> mood -> prompt -> matte -> blended diffusion -> composite.

Every edit runs through here: the service (over its stage services), the CLI (in-process) and the benchmarks.
`prepare_edit` is the entrance: it checks the whole request (the options against the options table, the clicks,
the mask, the text) before any model runs, so a mistake is an `InputError` naming the bad value. A request that
names no subject (no mask, no clicks, no box) gets the automatic subject: a salient-object model finds it.
`run_edit` runs the stages, reporting each stage and step k of n, and stops when the caller's cancel check says so.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from serving.backends import DiffusionJob, DiffusionOutcome
from serving.core.blending import compose
from serving.core.clicks import Clicks, validate_clicks
from serving.core.edit_options import EditOptions, ModeRules, check_edit_options, mode_rules
from serving.core.errors import CancelledError, InputError, NotCachedError
from serving.core.images import image_id_of
from serving.core.masks import check_subject_mask, is_soft
from serving.core.matting import Matte, compose_matte, estimate_matte
from serving.core.prompt_text import clean_user_prompt
from serving.core.sizing import resize_image, working_size
from serving.core.wire import WireArray

if TYPE_CHECKING:
    from serving.backends import Segmented
    from serving.models.ollama_stage import MoodResult, PromptResult, PromptStage
    from serving.settings import Settings

logger = logging.getLogger("moodshift.pipeline")
PROGRESS_POLL_S = 0.25  # how often a running diffusion is asked for its step (and told of a cancel)

# Runs a blocking call elsewhere and returns its future: the caller's thread stays free to report progress.
Background = Callable[[Callable[[], Any]], "concurrent.futures.Future[Any]"]
StageCallback = Callable[[str], None]
StepCallback = Callable[[int, int], None]
PreviewCallback = Callable[[np.ndarray], None]
CancelCheck = Callable[[], bool]


def in_a_thread(call: Callable[[], Any]) -> concurrent.futures.Future[Any]:
    """The default `Background`: a plain thread (enough for stages in this process)."""
    executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="moodshift-diffusion")
    future = executor.submit(call)
    executor.shutdown(wait=False)
    return future


class LazyStage:
    """A stage built on first use, so checking a request costs no model load (thread-safe)."""

    def __init__(self, build: Callable[[], Any]) -> None:
        self._build = build
        self._stage: Any = None
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        with self._lock:
            if self._stage is None:
                self._stage = self._build()
        return getattr(self._stage, name)


@dataclass
class PreparedEdit:
    """A checked edit: the photo, what to keep (a mask, or clicks to segment; `auto`: starting from the automatic
    subject), what to write, and its options.

    `subject_prior`: an uploaded mask's grey levels (float32 in [0, 1]) when it has any: the matte's prior.
    """

    image: np.ndarray
    image_id: str
    subject_mask: np.ndarray | None
    clicks: Clicks | None
    auto: bool
    prompt: str | None
    user_keyword: str | None
    keywords: list[str] | None
    options: EditOptions
    subject_prior: np.ndarray | None = None
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def total_steps(self) -> int:
        """Denoising steps the edit will make (what its progress counts to)."""
        return self.options.denoising_steps


@dataclass(frozen=True)
class Segmentation:
    """A subject mask (bool HxW, the image's size), its score, the image's id, whether what the image needed was
    cached (no image model ran), and the engine that made it ("u2netp", "sam-vit_h", "u2netp+clicks")."""

    mask: np.ndarray
    score: float
    image_id: str
    cached: bool
    engine: str

    @classmethod
    def of(cls, answer: Segmented, cached: bool | None = None) -> Segmentation:
        """From the segmentation stage's answer (`cached`: overrides it, for an image just encoded)."""
        cached = answer.cached if cached is None else cached
        return cls(answer.mask.to_numpy(), answer.score, answer.image_id, cached, answer.engine)


@dataclass
class EditOutcome:
    """A finished edit: `images` (HxWx3 uint8 each, the input's size), the seed of each, the prompt used and its
    source (`user`, `llm`, `template`) and CLIP token count, the photo's image id, seconds per phase, and the mode,
    steps and guidance it ran with (the defaults filled in: a fast edit's come from its few-step model)."""

    images: list[np.ndarray]
    seeds: list[int]
    prompt: str
    prompt_source: str
    tokens: int
    image_id: str
    timings: dict[str, float]
    mode: str
    steps: int
    guidance: float


@dataclass(frozen=True)
class Cutout:
    """The subject cut out: `rgba` HxWx4 uint8 (straight alpha) and the photo's image id."""

    rgba: np.ndarray
    image_id: str


class Pipeline:
    """Segmentation, mood, prompt and diffusion stages composed into the product's operations.

    `segmentation` and `diffusion` are the stage backends (`serving.backends`) or the stage services standing for
    them; their errors are the typed errors of `serving.core.errors`. `background` runs the blocking diffusion call
    while the calling thread reports its progress (the service passes one whose threads can call stage services).
    """

    def __init__(
        self,
        segmentation: Any,
        diffusion: Any,
        prompt_stage: PromptStage,
        settings: Settings,
        background: Background = in_a_thread,
    ) -> None:
        self.segmentation = segmentation
        self.diffusion = diffusion
        self.prompt_stage = prompt_stage
        self.settings = settings
        self.background = background
        self._diffusion_info: dict[str, Any] | None = None  # the diffusion stage's, asked once
        self._clicks_use_sam_there: bool | None = None  # the segmentation stage's, asked once

    @classmethod
    def in_process(cls, settings: Settings | None = None) -> Pipeline:
        """Every stage in this process, from the settings; each model loads when its stage is first used."""
        from serving.backends import DiffusionBackend, SegmentationBackend
        from serving.models.ollama_stage import PromptStage
        from serving.models.subject import SubjectFinder
        from serving.settings import get_settings

        settings = settings or get_settings()
        return cls(
            LazyStage(lambda: SegmentationBackend(SubjectFinder.from_settings(settings))),
            LazyStage(lambda: DiffusionBackend.from_settings(settings)),
            PromptStage(settings),
            settings,
        )

    # --- segmentation ---------------------------------------------------------------------------------

    def check_clicks(self, image_size: tuple[int, int], points: Any, box: Any, auto: bool = False) -> Clicks:
        """Clicks and box checked against an image of `image_size` (width, height): `ClickError` when unusable.
        With `auto` (they refine the automatic subject) none at all is fine."""
        return validate_clicks(points, box, image_size, self.settings.max_points, required=not auto)

    @staticmethod
    def wants_auto(points: Any, box: Any, auto: bool) -> bool:
        """Whether a request starts from the automatic subject: asked to, or naming no subject at all."""
        return auto or (not points and box is None)

    def segment(
        self, image: np.ndarray, points: Any, box: Any, auto: bool = False, image_id: str | None = None
    ) -> Segmentation:
        """Subject mask for clicks/box, or the automatic subject refined by them (`auto`, or none given); `image_id`:
        the image's, when known. The clicks are checked here first, so a bad click never reaches a model."""
        auto = self.wants_auto(points, box, auto)
        clicks = self.check_clicks((image.shape[1], image.shape[0]), points, box, auto)
        return self._segment_checked(image, clicks, auto, image_id)

    def _segment_checked(
        self, image: np.ndarray, clicks: Clicks, auto: bool, image_id: str | None = None
    ) -> Segmentation:
        points = [point.model_dump() for point in clicks.points]
        box = list(clicks.box) if clicks.box else None
        # A repeat click sends only the image id: the pixels cross to the segmentation service once per image.
        try:
            return Segmentation.of(self.segmentation.segment_cached(image_id or image_id_of(image), points, box, auto))
        except NotCachedError:
            pass
        # The image models run through their own calls so the service can batch them with other users' new images:
        # the salient model for the automatic subject, SAM's encoder for clicks that SAM turns into the mask.
        pixels = WireArray.of(image)
        cached = True
        if auto:
            [found] = self.segmentation.detect([pixels])
            cached = found.cached
        if not clicks.is_empty and (not auto or self._clicks_use_sam()):
            [encoded] = self.segmentation.encode([pixels])
            cached = cached and encoded.cached
        answer = self.segmentation.segment(pixels, points, box, auto)
        return Segmentation.of(answer, cached=cached)

    def check_subject(
        self, image: np.ndarray, subject_mask: np.ndarray | None, points: Any, box: Any, auto: bool = False
    ) -> tuple[np.ndarray | None, np.ndarray | None, Clicks | None, bool]:
        """What to keep, checked against the image: (bool mask, its grey levels when soft, None, False) for a mask;
        (None, None, clicks, auto) for clicks and/or a box, or for nothing (the automatic subject, auto True).
        `InputError` for a mask with clicks, or a bad one."""
        if subject_mask is not None:
            if points or box is not None or auto:
                raise InputError("give either a mask or points/box (or auto), not both")
            prior = subject_mask.astype(np.float32) if is_soft(subject_mask) else None
            return check_subject_mask(subject_mask, image.shape), prior, None, False
        auto = self.wants_auto(points, box, auto)
        return None, None, self.check_clicks((image.shape[1], image.shape[0]), points, box, auto), auto

    def _clicks_use_sam(self) -> bool:
        """Whether SAM refines clicks on the automatic subject: the stage names SAM's model as its click engine."""
        if self._clicks_use_sam_there is None:
            info = self.segmentation.info()
            self._clicks_use_sam_there = info["clicks"] == info["model"]
        return self._clicks_use_sam_there

    def segment_by_id(self, image_id: str, points: Any, box: Any, auto: bool = False) -> Segmentation:
        """A repeat click by image id alone; `NotCachedError` when the image's segmentation is not cached."""
        auto = self.wants_auto(points, box, auto)
        return Segmentation.of(self.segmentation.segment_cached(image_id, list(points or []), box, auto))

    # --- mood and prompt --------------------------------------------------------------------------------

    def mood(self, image: np.ndarray, image_id: str | None = None) -> MoodResult:
        return self.prompt_stage.read_mood(image, image_id or image_id_of(image))

    def prompt(self, keywords: list[str], user_keyword: str) -> PromptResult:
        return self.prompt_stage.write_prompt(keywords, user_keyword)

    # --- edit -------------------------------------------------------------------------------------------

    def prepare_edit(
        self,
        image: np.ndarray,
        *,
        subject_mask: np.ndarray | None = None,
        points: Any = None,
        box: Any = None,
        prompt: str | None = None,
        user_keyword: str | None = None,
        keywords: list[str] | None = None,
        options: Mapping[str, Any] | None = None,
        image_id: str | None = None,
        auto: bool = False,
    ) -> PreparedEdit:
        """Check an edit request completely, before any model runs, and fix its seeds.

        The subject: `subject_mask` (grey levels are a soft prior), or `points`/`box` (SAM's prompts; with `auto`,
        refining the automatic subject), or nothing: the automatic subject. `options`: edit options by name (absent
        or None = the settings' default; in mode fast, steps and guidance default to the few-step model's);
        `image_id`: the image's, when already known. Raises `InputError` (or a subclass) naming the first bad value;
        mode fast without few-step weights names the file to add.
        """
        # The subject first: once the options' values are good, a fast-mode edit asks the diffusion stage about its
        # few-step model (in-process, that loads SDXL). Texts are cleaned only once their lengths are known to be good.
        subject_mask, subject_prior, clicks, auto = self.check_subject(image, subject_mask, points, box, auto)
        checked_options = check_edit_options(options or {}, self.settings.edit_defaults(), self._mode_rules)
        if prompt is not None:
            prompt = clean_user_prompt(prompt)
        elif user_keyword is None:
            raise InputError("no prompt: give a prompt or a user_keyword to write one from")
        else:
            user_keyword = self.prompt_stage.check_user_keyword(user_keyword)
        return PreparedEdit(
            image=image,
            image_id=image_id or image_id_of(image),
            subject_mask=subject_mask,
            clicks=clicks,
            auto=auto,
            prompt=prompt,
            user_keyword=user_keyword,
            keywords=keywords,
            options=checked_options,
            subject_prior=subject_prior,
        )

    def run_edit(
        self,
        edit: PreparedEdit,
        *,
        job_id: str,
        on_stage: StageCallback | None = None,
        on_step: StepCallback | None = None,
        on_preview: PreviewCallback | None = None,
        cancelled: CancelCheck | None = None,
    ) -> EditOutcome:
        """Run a prepared edit: segment (without a mask), write the prompt (if a keyword), regenerate, composite.

        `on_stage(name)` is called as each stage starts (segment, prompt, matte, diffusion); `on_step(step, total)`
        while the diffusion runs, and `on_preview(rgb)` with a small picture of the background forming (when the
        edit's `preview` option is on); `cancelled()` is asked between stages and during the diffusion. Raises
        `CancelledError` when cancelled, `InputError` when the segmented mask is unusable.
        """
        timings = dict(edit.timings)
        started = time.perf_counter()
        subject_mask = edit.subject_mask
        if subject_mask is None:
            self._enter("segment", on_stage, cancelled)
            found = self._segment_checked(edit.image, edit.clicks, edit.auto, edit.image_id)
            try:
                subject_mask = check_subject_mask(found.mask, edit.image.shape)
            except InputError as exc:
                raise InputError(f"{exc} (mask by {found.engine}): give points, a box or a mask") from None
            timings["segment_s"] = time.perf_counter() - started
        prompt, source, tokens = edit.prompt, "user", None
        if prompt is None:
            self._enter("prompt", on_stage, cancelled)
            began = time.perf_counter()
            keywords = edit.keywords if edit.keywords is not None else self.mood(edit.image, edit.image_id).keywords
            written = self.prompt(keywords, edit.user_keyword or "")
            prompt, source, tokens = written.prompt, written.source, written.tokens
            timings["prompt_s"] = time.perf_counter() - began
        matte, kept = None, subject_mask
        if edit.options.edge == "matte":
            self._enter("matte", on_stage, cancelled)
            began = time.perf_counter()
            matte = estimate_matte(edit.image, subject_mask if edit.subject_prior is None else edit.subject_prior)
            kept = matte.core  # the band is regenerated too: a new background to blend the soft edge with
            timings["matte_s"] = time.perf_counter() - began
        self._enter("diffusion", on_stage, cancelled)
        began = time.perf_counter()
        height, width = edit.image.shape[:2]
        job = DiffusionJob(
            job_id=job_id,
            image=WireArray.of(resize_image(edit.image, self._working_size(width, height))),
            subject_mask=WireArray.of(kept),
            original_size=(width, height),
            prompt=prompt,
            options=edit.options.to_dict(),
        )
        answer = self._diffuse(job, on_step, on_preview, cancelled)
        if answer.cancelled:
            raise CancelledError(CancelledError.BY_CALLER)
        if on_step is not None:  # the last poll may have come before the last step
            on_step(edit.total_steps, edit.total_steps)
        timings["diffusion_s"] = time.perf_counter() - began
        timings.update({f"runner_{k}": v for k, v in answer.timings.items()})
        began = time.perf_counter()
        images = [self._composite(edit, subject_mask, matte, new.to_numpy()) for new in answer.backgrounds]
        timings["composite_s"] = time.perf_counter() - began
        timings["total_s"] = time.perf_counter() - started + timings.get("decode_s", 0.0)
        return EditOutcome(
            images=images,
            seeds=answer.seeds,
            prompt=prompt,
            prompt_source=source,
            tokens=tokens if tokens is not None else self.prompt_stage.count_tokens(prompt),
            image_id=edit.image_id,
            timings={key: round(value, 4) for key, value in timings.items()},
            mode=edit.options.mode,
            steps=edit.options.steps,
            guidance=edit.options.guidance,
        )

    @staticmethod
    def _composite(
        edit: PreparedEdit, subject_mask: np.ndarray, matte: Matte | None, background: np.ndarray
    ) -> np.ndarray:
        """The final image at full size: the matte's soft edge (edge=matte), or the feathered mask (edge=hard)."""
        if matte is not None:
            return compose_matte(background, matte)
        return compose(edit.image, background, subject_mask, edit.options.feather)

    # --- cut-out ----------------------------------------------------------------------------------------

    def cutout(
        self,
        image: np.ndarray,
        *,
        subject_mask: np.ndarray | None = None,
        points: Any = None,
        box: Any = None,
        image_id: str | None = None,
        auto: bool = False,
    ) -> Cutout:
        """The subject as an RGBA cut-out (straight alpha, decontaminated edge colours, the image's size), from a
        mask (grey levels are a soft prior), from clicks and/or a box, or found automatically (nothing given, or
        `auto` with clicks refining it); `image_id`: the image's, when known. `InputError` naming a bad input."""
        image_id = image_id or image_id_of(image)
        subject_mask, subject_prior, clicks, auto = self.check_subject(image, subject_mask, points, box, auto)
        if clicks is not None:
            found = self._segment_checked(image, clicks, auto, image_id)
            subject_mask = check_subject_mask(found.mask, image.shape)
        matte = estimate_matte(image, subject_mask if subject_prior is None else subject_prior)
        return Cutout(matte.cutout(), image_id)

    def _working_size(self, width: int, height: int) -> tuple[int, int]:
        """The size the diffusion stage works at for a photo of this size."""
        return working_size(width, height, int(self.diffusion_info()["working_pixels"]))

    def diffusion_info(self) -> dict[str, Any]:
        """The diffusion stage's `info()` (working size, few-step model), asked once: it is fixed when it loads."""
        if self._diffusion_info is None:
            self._diffusion_info = self.diffusion.info()
        return self._diffusion_info

    def _mode_rules(self, mode: str) -> ModeRules:
        """What the edit's mode changes: for fast, the few-step model's steps and guidance as defaults (asked of the
        diffusion stage, which knows what it has), or `InputError` naming the file to add."""
        return mode_rules(mode, lambda: self.diffusion_info().get("fast"))

    @staticmethod
    def _enter(stage: str, on_stage: StageCallback | None, cancelled: CancelCheck | None) -> None:
        if cancelled is not None and cancelled():
            raise CancelledError(CancelledError.BY_CALLER)
        if on_stage is not None:
            on_stage(stage)

    def _diffuse(
        self,
        job: DiffusionJob,
        on_step: StepCallback | None,
        on_preview: PreviewCallback | None,
        cancelled: CancelCheck | None,
    ) -> DiffusionOutcome:
        """The diffusion stage's outcome for one job; meanwhile its progress is reported and a cancel passed on."""
        if on_step is None and on_preview is None and cancelled is None:
            return self.diffusion.run([job])[0]
        job_id = job.job_id
        future = self.background(lambda: self.diffusion.run([job])[0])
        cancel_delivered = False
        while True:
            try:
                return future.result(timeout=PROGRESS_POLL_S)
            except concurrent.futures.TimeoutError:
                pass
            try:  # a progress report that fails must not fail the edit
                if cancelled is not None and cancelled() and not cancel_delivered:
                    cancel_delivered = self.diffusion.cancel(job_id)  # False: not started there yet, tell it again
                if on_step is not None or on_preview is not None:
                    progress = self.diffusion.progress([job_id]).get(job_id)
                    if progress and on_step is not None:
                        on_step(progress.step, progress.total)
                    if progress and progress.preview is not None and on_preview is not None:
                        on_preview(progress.preview.to_numpy())
            except Exception:
                logger.warning("progress of job %s not available", job_id, exc_info=True)


__all__ = ["Cutout", "EditOutcome", "LazyStage", "Pipeline", "PreparedEdit"]
