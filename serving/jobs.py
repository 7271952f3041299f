"""Edit jobs for progress reporting: submit returns at once, status says step k of n, then the result.

The store is in-memory and bounded (finished jobs beyond `max_finished` are forgotten oldest first); the UI
saves finished results itself, so a service restart loses only the progress of running jobs.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Literal

JobStateName = Literal["queued", "running", "done", "failed", "cancelled"]
FINISHED: tuple[JobStateName, ...] = ("done", "failed", "cancelled")


class JobCancelled(Exception):
    """Raised inside a job's worker when its caller cancelled it, to stop at the next stage."""


class UnknownJobError(KeyError):
    """No job with this id (never submitted, or forgotten)."""

    def __str__(self) -> str:
        return f"no edit job with id {self.args[0]!r} (unknown or expired)"


@dataclass
class Job:
    """One edit's progress and outcome."""

    job_id: str
    total: int
    state: JobStateName = "queued"
    stage: str = "queued"  # what a running job is doing: segment, prompt, diffusion
    step: int = 0
    result: dict[str, Any] | None = None
    error: str | None = None
    error_status: int | None = None
    created: float = field(default_factory=time.time)
    cancel_event: threading.Event = field(default_factory=threading.Event)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "job_id": self.job_id,
            "state": self.state,
            "stage": self.stage,
            "step": self.step,
            "total": self.total,
        }
        if self.result is not None:
            data["result"] = self.result
        if self.error is not None:
            data["error"] = self.error
        return data


class JobStore:
    """Thread-safe registry of edit jobs."""

    def __init__(self, max_finished: int = 200) -> None:
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()
        self.max_finished = max_finished

    def create(self, total: int) -> Job:
        job = Job(job_id=uuid.uuid4().hex, total=total)
        with self._lock:
            self._jobs[job.job_id] = job
            self._forget_old()
        return job

    def get(self, job_id: str) -> Job:
        with self._lock:
            try:
                return self._jobs[job_id]
            except KeyError:
                raise UnknownJobError(job_id) from None

    def start(self, job_id: str, stage: str) -> bool:
        """Mark a job running at `stage`; False when it was cancelled (before it started, or since)."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None or job.state in FINISHED or job.cancel_event.is_set():
                return False
            job.state, job.stage = "running", stage
            return True

    def progress(self, job_id: str, step: int, total: int) -> None:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is not None and job.state in ("queued", "running"):
                job.state, job.step, job.total = "running", step, total

    def finish(self, job_id: str, result: dict[str, Any]) -> None:
        """Store a job's result; a job cancelled while it ran ends cancelled, without it."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                return
            if job.cancel_event.is_set():
                job.state, job.error = "cancelled", "cancelled by the caller"
            else:
                job.state, job.stage, job.step, job.result = "done", "done", job.total, result

    def fail(self, job_id: str, error: str, status: int = 500) -> None:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is not None:
                cancelled = job.cancel_event.is_set()
                job.state = "cancelled" if cancelled else "failed"
                job.error = "cancelled by the caller" if cancelled else error
                job.error_status = None if cancelled else status

    def cancel(self, job_id: str) -> Job:
        job = self.get(job_id)
        with self._lock:
            if job.state not in FINISHED:
                job.cancel_event.set()
                if job.state == "queued":
                    job.state, job.error = "cancelled", "cancelled by the caller"
        return job

    def active_count(self) -> int:
        """Jobs queued or running."""
        with self._lock:
            return sum(job.state not in FINISHED for job in self._jobs.values())

    def counts(self) -> dict[str, int]:
        """Number of known jobs per state."""
        with self._lock:
            counts: dict[str, int] = {}
            for job in self._jobs.values():
                counts[job.state] = counts.get(job.state, 0) + 1
            return counts

    def _forget_old(self) -> None:
        finished = [key for key, job in self._jobs.items() if job.state in FINISHED]
        for key in finished[: max(0, len(finished) - self.max_finished)]:
            del self._jobs[key]
