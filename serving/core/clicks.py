"""SAM's point prompts ("clicks") and box, and their validation against the image they point into.

Coordinates are continuous pixel coordinates in the upright image, origin top-left: the image covers
[0, width] × [0, height], edges included. Label 1 marks the subject, 0 marks "not subject".
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict

from serving.core.errors import InputError

POSITIVE, NEGATIVE = 1, 0


class ClickError(InputError):
    """A click or box the caller sent cannot be used; the message names the bad value."""


class Point(BaseModel):
    """One click: (x, y) in image pixels (origin top-left) and its label (1 = subject, 0 = not subject).

    The service's request bodies use this model too. Strict: `true` or "12" is a caller's mistake, not a
    coordinate (lax parsing would read them as 1.0 and 12.0). Frozen, so clicks can key a cache.
    """

    model_config = ConfigDict(strict=True, frozen=True)

    x: float
    y: float
    label: int = POSITIVE


Box = tuple[float, float, float, float]  # x0, y0, x1, y1 (XYXY) in image pixels


@dataclass(frozen=True)
class Clicks:
    """Validated clicks (in the order they were made) and an optional box; hashable, so usable as a cache key."""

    points: tuple[Point, ...]
    box: Box | None = None

    def without_last_point(self) -> Clicks:
        """The clicks of the call before the latest one (same box, one point fewer)."""
        return Clicks(self.points[:-1], self.box)

    @property
    def is_empty(self) -> bool:
        return not self.points and self.box is None


def validate_clicks(
    points: Sequence[Point | Mapping[str, Any] | Sequence[Any]] | None,
    box: Sequence[Any] | None,
    image_size: tuple[int, int],
    max_points: int,
    required: bool = True,
) -> Clicks:
    """Check clicks and box against an image of `image_size` (width, height) and return them normalised.

    A point is a `Point`, a mapping `{"x", "y", "label"}` (label defaults to 1) or a sequence `(x, y[, label])`.
    `required`: no click and no box is a mistake (False: they refine the automatic subject, and none is fine).
    Raises `ClickError` for no click and no box when required, too many points, a non-numeric or non-finite
    coordinate, a label other than 0/1, a point or box outside the image, or a box whose corners are not top-left
    then bottom-right.
    """
    width, height = image_size
    points = [] if points is None else list(points)
    if required and not points and box is None:
        raise ClickError("no clicks: give at least one point or a box")
    if len(points) > max_points:
        raise ClickError(f"{len(points)} points given, at most {max_points} are allowed (MOODSHIFT_MAX_POINTS)")
    checked = tuple(_check_point(i, raw, width, height) for i, raw in enumerate(points))
    return Clicks(checked, None if box is None else _check_box(box, width, height))


def _check_point(index: int, raw: Point | Mapping[str, Any] | Sequence[Any], width: int, height: int) -> Point:
    where = f"point {index}"
    if isinstance(raw, Point):
        x, y, label = raw.x, raw.y, raw.label
    elif isinstance(raw, Mapping):
        missing = [key for key in ("x", "y") if key not in raw]
        if missing:
            raise ClickError(f"{where} {dict(raw)!r} lacks {' and '.join(missing)}")
        x, y, label = raw["x"], raw["y"], raw.get("label", POSITIVE)
    else:
        values = _as_list(raw)
        if values is None or len(values) not in (2, 3):
            raise ClickError(f"{where} {raw!r} is not (x, y[, label]) or {{x, y, label}}")
        x, y, label = (*values, POSITIVE) if len(values) == 2 else values
    x, y = _coordinate(f"{where} x", x), _coordinate(f"{where} y", y)
    if isinstance(label, bool) or not isinstance(label, numbers.Real) or label not in (POSITIVE, NEGATIVE):
        raise ClickError(f"{where} has label {label!r}; a label is 1 (subject) or 0 (not subject)")
    if not (0 <= x <= width and 0 <= y <= height):
        raise ClickError(f"{where} ({x:g}, {y:g}) is outside the {width}×{height} image")
    return Point(x=x, y=y, label=int(label))


def _check_box(raw: Any, width: int, height: int) -> Box:
    values = _as_list(raw)
    if values is None or len(values) != 4:
        raise ClickError(f"box {raw!r} is not [x0, y0, x1, y1]")
    x0, y0, x1, y1 = (_coordinate(f"box {name}", v) for name, v in zip(("x0", "y0", "x1", "y1"), values, strict=True))
    if x1 <= x0 or y1 <= y0:
        raise ClickError(f"box [{x0:g}, {y0:g}, {x1:g}, {y1:g}] needs x0 < x1 and y0 < y1 (top-left, bottom-right)")
    if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
        raise ClickError(f"box [{x0:g}, {y0:g}, {x1:g}, {y1:g}] reaches outside the {width}×{height} image")
    return (x0, y0, x1, y1)


def _as_list(raw: Any) -> list[Any] | None:
    """The items of a list, tuple or numpy row; None for strings and non-iterables."""
    if isinstance(raw, str | bytes):
        return None
    try:
        return list(raw)
    except TypeError:
        return None


def _coordinate(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ClickError(f"{name} is {value!r}; a coordinate must be a number")
    if not math.isfinite(value):
        raise ClickError(f"{name} is {value!r}; a coordinate must be finite")
    return float(value)
