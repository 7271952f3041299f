"""Checks an uploaded photo (type, size, pixels) and prepares the bytes the service will see.

The service decodes exactly the bytes sent here, so the studio's canvas and the service agree on the image's
pixel grid: a JPEG with an EXIF rotation is re-encoded upright as JPEG, anything else that is not a plain PNG/JPEG
as PNG. The size checked is that of the request these bytes travel in (base64 in JSON), after any re-encoding:
the service's limit is on the request body, and a photo that passed a check of its file alone could be refused
on every request.
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

from ui.client import Photo, request_bytes

ACCEPTED_TYPES = ("png", "jpg", "jpeg", "webp")
_PLAIN_FORMATS = {"PNG", "JPEG"}
_EXIF_ORIENTATION = 0x0112
# A rotated JPEG is re-encoded as JPEG: as PNG a photo is several times the size. At this quality, with full-size
# colour, the second encoding changes little that a person can see.
_JPEG_QUALITY = 95


class UploadError(ValueError):
    """The uploaded file cannot be used; the message says why and what is accepted."""


@dataclass(frozen=True)
class UploadLimits:
    """The largest photo accepted: one whose request fits in `max_mb` (the service's limit on a request body;
    the photo goes in it base64-encoded) and of at most `max_pixels` (W×H)."""

    max_mb: float
    max_pixels: int

    @property
    def max_file_mb(self) -> float:
        """About the largest photo file (as sent) whose request fits in `max_mb`."""
        return max(0.0, (self.max_mb * 1_000_000 - request_bytes(0)) * 3 / 4 / 1_000_000)

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
    sent = data
    if image_format not in _PLAIN_FORMATS or orientation != 1:
        sent = _upright_bytes(rgb, image_format)
        if image_format == "JPEG":  # encoded with loss once more: show and keep what the service will decode
            rgb = Image.open(io.BytesIO(sent)).convert("RGB")
    _check_request_size(name, data, sent, max_mb)
    return SourceImage(name=name, data=sent, sha256=hashlib.sha256(sent).hexdigest(), image=rgb)


def _upright_bytes(rgb: Image.Image, image_format: str | None) -> bytes:
    """The upright photo to send: a JPEG stays a JPEG (at high quality), anything else becomes a lossless PNG."""
    buffer = io.BytesIO()
    if image_format == "JPEG":
        rgb.save(buffer, format="JPEG", quality=_JPEG_QUALITY, subsampling=0)
    else:
        rgb.save(buffer, format="PNG")
    return buffer.getvalue()


def _check_request_size(name: str, uploaded: bytes, sent: bytes, max_mb: float) -> None:
    """Refuse a photo whose request would be over the service's `max_mb`, saying how big each step makes it."""
    request_mb = request_bytes(len(sent)) / 1_000_000
    if request_mb <= max_mb:
        return
    size = f"{len(uploaded) / 1_000_000:.1f} MB"
    if sent is not uploaded:
        kind = "PNG" if sent.startswith(b"\x89PNG") else "JPEG"
        size += f", {len(sent) / 1_000_000:.1f} MB re-encoded as {kind}"
    raise UploadError(
        f"{name} is too large to send: {size}, {request_mb:.1f} MB as the request that carries it (base64 in "
        f"JSON); the service takes requests of up to {max_mb:g} MB. Use a smaller photo."
    )
