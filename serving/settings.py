"""One settings object for the whole product, read from `MOODSHIFT_*` environment variables or `.env`.

Read it through `get_settings()` (cached), never at import time, so tests can override the environment
and call `get_settings.cache_clear()`.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

Profile = Literal["auto", "real", "tiny", "random-full"]
SamModelType = Literal["vit_h", "vit_l", "vit_b"]

# Official file names of the SAM checkpoints (https://github.com/facebookresearch/segment-anything).
SAM_CHECKPOINT_NAMES: dict[str, str] = {
    "vit_h": "sam_vit_h_4b8939.pth",
    "vit_l": "sam_vit_l_0b3195.pth",
    "vit_b": "sam_vit_b_01ec64.pth",
}
SDXL_REPO_ID = "stabilityai/stable-diffusion-xl-base-1.0"


class Settings(BaseSettings):
    """Every knob of Moodshift. Environment: `MOODSHIFT_<FIELD>` (case-insensitive)."""

    model_config = SettingsConfigDict(env_prefix="MOODSHIFT_", env_file=".env", extra="ignore")

    # --- model profiles -----------------------------------------------------------------------
    profile: Profile = Field("auto", description="Profile of every model stage unless a stage sets its own.")
    sam_profile: Profile | None = Field(None, description="Profile of the segmentation stage (default: profile).")
    diffusion_profile: Profile | None = Field(None, description="Profile of the diffusion stage (default: profile).")
    checkpoints_dir: Path = Field(Path("checkpoints"), description="Folder holding the weights.")
    device: Literal["auto", "cuda", "cpu"] = Field("auto", description="Torch device; auto = cuda when available.")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        "auto", description="Model dtype; auto = float16 on cuda, float32 on cpu."
    )
    seed: int = Field(0, description="Seed for building random-weight (tiny, random-full) models.")

    # --- segmentation (SAM) -------------------------------------------------------------------
    sam_model_type: SamModelType = Field("vit_h", description="SAM variant for the real and random-full profiles.")
    sam_checkpoint: Path | None = Field(None, description="SAM weights (default: checkpoints/<official name>).")
    sam_download_url: str = Field(
        "https://dl.fbaipublicfiles.com/segment_anything/{name}", description="Where `weights --download` gets SAM."
    )
    sam_cache_size: int = Field(16, ge=1, description="Images whose SAM embeddings are kept (LRU).")
    mask_min_hole_area: int = Field(
        64, ge=0, description="Holes in the subject mask up to this many pixels are filled."
    )
    mask_min_island_area: int = Field(64, ge=0, description="Subject islands up to this many pixels are dropped.")
    max_points: int = Field(64, ge=1, description="Most clicks (points) accepted in one segmentation request.")

    # --- diffusion (SDXL) ---------------------------------------------------------------------
    sdxl_model: Path | None = Field(
        None, description="SDXL as a diffusers folder or a single .safetensors file (default: checkpoints/sdxl-base)."
    )
    working_pixels: int | None = Field(
        None, description="Pixels of the diffusion working size (default: 1024² real/random-full, 512² tiny)."
    )
    default_steps: int = Field(30, ge=1, le=150, description="Denoising steps when a request names none.")
    default_guidance: float = Field(7.0, ge=0.0, le=30.0, description="Classifier-free guidance scale.")
    default_feather: int = Field(8, ge=0, le=256, description="Feather radius in pixels for the composite.")
    default_negative_prompt: str = Field(
        "blurry, low quality, distorted, watermark, text", description="Negative prompt when a request names none."
    )

    # --- Ollama (mood and prompt writer) --------------------------------------------------------
    ollama_host: str = Field("http://127.0.0.1:11434", description="Ollama server URL.")
    ollama_mood_model: str = Field("llava", description="Vision model that reads the mood.")
    ollama_prompt_model: str = Field("llama2", description="Text model that writes the SDXL prompt.")
    ollama_timeout_s: float = Field(60.0, gt=0, description="Timeout of one Ollama call, seconds.")
    ollama_enabled: bool = Field(True, description="False: always use the heuristic mood and template prompt.")
    mood_question: str = Field(
        "Please express the mood keyword of the image, words.",
        description="Question LLaVA answers; asking for mood keywords as words beats asking for a description.",
    )
    mood_cache_size: int = Field(128, ge=1, description="Images whose LLaVA mood keywords are kept (LRU by image_id).")

    # --- input limits -------------------------------------------------------------------------
    max_image_pixels: int = Field(40_000_000, ge=1, description="Largest accepted image, in pixels (W×H).")
    max_upload_mb: float = Field(25.0, gt=0, description="Largest accepted request body, in MB.")

    # --- service ------------------------------------------------------------------------------
    port: int = Field(3000, description="Service port.")
    traffic_timeout_s: int = Field(600, ge=1, description="BentoML traffic timeout per request, seconds.")
    max_concurrency: int = Field(32, ge=1, description="BentoML max concurrent requests per service.")
    segment_max_batch_size: int = Field(4, ge=1, description="Adaptive batching: most images per SAM encode.")
    segment_max_latency_ms: int = Field(10_000, ge=1, description="Adaptive batching: SAM encode latency budget.")
    diffusion_max_batch_size: int = Field(4, ge=1, description="Adaptive batching: most requests per UNet batch.")
    segment_service_url: str | None = Field(
        None, description="URL of a separately running segmentation service (default: started beside the gateway)."
    )
    diffusion_service_url: str | None = Field(
        None, description="URL of a separately running diffusion service (default: started beside the gateway)."
    )
    shutdown_timeout_s: int = Field(
        10, ge=1, description="On stop, requests still open after this many seconds are cut (a hung one can't block)."
    )
    max_queued_edits: int = Field(32, ge=1, description="Edit jobs waiting or running at once; more get 429.")
    diffusion_max_latency_ms: int = Field(600_000, ge=1, description="Adaptive batching: diffusion latency budget.")

    # --- UI -----------------------------------------------------------------------------------
    service_url: str = Field("http://127.0.0.1:3000", description="Where the UI finds the service.")
    history_dir: Path = Field(Path("history"), description="Folder of the UI's saved edits.")

    def stage_profile(self, stage: Literal["sam", "diffusion"]) -> Profile:
        """The profile asked for a stage (may still be `auto`)."""
        own = self.sam_profile if stage == "sam" else self.diffusion_profile
        return own or self.profile

    @property
    def sam_checkpoint_path(self) -> Path:
        return self.sam_checkpoint or self.checkpoints_dir / SAM_CHECKPOINT_NAMES[self.sam_model_type]

    @property
    def sdxl_model_path(self) -> Path:
        return self.sdxl_model or self.checkpoints_dir / "sdxl-base"


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings; `get_settings.cache_clear()` re-reads the environment."""
    return Settings()
