"""Upload checks: type, size and pixel limits with clear messages; what is sent matches what is shown."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from tests.ui.photos import png_bytes
from ui.upload import UploadError, UploadLimits, read_upload


def _encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def test_a_png_is_sent_as_uploaded(coffee):
    data = png_bytes(coffee)
    source = read_upload("coffee.png", data, max_mb=25, max_pixels=40_000_000)
    assert source.data == data and (source.width, source.height) == (600, 400)
    assert np.array_equal(np.asarray(source.image), coffee)


def test_a_jpeg_without_rotation_is_sent_as_uploaded(coffee):
    data = _encode(Image.fromarray(coffee), "JPEG", quality=90)
    assert read_upload("coffee.jpg", data, 25, 40_000_000).data == data


def test_a_webp_is_re_encoded_as_png(coffee):
    source = read_upload("coffee.webp", _encode(Image.fromarray(coffee), "WEBP"), 25, 40_000_000)
    assert source.data.startswith(b"\x89PNG") and Image.open(io.BytesIO(source.data)).size == (600, 400)


def test_an_exif_rotated_jpeg_is_sent_upright_so_clicks_match(coffee):
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    data = _encode(Image.fromarray(coffee), "JPEG", exif=exif.tobytes())
    source = read_upload("phone.jpg", data, 25, 40_000_000)
    assert (source.width, source.height) == (400, 600)
    sent = Image.open(io.BytesIO(source.data))
    assert sent.format == "PNG" and sent.size == (400, 600)
    assert np.array_equal(np.asarray(sent.convert("RGB")), np.asarray(source.image))


def test_a_file_over_the_size_limit_is_refused_with_both_sizes(coffee):
    data = png_bytes(coffee)
    with pytest.raises(UploadError, match=r"coffee.png is 0\.\d MB; the limit is 0.1 MB"):
        read_upload("coffee.png", data, max_mb=0.1, max_pixels=40_000_000)


def test_an_image_over_the_pixel_limit_is_refused_naming_its_size(coffee):
    with pytest.raises(UploadError, match=r"600×400 = 0.2 MP; the limit is 0.1 MP"):
        read_upload("coffee.png", png_bytes(coffee), max_mb=25, max_pixels=100_000)


@pytest.mark.parametrize("data", [b"GIF89a not an image at all", b"%PDF-1.4 hello", b"\x89PNG\r\n\x1a\ntruncated"])
def test_something_that_is_not_an_image_is_refused(data):
    with pytest.raises(UploadError, match=r"notes.png is not a readable image .* Use PNG, JPG, JPEG, WEBP"):
        read_upload("notes.png", data, 25, 40_000_000)


def test_an_empty_file_is_refused():
    with pytest.raises(UploadError, match=r"empty\.png is empty"):
        read_upload("empty.png", b"", 25, 40_000_000)


def test_upload_limits_come_from_the_services_info_and_fall_back_to_the_studios():
    fallback = UploadLimits(max_mb=25.0, max_pixels=40_000_000)
    info = {"limits": {"max_upload_mb": 2.5, "max_image_pixels": 1_000_000, "max_points": 64}}
    assert UploadLimits.from_info(info, fallback) == UploadLimits(2.5, 1_000_000)
    assert UploadLimits.from_info(None, fallback) == fallback  # the service has not answered
    assert UploadLimits.from_info({"device": "cpu"}, fallback) == fallback  # an older service without limits
    bad = {"limits": {"max_upload_mb": "a lot", "max_image_pixels": -1}}
    assert UploadLimits.from_info(bad, fallback) == fallback
