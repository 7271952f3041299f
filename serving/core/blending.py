"""Blending math of the background edit: latent edit masks, progressive shrinking, the composite and a seam score.

Conventions: masks are HxW bool with True = subject (SAM's output); the diffusion *edit* mask is its inverse
(the background). Sizes are (width, height). The feathered alpha itself is `serving.core.masks.feather`.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from serving.core.masks import feather
from serving.core.sizing import resize_image


def fully_subject_cells(subject_mask: np.ndarray, grid_size: tuple[int, int]) -> np.ndarray:
    """Bool (grid_h, grid_w): True where a grid cell lies entirely on subject pixels of `subject_mask`.

    The grid spans the whole mask (a latent grid of the working size, whatever the mask's own size), and a cell
    counts every mask pixel it touches, so a cell straddling the subject's edge is *not* subject: the latent
    keeps only what is surely subject and the diffusion may repaint the rest.
    """
    grid_w, grid_h = grid_size
    height, width = subject_mask.shape
    # Background pixels in any rectangle from a summed-area table: exact, and O(pixels) for any scale.
    table = np.zeros((height + 1, width + 1), dtype=np.int64)
    table[1:, 1:] = np.cumsum(np.cumsum(~subject_mask.astype(bool), axis=0), axis=1)
    rows, cols = np.arange(grid_h), np.arange(grid_w)
    y0, y1 = rows * height // grid_h, -(-(rows + 1) * height // grid_h)  # floor start, ceil end
    x0, x1 = cols * width // grid_w, -(-(cols + 1) * width // grid_w)
    background = table[y1][:, x1] - table[y0][:, x1] - table[y1][:, x0] + table[y0][:, x0]  # (grid_h, grid_w) counts
    return background == 0


def shrink_radii(shrink_steps: int, total_steps: int) -> list[int]:
    """Dilation radius (in latent cells) of the edit mask at each denoising step: largest first, then 0.

    Progressive mask shrinking (Blended Latent Diffusion): early steps may repaint a band into the subject,
    so the background does not have to meet a hard edge at high noise; the band shrinks to nothing by
    step `shrink_steps` (counted from 0). `check_edit_options` keeps `shrink_steps` below the steps an edit makes,
    so its last step always uses the exact mask.
    """
    return [max(shrink_steps - step, 0) for step in range(total_steps)]


def step_edit_masks(
    subject_mask: np.ndarray, grid_size: tuple[int, int], shrink_steps: int, total_steps: int
) -> list[np.ndarray]:
    """The edit (background) mask on the latent grid at every denoising step: True = repaint.

    The base mask is every cell that is not fully subject; the first `shrink_steps` steps dilate it (see
    `shrink_radii`). Steps with the same radius share one array.
    """
    edit_mask = ~fully_subject_cells(subject_mask, grid_size)
    radii = shrink_radii(shrink_steps, total_steps)
    grown = {radius: dilate(edit_mask, radius) for radius in set(radii)}
    return [grown[radius] for radius in radii]


def dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Bool mask grown by a (2·radius+1)² square."""
    if radius <= 0:
        return mask.copy()
    return ndimage.maximum_filter(mask.astype(np.uint8), size=2 * radius + 1, mode="constant", cval=0).astype(bool)


def subject_alpha(subject_mask: np.ndarray, feather_px: int) -> np.ndarray:
    """`masks.feather(subject_mask, feather_px)`, computed only around the subject: beyond `feather_px` of its
    bounding box the alpha is 0 anyway, and the distance transform of a 12-MP photo costs seconds."""
    rows, cols = np.flatnonzero(subject_mask.any(axis=1)), np.flatnonzero(subject_mask.any(axis=0))
    alpha = np.zeros(subject_mask.shape, dtype=np.float32)
    if rows.size == 0:
        return alpha
    margin = max(feather_px, 0) + 1
    box = (
        slice(max(rows[0] - margin, 0), rows[-1] + margin + 1),
        slice(max(cols[0] - margin, 0), cols[-1] + margin + 1),
    )
    # Every subject pixel lies in the box, so each pixel's distance to the subject is the same as uncropped.
    alpha[box] = feather(subject_mask[box], feather_px)
    return alpha


def composite(original: np.ndarray, background: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """HxWx3 uint8: `original` where alpha is 1 (bit for bit), `background` where 0, blended between."""
    if original.shape != background.shape or alpha.shape != original.shape[:2]:
        raise ValueError(
            f"composite needs equal sizes: original {original.shape}, background {background.shape}, "
            f"alpha {alpha.shape}"
        )
    out = background.copy()
    subject = alpha >= 1.0
    out[subject] = original[subject]  # copied, not blended: exactness must not hang on float rounding
    band = (alpha > 0.0) & ~subject  # only the soft edge needs arithmetic
    weight = alpha[band][:, None]
    blended = weight * original[band].astype(np.float32) + (1.0 - weight) * background[band].astype(np.float32)
    out[band] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    return out


def compose(original: np.ndarray, background: np.ndarray, subject_mask: np.ndarray, feather_px: int) -> np.ndarray:
    """The final edit: `background` (any size) brought to the original's size, and the original's subject pixels
    put back through a feathered alpha (bit for bit where the alpha is 1)."""
    height, width = original.shape[:2]
    return composite(original, resize_image(background, (width, height)), subject_alpha(subject_mask, feather_px))


def seam_score(image: np.ndarray, subject_mask: np.ndarray, band: int = 3) -> float:
    """Mean gradient magnitude (0-255 luminance units per pixel) in a band of ±`band` px around the subject edge.

    Lower is a smoother seam. It compares variants of one edit (shrinking on/off), not different photos.
    """
    subject = subject_mask.astype(bool)
    ring = dilate(subject, band) & ~ndimage.binary_erosion(subject, iterations=band, border_value=1)
    if not ring.any():
        return 0.0
    luminance = image.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    grad_y, grad_x = np.gradient(luminance)
    return float(np.hypot(grad_x, grad_y)[ring].mean())
