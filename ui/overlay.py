"""Pictures the studio draws: the subject mask as a translucent overlay with an outline, the cut-out's soft edge,
the before/after wipe and thumbnails. PIL and numpy only."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

from ui.canvas import fit_canvas

MASK_TINT = (139, 92, 246)  # violet: reads on skin, sky and foliage alike
OUTLINE_COLOR = (255, 255, 255)
SOFT_EDGE_COLOR = (251, 191, 36)  # amber: where the cut-out is partly transparent
DIVIDER_COLOR = (255, 255, 255)


def mask_array(mask: Image.Image, size: tuple[int, int]) -> np.ndarray:
    """The mask as an HW bool array (True = subject) at `size` (W, H); white or any value ≥ 128 is subject."""
    gray = mask.convert("L")
    if gray.size != size:
        # Area-averaging then thresholding keeps thin parts better than nearest when shrinking a big mask.
        gray = gray.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
    return np.asarray(gray) >= 128


def mask_outline(subject: np.ndarray, width: int = 2) -> np.ndarray:
    """The inner border of an HW bool mask, `width` pixels thick (edges of the picture count as border)."""
    if width < 1 or not subject.any():
        return np.zeros_like(subject)
    # Pad with background so a subject touching the frame still gets an outline there.
    padded = Image.fromarray(np.pad(subject, width).astype(np.uint8) * 255)
    eroded = np.asarray(padded.filter(ImageFilter.MinFilter(2 * width + 1)))[width:-width, width:-width] >= 128
    return subject & ~eroded


def overlay_mask(
    image: Image.Image,
    mask: Image.Image,
    tint: tuple[int, int, int] = MASK_TINT,
    alpha: float = 0.45,
    outline_width: int = 2,
) -> Image.Image:
    """`image` (RGB) with the subject tinted by `alpha` of `tint` and outlined; the mask is resized to fit."""
    rgb = np.asarray(image.convert("RGB")).astype(np.float32)
    subject = mask_array(mask, image.size)
    out = rgb.copy()
    out[subject] = (1 - alpha) * rgb[subject] + alpha * np.asarray(tint, np.float32)
    out[mask_outline(subject, outline_width)] = OUTLINE_COLOR
    return Image.fromarray(out.round().astype(np.uint8))


def overlay_soft_edge(
    image: Image.Image, cutout: Image.Image, tint: tuple[int, int, int] = MASK_TINT, alpha: float = 0.45
) -> Image.Image:
    """`image` (RGB) with the subject tinted by `alpha` × the cut-out's own alpha, and its soft edge (where the
    cut-out is partly transparent, however thin once shrunk to fit) painted amber."""
    rgb = np.asarray(image.convert("RGB")).astype(np.float32)
    opacity = cutout.getchannel("A")
    weight = alpha * np.asarray(opacity.resize(image.size, Image.Resampling.BILINEAR), np.float32)[..., None] / 255
    out = (1 - weight) * rgb + weight * np.asarray(tint, np.float32)
    partial = np.asarray(opacity.point(lambda level: 255 if 0 < level < 255 else 0))
    # Any partial pixel under a display pixel marks it: a band a few pixels wide survives the shrink.
    edge = np.asarray(Image.fromarray(partial).resize(image.size, Image.Resampling.BOX)) > 0
    out[edge] = 0.3 * out[edge] + 0.7 * np.asarray(SOFT_EDGE_COLOR, np.float32)
    return Image.fromarray(out.round().astype(np.uint8))


def compare_split(before: Image.Image, after: Image.Image, fraction: float, divider: int = 2) -> Image.Image:
    """A before/after wipe: `before` left of `fraction` of the width, `after` right of it, a line between."""
    if before.size != after.size:
        raise ValueError(f"before and after differ in size: {before.size} vs {after.size}")
    width, height = before.size
    split = round(min(max(fraction, 0.0), 1.0) * width)
    out = after.convert("RGB").copy()
    if split > 0:
        out.paste(before.convert("RGB").crop((0, 0, split, height)), (0, 0))
    if 0 < split < width:
        left = max(0, split - divider // 2)
        out.paste(DIVIDER_COLOR, (left, 0, min(width, left + divider), height))
    return out


def thumbnail(image: Image.Image, max_side: int = 320) -> Image.Image:
    """A copy no larger than `max_side` on its long side, aspect ratio kept."""
    thumb = image.convert("RGB")
    thumb.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return thumb


def fit_within(image: Image.Image, max_width: int, max_height: int) -> Image.Image:
    """`image` scaled down (never up) to fit the box, for display."""
    geometry = fit_canvas(image.width, image.height, max_width, max_height)
    size = (geometry.display_width, geometry.display_height)
    return image if size == image.size else image.resize(size, Image.Resampling.LANCZOS)
