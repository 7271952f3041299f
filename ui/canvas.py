"""Canvas <-> image coordinates for the point-prompt canvas (streamlit-drawable-canvas 0.13).

The canvas shows a downscaled copy of the photo; clicks come back in canvas pixels and are mapped to the
original photo's pixels here. Pure functions, no Streamlit.

How 0.13 reports things (read from its frontend source):
- `CanvasResult.background_fit` = `{natural_width, natural_height, scale_x, scale_y, offset_x, offset_y}`:
  the background image's own size and how it was placed on the canvas (`canvas = natural * scale + offset`).
  It is `None` until the browser has loaded the image.
- A point is a fabric `Circle` with `originX="left"`, `originY="center"`,
  `left = click_x - (radius + strokeWidth / 2)` and `top = click_y`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

POSITIVE = 1
NEGATIVE = 0
# The point's fill colour carries its label, so points drawn by the canvas itself (and its own undo/redo)
# keep their label without any side table.
LABEL_COLORS: dict[int, str] = {POSITIVE: "#22c55e", NEGATIVE: "#ef4444"}
POINT_OUTLINE = "#ffffff"
POINT_RADIUS = 5
POINT_STROKE = 2

_ORIGIN_OFFSET = {"left": 0.0, "top": 0.0, "center": 0.5, "right": 1.0, "bottom": 1.0}


@dataclass(frozen=True)
class Point:
    """A prompt point in original-image pixels (origin top-left); label 1 = subject, 0 = not subject."""

    x: int
    y: int
    label: int

    def to_json(self) -> dict[str, int]:
        return {"x": self.x, "y": self.y, "label": self.label}


@dataclass(frozen=True)
class CanvasGeometry:
    """The photo's size and the size of the canvas (and of the background image drawn on it)."""

    image_width: int
    image_height: int
    display_width: int
    display_height: int

    @property
    def scale(self) -> float:
        """Display pixels per image pixel (≤ 1)."""
        return self.display_width / self.image_width


@dataclass(frozen=True)
class BackgroundFit:
    """How the canvas placed its background image: `canvas = natural * scale + offset`."""

    natural_width: float
    natural_height: float
    scale_x: float
    scale_y: float
    offset_x: float
    offset_y: float

    @classmethod
    def identity(cls, geometry: CanvasGeometry) -> BackgroundFit:
        """The fit of a background that is exactly canvas-sized (what this app always passes)."""
        return cls(geometry.display_width, geometry.display_height, 1.0, 1.0, 0.0, 0.0)

    @classmethod
    def from_canvas(cls, fit: dict[str, float] | None, geometry: CanvasGeometry) -> BackgroundFit:
        """From `CanvasResult.background_fit`; the identity fit while the browser has not reported one."""
        if not fit:
            return cls.identity(geometry)
        return cls(
            float(fit["natural_width"]),
            float(fit["natural_height"]),
            float(fit["scale_x"]),
            float(fit["scale_y"]),
            float(fit["offset_x"]),
            float(fit["offset_y"]),
        )


def fit_canvas(image_width: int, image_height: int, max_width: int, max_height: int) -> CanvasGeometry:
    """The canvas size that shows the whole photo within `max_width` × `max_height`, never upscaled."""
    if image_width < 1 or image_height < 1:
        raise ValueError(f"image size must be positive, got {image_width}×{image_height}")
    scale = min(1.0, max_width / image_width, max_height / image_height)
    return CanvasGeometry(
        image_width,
        image_height,
        max(1, round(image_width * scale)),
        max(1, round(image_height * scale)),
    )


def canvas_to_image(
    x: float, y: float, geometry: CanvasGeometry, fit: BackgroundFit | None = None
) -> tuple[int, int] | None:
    """The original-image pixel under canvas position (x, y), or None when it lies outside the photo."""
    fit = fit or BackgroundFit.identity(geometry)
    # Canvas -> background-image pixels -> original pixels. Separate x/y ratios: the display size is rounded.
    bx = (x - fit.offset_x) / fit.scale_x
    by = (y - fit.offset_y) / fit.scale_y
    if not (0 <= bx <= fit.natural_width and 0 <= by <= fit.natural_height):
        return None
    ix = math.floor(bx * geometry.image_width / fit.natural_width)
    iy = math.floor(by * geometry.image_height / fit.natural_height)
    # A click on the very last canvas pixel edge maps to W (or H); it belongs to the last pixel.
    return min(ix, geometry.image_width - 1), min(iy, geometry.image_height - 1)


def image_to_canvas(x: int, y: int, geometry: CanvasGeometry, fit: BackgroundFit | None = None) -> tuple[float, float]:
    """The canvas position of the centre of image pixel (x, y); `canvas_to_image` maps it back to (x, y)."""
    fit = fit or BackgroundFit.identity(geometry)
    bx = (x + 0.5) * fit.natural_width / geometry.image_width
    by = (y + 0.5) * fit.natural_height / geometry.image_height
    return bx * fit.scale_x + fit.offset_x, by * fit.scale_y + fit.offset_y


def circle_center(obj: dict[str, Any]) -> tuple[float, float]:
    """Centre of a fabric Circle from its JSON (`left`/`top` are at its origin; the box includes the stroke)."""
    radius = float(obj.get("radius", 0))
    stroke = float(obj.get("strokeWidth", 0))
    width = (2 * radius + stroke) * float(obj.get("scaleX", 1))
    height = (2 * radius + stroke) * float(obj.get("scaleY", 1))
    cx = float(obj.get("left", 0)) + (0.5 - _ORIGIN_OFFSET[obj.get("originX", "left")]) * width
    cy = float(obj.get("top", 0)) + (0.5 - _ORIGIN_OFFSET[obj.get("originY", "top")]) * height
    return cx, cy


def label_of(obj: dict[str, Any]) -> int:
    """The label a point was drawn with, read from its fill colour (unknown colours count as subject)."""
    fill = str(obj.get("fill", "")).lower()
    return NEGATIVE if fill == LABEL_COLORS[NEGATIVE] else POSITIVE


def drawing_to_points(
    json_data: dict[str, Any] | None, geometry: CanvasGeometry, fit: dict[str, float] | None = None
) -> list[Point]:
    """Every point on the canvas, in drawing order, in original-image pixels; clicks off the photo are dropped."""
    background_fit = BackgroundFit.from_canvas(fit, geometry)
    points: list[Point] = []
    for obj in (json_data or {}).get("objects", []):
        if str(obj.get("type", "")).lower() != "circle":
            continue
        pixel = canvas_to_image(*circle_center(obj), geometry, background_fit)
        if pixel is not None:
            points.append(Point(pixel[0], pixel[1], label_of(obj)))
    return points


def point_object(x: float, y: float, label: int) -> dict[str, Any]:
    """A Circle exactly like the canvas's point tool draws at canvas position (x, y)."""
    return {
        "type": "Circle",
        "left": x - (POINT_RADIUS + POINT_STROKE / 2),
        "top": y,
        "originX": "left",
        "originY": "center",
        "radius": POINT_RADIUS,
        "strokeWidth": POINT_STROKE,
        "stroke": POINT_OUTLINE,
        "fill": LABEL_COLORS[label],
        "selectable": False,
        "evented": False,
    }


def points_to_drawing(points: list[Point], geometry: CanvasGeometry) -> dict[str, Any]:
    """An `initial_drawing` that shows `points` (used after undo/clear and when the page is re-entered)."""
    objects = [point_object(*image_to_canvas(p.x, p.y, geometry), p.label) for p in points]
    return {"objects": objects}
