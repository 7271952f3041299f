"""The studio against a real service (tiny models) whose defaults are near the options' maxima.

Regression: with `MOODSHIFT_DEFAULT_STEPS=120` every studio page crashed with `StreamlitValueAboveMaxError`,
because the sidebar's sliders had their own maxima (steps 100, guidance 20, feather 64) instead of the service's.
"""

from __future__ import annotations

import pytest

from serving.processes import running_service
from tests.ui.studio_driver import assert_no_exception, slider_state, start_studio, texts

pytestmark = pytest.mark.slow

SERVICE_ENV = {
    "MOODSHIFT_PROFILE": "tiny",
    "MOODSHIFT_WORKING_PIXELS": str(128 * 128),
    "MOODSHIFT_DEFAULT_STEPS": "120",
    "MOODSHIFT_DEFAULT_GUIDANCE": "25",
    "MOODSHIFT_DEFAULT_FEATHER": "200",
    "MOODSHIFT_DEFAULT_EDGE": "hard",
    "MOODSHIFT_OLLAMA_ENABLED": "false",
}


@pytest.fixture(scope="module")
def service_url(tmp_path_factory) -> str:
    with running_service(SERVICE_ENV, tmp_path_factory.mktemp("service") / "server.log") as url:
        yield url


def test_every_page_shows_the_services_defaults_within_its_maxima(service_url, monkeypatch):
    at = start_studio(service_url, monkeypatch)
    assert_no_exception(at)
    assert not texts(at.sidebar.error)  # connected
    assert slider_state(at, "steps") == (120, 1, 150)
    assert slider_state(at, "guidance") == (25.0, 0.0, 30.0)
    assert slider_state(at, "feather") == (200, 0, 256)
    assert at.radio(key="edge").value == "hard"

    at.switch_page("views/history.py")
    at = at.run()
    assert_no_exception(at)
    assert "History" in texts(at.title)
    assert slider_state(at, "steps") == (120, 1, 150)
