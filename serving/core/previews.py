"""A rough picture of SDXL latents without any model: a fixed linear map from the four latent channels to RGB, so a
running edit can show its background forming at every step for the cost of a small matrix product."""

from __future__ import annotations

import numpy as np
from PIL import Image

# How much each SDXL latent channel (in the UNet's scaled space) adds to R, G and B, fitted by ComfyUI
# (comfy/latent_formats.py, class SDXL) from latents and their decoded images. The result lies about in [-1, 1].
SDXL_LATENT_RGB = np.array(
    [
        [0.3920, 0.4054, 0.4549],
        [-0.2634, -0.0196, 0.0653],
        [0.0568, 0.1687, -0.0755],
        [-0.3112, -0.2359, -0.2076],
    ],
    dtype=np.float32,
)
PREVIEW_MAX_SIDE = 256  # enough to see the picture form; small enough to poll several times a second


def latents_to_rgb(latents: np.ndarray) -> np.ndarray:
    """(4, h, w) SDXL latents -> (h, w, 3) uint8: the linear map, then [-1, 1] to [0, 255]."""
    if latents.ndim != 3 or latents.shape[0] != SDXL_LATENT_RGB.shape[0]:
        raise ValueError(f"expected (4, h, w) latents, got shape {latents.shape}")
    rgb = np.tensordot(latents.astype(np.float32), SDXL_LATENT_RGB, axes=([0], [0]))
    return np.clip((rgb + 1.0) * 127.5, 0, 255).round().astype(np.uint8)


def fit_preview(rgb: np.ndarray, max_side: int = PREVIEW_MAX_SIDE) -> np.ndarray:
    """A preview no larger than `max_side` on its long side (a decoder's full-size picture, shrunk)."""
    height, width = rgb.shape[:2]
    scale = max_side / max(height, width)
    if scale >= 1:
        return rgb
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BILINEAR))
