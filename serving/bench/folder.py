"""Folder throughput of a running service: the same photos edited by `edit PHOTO... --server URL` (its own code:
`RemoteEditor` and `run_jobs`) at several concurrencies, zero-click (the automatic subject) with a fixed prompt.
More edits in flight give the service's adaptive batching something to batch.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from PIL import Image

STATS_WINDOW = 100  # batch sizes the service's /stats lists: its last 100 of each kind


@dataclass
class FolderResult:
    """One concurrency's run over the folder, and the batches the service made meanwhile (the salient model's runs,
    the diffusion stage's). `batches_exact`: False when the service's /stats could not tell this run's batches from
    earlier ones (its window of the last batch sizes was full and it counts no runs): the lists then hold the last
    batches it kept, earlier ones among them."""

    concurrency: int
    photos: int
    failed: int
    seconds: float
    detect_batches: list[int]
    diffusion_batches: list[int]
    batches_exact: bool = True

    @property
    def photos_per_s(self) -> float:
        """Photos edited per second: a photo that failed is no output, however fast it failed."""
        return (self.photos - self.failed) / self.seconds if self.seconds else float("nan")

    def row(self) -> dict[str, float | int]:
        return {**asdict(self), "photos_per_s": self.photos_per_s}


def write_folder(folder: Path, count: int, size: tuple[int, int], first: int = 0) -> list[Path]:
    """`count` photos as PNG files in a new `folder`: scikit-image's samples, copy number `first + i` carrying its
    number in its first pixel, so photos of different numbers are different images to the service's caches."""
    from serving.bench.salient import sample_photos

    folder.mkdir(parents=True)
    samples = sample_photos(size)
    paths = []
    for index in range(count):
        photo = samples[index % len(samples)].copy()
        photo[0, 0] = list((first + index).to_bytes(3, "little"))
        paths.append(folder / f"photo-{index:03d}.png")
        Image.fromarray(photo).save(paths[-1])
    return paths


def folder_throughput(
    url: str, concurrencies: list[int], count: int, size: tuple[int, int], steps: int
) -> list[FolderResult]:
    """Edit a folder of `count` photos through the service at each concurrency (each run writes fresh outputs)."""
    from serving.cli.edit import PhotoJob, Subject, run_jobs
    from serving.cli.remote import RemoteEditor

    results = []
    with tempfile.TemporaryDirectory(prefix="moodshift-bench-folder-") as scratch:
        # As `edit --server` sends a folder's edits: nobody watches previews of a folder.
        request = {"prompt": "a misty forest at dawn", "steps": steps, "seed": 1, "preview": False}
        editor = RemoteEditor(url, request, Subject(None, [], None, auto=False))
        [warm_up] = write_folder(Path(scratch) / "warm-up", 1, size)
        editor.edit(warm_up, lambda fraction: None)  # the first edit pays for lazy loading: untimed
        for run, concurrency in enumerate(concurrencies):
            photos = write_folder(Path(scratch) / f"in-{run}", count, size, first=1 + run * count)
            out = Path(scratch) / f"out-{concurrency}"
            jobs = [PhotoJob(photo, [out / photo.name]) for photo in photos]
            before = _batches(url)
            began = time.perf_counter()
            run_jobs(jobs, editor, concurrency, quiet=True)
            seconds = time.perf_counter() - began
            after = _batches(url)
            failed = sum(job.error is not None for job in jobs)
            (detect, detect_exact), (diffusion, diffusion_exact) = (
                new_batches(earlier, later) for earlier, later in zip(before, after, strict=True)
            )
            results.append(
                FolderResult(concurrency, count, failed, seconds, detect, diffusion, detect_exact and diffusion_exact)
            )
    return results


@dataclass(frozen=True)
class Batches:
    """A stage's batch sizes as /stats lists them (its last `STATS_WINDOW`), and its count of every batch so far
    when it reports one (`runs`)."""

    sizes: list[int]
    runs: int | None


def new_batches(before: Batches, after: Batches) -> tuple[list[int], bool]:
    """The batches made between two looks at /stats, and whether they are exactly those: by the stage's run counter
    when it has one (all of them unless more than the window were made), else the tail past what was there, which
    is exact only while the window has not filled (none has been dropped yet)."""
    if before.runs is not None and after.runs is not None and after.runs >= before.runs:
        made = after.runs - before.runs
        return (after.sizes[-made:] if made else []), made <= len(after.sizes)
    if before.runs is None and len(after.sizes) < STATS_WINDOW:
        return after.sizes[len(before.sizes) :], True
    return list(after.sizes), False


def _batches(url: str) -> tuple[Batches, Batches]:
    """The service's batches so far (salient model, diffusion), from /stats."""
    import requests

    stats = requests.get(f"{url}/stats", timeout=30).json()
    diffusion = stats["diffusion"]
    runs = diffusion.get("runs")  # the salient model counts its images, not its batches: no counter to use there
    return (
        Batches(list(stats["segment"].get("detect_batch_sizes", [])), None),
        Batches(list(diffusion["batch_sizes"]), None if runs is None else int(runs)),
    )


def format_folder_table(results: list[FolderResult]) -> str:
    header = f"{'concurrency':>11} {'photos':>6} {'failed':>6} {'seconds':>8} {'photos/s':>9}"
    lines = [f"{header}  largest batches: salient / SDXL"]
    for r in results:
        largest = f"{max(r.detect_batches, default=0)} / {max(r.diffusion_batches, default=0)}"
        lines.append(
            f"{r.concurrency:>11} {r.photos:>6} {r.failed:>6} {r.seconds:>8.1f} {r.photos_per_s:>9.3f}  {largest}"
        )
    if len(results) > 1:
        base = results[0].photos_per_s
        lines += [f"concurrency {r.concurrency}: {r.photos_per_s / base:.2f}× concurrency {results[0].concurrency}"
                  for r in results[1:]]  # fmt: skip
    if not all(r.batches_exact for r in results):
        lines.append(
            f"note: /stats lists only the last {STATS_WINDOW} batch sizes of a stage: some runs' batches could not be "
            "told from earlier ones, whose sizes their largest batches may be (restart the service for exact numbers)"
        )
    return "\n".join(lines)
