"""The segmentation and diffusion stages behind one small, serialisable interface.

The gateway talks to these through `bentoml.depends` (another process, maybe another machine) and the CLI calls
them in-process; both see the same methods taking and returning plain values (numpy arrays, dicts, lists), so
the pipeline code above them is the same either way.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from serving.models.blended_sdxl import BlendedSDXLRunner
    from serving.models.sam import Segmenter


def _profile_entry(profile: Any, model_name: str) -> dict[str, Any]:
    return {
        "profile": profile.profile if profile else "unknown",
        "model": model_name,
        "reason": profile.reason if profile else None,
        "demo": bool(profile and profile.is_demo),
    }


class SegmentationBackend:
    """SAM: batched encoding into the embedding cache, then cheap per-click decoding."""

    def __init__(self, segmenter: Segmenter) -> None:
        self.segmenter = segmenter

    def encode(self, images: list[np.ndarray]) -> list[dict[str, Any]]:
        """Cache the embeddings of several HWC uint8 images in one encoder pass: `[{image_id, cached}]`."""
        return [{"image_id": e.image_id, "cached": e.cached} for e in self.segmenter.encode_batch(images)]

    def segment(self, image: np.ndarray, points: list[dict[str, Any]], box: list[float] | None) -> dict[str, Any]:
        """Subject mask (bool HxW) for clicks/box on an upright RGB image, with score, image id and cache use."""
        return self._answer(self.segmenter.segment(image, points, box))

    def segment_cached(self, image_id: str, points: list[dict[str, Any]], box: list[float] | None) -> dict | None:
        """`segment` by image id when its embedding is cached (no pixels sent); None when it is not.

        Only this side knows the image's size, so a click outside it comes back as `{"prompt_error": message}`
        (a caller's mistake must cross a process boundary as data, not as a server error).
        """
        from serving.core.prompts import PromptError

        try:
            result = self.segmenter.segment_cached(image_id, points, box)
        except PromptError as exc:
            return {"prompt_error": str(exc)}
        return None if result is None else self._answer(result)

    @staticmethod
    def _answer(result) -> dict[str, Any]:
        return {
            "mask": result.mask,
            "score": result.score,
            "image_id": result.image_id,
            "cached": result.cached,
            "used_mask_input": result.used_mask_input,
        }

    def info(self) -> dict[str, Any]:
        import torch

        entry = _profile_entry(self.segmenter.profile, self.segmenter.model_name)
        return {
            **entry,
            "device": str(self.segmenter.device),
            "dtype": str(self.segmenter.dtype).split(".")[-1],
            "torch": torch.__version__,
        }

    def stats(self) -> dict[str, Any]:
        return {**self.segmenter.stats(), "batch_sizes": list(self.segmenter.batch_sizes)[-100:]}


class DiffusionBackend:
    """Blended SDXL: runs edit jobs (batched when compatible) and reports each job's step k of n."""

    def __init__(self, runner: BlendedSDXLRunner) -> None:
        self.runner = runner
        self._lock = threading.Lock()
        self._progress: dict[str, tuple[int, int]] = {}
        self._cancel: dict[str, threading.Event] = {}
        self.batch_sizes: list[int] = []

    def run(self, jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Run edit jobs: each `{job_id, image, subject_mask, prompt, negative_prompt, seeds, steps, guidance,
        strength, feather, shrink_steps}`; each answer `{images, seeds, timings, working_size}` or `{error, kind}`.

        One job's failure (bad option, cancel) does not fail the others of its batch.
        """
        from serving.models.blended_sdxl import EditCancelled, EditOptionsError, EditRequest

        requests = []
        with self._lock:
            self.batch_sizes.append(len(jobs))
            for job in jobs:
                job_id = job["job_id"]
                self._cancel.setdefault(job_id, threading.Event())
                self._progress[job_id] = (0, self.runner.total_steps(job["steps"], job.get("strength", 1.0)))
                requests.append(
                    EditRequest(
                        image=job["image"],
                        subject_mask=job["subject_mask"],
                        prompt=job["prompt"],
                        negative_prompt=job.get("negative_prompt"),
                        seeds=job["seeds"],
                        steps=job["steps"],
                        guidance=job["guidance"],
                        strength=job.get("strength", 1.0),
                        feather=job.get("feather"),
                        shrink_steps=job.get("shrink_steps"),
                        progress=self._progress_callback(job_id),
                        cancel=self._cancel[job_id],
                    )
                )
        try:
            results = self.runner.run_batch(requests, return_exceptions=True)
        finally:
            with self._lock:
                for job in jobs:
                    self._cancel.pop(job["job_id"], None)
                    self._progress.pop(job["job_id"], None)
        answers = []
        for result in results:
            if isinstance(result, EditOptionsError):
                answers.append({"error": str(result), "kind": "options"})
            elif isinstance(result, EditCancelled):
                answers.append({"error": "cancelled by the caller", "kind": "cancelled"})
            elif isinstance(result, Exception):
                answers.append({"error": f"{type(result).__name__}: {str(result)[:200]}", "kind": "internal"})
            else:
                answers.append(
                    {
                        "images": result.images,
                        "seeds": result.seeds,
                        "timings": result.timings,
                        "working_size": list(result.working_size),
                    }
                )
        return answers

    def _progress_callback(self, job_id: str):
        def report(step: int, total: int) -> None:
            with self._lock:
                if job_id in self._progress:
                    self._progress[job_id] = (step, total)

        return report

    def progress(self, job_ids: list[str]) -> dict[str, list[int]]:
        """`{job_id: [step, total]}` for the jobs running now (absent ids are queued or finished)."""
        with self._lock:
            return {job_id: list(self._progress[job_id]) for job_id in job_ids if job_id in self._progress}

    def cancel(self, job_id: str) -> bool:
        """Ask a running job to stop at its next step. True when the job is running here.

        A job still queued in the gateway is cancelled there and never reaches this service."""
        with self._lock:
            event = self._cancel.get(job_id)
        if event is not None:
            event.set()
        return event is not None

    def total_steps(self, steps: int, strength: float) -> int:
        return self.runner.total_steps(steps, strength)

    def info(self) -> dict[str, Any]:
        entry = _profile_entry(self.runner.profile, self.runner.model_name)
        import torch

        return {
            **entry,
            "device": str(self.runner.device),
            "dtype": str(self.runner.dtype).split(".")[-1],
            "working_pixels": self.runner.working_pixels,
            "torch_threads": torch.get_num_threads(),
        }

    def stats(self) -> dict[str, Any]:
        return {"batch_sizes": list(self.batch_sizes[-100:]), "runs": len(self.batch_sizes)}
