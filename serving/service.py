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
from starlette.responses import Response

from serving.api_models import Box, EditBody, Point, wants_png
from serving.backends import DiffusionJob, DiffusionOutcome, Encoded, JobProgress, Segmented
from serving.core.wire import WireArray
from serving.deployment import batching, depends_on_stage, gateway_options, stage_options
from serving.http_errors import StageClient, answers_errors, raises_over_http, status_and_message
from serving.http_guard import RequestGuardMiddleware, text_fields_of
from serving.image_cache import ImageCache
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

        self.backend = DiffusionBackend.from_settings(get_settings())

    @bentoml.api(**batching("diffusion"))
    @raises_over_http
    def run(self, jobs: list[DiffusionJob]) -> list[DiffusionOutcome]:
        return self.backend.run(jobs)

    @bentoml.api
    def progress(self, job_ids: list[str]) -> dict[str, JobProgress]:
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
    """The HTTP contract: /segment, /matte, /mood, /prompt, /edit (+ /edit_submit, /edit_status, /edit_cancel),
    /info, /stats."""

    segmentation = depends_on_stage(SegmentationService, "segment")
    diffusion = depends_on_stage(DiffusionService, "diffusion")

    def __init__(self) -> None:
        from serving.core.matting import warm_up as warm_up_matting
        from serving.jobs import JobRunner, JobStore
        from serving.models.ollama_stage import PromptStage
        from serving.pipeline import Pipeline

        self.settings = get_settings()
        self.images = ImageCache(int(self.settings.image_cache_mb * 1_000_000))
        store = JobStore(max_result_bytes=int(self.settings.job_results_mb * 1_000_000))
        self.jobs = JobRunner(store, self.settings.max_queued_edits, lambda exc: status_and_message(exc)[1])
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
        # Import pymatting now, not in the first edit: on a machine's first start its numba kernels compile (~45 s).
        warm_up_matting()

    def _photo(self, image: str | None, image_id: str | None) -> tuple[np.ndarray, str]:
        """The photo sent (decoded, and kept by its id) or named by the id of an earlier answer (409 when no longer
        kept), and its image id."""
        from serving.core.errors import InputError
        from serving.core.images import decode_base64_image, to_rgb_array

        if image is not None:
            rgb = to_rgb_array(decode_base64_image(image, self.settings.max_image_pixels))
            return rgb, self.images.put(rgb)
        if image_id is not None:
            return self.images.get(image_id), image_id
        raise InputError("no image: give the image (base64 or a file upload) or the image_id of an earlier answer")

    @staticmethod
    def _mask(mask: str | None, image: np.ndarray) -> np.ndarray | None:
        """An uploaded mask's levels (grey = soft), checked to have the image's size; None when none was sent."""
        from serving.core.images import decode_base64
        from serving.core.masks import mask_levels_from_png_bytes

        if mask is None:
            return None
        return mask_levels_from_png_bytes(decode_base64(mask, "mask"), (image.shape[1], image.shape[0]))

    @bentoml.api(route="/segment")
    @answers_errors
    def segment(
        self,
        ctx: bentoml.Context,
        image: str | None = None,
        points: list[Point] = [],  # noqa: B006
        box: Box | None = None,
        image_id: str | None = None,
        auto: bool = False,
    ) -> dict:
        """Subject mask (PNG, white = subject, same size as the image) and the `engine` that made it: `{mask
        (base64), score, image_id, cached, engine}`, or the PNG itself for `Accept: image/png`.

        No points and no box: the automatic subject (a salient-object model). With `auto`, points and box refine the
        automatic subject; without it they are SAM's prompts. A repeat click sends the `image_id` of an earlier
        answer instead of the image; a 409 asks for the image again once neither the gateway nor the segmentation
        service keeps it.
        """
        from serving.core.errors import NotCachedError
        from serving.core.masks import mask_to_png_base64, mask_to_png_bytes

        clicks = [point.model_dump() for point in points]
        if image is None and image_id is not None:
            try:
                rgb = self.images.get(image_id)
            except NotCachedError:  # the segmentation service may still keep its results for the image
                result = self.pipeline.segment_by_id(image_id, clicks, box, auto)
            else:
                result = self.pipeline.segment(rgb, clicks, box, auto, image_id=image_id)
        else:
            rgb, image_id = self._photo(image, image_id)
            result = self.pipeline.segment(rgb, clicks, box, auto, image_id=image_id)
        if wants_png(ctx):
            headers = {"X-Moodshift-Image-Id": result.image_id, "X-Moodshift-Score": f"{result.score:.4f}"}
            return Response(mask_to_png_bytes(result.mask), media_type="image/png", headers=headers)
        return {
            "mask": mask_to_png_base64(result.mask),
            "score": result.score,
            "image_id": result.image_id,
            "cached": result.cached,
            "engine": result.engine,
        }

    @bentoml.api(route="/matte")
    @answers_errors
    def matte(
        self,
        image: str | None = None,
        mask: str | None = None,
        points: list[Point] = [],  # noqa: B006
        box: Box | None = None,
        image_id: str | None = None,
        auto: bool = False,
    ) -> dict:
        """The subject cut out: `cutout` (base64 RGBA PNG, image size, straight alpha, the subject's own colours at
        its soft edge) and `image_id`. The photo is `image` or an earlier answer's `image_id`; the subject is a mask
        (base64 PNG, white = subject; grey levels are a soft prior), or clicks and/or a box and `auto` as /segment
        takes them (nothing: the automatic subject)."""
        from serving.core.images import encode_png_base64

        rgb, image_id = self._photo(image, image_id)
        clicks = [point.model_dump() for point in points]
        result = self.pipeline.cutout(
            rgb, subject_mask=self._mask(mask, rgb), points=clicks, box=box, image_id=image_id, auto=auto
        )
        return {"cutout": encode_png_base64(result.rgba), "image_id": result.image_id}

    @bentoml.api(route="/mood")
    @answers_errors
    def mood(self, image: str | None = None, image_id: str | None = None) -> dict:
        """Mood keywords of the photo (or of an earlier answer's `image_id`): from LLaVA, or from image statistics
        when Ollama cannot answer; with the photo's `image_id`."""
        rgb, image_id = self._photo(image, image_id)
        return {**self.pipeline.mood(rgb, image_id).to_dict(), "image_id": image_id}

    @bentoml.api(route="/prompt")
    @answers_errors
    def prompt(self, keywords: list[str], user_keyword: str) -> dict:
        """An SDXL background prompt (≤ 77 CLIP tokens) from mood keywords and the user's word."""
        return self.pipeline.prompt(keywords, user_keyword).to_dict()

    def _prepare(self, body: EditBody):
        """Decode and check an edit request completely (a caller's mistake raises before any model runs)."""
        import time

        began = time.perf_counter()
        rgb, image_id = self._photo(body.image, body.image_id)
        decode_s = time.perf_counter() - began
        subject_mask = self._mask(body.mask, rgb)
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
            image_id=image_id,
        )
        prepared.timings["decode_s"] = decode_s
        return prepared

    @staticmethod
    def _edit_response(outcome) -> dict[str, Any]:
        from serving.core.images import encode_png_base64

        # vars(), not dataclasses.asdict(): asdict deep-copies every full-size image only to have it replaced here.
        return {**vars(outcome), "images": [encode_png_base64(image) for image in outcome.images]}

    @bentoml.api(route="/edit", input_spec=EditBody)
    @answers_errors
    def edit(self, ctx: bentoml.Context, **body: Any) -> dict:
        """The photo with a new background: `images` (base64 PNG, input size), `seeds`, `prompt`, `timings`; or,
        for `Accept: image/png` and one variant, the PNG itself."""
        from serving.core.errors import InputError
        from serving.core.images import png_bytes

        prepared = self._prepare(EditBody.model_construct(**body))
        png = wants_png(ctx)
        if png and prepared.options.variants > 1:
            raise InputError(
                f"Accept: image/png answers with one image; this edit makes {prepared.options.variants} variants: "
                "ask for JSON, or for one variant"
            )
        with self.jobs.slot():  # counted with the jobs: MOODSHIFT_MAX_QUEUED_EDITS bounds every edit in progress
            outcome = self.pipeline.run_edit(prepared, job_id=uuid.uuid4().hex)
        if png:
            headers = {"X-Moodshift-Seed": str(outcome.seeds[0]), "X-Moodshift-Image-Id": outcome.image_id}
            return Response(png_bytes(outcome.images[0]), media_type="image/png", headers=headers)
        return self._edit_response(outcome)

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
                on_preview=control.on_preview,
                cancelled=control.cancelled,
            )
            return self._edit_response(outcome)

        job = self.jobs.submit(prepared.total_steps, work)
        return {"job_id": job.job_id, "total_steps": job.total}

    @bentoml.api(route="/edit_status")
    @answers_errors
    def edit_status(self, job_id: str) -> dict:
        """`{job_id, state, stage, step, total}`, a small `preview` (base64 PNG) of the background forming while it
        runs, then `result` (as /edit returns) when done or `error` when not."""
        return self.jobs.store.status(job_id)

    @bentoml.api(route="/edit_cancel")
    @answers_errors
    def edit_cancel(self, job_id: str) -> dict:
        """Stop a queued or running edit; `{job_id, state}`."""
        return {"job_id": job_id, "state": self.jobs.store.cancel(job_id)}

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
        """Counters: SAM encoder batches and cache use, diffusion batch sizes, jobs, the photos kept by id."""
        return {
            "segment": self.segmentation.stats(),
            "diffusion": self.diffusion.stats(),
            "jobs": self.jobs.store.counts(),
            "images": self.images.stats(),
        }


Moodshift.add_asgi_middleware(
    RequestGuardMiddleware,
    max_body_bytes=lambda: int(get_settings().max_upload_mb * 1_000_000),
    get_aliases=("/info", "/stats"),
    trusted_origins=lambda: get_settings().trusted_origin_set,
    text_fields=text_fields_of(Moodshift),
)
