"""Shared fixtures: isolated settings of the service and the studio (no stray MOODSHIFT_* or .env), photos from
scikit-image."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from serving.settings import get_settings
from ui.settings import get_settings as get_studio_settings

GATEWAY_DEFAULT_STEPS = 2  # the `gateway` fixture's MOODSHIFT_DEFAULT_STEPS


@pytest.fixture(autouse=True)
def isolated_settings(monkeypatch, tmp_path_factory):
    """Each test starts from default settings with its own history folder, and leaves no cached settings behind."""
    for name in list(os.environ):
        if name.startswith("MOODSHIFT_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("MOODSHIFT_HISTORY_DIR", str(tmp_path_factory.mktemp("history")))
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))  # no .env or checkpoints/ from the checkout leak in
    get_settings.cache_clear()
    get_studio_settings.cache_clear()
    yield
    get_settings.cache_clear()
    get_studio_settings.cache_clear()


@pytest.fixture(scope="session")
def u2netp() -> Path:
    """The real U²-Netp the set-up installs (`scripts/setup.sh`). Missing in CI (CI=true) fails the test that needs
    it; elsewhere it skips, saying how to install it."""
    from serving.models.salient_weights import EMBEDDED_U2NETP, INSTALL_COMMAND, u2netp_problem

    problem = u2netp_problem(EMBEDDED_U2NETP)
    if problem and os.environ.get("CI"):
        pytest.fail(f"the set-up did not install U²-Netp: {problem}")
    if problem:
        pytest.skip(f"needs the real U²-Netp ({INSTALL_COMMAND}): {problem}")
    return EMBEDDED_U2NETP


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


@pytest.fixture
def tiny_models(monkeypatch):
    """Every model stage on its tiny random-weight profile, on the CPU."""
    monkeypatch.setenv("MOODSHIFT_PROFILE", "tiny")
    monkeypatch.setenv("MOODSHIFT_DEVICE", "cpu")


@pytest.fixture
def coffee_file(tmp_path, coffee) -> Path:
    """coffee() as a PNG file, the way the command line takes photos."""
    path = tmp_path / "coffee.png"
    Image.fromarray(coffee).save(path)
    return path


@pytest.fixture(scope="session")
def gateway():
    """The real gateway as BentoML's ASGI app in this process, its stages as local instances (what
    `bentoml.depends` gives outside `bentoml serve`): tiny models at 128², 2 default steps, the Ollama stand-in
    (`gateway.ollama`). One per session: BentoML registers its metrics once per process."""
    from starlette.testclient import TestClient

    from serving.ollama_standin import FakeOllama

    with pytest.MonkeyPatch.context() as patch, FakeOllama() as ollama:
        patch.setenv("MOODSHIFT_PROFILE", "tiny")
        patch.setenv("MOODSHIFT_WORKING_PIXELS", str(128 * 128))
        patch.setenv("MOODSHIFT_OLLAMA_HOST", ollama.url)
        patch.setenv("MOODSHIFT_OLLAMA_TIMEOUT_S", "5")
        patch.setenv("MOODSHIFT_DEFAULT_STEPS", str(GATEWAY_DEFAULT_STEPS))
        get_settings.cache_clear()
        from serving.service import Moodshift

        with TestClient(Moodshift.to_asgi(), raise_server_exceptions=False) as test_client:
            test_client.ollama = ollama
            yield test_client
        get_settings.cache_clear()
