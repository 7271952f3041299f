"""Pure tools for subject masks (bool HxW, True = subject): clean-up, feathering, the subject check and PNG in/out.

Connectivity: the subject is 8-connected and the background 4-connected (the complementary pair), so a
diagonal step keeps a subject piece whole and a hole sealed only at a corner still counts as a hole.
"""

from __future__ import annotations

import base64
import io
import zlib

import numpy as np
from PIL import Image
from scipy import ndimage

from serving.core.errors import InputError
from serving.core.images import ALLOWED_FORMATS, ImageInputError, ImageTooLargeError

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


def check_subject_mask(mask: np.ndarray, image_shape: tuple[int, ...]) -> np.ndarray:
    """A subject mask (HxW bool, or numbers: nonzero, or >= 0.5 for floats, is subject) for an image of
    `image_shape`, as bool; `InputError` when it has another size, is empty, or covers the whole image."""
    if not isinstance(mask, np.ndarray) or mask.ndim != 2:
        shape = getattr(mask, "shape", type(mask).__name__)
        raise InputError(f"subject mask must be an HxW array, got {shape}")
    if mask.shape != tuple(image_shape[:2]):
        raise InputError(
            f"subject mask is {mask.shape[1]}×{mask.shape[0]} but the image is {image_shape[1]}×{image_shape[0]}"
        )
    if np.issubdtype(mask.dtype, np.floating):
        subject = mask >= 0.5
    elif mask.dtype == bool or np.issubdtype(mask.dtype, np.integer):
        subject = mask.astype(bool, copy=False)
    else:
        raise InputError(f"subject mask dtype {mask.dtype} is not bool or numeric")
    if not subject.any():
        raise InputError("subject mask is empty: there is no subject to keep")
    if subject.all():
        raise InputError("subject mask covers the whole image: there is no background to edit")
    return subject


def mask_to_png_bytes(mask: np.ndarray) -> bytes:
    """A black/white 8-bit PNG: white (255) = subject.

    Compressed with zlib's run-length strategy (Pillow hands `compress_type` to zlib as the strategy): a mask is runs
    of 0 and 255, which it encodes about 3× faster than the default strategy on a ragged mask and 1.5× on a smooth
    one, into fewer bytes on a smooth one; a repeat click's answer is mostly this encoding."""
    buffer = io.BytesIO()
    Image.fromarray(_as_mask(mask).astype(np.uint8) * 255).save(buffer, format="PNG", compress_type=zlib.Z_RLE)
    return buffer.getvalue()


def mask_to_png_base64(mask: np.ndarray) -> str:
    """Base64 text of `mask_to_png_bytes(mask)`, as the HTTP API sends masks."""
    return base64.b64encode(mask_to_png_bytes(mask)).decode("ascii")


def mask_from_png_bytes(data: bytes, size: tuple[int, int] | None = None) -> np.ndarray:
    """Read a mask image (white = subject) as a bool HxW array: `mask_levels_from_png_bytes` split at 0.5."""
    return mask_levels_from_png_bytes(data, size) >= 0.5


def mask_levels_from_png_bytes(data: bytes, size: tuple[int, int] | None = None) -> np.ndarray:
    """Read a mask image (white = subject) as float32 HxW levels in [0, 1]; grey levels are a soft mask.

    `size` = (width, height) it must have; it is checked on the header, before decoding. With an alpha channel,
    transparent pixels count as background (white-on-transparent works too). 16-bit levels keep their precision.
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
        return np.asarray(image).astype(np.float32) / 65535  # Pillow's convert("L") would clip, not scale, 16 bits
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba)
    return np.asarray(image.convert("L")).astype(np.float32) / 255


def is_soft(levels: np.ndarray) -> bool:
    """Whether mask levels have grey values (neither 0 nor 1) anywhere."""
    return bool(np.any((levels > 0) & (levels < 1)))


def _as_mask(mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"a mask is a 2-D HxW array, got shape {mask.shape}")
    return mask.astype(bool, copy=False)
