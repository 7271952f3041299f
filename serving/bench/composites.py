"""Photos whose subject is known exactly, for measuring the automatic subject: a photo cut out by a known mask and
pasted, sharp, over another photo that is blurred (as a portrait lens would blur it). scikit-image ships the photos
and the horse silhouette (it is installed with the test tools: `pip install -e .[test]`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter


@dataclass(frozen=True)
class Composite:
    """A photo (HWC uint8) and its subject (bool HxW)."""

    name: str
    image: np.ndarray
    subject: np.ndarray


def iou(found: np.ndarray, known: np.ndarray) -> float:
    """Intersection over union of two masks (1.0 for two empty ones)."""
    union = np.logical_or(found, known).sum()
    return float(np.logical_and(found, known).sum() / union) if union else 1.0


def _fit(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    rgb = np.stack([image] * 3, axis=-1) if image.ndim == 2 else image[..., :3]
    return np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BILINEAR))


def _blurred(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    radius = max(size) / 100  # a strong background blur, relative to the photo
    return np.asarray(Image.fromarray(_fit(image, size)).filter(ImageFilter.GaussianBlur(radius)))


def _horse(size: tuple[int, int], box: tuple[float, float, float, float], mirrored: bool = False) -> np.ndarray:
    """scikit-image's horse silhouette (True = horse) fitted into `box` (fractions x0, y0, x1, y1) of the photo."""
    from skimage import data

    width, height = size
    x0, y0, x1, y1 = (round(f * s) for f, s in zip(box, (width, height, width, height), strict=True))
    horse = ~data.horse()  # the file is black on white
    if mirrored:
        horse = horse[:, ::-1]
    fitted = Image.fromarray(horse.astype(np.uint8) * 255).resize((x1 - x0, y1 - y0), Image.Resampling.NEAREST)
    mask = np.zeros((height, width), dtype=bool)
    mask[y0:y1, x0:x1] = np.asarray(fitted) >= 128
    return mask


def _ellipse(size: tuple[int, int], centre: tuple[float, float], radii: tuple[float, float]) -> np.ndarray:
    width, height = size
    ys, xs = np.mgrid[0:height, 0:width]
    return ((xs - centre[0] * width) / (radii[0] * width)) ** 2 + (
        (ys - centre[1] * height) / (radii[1] * height)
    ) ** 2 <= 1


def known_subject_composites(size: tuple[int, int] = (640, 480)) -> list[Composite]:
    """Three composites of `size` (width, height): a horse cut from the cat photo over the blurred astronaut, the
    cat's face in an ellipse over the blurred rocket, a horse cut from the coffee photo over the blurred cameraman."""
    from skimage import data

    recipes = [
        ("horse of cat fur over the astronaut", data.chelsea(), data.astronaut(), _horse(size, (0.25, 0.2, 0.75, 0.8))),
        ("cat in an ellipse over the rocket", data.chelsea(), data.rocket(), _ellipse(size, (0.5, 0.5), (0.24, 0.4))),
        ("horse of coffee over the cameraman", data.coffee(), data.camera(), _horse(size, (0.1, 0.3, 0.6, 0.9), True)),
    ]
    composites = []
    for name, subject_photo, background, mask in recipes:
        image = _blurred(background, size).copy()
        image[mask] = _fit(subject_photo, size)[mask]
        composites.append(Composite(name, image, mask))
    return composites
