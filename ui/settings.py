"""The studio's own settings (env prefix MOODSHIFT_, or a `.env` file), read through the cached `get_settings()`.

Only what the studio needs before the service answers: where the service is, where history goes, and upload
limits that stand in until the service's `GET /info` gives its own.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class StudioSettings(BaseSettings):
    """Settings of the Streamlit studio; the service has its own (`serving.settings`)."""

    model_config = SettingsConfigDict(env_prefix="MOODSHIFT_", env_file=".env", extra="ignore")

    service_url: str = Field("http://127.0.0.1:3000", description="Where the studio finds the Moodshift service.")
    history_dir: Path = Field(Path("history"), description="Folder of the studio's saved edits.")
    # Used only until the service's /info answers with its own `limits`.
    max_upload_mb: float = Field(
        25.0,
        gt=0,
        description="The service's limit on a request body, in MB: an upload is accepted when its request (the photo "
        "base64-encoded, a third larger, after any re-encoding) fits.",
    )
    max_image_pixels: int = Field(40_000_000, ge=1, description="Largest photo accepted for upload, in pixels (W×H).")


@lru_cache
def get_settings() -> StudioSettings:
    """The studio's settings, read once per process (tests call `get_settings.cache_clear()`)."""
    return StudioSettings()
