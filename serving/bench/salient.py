"""Benchmark of the automatic subject: seconds per photo (the salient model, the mask at the photo's size and the view
clicks are read on; all that a zero-click /segment costs on the segmentation stage) and the mask's IoU with the known
subject of the composites (`serving.bench.composites`). Photos are scikit-image's samples resized to the asked size.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np

from serving.bench.composites import iou, known_subject_composites

if TYPE_CHECKING:
    from serving.models.subject import SubjectFinder

SAMPLE_PHOTOS = ("astronaut", "coffee", "chelsea", "camera")


@dataclass
class AutoBenchResult:
    """What `bench segment --auto` prints and writes as JSON."""

    model: str
    image_size: tuple[int, int]  # (width, height)
    seconds: list[float]  # one per photo and repeat, each on a photo not seen before
    iou: dict[str, float]  # composite -> IoU with its known subject

    @property
    def p50_s(self) -> float:
        return float(np.median(self.seconds))

    @property
    def p95_s(self) -> float:
        return float(np.percentile(self.seconds, 95))

    def to_dict(self) -> dict[str, object]:
        mean_iou = float(np.mean(list(self.iou.values())))
        return {**asdict(self), "p50_s": self.p50_s, "p95_s": self.p95_s, "mean_iou": mean_iou}


def sample_photos(size: tuple[int, int]) -> list[np.ndarray]:
    """scikit-image's sample photos (RGB, grey ones as RGB) resized to `size`."""
    from PIL import Image
    from skimage import data

    photos = []
    for name in SAMPLE_PHOTOS:
        image = getattr(data, name)()
        rgb = np.stack([image] * 3, axis=-1) if image.ndim == 2 else image
        photos.append(np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BILINEAR)))
    return photos


def run_auto_bench(finder: SubjectFinder, size: tuple[int, int], repeats: int = 2) -> AutoBenchResult:
    """Time the automatic subject of every sample photo and composite (`repeats` times, each time uncached, after
    one untimed warm-up) and measure its IoU on the composites."""
    composites = known_subject_composites(size)
    photos = sample_photos(size) + [composite.image for composite in composites]
    finder.segment(photos[0], auto=True)  # warm-up: onnxruntime plans its kernels on the first run
    seconds = []
    for repeat in range(repeats):
        for photo in photos:
            fresh = photo.copy()
            fresh[0, 0, 0] ^= repeat + 1  # one pixel off: a new image id, so nothing comes from the cache
            began = time.perf_counter()
            found = finder.segment(fresh, auto=True)
            seconds.append(time.perf_counter() - began)
            if found.cached:
                raise RuntimeError("benchmark bug: a new photo's subject came from the cache")
    scores = {c.name: iou(finder.segment(c.image, auto=True).mask, c.subject) for c in composites}
    return AutoBenchResult(finder.salient.spec.name, size, seconds, scores)


def format_auto_table(result: AutoBenchResult) -> str:
    width, height = result.image_size
    rows = [
        ("model", result.model),
        ("photo", f"{width}×{height} ({width * height / 1e6:.2f} MP)"),
        (
            "automatic subject p50",
            f"{result.p50_s:.3f} s per photo ({len(result.seconds)} photos; goal ≤ 0.5 s at 1 MP)",
        ),
        ("automatic subject p95", f"{result.p95_s:.3f} s"),
    ]
    rows += [(f"IoU: {name}", f"{value:.3f}") for name, value in result.iou.items()]
    column = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{column}}  {value}" for name, value in rows)
