"""Shared fixtures: isolated settings (no stray MOODSHIFT_* or .env), photos from scikit-image."""

from __future__ import annotations

import os

import numpy as np
import pytest

from serving.settings import get_settings


@pytest.fixture(autouse=True)
def isolated_settings(monkeypatch, tmp_path_factory):
    """Each test starts from default settings with its own history folder, and leaves no cached settings behind."""
    for name in list(os.environ):
        if name.startswith("MOODSHIFT_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("MOODSHIFT_HISTORY_DIR", str(tmp_path_factory.mktemp("history")))
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))  # no .env or checkpoints/ from the checkout leak in
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    """A real 512×512 RGB photo (HWC uint8) shipped inside scikit-image."""
    from skimage import data

    return data.astronaut()


@pytest.fixture(scope="session")
def coffee() -> np.ndarray:
    """A real non-square 400×600 RGB photo (HWC uint8)."""
    from skimage import data

    return data.coffee()
