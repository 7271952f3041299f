"""Mood words from image statistics (brightness, warmth, saturation, contrast, dominant hue).

The fallback when LLaVA cannot answer: cheap, deterministic, pure numpy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_MAX_SAMPLES = 256 * 256  # statistics of a strided sample are as good as the full image's, and fast
_CHROMA_MIN_SATURATION = 0.25
_CHROMA_MIN_FRACTION = 0.05  # below this share of colourful pixels the image has no dominant hue

# Hue ranges (degrees, upper bound exclusive) and the mood each colour family suggests.
_HUE_MOODS = (
    (15.0, "passionate"),  # red
    (45.0, "cozy"),  # orange
    (70.0, "cheerful"),  # yellow
    (160.0, "fresh"),  # green
    (200.0, "tranquil"),  # cyan
    (260.0, "calm"),  # blue
    (290.0, "mysterious"),  # violet
    (345.0, "romantic"),  # magenta, pink
    (360.0, "passionate"),  # red again
)


@dataclass(frozen=True)
class ImageStats:
    """Global statistics of an RGB image, each on a fixed scale."""

    brightness: float  # mean Rec. 601 luma, 0..1
    warmth: float  # mean of (R - B), -1..1: > 0 reddish/yellowish, < 0 bluish
    saturation: float  # mean HSV saturation, 0..1
    contrast: float  # standard deviation of luma, 0..0.5
    dominant_hue: float | None  # degrees 0..360 of the most common saturated hue; None for a near-grey image


def _as_rgb_array(image) -> np.ndarray:
    """HWC float32 RGB in 0..1 from a PIL image or an HWC/HW uint8 array (grey is repeated, alpha ignored)."""
    array = np.asarray(image.convert("RGB") if hasattr(image, "convert") else image)
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (3, 4) or array.size == 0:
        raise ValueError(f"expected an HWC RGB image, got an array of shape {array.shape}")
    step = max(1, int(np.ceil(np.sqrt(array.shape[0] * array.shape[1] / _MAX_SAMPLES))))
    array = array[::step, ::step, :3]
    scale = 255.0 if array.dtype == np.uint8 else 1.0
    return array.astype(np.float32) / scale


def image_stats(image) -> ImageStats:
    """Statistics of an RGB image given as a PIL image or an HWC uint8 array."""
    rgb = _as_rgb_array(image)
    red, green, blue = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    luma = 0.299 * red + 0.587 * green + 0.114 * blue
    high, low = rgb.max(axis=2), rgb.min(axis=2)
    delta = high - low
    saturation = np.where(high > 0, delta / np.maximum(high, 1e-6), 0.0)
    return ImageStats(
        brightness=float(luma.mean()),
        warmth=float((red - blue).mean()),
        saturation=float(saturation.mean()),
        contrast=float(luma.std()),
        dominant_hue=_dominant_hue(rgb, high, delta, saturation),
    )


def _dominant_hue(rgb: np.ndarray, high: np.ndarray, delta: np.ndarray, saturation: np.ndarray) -> float | None:
    colourful = (saturation > _CHROMA_MIN_SATURATION) & (high > 0.15)
    if colourful.mean() < _CHROMA_MIN_FRACTION:
        return None
    red, green, blue = (rgb[..., i][colourful] for i in range(3))
    top, spread = high[colourful], delta[colourful]
    # The standard RGB -> HSV hue, sector by sector.
    hue = np.where(
        top == red,
        ((green - blue) / spread) % 6.0,
        np.where(top == green, (blue - red) / spread + 2.0, (red - green) / spread + 4.0),
    )
    degrees = hue * 60.0
    counts, edges = np.histogram(degrees, bins=24, range=(0.0, 360.0), weights=saturation[colourful])
    best = int(np.argmax(counts))
    return float((edges[best] + edges[best + 1]) / 2)


def _hue_mood(hue: float) -> str:
    return next(mood for upper, mood in _HUE_MOODS if hue < upper)


def mood_words(stats: ImageStats, limit: int = 8) -> list[str]:
    """Mood words for image statistics, most telling first: tone, temperature, colour, contrast, then blends."""
    words: list[str] = []
    dark, dim, bright = stats.brightness < 0.22, stats.brightness < 0.38, stats.brightness > 0.62
    warm, cool = stats.warmth > 0.04, stats.warmth < -0.04
    muted, vivid = stats.saturation < 0.15, stats.saturation > 0.45
    pastel = bright and 0.08 <= stats.saturation <= 0.35
    dramatic, soft = stats.contrast > 0.26, stats.contrast < 0.12

    words += ["dark"] if dark else ["dim"] if dim else ["bright"] if bright else []
    words += ["warm"] if warm else ["cool"] if cool else []
    words += ["pastel"] if pastel else ["vivid"] if vivid else ["muted"] if muted else []
    words += ["dramatic"] if dramatic else ["soft"] if soft else []
    if dim and (cool or muted or dramatic):
        words.append("moody")
    if dim and warm:
        words.append("intimate")
    if bright and not dramatic and not vivid:
        words.append("serene")
    if bright and vivid:
        words.append("joyful")
    if pastel and soft:
        words.append("dreamy")
    if stats.dominant_hue is not None:
        words.append(_hue_mood(stats.dominant_hue))
    # A mid-tone, mid-colour photo says little; "balanced" and "natural" keep the list useful.
    for filler in ("natural", "balanced", "calm"):
        if len(words) >= 3:
            break
        words.append(filler)
    return list(dict.fromkeys(words))[:limit]


def heuristic_mood(image, limit: int = 8) -> list[str]:
    """Mood words of a PIL image or HWC uint8 RGB array, from its statistics alone."""
    return mood_words(image_stats(image), limit)
