"""Edit jobs: submit returns at once, status says the stage and step k of n, then the result.

`JobStore` is in-memory and bounded: finished jobs beyond `max_finished`, or whose results together pass
`max_result_bytes`, are forgotten in the order they finished (the newest is always kept for its client's next poll).
The studio saves finished results itself; a service restart loses running jobs and results not yet polled (their
ids answer 404). `JobRunner` runs each job in a worker thread of the service's event loop, where BentoML's clients
of the stage services can call out.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

from serving.core.errors import CancelledError, NotFoundError, QueueFullError

JobStateName = Literal["queued", "running", "done", "failed", "cancelled"]
FINISHED: tuple[JobStateName, ...] = ("done", "failed", "cancelled")
CANCELLED_MESSAGE = CancelledError.BY_CALLER


@dataclass
class Job:
    """One edit's progress and outcome."""

    job_id: str
    total: int
    state: JobStateName = "queued"
    stage: str = "queued"  # what a running job is doing: segment, prompt, matte, diffusion
    step: int = 0
    result: dict[str, Any] | None = None
    preview: str | None = None  # base64 PNG of the background forming, while the job runs
    error: str | None = None
    result_bytes: int = 0
    cancel_event: threading.Event = field(default_factory=threading.Event)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "job_id": self.job_id,
            "state": self.state,
            "stage": self.stage,
            "step": self.step,
            "total": self.total,
        }
        if self.preview is not None and self.state == "running":
            data["preview"] = self.preview
        if self.result is not None:
            data["result"] = self.result
        if self.error is not None:
            data["error"] = self.error
        return data


def _result_bytes(result: dict[str, Any]) -> int:
    """About what a result holds in memory: its text (the images are base64 PNGs, nearly all of it)."""
    size = 0
    for value in result.values():
        for item in value if isinstance(value, list) else [value]:
            size += len(item) if isinstance(item, str) else 8
    return size


class JobStore:
    """Thread-safe registry of edit jobs. Every read and change of a job happens under the store's lock, so a poll
    never sees a job half-updated (done without its result)."""

    def __init__(self, max_finished: int = 200, max_result_bytes: int = 1_000_000_000) -> None:
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()
        self.max_finished = max_finished
        self.max_result_bytes = max_result_bytes

    def create(self, total: int) -> Job:
        job = Job(job_id=uuid.uuid4().hex, total=total)
        with self._lock:
            self._jobs[job.job_id] = job
        return job

    def get(self, job_id: str) -> Job:
        with self._lock:
            return self._job(job_id)

    def status(self, job_id: str) -> dict[str, Any]:
        """What `/edit_status` answers for a job, read as one consistent state."""
        with self._lock:
            return self._job(job_id).to_dict()

    def _job(self, job_id: str) -> Job:
        try:
            return self._jobs[job_id]
        except KeyError:
            raise NotFoundError(f"no edit job with id {job_id!r} (unknown or expired)") from None

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

    def set_preview(self, job_id: str, preview_png_b64: str) -> None:
        """The latest preview of a running job."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is not None and job.state == "running":
                job.preview = preview_png_b64

    def finish(self, job_id: str, result: dict[str, Any]) -> None:
        """Store a job's result; a job cancelled while it ran ends cancelled, without it."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                return
            if job.cancel_event.is_set():
                job.state, job.error = "cancelled", CANCELLED_MESSAGE
            else:
                job.state, job.stage, job.step, job.result = "done", "done", job.total, result
                job.result_bytes = _result_bytes(result)
            self._ended(job)

    def fail(self, job_id: str, error: str) -> None:
        """A job ended without a result: failed with `error`, or cancelled if its caller asked for that."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is not None:
                cancelled = job.cancel_event.is_set()
                job.state = "cancelled" if cancelled else "failed"
                job.error = CANCELLED_MESSAGE if cancelled else error
                self._ended(job)

    def cancel(self, job_id: str) -> JobStateName:
        """Ask a job to stop; its state after asking (a queued job is cancelled at once, a finished one stays)."""
        with self._lock:
            job = self._job(job_id)
            if job.state not in FINISHED:
                job.cancel_event.set()
                if job.state == "queued":
                    job.state, job.error = "cancelled", CANCELLED_MESSAGE
                    self._ended(job)
            return job.state

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

    def _ended(self, job: Job) -> None:
        """A job just finished (under the lock): move it last, so the finished jobs stand in the order they finished,
        then forget what the bounds no longer allow."""
        self._jobs.move_to_end(job.job_id)
        self._forget_old()

    def _forget_old(self) -> None:
        """Forget finished jobs, first finished first, beyond `max_finished` or `max_result_bytes` (under the lock)."""
        finished = [job for job in self._jobs.values() if job.state in FINISHED]
        count, size = len(finished), sum(job.result_bytes for job in finished)
        for job in finished[:-1]:  # the newest stays, whatever its size: its client is about to poll it
            if count <= self.max_finished and size <= self.max_result_bytes:
                break
            del self._jobs[job.job_id]
            count, size = count - 1, size - job.result_bytes


@dataclass(frozen=True)
class JobControl:
    """What a running job's work reports to and asks of its job: stage changes, steps, and whether to stop."""

    on_stage: Callable[[str], None]
    on_step: Callable[[int, int], None]
    on_preview: Callable[[Any], None]  # an HxWx3 uint8 picture
    cancelled: Callable[[], bool]


class JobRunner:
    """Runs edit jobs in AnyIO worker threads of the service's event loop. At most `max_active` edits are in progress:
    jobs queued or running, and synchronous edits holding a `slot()`.

    `submit` is called from a sync API method (itself in a worker thread); the work runs later in another worker
    thread, where BentoML's sync clients of the stage services can call out. `in_worker_thread` gives the work one
    more such thread for a blocking call it wants to watch.
    """

    def __init__(self, store: JobStore, max_active: int, describe_error: Callable[[BaseException], str]) -> None:
        self.store = store
        self.max_active = max_active
        self.describe_error = describe_error  # the message a failed job reports (the service's error wording)
        self._submit_lock = threading.Lock()
        self._synchronous = 0  # synchronous edits in progress (`slot`)
        self._limiter: Any = None  # anyio.CapacityLimiter, made in the event loop on first use
        self._tasks: set[asyncio.Task] = set()

    def submit(self, total: int, work: Callable[[str, JobControl], dict[str, Any]]) -> Job:
        """Queue `work` as a new job; `QueueFullError` when `max_active` jobs are queued or running already."""
        import anyio.from_thread

        with self._submit_lock:  # count and add as one step: concurrent submits must not both take the last slot
            self._check_room()
            job = self.store.create(total)
        try:
            anyio.from_thread.run_sync(self._start, job.job_id, work)
        except BaseException:  # never started: it must not stay queued, holding a slot, polled for ever
            self.store.fail(job.job_id, "the edit could not be started; try again")
            raise
        return job

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Hold one of the `max_active` places for a synchronous edit; `QueueFullError` when none is free."""
        with self._submit_lock:
            self._check_room()
            self._synchronous += 1
        try:
            yield
        finally:
            with self._submit_lock:
                self._synchronous -= 1

    def _check_room(self) -> None:
        """Under `_submit_lock`: `QueueFullError` when `max_active` edits are in progress."""
        if self.store.active_count() + self._synchronous >= self.max_active:
            raise QueueFullError(f"too many edits in progress ({self.max_active}); try again shortly")

    def in_worker_thread(self, call: Callable[[], Any]) -> concurrent.futures.Future[Any]:
        """Run a blocking `call` in another worker thread of the event loop (from a worker thread); its future."""
        import anyio
        import anyio.from_thread

        future: concurrent.futures.Future[Any] = concurrent.futures.Future()

        async def run() -> None:
            try:
                future.set_result(await anyio.to_thread.run_sync(call))
            except BaseException as exc:
                future.set_exception(exc)

        anyio.from_thread.run_sync(self._spawn, run)
        return future

    def _start(self, job_id: str, work: Callable[[str, JobControl], dict[str, Any]]) -> None:
        """In the event loop: the job's work in a worker thread, no more at once than `max_active`."""
        import anyio

        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self.max_active)
        self._spawn(lambda: anyio.to_thread.run_sync(self._run, job_id, work, limiter=self._limiter))

    def _spawn(self, coroutine_function: Callable[[], Any]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine_function())
        self._tasks.add(task)  # the loop keeps only weak references to tasks
        task.add_done_callback(self._tasks.discard)

    def _run(self, job_id: str, work: Callable[[str, JobControl], dict[str, Any]]) -> None:
        """A job's body (a worker thread): its outcome lands in the store."""
        store = self.store

        def enter(stage: str) -> None:
            # A cancel before the diffusion stage has nothing to interrupt in the diffusion service: stop here.
            if not store.start(job_id, stage):
                raise CancelledError(CANCELLED_MESSAGE)

        def preview(rgb: Any) -> None:
            from serving.core.images import encode_png_base64

            store.set_preview(job_id, encode_png_base64(rgb))

        job = store.get(job_id)
        control = JobControl(
            on_stage=enter,
            on_step=lambda step, total: store.progress(job_id, step, total),
            on_preview=preview,
            cancelled=job.cancel_event.is_set,
        )
        try:
            enter("starting")
            result = work(job_id, control)
        except CancelledError:
            store.fail(job_id, CANCELLED_MESSAGE)  # fail() records a cancelled job as cancelled
        except Exception as exc:
            store.fail(job_id, self.describe_error(exc))
        else:
            store.finish(job_id, result)
