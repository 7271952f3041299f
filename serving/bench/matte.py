"""The matting benchmark and its synthetic set: real photos (scikit-image's) composited with a known soft alpha.

A sample is a foreground photo over a second photo or over a flat screen colour, through an alpha with a blurred,
noisy boundary and one-pixel strands (hair); its hard mask is `alpha > 0.5`, what a segmenter would give. Since the
true alpha and foreground colours are known, the matte's errors in its unknown band are measured against those of
the hard mask (alpha) and of the raw photo colours (foreground). The tests use the same set.

Needs scikit-image for the photos (`pip install scikit-image`, part of the test extras).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image
from scipy import ndimage, special

from serving.core.blending import compose
from serving.core.matting import Matte, band_width, compose_matte, estimate_matte

FOREGROUNDS = ("astronaut", "chelsea", "coffee")  # a person, fur, a cup: three kinds of edge
SCREEN_COLOUR = (0, 177, 64)  # chroma-key green
SECOND_PHOTO = "rocket"
SIZES_MP = (1, 12, 24)


@dataclass(frozen=True)
class MatteSample:
    """One synthetic photo: `image` (HxWx3 uint8) = alpha·foreground + (1 − alpha)·background, and the truth."""

    name: str
    image: np.ndarray
    alpha: np.ndarray  # HxW float32, the true alpha
    foreground: np.ndarray  # HxWx3 uint8, the true subject colours
    background: np.ndarray  # HxWx3 uint8

    @property
    def hard_mask(self) -> np.ndarray:
        """What a segmenter gives: HxW bool, alpha > 0.5."""
        return self.alpha > 0.5


@dataclass(frozen=True)
class MatteScore:
    """Errors in the matte's unknown band: alpha SAD (sum of absolute differences) of the matte and of the hard mask,
    and alpha-weighted mean foreground colour error (0-255) of the matte and of the raw photo colours."""

    alpha_sad: float
    hard_alpha_sad: float
    colour_error: float
    raw_colour_error: float

    @property
    def alpha_ratio(self) -> float:
        return self.alpha_sad / self.hard_alpha_sad

    @property
    def colour_ratio(self) -> float:
        return self.colour_error / self.raw_colour_error


def photo(name: str, size: tuple[int, int]) -> np.ndarray:
    """A scikit-image photo cropped to the aspect of `size` (width, height) and resized to it (HxWx3 uint8)."""
    from skimage import data

    picture = getattr(data, name)()[..., :3]
    height, width = picture.shape[:2]
    aspect = size[0] / size[1]
    crop_w, crop_h = min(width, round(height * aspect)), min(height, round(width / aspect))
    top, left = (height - crop_h) // 2, (width - crop_w) // 2
    cropped = Image.fromarray(picture[top : top + crop_h, left : left + crop_w])
    return np.asarray(cropped.resize(size, Image.Resampling.LANCZOS))


def soft_alpha(size: tuple[int, int], seed: int) -> np.ndarray:
    """HxW float32: a wobbly blob whose edge is blurred (over about the matte's band), noisy along and across it,
    with one-pixel strands leaving it like hair."""
    width, height = size
    rng = np.random.default_rng(seed)
    softness = 0.4 * band_width(width, height)  # the blur's sigma, in pixels
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    cy, cx, radius = height / 2, width / 2, 0.33 * min(width, height)
    angle = np.arctan2(ys - cy, xs - cx)
    wobble = sum(rng.uniform(0.02, 0.06) * np.cos(k * angle + rng.uniform(0, 2 * np.pi)) for k in range(2, 7))
    # The edge frays: a fast ripple along the boundary, a little under the blur's size.
    fray = sum(rng.uniform(0.3, 0.7) * softness * np.cos(k * angle + rng.uniform(0, 2 * np.pi)) for k in (97, 151))
    distance = radius * (1 + wobble) + fray - np.hypot(ys - cy, xs - cx)  # > 0 inside, in pixels
    alpha = 0.5 * (1 + special.erf(distance / (math.sqrt(2) * softness)))
    edge = alpha * (1 - alpha)
    alpha = np.clip(alpha + edge * rng.normal(0, 0.6, alpha.shape), 0, 1)  # noise where the edge is soft only
    _draw_strands(alpha, distance, rng, reach=3 * band_width(width, height))
    return alpha.astype(np.float32)


def _draw_strands(alpha: np.ndarray, distance: np.ndarray, rng: np.random.Generator, reach: int) -> None:
    """One-pixel lines from the boundary outward, opaque at the root and fading to the tip (in place)."""
    height, width = alpha.shape
    roots = np.argwhere(np.abs(distance) < 0.5)
    count = max(8, len(roots) // 40)
    gradient_y, gradient_x = np.gradient(distance)
    for y, x in roots[rng.choice(len(roots), size=min(count, len(roots)), replace=False)]:
        outward = -np.array([gradient_y[y, x], gradient_x[y, x]])
        turn = rng.uniform(-0.5, 0.5)
        direction = np.array(
            [
                outward[0] * math.cos(turn) - outward[1] * math.sin(turn),
                outward[0] * math.sin(turn) + outward[1] * math.cos(turn),
            ]
        )
        direction /= np.linalg.norm(direction) + 1e-9
        length = rng.uniform(0.5, 1.0) * reach
        steps = np.linspace(0, length, max(2, int(length * 2)))
        rows = np.rint(y + steps * direction[0]).astype(int)
        cols = np.rint(x + steps * direction[1]).astype(int)
        inside = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
        opacity = np.linspace(0.95, 0.3, len(steps))
        np.maximum.at(alpha, (rows[inside], cols[inside]), opacity[inside])


def synthetic_set(size: tuple[int, int] = (640, 480), foregrounds: tuple[str, ...] = FOREGROUNDS) -> list[MatteSample]:
    """Each foreground photo over the second photo and over the screen colour, at `size` (width, height)."""
    width, height = size
    second = photo(SECOND_PHOTO, size)
    screen = np.broadcast_to(np.asarray(SCREEN_COLOUR, np.uint8), (height, width, 3))
    samples = []
    for index, name in enumerate(foregrounds):
        foreground = photo(name, size)
        alpha = soft_alpha(size, seed=index)
        for backdrop, background in (("photo", second), ("screen", screen)):
            mixed = alpha[..., None] * foreground + (1 - alpha[..., None]) * background.astype(np.float32)
            image = np.clip(np.rint(mixed), 0, 255).astype(np.uint8)
            samples.append(
                MatteSample(f"{name}/{backdrop}", image, alpha, foreground, np.ascontiguousarray(background))
            )
    return samples


def score(sample: MatteSample, matte: Matte) -> MatteScore:
    """The matte's errors in its band against the hard mask's (alpha) and the raw photo colours' (foreground)."""
    band = matte.band
    truth = sample.alpha[band].astype(np.float64)
    weight = truth / truth.sum()
    true_colours = sample.foreground[band].astype(np.float64)

    def colour_error(colours: np.ndarray) -> float:
        return float((weight * np.abs(colours.astype(np.float64) - true_colours).mean(axis=1)).sum())

    return MatteScore(
        alpha_sad=float(np.abs(matte.alpha[band] - truth).sum()),
        hard_alpha_sad=float(np.abs(sample.hard_mask[band] - truth).sum()),
        colour_error=colour_error(matte.foreground[band]),
        raw_colour_error=colour_error(sample.image[band]),
    )


@dataclass
class MatteBenchRow:
    """One photo size: quality ratios over its samples (mean) and seconds per photo (median)."""

    megapixels: float
    size: tuple[int, int]
    band_px: int
    alpha_ratio: float
    colour_ratio: float
    seconds: float
    samples: int


def run_matte_bench(sizes_mp: tuple[float, ...] = SIZES_MP, repeats: int = 1) -> list[MatteBenchRow]:
    """For each size: the synthetic set's quality ratios and the matte's seconds per photo.

    Up to 2 MP every sample is timed; above, only the first photo's two samples are (they take seconds to build).
    The first call is a warm-up: pymatting's kernels and caches load there.
    """
    warm = synthetic_set((160, 120))[0]
    estimate_matte(warm.image, warm.hard_mask)
    rows = []
    for megapixels in sizes_mp:
        size = size_of(megapixels)
        # Above 2 MP the first photo only: the whole set would take minutes to build.
        samples = synthetic_set(size, FOREGROUNDS if megapixels <= 2 else FOREGROUNDS[:1])
        scores, seconds = [], []
        for sample in samples:
            for _ in range(repeats):
                started = time.perf_counter()
                matte = estimate_matte(sample.image, sample.hard_mask)
                seconds.append(time.perf_counter() - started)
            scores.append(score(sample, matte))
        rows.append(
            MatteBenchRow(
                megapixels=round(size[0] * size[1] / 1e6, 2),
                size=size,
                band_px=band_width(*size),
                alpha_ratio=float(np.mean([s.alpha_ratio for s in scores])),
                colour_ratio=float(np.mean([s.colour_ratio for s in scores])),
                seconds=float(np.median(seconds)),
                samples=len(samples),
            )
        )
    return rows


def size_of(megapixels: float) -> tuple[int, int]:
    """A 4:3 (width, height) of about, never over, `megapixels` (1 MP is solved at full size, not scaled)."""
    width = int(math.sqrt(megapixels * 1e6 * 4 / 3))
    return width, round(width * 3 / 4)


def format_table(rows: list[MatteBenchRow]) -> str:
    """The benchmark's table in Markdown."""
    lines = [
        "| photo | band (px each way) | alpha SAD ÷ hard mask's | colour error ÷ raw colours' | seconds per photo |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row.megapixels:g} MP ({row.size[0]}×{row.size[1]}, {row.samples} samples) | {row.band_px} | "
            f"{row.alpha_ratio:.2f} | {row.colour_ratio:.2f} | {row.seconds:.2f} |"
        )
    lines.append("goal: both ratios ≤ 0.50; ≤ 3 s per photo at 12 MP")
    return "\n".join(lines)


def to_json(rows: list[MatteBenchRow]) -> list[dict]:
    return [asdict(row) for row in rows]


def edge_figure(zoom: int = 3, crop: int = 96) -> Image.Image:
    """Before/after of an edge: the first sample put on a new background with the hard, feathered mask (edge=hard; left)
    and with the matte (right), a `crop`-pixel square of its edge enlarged `zoom` times."""
    sample = synthetic_set()[0]
    height, width = sample.alpha.shape
    new_background = np.broadcast_to(np.asarray((70, 110, 200), np.uint8), (height, width, 3)).copy()
    hard = compose(sample.image, new_background, sample.hard_mask, 8)
    soft = compose_matte(new_background, estimate_matte(sample.image, sample.hard_mask))
    # The crop with the most edge in it: where the true alpha is partial.
    partial = ((sample.alpha > 0.05) & (sample.alpha < 0.95)).astype(np.float32)
    density = ndimage.uniform_filter(partial, size=crop)
    y, x = np.unravel_index(np.argmax(density), density.shape)
    top, left = min(max(y - crop // 2, 0), height - crop), min(max(x - crop // 2, 0), width - crop)
    gap = 4
    figure = Image.new("RGB", (2 * crop * zoom + gap, crop * zoom), (255, 255, 255))
    for index, picture in enumerate((hard, soft)):
        part = Image.fromarray(picture[top : top + crop, left : left + crop])
        figure.paste(
            part.resize((crop * zoom, crop * zoom), Image.Resampling.NEAREST), (index * (crop * zoom + gap), 0)
        )
    return figure
