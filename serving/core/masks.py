"""Pure tools for subject masks (bool HxW, True = subject): clean-up, feathering, resizing and PNG in/out.

Connectivity: the subject is 8-connected and the background 4-connected (the complementary pair), so a
diagonal step keeps a subject piece whole and a hole sealed only at a corner still counts as a hole.
"""

from __future__ import annotations

import io
from typing import Literal

import numpy as np
from PIL import Image
from scipy import ndimage

from serving.core.images import ALLOWED_FORMATS, ImageInputError, ImageTooLargeError, png_bytes

_EIGHT = np.ones((3, 3), dtype=bool)
_FOUR = ndimage.generate_binary_structure(2, 1)


def fill_holes(mask: np.ndarray, max_area: int) -> np.ndarray:
    """Fill holes of at most `max_area` pixels. A hole is background not connected to the image border."""
    mask = _as_mask(mask)
    if max_area <= 0:
        return mask.copy()
    labels, count = ndimage.label(~mask, structure=_FOUR)
    if count == 0:
        return mask.copy()
    areas = np.bincount(labels.ravel(), minlength=count + 1)
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    small = areas <= max_area
    small[0] = False  # label 0 is the subject itself
    small[border] = False
    return mask | small[labels]


def remove_islands(mask: np.ndarray, max_area: int) -> np.ndarray:
    """Drop subject pieces of at most `max_area` pixels; the largest piece always stays (never empty a mask)."""
    mask = _as_mask(mask)
    if max_area <= 0:
        return mask.copy()
    labels, count = ndimage.label(mask, structure=_EIGHT)
    if count == 0:
        return mask.copy()
    areas = np.bincount(labels.ravel(), minlength=count + 1)
    keep = areas > max_area
    keep[0] = False
    keep[int(np.argmax(areas[1:])) + 1] = True
    return keep[labels]


def clean_mask(mask: np.ndarray, max_hole_area: int, max_island_area: int) -> np.ndarray:
    """Fill small holes, then drop small islands (the order SAM's own post-processing uses)."""
    return remove_islands(fill_holes(mask, max_hole_area), max_island_area)


def feather(mask: np.ndarray, radius: float) -> np.ndarray:
    """Soft alpha (float32 in [0, 1]) that is 1 on the subject and falls linearly to 0 at `radius` pixels outside.

    The subject itself is never made transparent: the soft edge grows outward, into the background, so a
    composite keeps every subject pixel exact.
    """
    mask = _as_mask(mask)
    if radius <= 0 or not mask.any():
        return mask.astype(np.float32)
    distance = ndimage.distance_transform_edt(~mask)  # distance of each background pixel to the subject
    return np.clip(1.0 - distance / radius, 0.0, 1.0).astype(np.float32)


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize to `size` = (width, height); stays a bool mask (no grey edge)."""
    mask = _as_mask(mask)
    width, height = size
    if (width, height) == (mask.shape[1], mask.shape[0]):
        return mask.copy()
    image = Image.fromarray(mask.astype(np.uint8) * 255).resize((width, height), Image.Resampling.NEAREST)
    return np.asarray(image) >= 128


def downsample_mask(mask: np.ndarray, factor: int, rule: Literal["all", "any"] = "all") -> np.ndarray:
    """Shrink by an integer `factor` block-wise: a cell is True when all (or any) of its pixels are True.

    "all" is what a latent mask of the kept subject needs: a cell straddling the edge is not kept. A ragged last
    row/column of blocks is judged on the pixels it has.
    """
    mask = _as_mask(mask)
    if factor < 1:
        raise ValueError(f"downsample factor must be >= 1, got {factor}")
    if rule not in ("all", "any"):
        raise ValueError(f"rule must be 'all' or 'any', got {rule!r}")
    height, width = mask.shape
    rows, cols = -(-height // factor), -(-width // factor)
    # Pad with the value that cannot change the verdict: True for "all", False for "any".
    padded = np.full((rows * factor, cols * factor), rule == "all", dtype=bool)
    padded[:height, :width] = mask
    blocks = padded.reshape(rows, factor, cols, factor)
    return blocks.all(axis=(1, 3)) if rule == "all" else blocks.any(axis=(1, 3))


def mask_to_png_bytes(mask: np.ndarray) -> bytes:
    """A black/white 8-bit PNG: white (255) = subject."""
    return png_bytes(_as_mask(mask))


def mask_from_png_bytes(data: bytes, size: tuple[int, int] | None = None) -> np.ndarray:
    """Read a mask image (white = subject) as a bool HxW array.

    `size` = (width, height) it must have; it is checked on the header, before decoding. Grey levels are split
    at 128. With an alpha channel, transparent pixels count as background (white-on-transparent works too).
    """
    if not data:
        raise ImageInputError("mask is empty (0 bytes)")
    try:
        image = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(f"mask refused as a decompression bomb: {exc}") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageInputError(f"mask is not a readable image ({exc})") from None
    if size is not None and image.size != tuple(size):
        raise ImageInputError(
            f"mask is {image.size[0]}×{image.size[1]} but the image is {size[0]}×{size[1]}; they must match"
        )
    try:
        image.load()
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageInputError(f"mask data is truncated or corrupt ({exc})") from None
    if image.mode.startswith("I;16"):
        return np.asarray(image) >= 32768  # Pillow's convert("L") would clip, not scale, 16-bit levels
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba)
    return np.asarray(image.convert("L")) >= 128


def _as_mask(mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"a mask is a 2-D HxW array, got shape {mask.shape}")
    return mask.astype(bool, copy=False)
