"""Image loading: every mode to RGB, EXIF orientation, the pixel limit before decoding, bad bytes, ids, base64."""

import base64
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile

from serving.core.images import (
    ImageInputError,
    ImageTooLargeError,
    decode_base64,
    decode_base64_image,
    encode_png_base64,
    image_id_of,
    load_image,
    to_rgb_array,
)

LIMIT = 10_000_000


def _save(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _pixels(data: bytes) -> np.ndarray:
    image = load_image(data, LIMIT)
    assert image.mode == "RGB"
    return np.asarray(image)


def test_rgba_is_composited_over_white():
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[0, 0] = (255, 0, 0, 255)  # opaque red
    rgba[0, 1] = (255, 0, 0, 0)  # fully transparent red
    rgba[1, 0] = (0, 0, 0, 128)  # half-transparent black
    pixels = _pixels(_save(Image.fromarray(rgba)))
    assert pixels[0, 0].tolist() == [255, 0, 0]
    assert pixels[0, 1].tolist() == [255, 255, 255]
    assert np.abs(pixels[1, 0].astype(int) - 127).max() <= 1


def test_la_and_palette_with_transparency():
    la = Image.fromarray(np.array([[[50, 255], [50, 0]]], dtype=np.uint8), mode="LA")
    assert _pixels(_save(la))[0].tolist() == [[50, 50, 50], [255, 255, 255]]

    palette = Image.new("P", (2, 1))
    palette.putpalette([0, 0, 255, 0, 255, 0] + [0] * 762)
    palette.putpixel((0, 0), 0)
    palette.putpixel((1, 0), 1)
    pixels = _pixels(_save(palette, transparency=1))  # index 1 (green) is transparent
    assert pixels[0].tolist() == [[0, 0, 255], [255, 255, 255]]


def test_cmyk_grayscale_bilevel_and_16_bit():
    assert _pixels(_save(Image.new("CMYK", (3, 2), (255, 0, 0, 0)), "TIFF"))[0, 0].tolist() == [0, 255, 255]
    assert _pixels(_save(Image.new("L", (3, 2), 77)))[1, 2].tolist() == [77, 77, 77]
    assert _pixels(_save(Image.new("1", (3, 2), 1)))[0, 0].tolist() == [255, 255, 255]

    sixteen = np.array([[0, 257 * 100, 65535]], dtype=np.uint16)
    source = Image.fromarray(sixteen)
    assert Image.open(io.BytesIO(_save(source))).mode == "I;16"
    assert _pixels(_save(source))[0, :, 0].tolist() == [0, 100, 255]  # scaled, not clipped at 255


def test_cmyk_jpeg_is_converted():
    pixels = _pixels(_save(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), "JPEG", quality=95))
    assert np.abs(pixels[8, 8].astype(int) - [255, 0, 0]).max() <= 4


def test_animated_gif_gives_its_first_frame():
    frames = [Image.new("RGB", (4, 4), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    data = _save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert Image.open(io.BytesIO(data)).n_frames == 2
    assert _pixels(data)[0, 0].tolist() == [255, 0, 0]


def test_exif_orientation_is_applied_so_pixels_match_the_viewer():
    stored = np.zeros((20, 40, 3), dtype=np.uint8)  # 40 wide, 20 high as stored
    stored[:10, :10] = (255, 0, 0)  # red in the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    data = _save(Image.fromarray(stored), "JPEG", quality=95, exif=exif)

    shown = load_image(data, LIMIT)
    assert shown.size == (20, 40)  # upright: 20 wide, 40 high
    pixels = np.asarray(shown).astype(int)
    assert pixels[2:8, 12:18, 0].min() > 200  # stored top-left lands top-right after the rotation
    assert pixels[2:8, 2:8].max() < 40


def test_the_pixel_limit_is_enforced_before_decoding(monkeypatch):
    data = _save(Image.new("L", (2000, 1000)))
    loads = []
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: loads.append(self) or None)
    with pytest.raises(ImageTooLargeError, match=r"2000×1000 = 2,000,000 pixels, more than the limit of 1,999,999"):
        load_image(data, max_pixels=1_999_999)
    assert loads == []  # refused on the header alone


def test_a_decompression_bomb_is_refused_even_under_a_huge_limit():
    # A 1×1 PNG whose header claims 100000×100000: Pillow's own bomb guard must surface as ImageTooLargeError.
    data = _save(Image.new("L", (1, 1)))
    with pytest.raises(ImageTooLargeError, match="decompression bomb"):
        load_image(_with_header_size(data, 100_000, 100_000), max_pixels=10**12)
    # Below Pillow's hard limit (where it only warns) our own limit speaks, naming the size.
    with pytest.raises(ImageTooLargeError, match="12000×12000"):
        load_image(_with_header_size(data, 12_000, 12_000), max_pixels=10**8)


def _with_header_size(png: bytes, width: int, height: int) -> bytes:
    """The same PNG with its IHDR claiming another size (CRC fixed, so the header itself is valid)."""
    data = bytearray(png)
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return bytes(data)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"GIF89a but not really", "not a readable image: .* or its header is corrupt"),
        (b"hello, I am text", r"not a readable image: not PNG, JPEG, WEBP, GIF, BMP or TIFF.*b'hello, I'"),
        (b"%!PS-Adobe-3.0 EPSF-3.0\n", "not a readable image"),  # EPS would shell out to Ghostscript
    ],
)
def test_bad_bytes_name_the_problem(data, message):
    with pytest.raises(ImageInputError, match=message) as caught:
        load_image(data, LIMIT)
    assert not isinstance(caught.value, ImageTooLargeError)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_files_are_refused(fmt, astronaut):
    data = _save(Image.fromarray(astronaut), fmt)
    with pytest.raises(ImageInputError, match=f"{fmt} image data is truncated or corrupt"):
        load_image(data[: len(data) // 2], LIMIT)


def test_image_id_depends_on_pixels_and_shape_only(coffee):
    from_png = np.asarray(load_image(_save(Image.fromarray(coffee)), LIMIT))
    from_bmp = np.asarray(load_image(_save(Image.fromarray(coffee), "BMP"), LIMIT))
    assert image_id_of(from_png) == image_id_of(from_bmp) == image_id_of(coffee)
    assert len(image_id_of(coffee)) == 32 and int(image_id_of(coffee), 16) >= 0

    changed = coffee.copy()
    changed[399, 599, 2] ^= 1
    assert image_id_of(changed) != image_id_of(coffee)
    flat = np.zeros((4, 6, 3), dtype=np.uint8)
    assert image_id_of(flat) != image_id_of(flat.reshape(6, 4, 3))  # same bytes, other shape


def test_base64_round_trip_with_and_without_data_url(coffee):
    text = encode_png_base64(coffee)
    assert np.array_equal(np.asarray(decode_base64_image(text, LIMIT)), coffee)
    assert np.array_equal(np.asarray(decode_base64_image("data:image/png;base64," + text, LIMIT)), coffee)
    assert decode_base64(base64.b64encode(b"abcd").decode().rstrip("=") + "\n") == b"abcd"


def test_bad_base64_is_an_image_input_error():
    with pytest.raises(ImageInputError, match=r"image is not valid base64.*'\$\$not base64'"):
        decode_base64("$$not base64")
    with pytest.raises(ImageInputError, match="must be a base64 string, got int"):
        decode_base64(12)


def test_to_rgb_array_checks_arrays():
    assert to_rgb_array(Image.new("L", (3, 2), 9)).shape == (2, 3, 3)
    with pytest.raises(ImageInputError, match=r"shape \(2, 3\) dtype uint8"):
        to_rgb_array(np.zeros((2, 3), dtype=np.uint8))
    with pytest.raises(ImageInputError, match="dtype float32"):
        to_rgb_array(np.zeros((2, 3, 3), dtype=np.float32))
