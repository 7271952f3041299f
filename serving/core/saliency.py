"""Pure tools for the automatic subject: a salient-object model's map as a subject mask, the box SAM is prompted with,
and clicks that edit the mask where no SAM weights are (the region of the map and of the photo under each click).

A saliency map is float32 in [0, 1] (1 = surely the subject) at any resolution; the subject is where the map, resized
to the photo, is at least `SUBJECT_LEVEL`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter
from scipy import ndimage

from serving.core.clicks import POSITIVE, Box, Clicks, Point

SUBJECT_LEVEL = 0.5
# Clicks are read on a copy of the photo and the map this size (long side): a click's region takes milliseconds.
ANALYSIS_SIDE = 512
COLOR_BLUR_RADIUS = 3.0  # pixels at the analysis size: texture (fabric, fur, hair) must not cut a region into specks
SALIENCY_BAND = 0.3  # a click's region keeps to saliency within this of the click's own
COLOR_TOLERANCES = (16, 24, 32, 48, 64, 96)  # RGB distances tried in turn, until the region is big enough
MIN_REGION = 0.01  # of the photo: a region this big is taken at the first tolerance that reaches it
MAX_REGION = 0.4  # of the photo: a tolerance that gives more (a whole wall) is one too many
BOX_MARGIN = 0.05  # of the subject's size on each side of SAM's box: SAM cuts along the box, not inside it
_EIGHT = np.ones((3, 3), dtype=bool)


def normalise_saliency(raw: np.ndarray) -> np.ndarray:
    """A model's raw output map (HxW) as saliency in [0, 1]: logits (values outside [0, 1]) go through a sigmoid,
    then the map is min-max normalised, as U²-Net's authors do; a flat map is all zeros (nothing stands out)."""
    raw = np.asarray(raw, dtype=np.float32)
    if raw.min() < 0 or raw.max() > 1:
        raw = 1 / (1 + np.exp(-raw))
    low, high = float(raw.min()), float(raw.max())
    if high - low < 1e-6:
        return np.zeros_like(raw)
    return (raw - low) / (high - low)


def resize_map(saliency: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A float map resized to `size` (width, height), bilinear."""
    image = Image.fromarray(np.asarray(saliency, dtype=np.float32))
    return np.asarray(image.resize(size, Image.Resampling.BILINEAR), dtype=np.float32)


def subject_from_saliency(saliency: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The subject (bool HxW) of a photo of `size` (width, height): where its map, resized, reaches SUBJECT_LEVEL."""
    return resize_map(saliency, size) >= SUBJECT_LEVEL


def _resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return resize_map(mask.astype(np.float32), size) >= 0.5


@dataclass(frozen=True)
class ClickView:
    """The map and the photo at the analysis size, where clicks are read: `saliency` (float32 HxW) and `colors`
    (float32 HxWx3, blurred); `image_size` is the photo's (width, height)."""

    saliency: np.ndarray
    colors: np.ndarray
    image_size: tuple[int, int]

    @classmethod
    def of(cls, rgb: np.ndarray, saliency: np.ndarray) -> ClickView:
        """The view of a photo (HWC uint8) and its map (any resolution)."""
        height, width = rgb.shape[:2]
        scale = min(1.0, ANALYSIS_SIDE / max(width, height))
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        small = Image.fromarray(rgb).resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
        colors = np.asarray(small.filter(ImageFilter.GaussianBlur(COLOR_BLUR_RADIUS)), dtype=np.float32)
        return cls(resize_map(saliency, size), colors, (width, height))

    def region_under(self, x: float, y: float) -> np.ndarray:
        """The region under a click at photo pixel (x, y), as bool HxW at the analysis size: connected to the click,
        with saliency within SALIENCY_BAND of the click's and colour close to it. The colour tolerance grows until
        the region covers MIN_REGION of the photo, and stops before it covers more than MAX_REGION (a click on a
        plain wall must not take the whole photo)."""
        height, width = self.saliency.shape
        column = min(int(x * width / self.image_size[0]), width - 1)
        row = min(int(y * height / self.image_size[1]), height - 1)
        similar_saliency = np.abs(self.saliency - self.saliency[row, column]) <= SALIENCY_BAND
        distance = np.linalg.norm(self.colors - self.colors[row, column], axis=2)
        region = np.zeros((height, width), dtype=bool)
        region[row, column] = True
        for tolerance in COLOR_TOLERANCES:
            labels, _ = ndimage.label(similar_saliency & (distance <= tolerance), structure=_EIGHT)
            grown = labels == labels[row, column]
            if grown.mean() > MAX_REGION:
                break
            region = grown
            if region.mean() >= MIN_REGION:
                break
        return region

    def mean_saliency(self, subject: np.ndarray) -> float:
        """The map's mean over a subject mask (photo size): how surely the model sees it as the subject."""
        small = _resize_mask(subject, (self.saliency.shape[1], self.saliency.shape[0]))
        return float(self.saliency[small].mean()) if small.any() else 0.0


def edit_with_clicks(subject: np.ndarray, view: ClickView, clicks: Clicks) -> np.ndarray:
    """The automatic subject (bool HxW, the photo's size) edited by the clicks in order: a subject click adds the
    region under it, a not-subject click removes it; a box keeps only what is inside it."""
    height, width = subject.shape
    edited = subject.copy()
    for point in clicks.points:
        region = _resize_mask(view.region_under(point.x, point.y), (width, height))
        if point.label == POSITIVE:
            edited |= region
        else:
            edited &= ~region
    if clicks.box is not None:
        x0, y0, x1, y1 = clicks.box
        inside = np.zeros_like(edited)
        inside[math.floor(y0) : math.ceil(y1), math.floor(x0) : math.ceil(x1)] = True
        edited &= inside
    return edited


def subject_box(subject: np.ndarray, points: Sequence[Point]) -> Box | None:
    """SAM's box prompt from the automatic subject: around it and every subject click, grown by BOX_MARGIN of its
    size on each side and kept inside the photo; None when that is no area (no subject, one click at most)."""
    height, width = subject.shape
    xs = [p.x for p in points if p.label == POSITIVE]
    ys = [p.y for p in points if p.label == POSITIVE]
    rows, columns = np.nonzero(subject)
    if rows.size:
        xs += [float(columns.min()), float(columns.max() + 1)]
        ys += [float(rows.min()), float(rows.max() + 1)]
    if not xs or max(xs) - min(xs) < 1 or max(ys) - min(ys) < 1:
        return None
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    margin_x, margin_y = BOX_MARGIN * (x1 - x0), BOX_MARGIN * (y1 - y0)
    return (max(0.0, x0 - margin_x), max(0.0, y0 - margin_y), min(width, x1 + margin_x), min(height, y1 + margin_y))
