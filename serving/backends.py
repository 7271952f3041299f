"""The segmentation and diffusion stages behind one small, serialisable interface.

The gateway reaches these through the stage services (`bentoml.depends`: another process, maybe another machine)
and the CLI calls them in-process; both see the same methods taking and returning the same typed values, with
arrays as `WireArray`s (compact bytes with shape and dtype), so the pipeline above them is the same either way and
an array arrives as it left. Failures are raised as the typed errors of `serving.core.errors`, never returned as
data.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from serving.core.wire import WireArray

if TYPE_CHECKING:
    from serving.models.blended_sdxl import BlendedSDXLRunner
    from serving.models.preview_decoder import PreviewDecoder
    from serving.models.subject import SubjectFinder
    from serving.settings import Settings


def _profile_entry(profile: Any, model_name: str) -> dict[str, Any]:
    return {
        "profile": profile.profile if profile else "unknown",
        "model": model_name,
        "reason": profile.reason if profile else None,
        "demo": bool(profile and profile.is_demo),
    }


class Encoded(BaseModel):
    """An image put in a cache (SAM's embeddings, or the automatic subjects): its id, and whether it was there."""

    image_id: str
    cached: bool


class Segmented(BaseModel):
    """A subject mask (bool HxW, the image's size) and how it was obtained."""

    mask: WireArray
    score: float
    image_id: str
    cached: bool  # what the image needed was reused: no image model (salient model, SAM's encoder) ran
    engine: str  # what made the mask: the salient model ("u2netp"), SAM ("sam-vit_h"), or "u2netp+clicks"


class DiffusionJob(BaseModel):
    """One edit for the diffusion stage: the photo already at the working size (uint8), the subject at the photo's
    own size (bool HxW: the latent mask counts every pixel), the photo's (width, height), the prompt, and the
    options, checked where the request entered (`EditOptions.to_dict()`). Only working-size pixels cross: the
    full-size composite is the pipeline's."""

    job_id: str
    image: WireArray
    subject_mask: WireArray
    original_size: tuple[int, int]
    prompt: str
    options: dict[str, Any]


class DiffusionOutcome(BaseModel):
    """A job's new backgrounds (uint8, working size), seeds and seconds per phase; or, for a job cancelled while it
    ran, `cancelled` and nothing else."""

    backgrounds: list[WireArray] = []
    seeds: list[int] = []
    timings: dict[str, float] = {}
    cancelled: bool = False


class JobProgress(BaseModel):
    """A running job's step k of n and, when it asked for previews, a small picture of where it is heading."""

    step: int
    total: int
    preview: WireArray | None = None


class SegmentationBackend:
    """The automatic subject and SAM: batched salient-model runs and SAM encodes into their caches, then cheap
    per-click masks on top of them."""

    def __init__(self, finder: SubjectFinder) -> None:
        self.finder = finder

    def encode(self, images: list[WireArray]) -> list[Encoded]:
        """Cache the SAM embeddings of several HWC uint8 images in one encoder pass."""
        encoded = self.finder.segmenter.encode_batch([image.to_numpy() for image in images])
        return [Encoded(image_id=e.image_id, cached=e.cached) for e in encoded]

    def detect(self, images: list[WireArray]) -> list[Encoded]:
        """Cache the automatic subjects of several HWC uint8 images (the salient model's maps)."""
        found = self.finder.detect_batch([image.to_numpy() for image in images])
        return [Encoded(image_id=f.image_id, cached=f.cached) for f in found]

    def segment(
        self, image: WireArray, points: list[dict[str, Any]], box: list[float] | None, auto: bool = False
    ) -> Segmented:
        """Subject mask of an upright RGB image: the automatic subject refined by clicks/box when `auto`, else SAM
        from the clicks/box; with score, image id and cache use."""
        return self._answer(self.finder.segment(image.to_numpy(), points, box, auto))

    def segment_cached(
        self, image_id: str, points: list[dict[str, Any]], box: list[float] | None, auto: bool = False
    ) -> Segmented:
        """`segment` by image id (no pixels sent); `NotCachedError` when what it needs is not cached, `ClickError`
        for a click outside the image (only this side knows the image's size)."""
        return self._answer(self.finder.segment_cached(image_id, points, box, auto))

    @staticmethod
    def _answer(result) -> Segmented:
        return Segmented(
            mask=WireArray.of(result.mask),
            score=result.score,
            image_id=result.image_id,
            cached=result.cached,
            engine=result.engine,
        )

    def info(self) -> dict[str, Any]:
        """SAM's profile and model, the device, the salient model (`salient`) and what refines clicks (`clicks`)."""
        import torch

        finder = self.finder
        salient = finder.salient
        return {
            **_profile_entry(finder.sam_profile, finder.sam_name),
            "device": finder.device,
            "dtype": finder.dtype,
            "torch": torch.__version__,
            "salient": {
                "model": salient.spec.name if finder.detector is not None else None,
                "file": str(salient.path),
                "about": salient.spec.about,
                "problem": finder.detector_problem,
            },
            "clicks": finder.clicks_engine,
        }

    def stats(self) -> dict[str, Any]:
        return self.finder.stats()


class DiffusionBackend:
    """Blended SDXL: runs edit jobs (batched when compatible) and reports each job's step k of n and a preview.

    previews: turns a job's latest latents into a small picture (`serving.models.preview_decoder`); only when the
    job is polled, so a preview nobody looks at costs a copy of the latents and nothing more."""

    def __init__(self, runner: BlendedSDXLRunner, previews: PreviewDecoder | None = None) -> None:
        from serving.models.preview_decoder import PreviewDecoder

        self.runner = runner
        self.previews = previews or PreviewDecoder()
        self._lock = threading.Lock()
        self._progress: dict[str, tuple[int, int]] = {}
        self._latents: dict[str, tuple[int, Any]] = {}  # job -> (step, latents it is heading for)
        self._pictures: dict[str, tuple[int, WireArray]] = {}  # job -> (step, its preview), made when polled
        self._cancel: dict[str, threading.Event] = {}
        self.batch_sizes: deque[int] = deque(maxlen=100)  # the latest runs' (the service runs for days)
        self.runs = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> DiffusionBackend:
        """The runner of the settings' SDXL, and TAESD-XL previews when its weights are there."""
        from serving.models.blended_sdxl import BlendedSDXLRunner
        from serving.models.preview_decoder import PreviewDecoder

        runner = BlendedSDXLRunner.from_settings(settings)
        return cls(runner, PreviewDecoder.from_settings(settings, runner.device, runner.dtype))

    def run(self, jobs: list[DiffusionJob]) -> list[DiffusionOutcome]:
        """Run edit jobs, batched where compatible; one outcome per job, in order.

        A job cancelled while it ran answers `cancelled` and leaves the others of its batch intact; any other
        failure raises (it is the whole UNet batch's failure).
        """
        from serving.core.edit_options import EditOptions
        from serving.core.errors import CancelledError
        from serving.models.blended_sdxl import DiffusionRequest

        requests = []
        with self._lock:
            self.batch_sizes.append(len(jobs))
            self.runs += 1
            for job in jobs:
                job_id, options = job.job_id, EditOptions(**job.options)
                self._cancel.setdefault(job_id, threading.Event())
                self._progress[job_id] = (0, options.denoising_steps)
                requests.append(
                    DiffusionRequest(
                        image=job.image.to_numpy(),
                        subject_mask=job.subject_mask.to_numpy(),
                        prompt=job.prompt,
                        composite=False,
                        original_size=tuple(job.original_size),
                        options=options,
                        progress=self._progress_callback(job_id),
                        preview=self._latents_callback(job_id) if options.preview else None,
                        cancel=self._cancel[job_id],
                    )
                )
        try:
            results = self.runner.run_batch(requests, return_exceptions=True)
        finally:
            with self._lock:
                for job in jobs:
                    for table in (self._cancel, self._progress, self._latents, self._pictures):
                        table.pop(job.job_id, None)
        outcomes = []
        for result in results:
            if isinstance(result, CancelledError):
                outcomes.append(DiffusionOutcome(cancelled=True))
            elif isinstance(result, Exception):
                raise result
            else:
                outcomes.append(
                    DiffusionOutcome(
                        backgrounds=[WireArray.of(image) for image in result.images],
                        seeds=result.seeds,
                        timings=result.timings,
                    )
                )
        return outcomes

    def _progress_callback(self, job_id: str):
        def report(step: int, total: int) -> None:
            with self._lock:
                if job_id in self._progress:
                    self._progress[job_id] = (step, total)

        return report

    def _latents_callback(self, job_id: str):
        def keep(latents: Any) -> None:
            heading = latents.clone()  # the runner goes on with its own tensor
            with self._lock:
                if job_id in self._progress:
                    self._latents[job_id] = (self._progress[job_id][0], heading)

        return keep

    def progress(self, job_ids: list[str]) -> dict[str, JobProgress]:
        """Step k of n, and the preview of the latest step, of the jobs running now (absent: queued or finished)."""
        answers = {}
        for job_id in job_ids:
            with self._lock:
                if job_id not in self._progress:
                    continue
                step, total = self._progress[job_id]
                latest, picture = self._latents.get(job_id), self._pictures.get(job_id)
            if latest is not None and (picture is None or picture[0] != latest[0]):
                picture = (latest[0], WireArray.of(self.previews(latest[1])))
                with self._lock:
                    if job_id in self._progress:
                        self._pictures[job_id] = picture
            answers[job_id] = JobProgress(step=step, total=total, preview=picture[1] if picture else None)
        return answers

    def cancel(self, job_id: str) -> bool:
        """Ask a running job to stop at its next step. True when the job is running here."""
        with self._lock:
            event = self._cancel.get(job_id)
        if event is not None:
            event.set()
        return event is not None

    def info(self) -> dict[str, Any]:
        """Profile, model, device and memory mode, and `fast`: the few-step model of `mode=fast` (what it is, its
        scheduler, steps and guidance), or why there is none (`available` false, `reason`: what to put where)."""
        import torch

        entry = _profile_entry(self.runner.profile, self.runner.model_name)
        return {
            **entry,
            "fast": self.runner.describe_fast(),
            "weights_mode": self.runner.weights_mode,  # the mode the UNet's weights are in now
            "device": str(self.runner.device),
            "dtype": str(self.runner.dtype).split(".")[-1],
            "vae_dtype": str(self.runner.vae_dtype).split(".")[-1],
            "offload": self.runner.offload,  # GPU memory mode: none, model or sequential
            "offload_reason": self.runner.offload_reason,
            "working_pixels": self.runner.working_pixels,
            "previews": self.previews.name,
            "torch_threads": torch.get_num_threads(),
        }

    def stats(self) -> dict[str, Any]:
        switches = self.runner.fast.switches if self.runner.fast is not None else 0
        return {"batch_sizes": list(self.batch_sizes), "runs": self.runs, "mode_switches": switches}
