"""Upload checks: type, size and pixel limits with clear messages; what is sent matches what is shown; the size
checked is that of the request carrying what is sent."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from tests.ui.photos import png_bytes
from ui.client import REQUEST_OVERHEAD_BYTES, request_bytes
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


def _rotated_jpeg(coffee) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    return _encode(Image.fromarray(coffee), "JPEG", quality=90, exif=exif.tobytes())


def test_an_exif_rotated_jpeg_is_sent_upright_as_a_jpeg_so_clicks_match(coffee):
    data = _rotated_jpeg(coffee)
    source = read_upload("phone.jpg", data, 25, 40_000_000)
    assert (source.width, source.height) == (400, 600)
    sent = Image.open(io.BytesIO(source.data))
    assert sent.format == "JPEG" and sent.size == (400, 600) and sent.getexif().get(0x0112, 1) == 1
    assert len(source.data) < 2 * len(data)  # not a PNG, several times the size
    assert np.array_equal(np.asarray(sent.convert("RGB")), np.asarray(source.image))  # shown as the service sees it
    upright = np.rot90(coffee, k=-1).astype(int)  # the pixels survive the second encoding
    assert np.abs(np.asarray(source.image, dtype=int) - upright).mean() < 3


def test_the_request_is_checked_not_the_file_a_third_smaller(coffee):
    """A file under the limit whose base64 request is over it would get a 413 on every request: refused here."""
    data = png_bytes(coffee)
    request = 4 * -(-len(data) // 3) + REQUEST_OVERHEAD_BYTES
    assert request_bytes(len(data)) == request
    assert read_upload("coffee.png", data, request / 1_000_000, 40_000_000).data == data  # fits exactly
    limit_mb = (len(data) + REQUEST_OVERHEAD_BYTES + 1000) / 1_000_000  # the file and the JSON would fit, not base64
    with pytest.raises(UploadError) as refused:
        read_upload("coffee.png", data, limit_mb, 40_000_000)
    assert str(refused.value) == (
        f"coffee.png is too large to send: {len(data) / 1e6:.1f} MB, {request / 1e6:.1f} MB as the request that "
        f"carries it (base64 in JSON); the service takes requests of up to {limit_mb:g} MB. Use a smaller photo."
    )


def test_a_webp_is_checked_as_the_png_it_is_sent_as(coffee):
    webp = _encode(Image.fromarray(coffee), "WEBP")
    png = read_upload("coffee.webp", webp, 25, 40_000_000).data
    assert len(png) > 3 * len(webp)  # the re-encoding is what makes it large
    limit_mb = request_bytes(len(webp)) / 1_000_000 * 2  # twice what the WebP itself would need
    with pytest.raises(UploadError) as refused:
        read_upload("coffee.webp", webp, limit_mb, 40_000_000)
    assert str(refused.value).startswith(
        f"coffee.webp is too large to send: {len(webp) / 1e6:.1f} MB, {len(png) / 1e6:.1f} MB re-encoded as PNG, "
        f"{request_bytes(len(png)) / 1e6:.1f} MB as the request that carries it"
    )


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


def test_the_largest_file_is_what_fits_in_the_request_base64_encoded():
    largest = int(UploadLimits(max_mb=25.0, max_pixels=40_000_000).max_file_mb * 1_000_000)
    assert request_bytes(largest) <= 25_000_000 < request_bytes(largest + 4)


def test_upload_limits_come_from_the_services_info_and_fall_back_to_the_studios():
    fallback = UploadLimits(max_mb=25.0, max_pixels=40_000_000)
    info = {"limits": {"max_upload_mb": 2.5, "max_image_pixels": 1_000_000, "max_points": 64}}
    assert UploadLimits.from_info(info, fallback) == UploadLimits(2.5, 1_000_000)
    assert UploadLimits.from_info(None, fallback) == fallback  # the service has not answered
    assert UploadLimits.from_info({"device": "cpu"}, fallback) == fallback  # an older service without limits
    bad = {"limits": {"max_upload_mb": "a lot", "max_image_pixels": -1}}
    assert UploadLimits.from_info(bad, fallback) == fallback
