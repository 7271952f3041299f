"""Checks an uploaded photo (type, size, pixels) and prepares the bytes the service will see.

The service decodes exactly the bytes sent here, so the studio's canvas and the service agree on the image's
pixel grid: anything that is not a plain PNG/JPEG, or that carries an EXIF rotation, is re-encoded as PNG
with the rotation applied.
"""

from __future__ import annotations

import hashlib
import io
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from numbers import Real
from typing import Any

from PIL import Image, ImageOps, UnidentifiedImageError

from ui.client import Photo

ACCEPTED_TYPES = ("png", "jpg", "jpeg", "webp")
_PLAIN_FORMATS = {"PNG", "JPEG"}
_EXIF_ORIENTATION = 0x0112


class UploadError(ValueError):
    """The uploaded file cannot be used; the message says why and what is accepted."""


@dataclass(frozen=True)
class UploadLimits:
    """The largest photo accepted: `max_mb` of file and `max_pixels` (W×H)."""

    max_mb: float
    max_pixels: int

    @classmethod
    def from_info(cls, info: Mapping[str, Any] | None, fallback: UploadLimits) -> UploadLimits:
        """The `limits` of the service's /info answer; `fallback` (the studio's settings) for any it does not give."""
        limits = (info or {}).get("limits")
        if not isinstance(limits, Mapping):
            return fallback
        max_mb, max_pixels = limits.get("max_upload_mb"), limits.get("max_image_pixels")
        return cls(
            float(max_mb) if _positive(max_mb) else fallback.max_mb,
            int(max_pixels) if _positive(max_pixels) else fallback.max_pixels,
        )


def _positive(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value) and value > 0


@dataclass(frozen=True)
class SourceImage:
    """The photo being edited: `data` is what is sent to the service; `image` is it decoded (RGB); `photo` is it as
    the service knows it (sent once, then named by its image id)."""

    name: str
    data: bytes = field(repr=False)
    sha256: str
    image: Image.Image = field(repr=False, compare=False)
    photo: Photo = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "photo", Photo(self.data))

    @property
    def width(self) -> int:
        return self.image.width

    @property
    def height(self) -> int:
        return self.image.height


def read_upload(name: str, data: bytes, max_mb: float, max_pixels: int) -> SourceImage:
    """Validate an upload and return it ready to send; raises `UploadError` with a clear message."""
    if not data:
        raise UploadError(f"{name} is empty.")
    size_mb = len(data) / 1_000_000
    if size_mb > max_mb:
        raise UploadError(f"{name} is {size_mb:.1f} MB; the limit is {max_mb:g} MB.")
    try:
        image = Image.open(io.BytesIO(data))
        width, height = image.size  # header only: checked before decoding a possibly huge image
        if width * height > max_pixels:
            raise UploadError(
                f"{name} is {width}×{height} = {width * height / 1e6:.1f} MP; the limit is {max_pixels / 1e6:g} MP."
            )
        image_format = image.format
        orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
        image.load()
    except UploadError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        kinds = ", ".join(t.upper() for t in ACCEPTED_TYPES)
        raise UploadError(f"{name} is not a readable image ({exc.__class__.__name__}). Use {kinds}.") from None
    rgb = ImageOps.exif_transpose(image).convert("RGB")
    if image_format not in _PLAIN_FORMATS or orientation != 1:
        buffer = io.BytesIO()
        rgb.save(buffer, format="PNG")
        data = buffer.getvalue()
    return SourceImage(name=name, data=data, sha256=hashlib.sha256(data).hexdigest(), image=rgb)
