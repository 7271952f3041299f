"""BentoML services: SAM and blended SDXL as GPU services with adaptive batching, behind a gateway that speaks
Moodshift's HTTP contract (DESIGN.md) and calls Ollama.

Serve with `python -m serving serve` (or `bentoml serve serving.service:Moodshift`). Models load in `__init__`
with their imports, so `bentoml build` imports this module cheaply. The stage services can run on other
machines: set MOODSHIFT_SEGMENT_SERVICE_URL / MOODSHIFT_DIFFUSION_SERVICE_URL and `bentoml.depends` calls them
there.
"""

import asyncio
import contextlib
import functools
import json
import logging
import threading
import time
import uuid
from typing import Annotated, Any

import anyio
import bentoml
import numpy as np
from annotated_types import Ge, Le
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import JSONResponse

from serving.http_guard import RequestGuardMiddleware
from serving.settings import get_settings

logger = logging.getLogger("moodshift.service")
settings = get_settings()
TRAFFIC = {"timeout": settings.traffic_timeout_s, "max_concurrency": settings.max_concurrency}
# How the gateway's client to a stage service recycles its HTTP session. BentoML 1.4 replaces the session every 100
# requests or 300 s by closing the old one, which cuts every call still in flight on it: with /edit_status polling
# /progress, a running edit failed with "Server disconnected" after about 100 polls. So the session is never
# recycled (the stages are reached over a local socket or a fixed URL; nothing is gained by reconnecting).
RUNNER_CONNECTION = {"max_requests": 2**62, "max_age": 1e12}


# The two model services: one GPU each; 4 threads so progress, info and cancel calls are answered during a run.
STAGE_SERVICE: dict[str, Any] = {
    "resources": {"gpu": 1},
    "traffic": TRAFFIC,
    "runner_connection": RUNNER_CONNECTION,
    "workers": 1,
    "threads": 4,
}


def batching(max_batch_size: int, max_latency_ms: int) -> dict[str, Any]:
    """Adaptive batching options; a batch size of 1 turns batching off (the API still takes a list)."""
    if max_batch_size <= 1:
        return {}
    return {"batchable": True, "max_batch_size": max_batch_size, "max_latency_ms": max_latency_ms}


@bentoml.service(name="moodshift-segment", **STAGE_SERVICE)
class SegmentationService:
    """SAM: `encode` is adaptively batched (one encoder pass for concurrent new images); `segment` decodes clicks."""

    def __init__(self) -> None:
        from serving.backends import SegmentationBackend
        from serving.models.sam import Segmenter

        self.backend = SegmentationBackend(Segmenter.from_settings(get_settings()))

    @bentoml.api(**batching(settings.segment_max_batch_size, settings.segment_max_latency_ms))
    def encode(self, images: list[np.ndarray]) -> list[dict[str, Any]]:
        return self.backend.encode(images)

    @bentoml.api
    def segment(self, image: np.ndarray, points: list[dict[str, Any]], box: list[float] | None = None) -> dict:
        return self.backend.segment(image, points, box)

    @bentoml.api
    def segment_cached(self, image_id: str, points: list[dict[str, Any]], box: list[float] | None = None) -> dict:
        # An empty dict (not None) when the embedding is not cached: the proxy's output type is a dict.
        return self.backend.segment_cached(image_id, points, box) or {}

    @bentoml.api
    def info(self) -> dict:
        return self.backend.info()

    @bentoml.api
    def stats(self) -> dict:
        return self.backend.stats()


@bentoml.service(name="moodshift-diffusion", **STAGE_SERVICE)
class DiffusionService:
    """Blended SDXL: `run` is adaptively batched (compatible edits share a UNet batch); progress per job."""

    def __init__(self) -> None:
        from serving.backends import DiffusionBackend
        from serving.models.blended_sdxl import BlendedSDXLRunner

        self.backend = DiffusionBackend(BlendedSDXLRunner.from_settings(get_settings()))

    @bentoml.api(**batching(settings.diffusion_max_batch_size, settings.diffusion_max_latency_ms))
    def run(self, jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return self.backend.run(jobs)

    @bentoml.api
    def progress(self, job_ids: list[str]) -> dict[str, list[int]]:
        return self.backend.progress(job_ids)

    @bentoml.api
    def cancel(self, job_id: str) -> bool:
        return self.backend.cancel(job_id)

    @bentoml.api
    def total_steps(self, steps: int, strength: float) -> int:
        return self.backend.total_steps(steps, strength)

    @bentoml.api
    def info(self) -> dict:
        return self.backend.info()

    @bentoml.api
    def stats(self) -> dict:
        return self.backend.stats()


class Point(BaseModel):
    """One click in image pixels (origin top-left); label 1 = subject, 0 = not subject."""

    # Strict: `true` or "12" is a caller's mistake, not a coordinate (lax pydantic would read them as 1.0 and 12.0).
    model_config = ConfigDict(strict=True)

    x: float
    y: float
    label: int = 1


def error_response(exc: BaseException) -> JSONResponse:
    """A caller's mistake -> 4xx naming it; anything else -> 500 with a short message (details in the log)."""
    from serving.core.images import ImageTooLargeError
    from serving.jobs import UnknownJobError
    from serving.pipeline import EditFailed, ImageNotCachedError

    if isinstance(exc, ImageTooLargeError):
        return JSONResponse({"error": str(exc)}, status_code=413)
    if isinstance(exc, UnknownJobError):
        return JSONResponse({"error": str(exc)}, status_code=404)
    if isinstance(exc, ImageNotCachedError):
        return JSONResponse({"error": str(exc)}, status_code=409)
    if isinstance(exc, EditFailed) and exc.status < 500:
        return JSONResponse({"error": str(exc)}, status_code=exc.status)
    if isinstance(exc, ValueError):
        return JSONResponse({"error": str(exc)}, status_code=400)
    if isinstance(exc, bentoml.exceptions.BentoMLException) and exc.error_code in (429, 503):
        # A stage service shed load: past its max_concurrency (429) or its batching latency budget (503).
        logger.warning("a stage service is overloaded: %s", exc)
        return JSONResponse({"error": "the service is overloaded; try again shortly"}, status_code=503)
    logger.exception("request failed")
    message = str(exc) if isinstance(exc, EditFailed) else _short_reason(exc)
    return JSONResponse({"error": f"internal error: {message}"}, status_code=500)


def _short_reason(exc: BaseException) -> str:
    """`Type: message`, at most about 200 characters; a stage service's JSON error body is unwrapped."""
    text = str(exc)
    with contextlib.suppress(ValueError, TypeError, KeyError):
        text = str(json.loads(text)["error"])
    return f"{type(exc).__name__}: {text[:200]}"


def answers_errors(method):
    """Turn exceptions of an API method into JSON error responses (the signature stays BentoML's to read)."""

    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        try:
            return method(*args, **kwargs)
        except Exception as exc:
            return error_response(exc)

    return wrapper


Steps = Annotated[int, Ge(1), Le(150)]
Guidance = Annotated[float, Ge(0), Le(30)]
Variants = Annotated[int, Ge(1), Le(8)]
Feather = Annotated[int, Ge(0), Le(256)]
Seed = Annotated[int, Ge(0), Le(2**63 - 9)]
Strength = Annotated[float, Field(gt=0, le=1)]


class EditBody(BaseModel):
    """The body of /edit and /edit_submit: the photo, what to keep (mask or clicks), what to write, options."""

    image: str = Field(description="The photo, base64 PNG/JPEG.")
    mask: str | None = Field(None, description="Subject mask, base64 PNG, image size, white = subject.")
    points: list[Point] | None = Field(None, description="Clicks to segment the subject with (instead of mask).")
    box: list[float] | None = Field(
        None, description="Box [x0, y0, x1, y1] around the subject (with/instead of points)."
    )
    prompt: str | None = Field(None, description="The SDXL prompt; or give user_keyword to have one written.")
    user_keyword: str | None = Field(None, description="Your word (forest, galaxy...) for the prompt writer.")
    keywords: list[str] | None = Field(None, description="Mood keywords (default: read from the photo).")
    negative_prompt: str | None = None
    seed: Seed | None = None
    steps: Steps | None = None
    guidance: Guidance | None = None
    variants: Variants = 1
    feather: Feather | None = None
    strength: Strength = 1.0


@bentoml.service(name="moodshift", traffic=TRAFFIC, workers=1, threads=max(8, settings.max_concurrency))
class Moodshift:
    """The HTTP contract: /segment, /mood, /prompt, /edit (+ /edit_submit, /edit_status, /edit_cancel), /info."""

    segmentation = bentoml.depends(SegmentationService, url=settings.segment_service_url)
    diffusion = bentoml.depends(DiffusionService, url=settings.diffusion_service_url)

    def __init__(self) -> None:
        from serving.jobs import JobStore
        from serving.models.ollama_stage import PromptStage
        from serving.pipeline import Pipeline

        self.settings = get_settings()
        self.pipeline = Pipeline(self.segmentation, self.diffusion, PromptStage(self.settings), self.settings)
        # Load the CLIP tokenizer now: the first requests would otherwise import it from several threads at once,
        # and transformers' lazy module is not thread-safe (one of 8 concurrent first edits got an ImportError).
        self.pipeline.prompt_stage.count_tokens("moodshift")
        self.jobs = JobStore()
        self._job_limiter: anyio.CapacityLimiter | None = None
        self._submit_lock = threading.Lock()
        self._job_tasks: set[asyncio.Task] = set()

    def _image(self, image: str) -> tuple[np.ndarray, float]:
        from serving.core.images import decode_base64_image, to_rgb_array

        began = time.perf_counter()
        rgb = to_rgb_array(decode_base64_image(image, self.settings.max_image_pixels))
        return rgb, time.perf_counter() - began

    @bentoml.api(route="/segment")
    @answers_errors
    def segment(
        self,
        image: str | None = None,
        points: list[Point] = [],  # noqa: B006
        box: list[float] | None = None,
        image_id: str | None = None,
    ) -> dict:
        """Subject mask (base64 PNG, white = subject, same size as the image) for clicks and/or a box.

        A repeat click may send the `image_id` of an earlier answer instead of the image: the upload is skipped
        while the embedding is cached, and a 409 asks for the image again once it is not.
        """
        from serving.core.images import encode_png_base64
        from serving.pipeline import EditInputError

        clicks = [p.model_dump() for p in points]
        if image is not None:
            result = self.pipeline.segment(self._image(image)[0], clicks, box)
        elif image_id is not None:
            result = self.pipeline.segment_by_id(image_id, clicks, box)
        else:
            raise EditInputError("no image: give the image (base64) or the image_id of an earlier /segment answer")
        return {
            "mask": encode_png_base64(result["mask"]),
            "score": float(result["score"]),
            "image_id": result["image_id"],
            "cached": bool(result["cached"]),
        }

    @bentoml.api(route="/mood")
    @answers_errors
    def mood(self, image: str) -> dict:
        """Mood keywords of the photo: from LLaVA, or from image statistics when Ollama cannot answer."""
        rgb, _ = self._image(image)
        return self.pipeline.mood(rgb).to_dict()

    @bentoml.api(route="/prompt")
    @answers_errors
    def prompt(self, keywords: list[str], user_keyword: str) -> dict:
        """An SDXL background prompt (≤ 77 CLIP tokens) from mood keywords and the user's word."""
        return self.pipeline.prompt(keywords, user_keyword).to_dict()

    def _prepare(self, body: EditBody):
        """Decode and check an edit request completely (a caller's mistake raises before any model runs)."""
        from serving.core.images import decode_base64
        from serving.core.masks import mask_from_png_bytes

        rgb, decode_s = self._image(body.image)
        subject_mask = None
        if body.mask is not None:
            subject_mask = mask_from_png_bytes(decode_base64(body.mask, "mask"), (rgb.shape[1], rgb.shape[0]))
        prepared = self.pipeline.prepare_edit(
            rgb,
            subject_mask=subject_mask,
            points=[point.model_dump() for point in body.points] if body.points else None,
            **body.model_dump(exclude={"image", "mask", "points"}),
        )
        prepared.timings["decode_s"] = decode_s
        return prepared

    @staticmethod
    def _edit_response(result: dict[str, Any]) -> dict[str, Any]:
        from serving.core.images import encode_png_base64

        return {**result, "images": [encode_png_base64(image) for image in result["images"]]}

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
        with self._submit_lock:  # count and add as one step: concurrent submits must not both take the last slot
            if self.jobs.active_count() >= self.settings.max_queued_edits:
                return JSONResponse(
                    {"error": f"too many edits in progress ({self.settings.max_queued_edits}); try again shortly"},
                    status_code=429,
                )
            job = self.jobs.create(prepared.total_steps)
        anyio.from_thread.run_sync(self._start_job, job.job_id, prepared)
        return {"job_id": job.job_id, "total_steps": prepared.total_steps}

    def _start_job(self, job_id: str, prepared) -> None:
        """In the event loop: run the job in an AnyIO worker thread, where BentoML's sync clients can call out."""
        if self._job_limiter is None:
            self._job_limiter = anyio.CapacityLimiter(self.settings.max_queued_edits)
        task = asyncio.get_running_loop().create_task(
            anyio.to_thread.run_sync(self._run_job, job_id, prepared, limiter=self._job_limiter)
        )
        self._job_tasks.add(task)  # the loop keeps only weak references to tasks
        task.add_done_callback(self._job_tasks.discard)

    def _run_job(self, job_id: str, prepared) -> None:
        """Body of an /edit_submit job (a worker thread): its outcome lands in the job store."""
        from serving.jobs import JobCancelled
        from serving.pipeline import EditFailed

        def enter(stage: str) -> None:
            # A cancel before the diffusion stage has nothing to interrupt in the diffusion service: stop here.
            if not self.jobs.start(job_id, stage):
                raise JobCancelled(job_id)

        try:
            enter("starting")
            result = self.pipeline.run_edit(prepared, job_id, on_stage=enter)
        except JobCancelled:
            self.jobs.fail(job_id, "cancelled by the caller")  # fail() records a cancelled job as cancelled
            return
        except Exception as exc:
            response = error_response(exc)
            status = exc.status if isinstance(exc, EditFailed) else response.status_code
            self.jobs.fail(job_id, json.loads(response.body)["error"], status)
            return
        self.jobs.finish(job_id, self._edit_response(result))

    @bentoml.api(route="/edit_status")
    @answers_errors
    def edit_status(self, job_id: str) -> dict:
        """`{job_id, state, stage, step, total}`, plus `result` (as /edit returns) when done or `error` when not."""
        job = self.jobs.get(job_id)
        if job.state == "running" and job.stage == "diffusion":
            progress = self.diffusion.progress([job_id]).get(job_id)
            if progress:
                self.jobs.progress(job_id, *progress)
        return self.jobs.get(job_id).to_dict()

    @bentoml.api(route="/edit_cancel")
    @answers_errors
    def edit_cancel(self, job_id: str) -> dict:
        """Stop a queued or running edit; `{job_id, state}`."""
        job = self.jobs.cancel(job_id)
        if job.state == "running":
            self.diffusion.cancel(job_id)
        return {"job_id": job_id, "state": job.state}

    @bentoml.api(route="/info")
    @answers_errors
    def info(self) -> dict:
        """Profile and model of each stage, device, versions; `demo_models` when any stage has random weights."""
        from serving.service_info import describe

        return describe(self.segmentation.info(), self.diffusion.info(), self.pipeline.prompt_stage.info())

    @bentoml.api(route="/stats")
    @answers_errors
    def stats(self) -> dict:
        """Counters: SAM encoder batches and cache use, diffusion batch sizes, jobs."""
        return {
            "segment": self.segmentation.stats(),
            "diffusion": self.diffusion.stats(),
            "jobs": self.jobs.counts(),
        }


Moodshift.add_asgi_middleware(
    RequestGuardMiddleware,
    max_body_bytes=lambda: int(get_settings().max_upload_mb * 1_000_000),
    get_aliases=("/info", "/stats"),
)
