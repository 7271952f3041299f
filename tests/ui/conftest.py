"""Fixtures of the UI tests: the studio's own settings kept fresh, the stand-in service, photos as upload bytes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from PIL import Image

from tests.ui.fake_service import FakeService
from tests.ui.photos import png_bytes
from ui.settings import get_settings


@pytest.fixture(autouse=True)
def fresh_studio_settings(isolated_settings) -> Iterator[None]:
    """The studio's settings are read anew in each test, after `isolated_settings` has cleaned the environment."""
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture()
def fake_service() -> Iterator[FakeService]:
    service = FakeService().start()
    yield service
    service.stop()


@pytest.fixture(scope="session")
def big_photo_png(coffee) -> bytes:
    """coffee() scaled to 1500×1000: non-square and larger than the canvas, so the canvas shows it scaled."""
    return png_bytes(Image.fromarray(coffee).resize((1500, 1000), Image.Resampling.BILINEAR))
