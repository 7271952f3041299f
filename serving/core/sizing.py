"""Working sizes for diffusion: about N pixels, multiples of 64, the input's aspect ratio; resizing to and from them.

Extreme aspect ratios are clamped to `MAX_ASPECT` (4:1, the widest SDXL training buckets): a 1×4000 strip is
worked on at 4:1 (stretched), and the final composite at the input's exact size undoes the stretch.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

# SDXL's UNet halves its latents (1/8 of the pixels) twice more, to 1/32: 64 px (the step of SDXL's training
# buckets) keeps every level whole.
SIZE_MULTIPLE = 64
MAX_ASPECT = 4.0


def working_size(
    width: int, height: int, pixels: int, multiple: int = SIZE_MULTIPLE, max_aspect: float = MAX_ASPECT
) -> tuple[int, int]:
    """(width, height) with about `pixels` pixels, both multiples of `multiple` (≥ `multiple`), the input's aspect.

    The aspect ratio is clamped to [1/max_aspect, max_aspect]; the size does not depend on how big the input is,
    so a 300×200 and a 3000×2000 photo get the same working size.
    """
    if width < 1 or height < 1:
        raise ValueError(f"image size {width}×{height} has no pixels")
    if pixels < multiple * multiple:
        raise ValueError(f"working pixels {pixels} is below one {multiple}×{multiple} block")
    aspect = min(max(width / height, 1.0 / max_aspect), max_aspect)
    ideal_width, ideal_height = math.sqrt(pixels * aspect), math.sqrt(pixels / aspect)
    return (
        max(multiple, round(ideal_width / multiple) * multiple),
        max(multiple, round(ideal_height / multiple) * multiple),
    )


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """HxWx3 uint8 -> (height, width) of `size` = (width, height), Lanczos (antialiased when shrinking)."""
    if (image.shape[1], image.shape[0]) == tuple(size):
        return image
    return np.asarray(Image.fromarray(image).resize(size, resample=Image.Resampling.LANCZOS))
