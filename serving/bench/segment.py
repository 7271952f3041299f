"""Segmentation benchmark: first click (encode + decode), later clicks (decode only) and encoder throughput.

The images are synthetic and seeded, so runs are comparable and need no data; the encoder's cost does not depend
on the pixels (every image is resized to 1024 on its long side).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from serving.core.clicks import Point

if TYPE_CHECKING:
    from serving.models.sam import Segmenter


@dataclass
class SegmentBenchResult:
    """The numbers `bench segment` prints and writes as JSON (milliseconds, images per second)."""

    model: str
    profile: str
    device: str
    dtype: str
    torch_threads: int
    image_size: tuple[int, int]  # (width, height)
    clicks: int
    first_click_ms: list[float]
    later_click_ms: list[float]
    later_used_mask_input: float  # fraction of later clicks that were refined with the previous logits
    encode_images_per_s: dict[int, float] = field(default_factory=dict)  # batch size -> images/s

    @property
    def first_click_p50_ms(self) -> float:
        return float(np.median(self.first_click_ms))

    @property
    def later_click_p50_ms(self) -> float:
        return float(np.percentile(self.later_click_ms, 50)) if self.later_click_ms else float("nan")

    @property
    def later_click_p95_ms(self) -> float:
        return float(np.percentile(self.later_click_ms, 95)) if self.later_click_ms else float("nan")

    @property
    def later_over_first(self) -> float:
        """Later-click p50 as a fraction of a first click (goal for ViT-H: at most 0.10)."""
        return self.later_click_p50_ms / self.first_click_p50_ms

    def to_dict(self) -> dict[str, object]:
        numbers = asdict(self)
        numbers["encode_images_per_s"] = {str(k): v for k, v in self.encode_images_per_s.items()}
        numbers |= {
            "first_click_p50_ms": self.first_click_p50_ms,
            "later_click_p50_ms": self.later_click_p50_ms,
            "later_click_p95_ms": self.later_click_p95_ms,
            "later_over_first": self.later_over_first,
        }
        return numbers


def bench_image(index: int, size: tuple[int, int]) -> np.ndarray:
    """A seeded photo-like HWC uint8 image (gradient, blobs, noise); different `index`, different pixels."""
    width, height = size
    rng = np.random.default_rng(index)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    image = np.stack([xs / width, ys / height, (xs + ys) / (width + height)], axis=-1) * 160
    for _ in range(6):
        cx, cy, radius = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(0.05, 0.25) * min(size)
        image[(xs - cx) ** 2 + (ys - cy) ** 2 < radius**2] = rng.uniform(0, 255, size=3)
    image += rng.normal(0, 6, size=image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def click_sequence(count: int, size: tuple[int, int], seed: int = 0) -> list[Point]:
    """`count` clicks: the first on the centre (subject), then a seeded mix of positive and negative clicks."""
    width, height = size
    rng = np.random.default_rng(seed)
    clicks = [Point(x=width / 2, y=height / 2, label=1)]
    for _ in range(count - 1):
        clicks.append(Point(x=rng.uniform(0, width), y=rng.uniform(0, height), label=int(rng.random() < 0.6)))
    return clicks


def run_segment_bench(
    segmenter: Segmenter,
    *,
    clicks: int = 10,
    repeats: int = 2,
    batch_sizes: tuple[int, ...] = (1, 4),
    size: tuple[int, int] = (1024, 768),
) -> SegmentBenchResult:
    """Time `repeats` first clicks on new images, `clicks - 1` later clicks on one image, and encoder batches.

    One warm-up encode+decode runs first (lazy kernels and allocator), untimed.
    """
    import torch

    if clicks < 1 or repeats < 1:
        raise ValueError(f"clicks and repeats must be >= 1, got clicks={clicks}, repeats={repeats}")
    sequence = click_sequence(clicks, size)
    images = [bench_image(index, size) for index in range(max(repeats, *batch_sizes) + 1)]

    segmenter.clear_cache()
    segmenter.segment(images[-1], sequence[:1])  # warm-up, untimed

    first_ms = []
    for image in images[:repeats]:
        start = time.perf_counter()
        result = segmenter.segment(image, sequence[:1])
        first_ms.append(1000 * (time.perf_counter() - start))
        if result.cached:
            raise RuntimeError("benchmark bug: a first click found a cached embedding")

    later_ms, refined = [], 0
    for count in range(2, clicks + 1):  # the stateless API: each call carries every click so far
        start = time.perf_counter()
        result = segmenter.segment(images[0], sequence[:count])
        later_ms.append(1000 * (time.perf_counter() - start))
        refined += result.used_mask_input

    throughput = {}
    for batch_size in batch_sizes:
        seconds = []
        for _ in range(repeats):
            segmenter.clear_cache()  # force real encodes
            start = time.perf_counter()
            segmenter.encode_batch(images[:batch_size])
            if segmenter.device.type == "cuda":
                torch.cuda.synchronize(segmenter.device)  # kernels run asynchronously
            seconds.append(time.perf_counter() - start)
        throughput[batch_size] = batch_size / float(np.median(seconds))

    return SegmentBenchResult(
        model=segmenter.model_name,
        profile=segmenter.profile.profile if segmenter.profile else "custom",
        device=str(segmenter.device),
        dtype=str(segmenter.dtype).removeprefix("torch."),
        torch_threads=torch.get_num_threads(),
        image_size=size,
        clicks=clicks,
        first_click_ms=first_ms,
        later_click_ms=later_ms,
        later_used_mask_input=refined / len(later_ms) if later_ms else 0.0,
        encode_images_per_s=throughput,
    )


def format_table(result: SegmentBenchResult) -> str:
    """A plain two-column table of the headline numbers."""
    rows = [
        ("model", f"{result.model} ({result.profile})"),
        ("device / dtype", f"{result.device} / {result.dtype} ({result.torch_threads} torch threads)"),
        ("image", f"{result.image_size[0]}×{result.image_size[1]}"),
        ("first click (encode+decode)", f"{result.first_click_p50_ms:.1f} ms (median of {len(result.first_click_ms)})"),
        ("later click p50", f"{result.later_click_p50_ms:.1f} ms ({len(result.later_click_ms)} clicks)"),
        ("later click p95", f"{result.later_click_p95_ms:.1f} ms"),
        ("later / first", f"{100 * result.later_over_first:.1f}% (goal for ViT-H: ≤ 10%)"),
        ("later clicks refined (mask_input)", f"{100 * result.later_used_mask_input:.0f}%"),
    ]
    rows += [(f"encode, batch {b}", f"{ips:.2f} images/s") for b, ips in result.encode_images_per_s.items()]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)
