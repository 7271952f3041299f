"""Image files for the bad-input cases, built in code: broken and hostile files, and valid but unusual ones.

Each valid file comes with what a viewer shows (`upright`, HxWx3 uint8, computed here with plain Pillow/numpy,
independently of `serving.core.images`) so a test can check the service's masks and results pixel by pixel.
"""

from __future__ import annotations

import base64
import io
import struct
import zlib
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

EXIF_ORIENTATION = 0x0112


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def photo(width: int, height: int, which: str = "astronaut") -> Image.Image:
    """A real photo from scikit-image, resized (not squashed much: the sizes used keep roughly its aspect)."""
    from skimage import data

    return Image.fromarray(getattr(data, which)()).resize((width, height), Image.Resampling.BILINEAR)


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_claiming(width: int, height: int, rows: int = 16) -> bytes:
    """A PNG whose IHDR (valid CRC) says width×height RGB, followed by a few compressed rows: a decompression bomb
    in miniature (a few KB on disk; decoding all of it would need width×height×3 bytes)."""
    row = b"\x00" + b"\x00" * (width * 3)  # filter byte 0, black pixels: compresses about 1000:1
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(row * rows, 9))
        + _png_chunk(b"IEND", b"")
    )


@dataclass(frozen=True)
class BadFile:
    """A file the service must refuse: the status and words its message must contain."""

    name: str
    data: str  # what goes in the JSON `image` field (base64, or deliberately not)
    status: int
    words: tuple[str, ...]


@dataclass(frozen=True)
class ValidFile:
    """A valid but unusual file: its bytes and the upright RGB pixels a viewer shows."""

    name: str
    data: bytes
    upright: np.ndarray

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) as displayed."""
        return self.upright.shape[1], self.upright.shape[0]


def bad_files(max_image_pixels: int) -> list[BadFile]:
    jpeg = encode(photo(160, 120), "JPEG", quality=90)
    over = int(max_image_pixels**0.5) + 50  # a real, decodable image just over the limit (flat: small on disk)
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 64 48\nnewpath 0 0 moveto 64 48 lineto stroke\nshowpage\n"
    svg = b'<svg xmlns="http://www.w3.org/2000/svg" width="64" height="48"><rect width="64" height="48"/></svg>'
    return [
        BadFile("empty-file", "", 400, ("empty", "0 bytes")),
        BadFile("truncated-jpeg", b64(jpeg[: len(jpeg) // 2]), 400, ("truncated or corrupt",)),
        BadFile("png-header-claims-200mp", b64(png_claiming(20_000, 10_000)), 413, ("decompression bomb",)),
        BadFile("png-header-claims-120mp", b64(png_claiming(12_000, 10_000)), 413, ("120,000,000", "MAX_IMAGE_PIXELS")),
        BadFile(
            "over-pixel-limit",
            b64(encode(Image.new("RGB", (over, over), (40, 90, 160)), "PNG")),
            413,
            (f"{over}×{over}", f"{max_image_pixels:,}", "MOODSHIFT_MAX_IMAGE_PIXELS"),
        ),
        BadFile("text-named-png", b64(b"shopping list: eggs, milk, bread\n"), 400, ("not a readable image",)),
        # Pillow could open EPS by running Ghostscript: the service's format allow-list must keep it out.
        BadFile("eps-named-jpg", b64(eps), 400, ("not a readable image",)),
        BadFile("svg-named-png", b64(svg), 400, ("not a readable image",)),
        BadFile("not-base64", "data:image/png;base64,****not base64****", 400, ("not valid base64",)),
    ]


def _gradient(width: int, height: int) -> np.ndarray:
    ys, xs = np.mgrid[0:height, 0:width]
    red = (xs * 255 // max(width - 1, 1)).astype(np.uint8)
    green = (ys * 255 // max(height - 1, 1)).astype(np.uint8)
    blue = ((xs + ys) % 256).astype(np.uint8)
    return np.dstack([red, green, blue])


def _exif_rotated(orientation: int) -> ValidFile:
    stored = photo(96, 64, "coffee")
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    data = encode(stored, "JPEG", quality=92, exif=exif.tobytes())
    upright = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
    return ValidFile(f"exif-orientation-{orientation}-jpeg", data, upright)


def valid_files() -> list[ValidFile]:
    files = []
    for width, height in ((1, 4000), (4000, 1)):
        pixels = _gradient(width, height)
        files.append(ValidFile(f"strip-{width}x{height}", encode(Image.fromarray(pixels), "PNG"), pixels))

    cmyk = encode(photo(80, 60).convert("CMYK"), "JPEG", quality=95)
    files.append(ValidFile("cmyk-jpeg", cmyk, np.asarray(Image.open(io.BytesIO(cmyk)).convert("RGB"))))

    # 16-bit grayscale spanning the whole range: clipping at 255 (Pillow's convert("L")) would make it almost white.
    deep = (np.linspace(0, 65535, 64 * 48).reshape(48, 64)).astype(np.uint16)
    scaled = np.round(deep / 257.0).astype(np.uint8)
    files.append(ValidFile("png-16-bit", encode(Image.fromarray(deep), "PNG"), np.dstack([scaled] * 3)))

    # Palette image whose index 0 is transparent: those pixels must come out white, the others their colour.
    indices = (np.add.outer(np.arange(48) // 12, np.arange(64) // 16) % 4).astype(np.uint8)
    colours = np.array([[0, 0, 0], [200, 30, 30], [30, 160, 60], [20, 40, 200]], dtype=np.uint8)
    palette = Image.fromarray(indices, mode="P")
    palette.putpalette(colours.flatten().tolist())
    expected = colours[indices].copy()
    expected[indices == 0] = 255
    files.append(ValidFile("palette-png-transparent", encode(palette, "PNG", transparency=0), expected))

    # Animated GIF: three different frames; the service edits the first.
    frames = [photo(64, 48, name).quantize(64) for name in ("chelsea", "rocket", "astronaut")]
    gif = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=120, loop=0)
    first = Image.open(io.BytesIO(gif))
    assert getattr(first, "n_frames", 1) == 3
    files.append(ValidFile("animated-gif", gif, np.asarray(first.convert("RGB"))))

    files += [_exif_rotated(6), _exif_rotated(8)]
    return files


def subject_mask(width: int, height: int) -> np.ndarray:
    """A subject (bool HxW) in the upright frame: a centred block, or the first half of a one-pixel strip."""
    mask = np.zeros((height, width), dtype=bool)
    if width == 1 or height == 1:
        mask[: max(1, height // 2), : max(1, width // 2)] = True
    else:
        mask[height // 4 : height * 3 // 4, width // 4 : width * 3 // 4] = True
    return mask


def click_point(width: int, height: int) -> dict[str, float]:
    """A click in upright pixels; for the EXIF-rotated files it lies below the stored (unrotated) frame's bottom,
    so a service that ignored the orientation would call it outside the image."""
    return {"x": width / 2 if width > 1 else 0.5, "y": height * 0.8 if height > 1 else 0.5, "label": 1}
