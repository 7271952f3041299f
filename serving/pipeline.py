"""The end-to-end edit as plain Python: segment -> mood -> prompt -> blended diffusion -> composite.

The CLI runs it in-process (`Pipeline.in_process`); the BentoML gateway runs it over its dependency services
(`serving.service`). Everything a caller sends is checked in `prepare_edit`, before any model runs, so a
mistake is a `ValueError` subclass with a message naming the bad value (the service answers 400).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from serving.core.images import image_id as pixels_id
from serving.core.prompt_text import sanitize_user_keyword, strip_unprintable
from serving.core.prompts import PromptError, validate_prompt

if TYPE_CHECKING:
    from serving.backends import DiffusionBackend, SegmentationBackend
    from serving.models.ollama_stage import MoodResult, PromptResult, PromptStage
    from serving.settings import Settings

MAX_PROMPT_CHARS = 2000  # CLIP reads 77 tokens anyway; this only bounds what we store and echo back


class EditInputError(ValueError):
    """An edit request that cannot run as given (no mask and no clicks, no prompt and no keyword...)."""


class ImageNotCachedError(LookupError):
    """A click by image id whose embedding is not (or no longer) cached: the caller must send the image."""

    def __init__(self, image_id: str) -> None:
        super().__init__(
            f"image_id {image_id!r} is not cached (never sent, or evicted since): send the image itself again"
        )


class EditFailed(RuntimeError):
    """The diffusion stage could not finish an edit; `status` is the HTTP status the service answers."""

    def __init__(self, message: str, status: int = 500) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class PreparedEdit:
    """A validated edit: what to keep, what to write, and the diffusion options with seeds fixed."""

    image: np.ndarray
    image_id: str
    subject_mask: np.ndarray | None
    points: list[dict[str, Any]] | None
    box: list[float] | None
    prompt: str | None
    user_keyword: str | None
    keywords: list[str] | None
    options: dict[str, Any]
    total_steps: int
    timings: dict[str, float] = field(default_factory=dict)


class Pipeline:
    """Segmentation, mood, prompt and diffusion stages composed into the product's operations."""

    def __init__(
        self,
        segmentation: SegmentationBackend | None,
        diffusion: DiffusionBackend | None,
        prompt_stage: PromptStage,
        settings: Settings,
    ) -> None:
        self.segmentation = segmentation
        self.diffusion = diffusion
        self.prompt_stage = prompt_stage
        self.settings = settings

    @classmethod
    def in_process(cls, settings: Settings | None = None, *, segmentation: bool = True, diffusion: bool = True):
        """Every stage in this process, built from the settings (skip the stages a command does not need)."""
        from serving.backends import DiffusionBackend, SegmentationBackend
        from serving.models.blended_sdxl import BlendedSDXLRunner
        from serving.models.ollama_stage import PromptStage
        from serving.models.sam import Segmenter
        from serving.settings import get_settings

        settings = settings or get_settings()
        runner = BlendedSDXLRunner.from_settings(settings) if diffusion else None
        return cls(
            SegmentationBackend(Segmenter.from_settings(settings)) if segmentation else None,
            DiffusionBackend(runner) if runner else None,
            PromptStage(settings, tokenizer=runner.pipe.tokenizer if runner else None),
            settings,
        )

    # --- segmentation ---------------------------------------------------------------------------------

    def segment(self, image: np.ndarray, points: list[dict[str, Any]] | None, box: list[float] | None) -> dict:
        """Subject mask for clicks/box. The prompt is checked here first, so a bad click never reaches SAM."""
        height, width = image.shape[:2]
        validate_prompt(points, box, (width, height), self.settings.max_points)
        if self.segmentation is None:
            raise RuntimeError("this pipeline was built without a segmentation stage")
        points = list(points or [])
        # A repeat click sends only the image id: the pixels cross to the segmentation service once per image.
        result = self.segmentation.segment_cached(pixels_id(image), points, box)
        if result:  # None or {} (the service's "not cached")
            return result
        # Encoding goes through its own call so the service can batch it with other users' new images.
        [encoded] = self.segmentation.encode([image])
        result = self.segmentation.segment(image, points, box)
        return {**result, "cached": bool(encoded["cached"])}

    def segment_by_id(self, image_id: str, points: list[dict[str, Any]] | None, box: list[float] | None) -> dict:
        """A repeat click by image id alone; `ImageNotCachedError` when the embedding is not cached."""
        if self.segmentation is None:
            raise RuntimeError("this pipeline was built without a segmentation stage")
        result = self.segmentation.segment_cached(image_id, list(points or []), box)
        if not result:  # None or {} (the service's "not cached")
            raise ImageNotCachedError(image_id)
        if "prompt_error" in result:
            raise PromptError(result["prompt_error"])
        return result

    # --- mood and prompt --------------------------------------------------------------------------------

    def mood(self, image: np.ndarray, image_id: str | None = None) -> MoodResult:
        return self.prompt_stage.read_mood(image, image_id or pixels_id(image))

    def prompt(self, keywords: list[str], user_keyword: str) -> PromptResult:
        return self.prompt_stage.write_prompt(keywords, user_keyword)

    # --- edit -------------------------------------------------------------------------------------------

    def prepare_edit(
        self,
        image: np.ndarray,
        *,
        subject_mask: np.ndarray | None = None,
        points: list[dict[str, Any]] | None = None,
        box: list[float] | None = None,
        prompt: str | None = None,
        user_keyword: str | None = None,
        keywords: list[str] | None = None,
        negative_prompt: str | None = None,
        seed: int | None = None,
        steps: int | None = None,
        guidance: float | None = None,
        variants: int = 1,
        feather: int | None = None,
        strength: float = 1.0,
        shrink_steps: int | None = None,
    ) -> PreparedEdit:
        """Check an edit request completely (before any model runs) and fix its seeds."""
        from serving.models.blended_sdxl import EditDefaults, EditRequest, check_request

        height, width = image.shape[:2]
        if subject_mask is not None and (points or box is not None):
            raise EditInputError("give either a mask or points/box, not both")
        if subject_mask is None:
            if not points and box is None:
                raise EditInputError("no subject: give a mask, or points/box to segment the subject")
            validate_prompt(points, box, (width, height), self.settings.max_points)
        # Lengths are checked before any per-character work: a megabyte of text costs seconds to clean or tokenize.
        for name, text in (("prompt", prompt), ("negative prompt", negative_prompt)):
            if text is not None and len(text) > MAX_PROMPT_CHARS:
                raise EditInputError(f"{name} has {len(text)} characters; at most {MAX_PROMPT_CHARS} are allowed")
        if prompt is not None:
            prompt = strip_unprintable(prompt).strip()
            if not prompt:
                raise EditInputError("prompt is empty after removing control characters")
        elif user_keyword is None:
            raise EditInputError("no prompt: give a prompt or a user_keyword to write one from")
        else:
            user_keyword = sanitize_user_keyword(user_keyword)
        checked = check_request(
            EditRequest(
                image=image,
                subject_mask=subject_mask,  # None until SAM has run on the clicks: checked again then
                prompt=prompt or user_keyword,  # the prompt is written from the keyword later
                negative_prompt=negative_prompt,
                seed=seed,
                variants=variants,
                steps=steps,
                guidance=guidance,
                strength=strength,
                feather=feather,
                shrink_steps=shrink_steps,
            ),
            EditDefaults.from_settings(self.settings),
            require_mask=False,
        )
        options = {
            "negative_prompt": checked.negative_prompt,
            "seeds": checked.seeds,
            "steps": checked.steps,
            "guidance": checked.guidance,
            "strength": checked.strength,
            "feather": checked.feather,
            "shrink_steps": checked.shrink_steps,
        }
        total = self.diffusion.total_steps(checked.steps, checked.strength) if self.diffusion else checked.steps
        return PreparedEdit(
            image=image,
            image_id=pixels_id(image),
            subject_mask=checked.subject_mask,
            points=points,
            box=box,
            prompt=prompt,
            user_keyword=user_keyword,
            keywords=keywords,
            options=options,
            total_steps=total,
        )

    def run_edit(
        self, edit: PreparedEdit, job_id: str, on_stage: Callable[[str], None] | None = None
    ) -> dict[str, Any]:
        """Run a prepared edit: segment (if clicks), write the prompt (if a keyword), regenerate, composite.

        Returns `{images (HxWx3 uint8 each), seeds, prompt, prompt_source, tokens, image_id, timings}`.
        Raises `EditFailed` (with the HTTP status) when the diffusion stage refuses or fails.
        """
        if self.diffusion is None:
            raise RuntimeError("this pipeline was built without a diffusion stage")
        timings = dict(edit.timings)
        started = time.perf_counter()
        subject_mask = edit.subject_mask
        if subject_mask is None:
            _announce(on_stage, "segment")
            subject_mask = self.segment(edit.image, edit.points, edit.box)["mask"]
            timings["segment_s"] = time.perf_counter() - started
        prompt, source, tokens = edit.prompt, "user", None
        if prompt is None:
            _announce(on_stage, "prompt")
            began = time.perf_counter()
            keywords = edit.keywords if edit.keywords is not None else self.mood(edit.image, edit.image_id).keywords
            written = self.prompt(keywords, edit.user_keyword or "")
            prompt, source, tokens = written.prompt, written.source, written.tokens
            timings["prompt_s"] = time.perf_counter() - began
        _announce(on_stage, "diffusion")
        began = time.perf_counter()
        job = {"job_id": job_id, "image": edit.image, "subject_mask": subject_mask, "prompt": prompt, **edit.options}
        [answer] = self.diffusion.run([job])
        timings["diffusion_s"] = time.perf_counter() - began
        if "error" in answer:
            status = {"options": 400, "cancelled": 499}.get(answer.get("kind"), 500)
            raise EditFailed(answer["error"], status)
        timings.update({f"runner_{k}": v for k, v in answer.get("timings", {}).items()})
        timings["total_s"] = time.perf_counter() - started + timings.get("decode_s", 0.0)
        return {
            "images": answer["images"],
            "seeds": answer["seeds"],
            "prompt": prompt,
            "prompt_source": source,
            "tokens": tokens if tokens is not None else self.prompt_stage.count_tokens(prompt),
            "image_id": edit.image_id,
            "timings": {key: round(value, 4) for key, value in timings.items()},
        }


def _announce(on_stage: Callable[[str], None] | None, stage: str) -> None:
    if on_stage is not None:
        on_stage(stage)


__all__ = ["EditFailed", "EditInputError", "ImageNotCachedError", "Pipeline", "PreparedEdit", "PromptError"]
