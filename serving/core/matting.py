"""Soft edges for the subject: the unknown band around a subject mask's boundary, a soft alpha and the subject's own
(decontaminated) colours estimated in it, the matte composite `alpha·F + (1 − alpha)·B` and the RGBA cut-out.

Real edges (hair, fur, motion blur) are partly transparent, and their pixels mix the subject's colour with the old
background's: a binary mask either keeps that mix (a rim of the old background around the subject) or cuts it off.
In a band of `band_width` pixels on both sides of the mask's boundary the alpha is solved by closed-form matting
(Levin et al. 2008) and the foreground colours by multi-level foreground estimation (Germer et al. 2020), both with
pymatting. Deeper inside the mask nothing is estimated: those pixels keep the photo's colours bit for bit.

Large photos are solved at most at `MATTE_PIXELS` and brought back to full size by guided upsampling (the fast
guided filter, He & Sun 2015), evaluated only at the band's pixels, so the cost follows the band, not the photo.

pymatting compiles its numba kernels when it is first imported on a machine (about 45 s on 2 CPU cores) and caches
them beside its files; later imports take about a second. It is imported inside the functions that use it, so
importing this module stays cheap; the service imports it when it starts (`warm_up`).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage, sparse

from serving.core.blending import composite
from serving.core.sizing import resize_image

BAND_PX_AT_2MP = 8  # the band reaches 8 px each way on a 2-MP photo, in proportion to the photo's side elsewhere
MIN_BAND_PX = 2
MATTE_PIXELS = 1_000_000  # the alpha and colours are solved on at most this many pixels
LAPLACIAN_EPSILON = 1e-6  # closed-form regulariser: the colour-line model's slack (pymatting's example value)
PRIOR_WEIGHT = 1e-3  # the pull toward the mask's own alpha (see `_solve`); stronger blurs the matte toward the mask
GUIDE_RADIUS = 2  # guided upsampling window (pixels of the solved size) ...
GUIDE_EPSILON = 1e-5  # ... and its regulariser (colours in [0, 1])
# Below this alpha a pixel's own colour says little about the subject's: its colour is the solved one, upsampled
# (fully below the first, blended up to the second).
SOLVED_COLOUR_BELOW = (0.05, 0.3)


@dataclass(frozen=True)
class Matte:
    """A subject's soft edge at the photo's size.

    alpha: HxW float32 in [0, 1]: 1 on the subject deeper than the band, 0 outside the band, solved inside it.
    foreground: HxWx3 uint8: the photo, with the subject's estimated (decontaminated) colours in the band.
    band: HxW bool: the unknown band, where alpha and colours were estimated.
    """

    alpha: np.ndarray
    foreground: np.ndarray
    band: np.ndarray

    @property
    def core(self) -> np.ndarray:
        """HxW bool: the subject deeper than the band, where the photo's pixels are kept bit for bit."""
        return (self.alpha >= 1.0) & ~self.band

    def cutout(self) -> np.ndarray:
        """HxWx4 uint8 RGBA with straight (not premultiplied) alpha; colours are 0 where the alpha is."""
        rgba = np.zeros((*self.alpha.shape, 4), dtype=np.uint8)
        alpha8 = np.clip(np.rint(self.alpha * 255), 0, 255).astype(np.uint8)
        visible = alpha8 > 0
        rgba[visible, :3] = self.foreground[visible]
        rgba[..., 3] = alpha8
        return rgba


def band_width(width: int, height: int) -> int:
    """Pixels the unknown band reaches on each side of the mask's boundary: 8 at 2 MP, in proportion to the photo's
    side elsewhere (a mask's edge is uncertain by a fixed share of the photo: SAM predicts it on a 256² grid)."""
    return max(MIN_BAND_PX, round(BAND_PX_AT_2MP * math.sqrt(width * height / 2_000_000)))


def unknown_band(subject: np.ndarray, width_px: int) -> np.ndarray:
    """HxW bool: pixels within `width_px` (a square's half-side) of the boundary of `subject`, on either side.

    Parts of the subject thinner than the band and farther than `width_px` from any thicker part (a pole, the tip of
    a strand the mask caught, a speck) stay out of it and keep the mask's hard edge: with no sure subject pixel
    near them, the matte could not tell their colours from the background's and would fade them away. The photo's
    frame is no boundary: a subject that touches it gets no band there.
    """
    size = 2 * width_px + 1
    band = np.zeros_like(subject)
    if not subject.any():
        return band
    # Filtered around the subject only: beyond the filters' reach of it there is nothing but background.
    box = _bounding_box(subject, margin=2 * size)
    around = subject[box]
    grown = ndimage.maximum_filter(around, size=size, mode="nearest")
    core = ndimage.minimum_filter(around, size=size, mode="nearest")
    # Near the subject's thick parts (where a square of the band's size fits: the opening, grown by the width).
    near_thick = ndimage.maximum_filter(core, size=2 * size - 1, mode="nearest")
    band[box] = grown & ~core & (near_thick | ~around)
    return band


def estimate_matte(image: np.ndarray, subject_prior: np.ndarray) -> Matte:
    """The soft edge of the subject in `image` (HxWx3 uint8).

    `subject_prior`: HxW bool (True = subject), or float levels in [0, 1] (an uploaded grey mask): the subject is
    where it is ≥ 0.5, its grey levels join the band and pull the alpha toward them. The caller checks that the
    mask has the image's size and is neither empty nor full (`masks.check_subject_mask`).
    """
    height, width = image.shape[:2]
    soft = subject_prior.dtype != bool
    prior = np.clip(subject_prior, 0.0, 1.0).astype(np.float32) if soft else subject_prior
    subject = prior >= 0.5 if soft else prior
    band = unknown_band(subject, band_width(width, height))
    if soft:
        band |= (prior > 0.0) & (prior < 1.0)
    core, outside = subject & ~band, ~(subject | band)
    alpha, foreground = core.astype(np.float32), image.copy()
    if band.any():
        scale = math.sqrt(MATTE_PIXELS / (width * height))
        solve = _solve_band if scale >= 1.0 else functools.partial(_solve_band_scaled, scale=scale)
        alpha[band], foreground[band] = solve(image, core, outside, band, prior)
    return Matte(alpha, foreground, band)


def compose_matte(background: np.ndarray, matte: Matte) -> np.ndarray:
    """The final edit with a soft edge: `background` (any size) brought to the matte's size, and
    `alpha·F + (1 − alpha)·background` over it; the subject deeper than the band is the photo's, bit for bit."""
    height, width = matte.alpha.shape
    return composite(matte.foreground, resize_image(background, (width, height)), matte.alpha)


def warm_up() -> None:
    """Load pymatting and run a tiny matte now, so the first request does not wait for it: its numba kernels
    compile on a machine's first import (about 45 s on 2 CPU cores), then load from their cache (about 1 s)."""
    image = np.zeros((32, 32, 3), dtype=np.uint8)
    image[8:24, 8:24] = 255
    estimate_matte(image, image[..., 0] > 0)


# --- solving --------------------------------------------------------------------------------------------------


def _solve(
    image: np.ndarray, known_fg: np.ndarray, known_bg: np.ndarray, prior: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Alpha (HxW float64), foreground and background colours (HxWx3 float in [0, 1]) of a photo crop whose pixels
    are known subject, known background or unknown (neither); `prior` (HxW in [0, 1]) is the mask's own alpha."""
    from pymatting import cf_laplacian, cg, estimate_foreground_ml, ichol

    colours = image.astype(np.float64) / 255.0
    known = known_fg | known_bg
    unknown = ~known.ravel()
    laplacian = cf_laplacian(colours, epsilon=LAPLACIAN_EPSILON, is_known=known)
    rows = laplacian[unknown]
    system = rows[:, unknown]
    # Known pixels enter as fixed values: L_U·x = −R·alpha_K (Grady et al. 2005, as pymatting's estimate_alpha_cf).
    right_side = -(rows[:, ~unknown] @ known_fg.ravel()[~unknown].astype(np.float64))
    # A weak pull toward the mask's own alpha: it decides where the colours cannot (a subject and a background of
    # one colour, an unknown patch with no known pixel near it), and keeps the system positive definite.
    system = system + PRIOR_WEIGHT * sparse.identity(system.shape[0], format="csr")
    right_side = right_side + PRIOR_WEIGHT * prior.ravel()[unknown]
    alpha = known_fg.astype(np.float64).ravel()
    alpha[unknown] = cg(system, right_side, M=ichol(system.tocsc()))
    alpha = np.clip(alpha, 0.0, 1.0).reshape(known.shape)
    foreground, background = estimate_foreground_ml(colours, alpha, return_background=True)
    return alpha, foreground, background


def _solve_band(
    image: np.ndarray, core: np.ndarray, outside: np.ndarray, band: np.ndarray, prior: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Alpha (float32) and colours (uint8 RGB) at the band's pixels, solved at the photo's size around the band."""
    box = _bounding_box(band, margin=band_width(image.shape[1], image.shape[0]))
    alpha, foreground, _ = _solve(image[box], core[box], outside[box], prior[box].astype(np.float64))
    inside = band[box]
    return alpha[inside].astype(np.float32), _to_uint8(foreground[inside])


def _solve_band_scaled(
    image: np.ndarray,
    core: np.ndarray,
    outside: np.ndarray,
    band: np.ndarray,
    prior: np.ndarray,
    scale: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Alpha and colours at the band's pixels of a large photo, solved at `scale` and brought back to full size.

    The scaled trimap is known only where a scaled pixel lies wholly on known full-size pixels (exact while a scaled
    pixel covers fewer than 510 photo pixels: photos under 500 MP). The alpha comes back by guided upsampling:
    locally alpha ≈ slope·colour + offset, fitted at the solved size, interpolated, and applied to the full-size
    colours, so strands finer than a solved pixel come back where the photo shows them.
    The colours come from the compositing equation at full size, F = B + (I − B) / alpha, with the solved
    background B upsampled (it is smooth, so little is lost); where the alpha is too small for that division, the
    solved colours are upsampled instead.
    """
    height, width = band.shape
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small_image = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BOX))
    known_fg, known_bg = (_shrink(known, size) == 255 for known in (core, outside))
    box = _bounding_box(~(known_fg | known_bg), margin=2 * GUIDE_RADIUS + 2)
    crop = small_image[box]
    small_prior = _shrink(prior, size)[box].astype(np.float64) / 255.0
    solved = _solve(crop, known_fg[box], known_bg[box], small_prior)
    solved_alpha, solved_foreground, solved_background = (values.astype(np.float32) for values in solved)
    slope, offset = _guided_coefficients(crop.astype(np.float32) / 255.0, solved_alpha)

    ys, xs = np.nonzero(band)
    # Full-size pixel centres in the crop's coordinates (the box filter's pixel-centre convention), and the
    # solved values there: slope (3), offset, background (3), foreground (3).
    rows = (ys + 0.5) * (size[1] / height) - 0.5 - box[0].start
    cols = (xs + 0.5) * (size[0] / width) - 0.5 - box[1].start
    sampled = _bilinear(np.dstack([slope, offset, solved_background, solved_foreground]), rows, cols)
    slope, offset, background, foreground = sampled[:, :3], sampled[:, 3], sampled[:, 4:7], sampled[:, 7:]

    colours = image[ys, xs].astype(np.float32) / 255.0
    alpha = np.clip((slope * colours).sum(axis=-1) + offset, 0.0, 1.0)
    unmixed = background + (colours - background) / np.maximum(alpha, 1e-3)[:, None]
    low, high = SOLVED_COLOUR_BELOW
    trust = np.clip((alpha - low) / (high - low), 0.0, 1.0)[:, None]
    return alpha, _to_uint8(trust * np.clip(unmixed, 0.0, 1.0) + (1.0 - trust) * foreground)


def _guided_coefficients(guide: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The guided filter's window-averaged linear model (He et al. 2013): target ≈ slope·guide + offset.

    guide: HxWx3 float32, target: HxW float32. Returns slope HxWx3 and offset HxW.
    """
    size = 2 * GUIDE_RADIUS + 1

    def mean(values: np.ndarray) -> np.ndarray:
        return ndimage.uniform_filter(values, size=(size, size) + (1,) * (values.ndim - 2), mode="reflect")

    mean_guide, mean_target = mean(guide), mean(target)
    covariance = mean(guide * target[..., None]) - mean_guide * mean_target[..., None]
    variance = mean(guide[..., :, None] * guide[..., None, :]) - mean_guide[..., :, None] * mean_guide[..., None, :]
    variance += GUIDE_EPSILON * np.eye(3, dtype=np.float32)
    slope = np.linalg.solve(variance, covariance[..., None])[..., 0]
    offset = mean_target - (slope * mean_guide).sum(axis=-1)
    return mean(slope), mean(offset)


# --- helpers --------------------------------------------------------------------------------------------------


def _shrink(values: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A mask or levels in [0, 1] as uint8 0-255 at `size` (width, height), each pixel the mean of what it covers
    (255 only where all of it is 255 while it covers fewer than 510 pixels)."""
    levels = values.view(np.uint8) * np.uint8(255) if values.dtype == bool else np.rint(values * 255).astype(np.uint8)
    return np.asarray(Image.fromarray(levels).resize(size, Image.Resampling.BOX))


def _bilinear(values: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """(n, C) bilinear samples of HxWxC `values` at fractional (rows, cols); beyond the edge, the edge's."""
    height, width = values.shape[:2]
    rows, cols = np.clip(rows, 0, height - 1), np.clip(cols, 0, width - 1)
    top, left = np.floor(rows).astype(np.intp), np.floor(cols).astype(np.intp)
    bottom, right = np.minimum(top + 1, height - 1), np.minimum(left + 1, width - 1)
    down, across = (rows - top).astype(np.float32)[:, None], (cols - left).astype(np.float32)[:, None]
    upper = values[top, left] * (1 - across) + values[top, right] * across
    lower = values[bottom, left] * (1 - across) + values[bottom, right] * across
    return upper * (1 - down) + lower * down


def _bounding_box(where: np.ndarray, margin: int) -> tuple[slice, slice]:
    rows, cols = np.flatnonzero(where.any(axis=1)), np.flatnonzero(where.any(axis=0))
    height, width = where.shape
    return (
        slice(max(rows[0] - margin, 0), min(rows[-1] + margin + 1, height)),
        slice(max(cols[0] - margin, 0), min(cols[-1] + margin + 1, width)),
    )


def _to_uint8(colours: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(np.asarray(colours) * 255.0), 0, 255).astype(np.uint8)
