"""BentoML services: segmentation (the automatic subject and SAM) and blended SDXL as GPU services with adaptive
batching, behind a gateway that speaks Moodshift's HTTP contract and calls Ollama. Typed APIs and composition only:
the edit is `serving.pipeline`, jobs are `serving.jobs`, errors become HTTP answers in `serving.http_errors`.

Serve with `python -m serving serve` (or `bentoml serve serving.service:Moodshift`). Models load in `__init__`
with their imports, so `bentoml build` imports this module cheaply. The stage services can run on other machines:
set MOODSHIFT_SEGMENT_SERVICE_URL / MOODSHIFT_DIFFUSION_SERVICE_URL and the gateway calls them there.
"""

from __future__ import annotations

import uuid
from typing import Any

import bentoml
import numpy as np

from serving.api_models import EditBody, Point
from serving.backends import DiffusionJob, DiffusionOutcome, Encoded, Segmented
from serving.core.wire import WireArray
from serving.deployment import batching, depends_on_stage, gateway_options, stage_options
from serving.http_errors import StageClient, answers_errors, raises_over_http
from serving.http_guard import RequestGuardMiddleware
from serving.settings import get_settings


@bentoml.service(name="moodshift-segment", **stage_options("segment"))
class SegmentationService:
    """The automatic subject and SAM: `detect` (the salient model) and `encode` (SAM's encoder) are adaptively
    batched, so concurrent new images share a batch; `segment` makes the mask from what they cached."""

    def __init__(self) -> None:
        from serving.backends import SegmentationBackend
        from serving.models.subject import SubjectFinder

        finder = SubjectFinder.from_settings(get_settings())
        finder.segmenter  # noqa: B018  load SAM now, not on the first click: ready means ready
        self.backend = SegmentationBackend(finder)

    @bentoml.api(**batching("segment"))
    @raises_over_http
    def encode(self, images: list[WireArray]) -> list[Encoded]:
        return self.backend.encode(images)

    @bentoml.api(**batching("segment"))
    @raises_over_http
    def detect(self, images: list[WireArray]) -> list[Encoded]:
        return self.backend.detect(images)

    @bentoml.api
    @raises_over_http
    def segment(
        self, image: WireArray, points: list[dict[str, Any]], box: list[float] | None = None, auto: bool = False
    ) -> Segmented:
        return self.backend.segment(image, points, box, auto)

    @bentoml.api
    @raises_over_http
    def segment_cached(
        self, image_id: str, points: list[dict[str, Any]], box: list[float] | None = None, auto: bool = False
    ) -> Segmented:
        return self.backend.segment_cached(image_id, points, box, auto)

    @bentoml.api
    def info(self) -> dict:
        return self.backend.info()

    @bentoml.api
    def stats(self) -> dict:
        return self.backend.stats()


@bentoml.service(name="moodshift-diffusion", **stage_options("diffusion"))
class DiffusionService:
    """Blended SDXL: `run` is adaptively batched (compatible edits share a UNet batch); progress per job."""

    def __init__(self) -> None:
        from serving.backends import DiffusionBackend
        from serving.models.blended_sdxl import BlendedSDXLRunner

        self.backend = DiffusionBackend(BlendedSDXLRunner.from_settings(get_settings()))

    @bentoml.api(**batching("diffusion"))
    @raises_over_http
    def run(self, jobs: list[DiffusionJob]) -> list[DiffusionOutcome]:
        return self.backend.run(jobs)

    @bentoml.api
    def progress(self, job_ids: list[str]) -> dict[str, list[int]]:
        return self.backend.progress(job_ids)

    @bentoml.api
    def cancel(self, job_id: str) -> bool:
        return self.backend.cancel(job_id)

    @bentoml.api
    def info(self) -> dict:
        return self.backend.info()

    @bentoml.api
    def stats(self) -> dict:
        return self.backend.stats()


@bentoml.service(name="moodshift", **gateway_options())
class Moodshift:
    """The HTTP contract: /segment, /mood, /prompt, /edit (+ /edit_submit, /edit_status, /edit_cancel), /info."""

    segmentation = depends_on_stage(SegmentationService, "segment")
    diffusion = depends_on_stage(DiffusionService, "diffusion")

    def __init__(self) -> None:
        from serving.http_errors import status_and_message
        from serving.jobs import JobRunner, JobStore
        from serving.models.ollama_stage import PromptStage
        from serving.pipeline import Pipeline

        self.settings = get_settings()
        self.jobs = JobRunner(JobStore(), self.settings.max_queued_edits, lambda exc: status_and_message(exc)[1])
        self.pipeline = Pipeline(
            StageClient(self.segmentation),
            StageClient(self.diffusion),
            PromptStage(self.settings),
            self.settings,
            background=self.jobs.in_worker_thread,
        )
        # Load the CLIP tokenizer now: the first requests would otherwise import it from several threads at once,
        # and transformers' lazy module is not thread-safe (one of 8 concurrent first edits got an ImportError).
        self.pipeline.prompt_stage.count_tokens("moodshift")

    def _image(self, image: str) -> np.ndarray:
        from serving.core.images import decode_base64_image, to_rgb_array

        return to_rgb_array(decode_base64_image(image, self.settings.max_image_pixels))

    @bentoml.api(route="/segment")
    @answers_errors
    def segment(
        self,
        image: str | None = None,
        points: list[Point] = [],  # noqa: B006
        box: list[float] | None = None,
        image_id: str | None = None,
        auto: bool = False,
    ) -> dict:
        """Subject mask (base64 PNG, white = subject, same size as the image) and the `engine` that made it.

        No points and no box: the automatic subject (a salient-object model). With `auto`, points and box refine the
        automatic subject; without it they are SAM's prompts. A repeat click may send the `image_id` of an earlier
        answer instead of the image: the upload is skipped while the image is cached, and a 409 asks for the image
        again once it is not.
        """
        from serving.core.errors import InputError
        from serving.core.images import encode_png_base64

        clicks = [point.model_dump() for point in points]
        if image is not None:
            result = self.pipeline.segment(self._image(image), clicks, box, auto)
        elif image_id is not None:
            result = self.pipeline.segment_by_id(image_id, clicks, box, auto)
        else:
            raise InputError("no image: give the image (base64) or the image_id of an earlier /segment answer")
        return {
            "mask": encode_png_base64(result.mask),
            "score": result.score,
            "image_id": result.image_id,
            "cached": result.cached,
            "engine": result.engine,
        }

    @bentoml.api(route="/mood")
    @answers_errors
    def mood(self, image: str) -> dict:
        """Mood keywords of the photo: from LLaVA, or from image statistics when Ollama cannot answer."""
        return self.pipeline.mood(self._image(image)).to_dict()

    @bentoml.api(route="/prompt")
    @answers_errors
    def prompt(self, keywords: list[str], user_keyword: str) -> dict:
        """An SDXL background prompt (≤ 77 CLIP tokens) from mood keywords and the user's word."""
        return self.pipeline.prompt(keywords, user_keyword).to_dict()

    def _prepare(self, body: EditBody):
        """Decode and check an edit request completely (a caller's mistake raises before any model runs)."""
        import time

        from serving.core.images import decode_base64
        from serving.core.masks import mask_from_png_bytes

        began = time.perf_counter()
        rgb = self._image(body.image)
        decode_s = time.perf_counter() - began
        subject_mask = None
        if body.mask is not None:
            subject_mask = mask_from_png_bytes(decode_base64(body.mask, "mask"), (rgb.shape[1], rgb.shape[0]))
        prepared = self.pipeline.prepare_edit(
            rgb,
            subject_mask=subject_mask,
            points=[point.model_dump() for point in body.points] if body.points else None,
            box=body.box,
            auto=bool(body.auto),
            prompt=body.prompt,
            user_keyword=body.user_keyword,
            keywords=body.keywords,
            options=body.options(),
        )
        prepared.timings["decode_s"] = decode_s
        return prepared

    @staticmethod
    def _edit_response(outcome) -> dict[str, Any]:
        from dataclasses import asdict

        from serving.core.images import encode_png_base64

        return {**asdict(outcome), "images": [encode_png_base64(image) for image in outcome.images]}

    @bentoml.api(route="/edit", input_spec=EditBody)
    @answers_errors
    def edit(self, **body: Any) -> dict:
        """The photo with a new background: `images` (base64 PNG, input size), `seeds`, `prompt`, `timings`."""
        prepared = self._prepare(EditBody.model_construct(**body))
        return self._edit_response(self.pipeline.run_edit(prepared, job_id=uuid.uuid4().hex))

    @bentoml.api(route="/edit_submit", input_spec=EditBody)
    @answers_errors
    def edit_submit(self, **body: Any) -> dict:
        """Start an edit (same fields as /edit) and return at once: `{job_id, total_steps}`; poll /edit_status."""
        prepared = self._prepare(EditBody.model_construct(**body))

        def work(job_id: str, control) -> dict[str, Any]:
            outcome = self.pipeline.run_edit(
                prepared,
                job_id=job_id,
                on_stage=control.on_stage,
                on_step=control.on_step,
                cancelled=control.cancelled,
            )
            return self._edit_response(outcome)

        job = self.jobs.submit(prepared.total_steps, work)
        return {"job_id": job.job_id, "total_steps": job.total}

    @bentoml.api(route="/edit_status")
    @answers_errors
    def edit_status(self, job_id: str) -> dict:
        """`{job_id, state, stage, step, total}`, plus `result` (as /edit returns) when done or `error` when not."""
        return self.jobs.store.get(job_id).to_dict()

    @bentoml.api(route="/edit_cancel")
    @answers_errors
    def edit_cancel(self, job_id: str) -> dict:
        """Stop a queued or running edit; `{job_id, state}`."""
        job = self.jobs.store.cancel(job_id)
        return {"job_id": job_id, "state": job.state}

    @bentoml.api(route="/info")
    @answers_errors
    def info(self) -> dict:
        """Stages (profile, model, device), versions, `demo_models`, the edit options table and input limits."""
        from serving.service_info import describe

        return describe(
            self.segmentation.info(), self.diffusion.info(), self.pipeline.prompt_stage.info(), self.settings
        )

    @bentoml.api(route="/stats")
    @answers_errors
    def stats(self) -> dict:
        """Counters: SAM encoder batches and cache use, diffusion batch sizes, jobs."""
        return {
            "segment": self.segmentation.stats(),
            "diffusion": self.diffusion.stats(),
            "jobs": self.jobs.store.counts(),
        }


Moodshift.add_asgi_middleware(
    RequestGuardMiddleware,
    max_body_bytes=lambda: int(get_settings().max_upload_mb * 1_000_000),
    get_aliases=("/info", "/stats"),
)
