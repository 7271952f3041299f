"""The studio's own settings: MOODSHIFT_ environment variables, read once through `get_settings()`."""

from __future__ import annotations

from pathlib import Path

from ui.settings import get_settings


def test_defaults_without_environment():
    settings = get_settings()
    assert settings.service_url == "http://127.0.0.1:3000"
    assert settings.max_upload_mb == 25 and settings.max_image_pixels == 40_000_000


def test_environment_is_read_once_until_the_cache_is_cleared(monkeypatch, tmp_path):
    monkeypatch.setenv("MOODSHIFT_SERVICE_URL", "http://gpu-box:3000")
    monkeypatch.setenv("MOODSHIFT_HISTORY_DIR", str(tmp_path))
    monkeypatch.setenv("MOODSHIFT_MAX_UPLOAD_MB", "3.5")
    monkeypatch.setenv("MOODSHIFT_DEFAULT_STEPS", "120")  # a service setting: the studio ignores it
    get_settings.cache_clear()
    settings = get_settings()
    assert (settings.service_url, settings.history_dir, settings.max_upload_mb) == (
        "http://gpu-box:3000",
        tmp_path,
        3.5,
    )
    assert not hasattr(settings, "default_steps")
    monkeypatch.setenv("MOODSHIFT_SERVICE_URL", "http://elsewhere:3000")
    assert get_settings() is settings  # cached: not read again at every rerun
    get_settings.cache_clear()
    assert get_settings().service_url == "http://elsewhere:3000"


def test_the_history_folder_defaults_to_history(monkeypatch):
    monkeypatch.delenv("MOODSHIFT_HISTORY_DIR")  # the test fixtures set one
    get_settings.cache_clear()
    assert get_settings().history_dir == Path("history")
