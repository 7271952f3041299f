"""One settings object for the whole product, read from `MOODSHIFT_*` environment variables or `.env`.

Read it through `get_settings()` (cached) when something is constructed, not at import time, so tests can override
the environment and call `get_settings.cache_clear()`. The one exception is BentoML's deployment options
(`serving/deployment.py`): BentoML reads them when `serving.service` is imported.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from serving.core.edit_options import EDIT_OPTIONS
from serving.models.fast_models import FAMILIES  # a light module: its torch and diffusers imports are in functions

Profile = Literal["auto", "real", "tiny", "random-full"]
SamModelType = Literal["vit_h", "vit_l", "vit_b"]
FastFamilyName = Literal[tuple(FAMILIES)]  # the few-step families' names, from their scheduler table

# Official file names of the SAM checkpoints (https://github.com/facebookresearch/segment-anything).
SAM_CHECKPOINT_NAMES: dict[str, str] = {
    "vit_h": "sam_vit_h_4b8939.pth",
    "vit_l": "sam_vit_l_0b3195.pth",
    "vit_b": "sam_vit_b_01ec64.pth",
}


def edit_default(name: str) -> Any:
    """The settings field `default_<name>` of an edit option: its default, bounds and help from the options table."""
    option = EDIT_OPTIONS[name]
    return Field(option.default, description=f"Default of the edit option {name}: {option.help}", **option.bounds)


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
    sam_cache_size: int = Field(16, ge=1, description="Images whose SAM embeddings and saliency maps are kept (LRU).")
    mask_min_hole_area: int = Field(
        64, ge=0, description="Holes in the subject mask up to this many pixels are filled."
    )
    mask_min_island_area: int = Field(64, ge=0, description="Subject islands up to this many pixels are dropped.")
    max_points: int = Field(64, ge=1, description="Most clicks (points) accepted in one segmentation request.")
    salient_model: Path | None = Field(
        None,
        description="Salient-object ONNX model that finds the subject without a click (default: the best known one "
        "in checkpoints/, else the embedded U²-Netp).",
    )

    # --- diffusion (SDXL) ---------------------------------------------------------------------
    sdxl_model: Path | None = Field(
        None, description="SDXL as a diffusers folder or a single .safetensors file (default: checkpoints/sdxl-base)."
    )
    working_pixels: int | None = Field(
        None, description="Pixels of the diffusion working size (default: 1024² real/random-full, 512² tiny)."
    )
    sdxl_vae: Path | None = Field(
        None,
        description="fp16-safe SDXL VAE folder used instead of the model's own "
        "(default: checkpoints/sdxl-vae-fp16-fix when present).",
    )
    fast_model: Path | None = Field(
        None,
        description="Few-step weights for mode=fast: a LoRA or UNet .safetensors file, or a LoRA folder "
        "(default: checkpoints/sdxl_lightning_4step_lora.safetensors).",
    )
    fast_family: FastFamilyName | None = Field(
        None,
        description="Which few-step model MOODSHIFT_FAST_MODEL is, when its file name does not say it (its scheduler, "
        "steps and guidance follow that family's model card).",
    )
    preview_decoder: Path | None = Field(
        None,
        description="TAESD-XL folder for live previews (default: checkpoints/taesdxl when present; else a fixed map).",
    )
    offload: Literal["auto", "none", "model", "sequential"] = Field(
        "auto",
        description="GPU memory mode of SDXL: none (all on the GPU), model (one model at a time on the GPU), "
        "sequential (layer by layer, slowest); auto picks from the free GPU memory.",
    )
    gpu_reserve_gb: float | None = Field(
        None,
        ge=0,
        description="GPU memory (GB) the diffusion stage leaves to other models when auto picks the offload mode "
        "(default: what SAM needs when the segmentation stage runs on this machine, else 0).",
    )
    default_steps: int = edit_default("steps")
    default_guidance: float = edit_default("guidance")
    default_edge: Literal[EDIT_OPTIONS["edge"].choices] = edit_default("edge")  # type: ignore[valid-type]
    default_feather: int = edit_default("feather")
    default_negative_prompt: str = edit_default("negative_prompt")

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
    image_cache_mb: float = Field(
        512.0, ge=0, description="Decoded photos the gateway keeps by image_id (LRU), in MB; 0 keeps none."
    )
    trusted_origins: str = Field(
        "",
        description="Comma-separated browser origins allowed to call the service cross-site "
        "(e.g. http://studio.example:8501); scripts and tools need none.",
    )

    # --- service ------------------------------------------------------------------------------
    traffic_timeout_s: int = Field(600, ge=1, description="BentoML traffic timeout per request, seconds.")
    max_concurrency: int = Field(32, ge=1, description="BentoML max concurrent requests per service.")
    segment_max_batch_size: int = Field(
        4, ge=1, description="Adaptive batching: most images per segmentation batch (SAM's encoder, the salient model)."
    )
    segment_max_latency_ms: int = Field(
        10_000, ge=1, description="Adaptive batching: segmentation batches' latency budget."
    )
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
    max_queued_edits: int = Field(
        32, ge=1, description="Edits in progress at once (jobs waiting or running, synchronous /edit); more get 429."
    )
    job_results_mb: float = Field(
        1000,
        gt=0,
        description="Finished edit jobs' results kept for polling (MB, base64 PNGs); beyond it the first finished "
        "are forgotten (and beyond 200 finished jobs).",
    )
    diffusion_max_latency_ms: int = Field(600_000, ge=1, description="Adaptive batching: diffusion latency budget.")
    segment_gpu: float | None = Field(
        None,
        gt=0,
        description="GPUs for the segmentation service (0.5 = half of one, shared; default: one each on a machine "
        "with two or more GPUs, half of the one GPU with one, none without).",
    )
    diffusion_gpu: float | None = Field(None, gt=0, description="GPUs for the diffusion service (see segment_gpu).")
    segment_workers: int = Field(1, ge=1, description="Worker processes of the segmentation service (one model each).")
    diffusion_workers: int = Field(1, ge=1, description="Worker processes of the diffusion service (one model each).")

    def stage_profile(self, stage: Literal["sam", "diffusion"]) -> Profile:
        """The profile asked for a stage (may still be `auto`)."""
        own = self.sam_profile if stage == "sam" else self.diffusion_profile
        return own or self.profile

    @property
    def trusted_origin_set(self) -> frozenset[str]:
        """`trusted_origins` as normalised origins: lowercase, no trailing slash."""
        return frozenset(o.strip().rstrip("/").lower() for o in self.trusted_origins.split(",") if o.strip())

    def edit_defaults(self) -> dict[str, Any]:
        """The defaults of the edit options that settings can change (`MOODSHIFT_DEFAULT_<NAME>`)."""
        return {name: getattr(self, f"default_{name}") for name, option in EDIT_OPTIONS.items() if option.from_settings}

    @property
    def sam_checkpoint_path(self) -> Path:
        return self.sam_checkpoint or self.checkpoints_dir / SAM_CHECKPOINT_NAMES[self.sam_model_type]

    @property
    def preview_decoder_path(self) -> Path:
        return self.preview_decoder or self.checkpoints_dir / "taesdxl"

    @property
    def sdxl_model_path(self) -> Path:
        return self.sdxl_model or self.checkpoints_dir / "sdxl-base"

    @property
    def sdxl_vae_path(self) -> Path:
        """Where the fp16-safe VAE folder is looked for (used only when it is there, unless set explicitly)."""
        return self.sdxl_vae or self.checkpoints_dir / "sdxl-vae-fp16-fix"


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings; `get_settings.cache_clear()` re-reads the environment."""
    return Settings()
