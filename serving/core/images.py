"""Images in and out: bytes/base64 -> upright RGB with a pixel limit checked before decoding, and PNG/base64 out.

Everything the user sends goes through `load_image`, so coordinates always refer to the image as a viewer shows
it (EXIF orientation applied) and every later stage sees plain 8-bit RGB.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import re
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from serving.core.errors import InputError, TooLargeError

# Formats we decode. Pillow would also open EPS/PS (which shells out to Ghostscript) and a dozen exotic formats;
# user uploads have no business reaching those decoders. JPEG includes the MPO files many phones write.
ALLOWED_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")
# Transparent pixels are composited over this colour: what is stored under alpha=0 is often black or leftover
# garbage, and a flat light backdrop is what most people picture behind a cut-out.
TRANSPARENT_BACKGROUND = (255, 255, 255)
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_DATA_URL = re.compile(r"^data:[^,]*?;base64,", re.IGNORECASE)


class ImageInputError(InputError):
    """The caller sent something that is not a usable image; the message says what is wrong with it."""


class ImageTooLargeError(ImageInputError, TooLargeError):
    """The image has more pixels than allowed (or is a decompression bomb)."""


def load_image(data: bytes, max_pixels: int) -> Image.Image:
    """Decode `data` into an upright 8-bit RGB image.

    The header's size is checked against `max_pixels` before any pixel is decoded, so a decompression bomb is
    refused cheaply. EXIF orientation is applied. Alpha (RGBA, LA, P with transparency) is composited over
    white; CMYK, grayscale, bilevel and 16-bit images are converted to RGB (16-bit scaled, not clipped).
    Animated images give their first frame. Raises `ImageTooLargeError` or `ImageInputError`.
    """
    if not data:
        raise ImageInputError("image is empty (0 bytes)")
    image = _open_lazily(data)
    width, height = image.size
    if width <= 0 or height <= 0:
        raise ImageInputError(f"image has no pixels ({width}×{height})")
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"image is {width}×{height} = {width * height:,} pixels, more than the limit of {max_pixels:,} "
            "(MOODSHIFT_MAX_IMAGE_PIXELS)"
        )
    try:
        image.seek(0)  # animated GIF/WebP/APNG: the first frame
        image.load()
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageInputError(f"{image.format} image data is truncated or corrupt ({exc})") from None
    return _to_rgb(_upright(image))


def image_id_of(rgb: np.ndarray) -> str:
    """A stable id of decoded pixels: the same pixels (and shape) give the same id, whatever the file format."""
    pixels = np.ascontiguousarray(rgb)
    digest = hashlib.sha256(f"{pixels.shape}:{pixels.dtype}".encode())
    digest.update(memoryview(pixels).cast("B"))
    return digest.hexdigest()[:32]


def decode_base64(text: str, what: str = "image") -> bytes:
    """Bytes from a base64 string; a `data:...;base64,` prefix, whitespace and missing padding are tolerated."""
    if not isinstance(text, str):
        raise ImageInputError(f"{what} must be a base64 string, got {type(text).__name__}")
    body = re.sub(r"\s+", "", _DATA_URL.sub("", text.strip(), count=1))
    body += "=" * (-len(body) % 4)
    try:
        return base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ImageInputError(f"{what} is not valid base64 ({exc}); starts with {text[:24]!r}") from None


def decode_base64_image(text: str, max_pixels: int) -> Image.Image:
    """`load_image` of a base64 (or data-URL) string."""
    return load_image(decode_base64(text), max_pixels)


def png_bytes(image: Image.Image | np.ndarray) -> bytes:
    """PNG file bytes of a PIL image or an array (HW or HWC uint8; a bool array becomes black/white)."""
    if isinstance(image, np.ndarray):
        array = image.astype(np.uint8) * 255 if image.dtype == bool else image
        image = Image.fromarray(array)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def encode_png_base64(image: Image.Image | np.ndarray) -> str:
    """Base64 text of `png_bytes(image)`, as the HTTP API sends images."""
    return base64.b64encode(png_bytes(image)).decode("ascii")


def to_rgb_array(image: Image.Image | np.ndarray) -> np.ndarray:
    """An HWC uint8 RGB array from a PIL image (any mode) or an array that already is one."""
    if isinstance(image, Image.Image):
        return np.asarray(image if image.mode == "RGB" else _to_rgb(image))
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
        raise ImageInputError(f"expected an HxWx3 uint8 RGB array, got shape {array.shape} dtype {array.dtype}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ImageInputError(f"image has no pixels (shape {array.shape})")
    return array


def _open_lazily(data: bytes) -> Image.Image:
    """`Image.open` reads only the header; Pillow's own bomb check fires here for absurd sizes."""
    try:
        with warnings.catch_warnings():
            # Pillow warns between its limit and twice it; our own `max_pixels` check decides instead.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(f"image refused as a decompression bomb: {exc}") from None
    except UnidentifiedImageError:
        raise ImageInputError(
            f"not a readable image: not {', '.join(ALLOWED_FORMATS[:-1])} or {ALLOWED_FORMATS[-1]}, or its header "
            f"is corrupt ({len(data)} bytes starting with {data[:8]!r})"
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageInputError(f"image header is corrupt ({exc})") from None


def _upright(image: Image.Image) -> Image.Image:
    """Apply the EXIF orientation so pixel coordinates match what a viewer shows."""
    try:
        return ImageOps.exif_transpose(image)
    except Exception:  # a malformed EXIF block must not reject an otherwise fine photo
        return image


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in _SIXTEEN_BIT_MODES:
        # Pillow's convert("L") clips 16-bit values at 255 (almost all white); scale the range instead.
        wide = np.asarray(image, dtype=np.float64)
        image = Image.fromarray(np.clip(np.round(wide / 257.0), 0, 255).astype(np.uint8))
    elif image.mode == "F":
        image = Image.fromarray(np.clip(np.asarray(image), 0, 255).astype(np.uint8))
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        backdrop = Image.new("RGBA", rgba.size, (*TRANSPARENT_BACKGROUND, 255))
        return Image.alpha_composite(backdrop, rgba).convert("RGB")
    if image.mode == "RGB":
        return image
    try:
        return image.convert("RGB")
    except ValueError as exc:
        raise ImageInputError(f"image mode {image.mode} cannot be converted to RGB ({exc})") from None
