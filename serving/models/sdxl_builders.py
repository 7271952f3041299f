"""SDXL components for every profile, as a diffusers `StableDiffusionXLPipeline`.

`real` loads a diffusers folder (`from_pretrained`) or a single `.safetensors` file (`from_single_file`),
offline; `tiny` builds small seeded UNet/VAE/CLIP encoders from configs, with a 4-level VAE (latents are 1/8
of the image, like SDXL) and CLIP's real vocabulary; `random-full` builds SDXL base's own configs with random
weights. Whatever the profile, the same pipeline class and the same runner code use them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from serving.models.errors import WeightsError
from serving.models.profiles import ResolvedProfile, resolve_profile

if TYPE_CHECKING:
    import torch
    from diffusers import StableDiffusionXLPipeline

    from serving.settings import Settings

SDXL_REPO_ID = "stabilityai/stable-diffusion-xl-base-1.0"

# SDXL base 1.0's scheduler (EulerDiscreteScheduler) as published in its scheduler_config.json.
SDXL_SCHEDULER_CONFIG: dict[str, Any] = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "prediction_type": "epsilon",
    "interpolation_type": "linear",
    "use_karras_sigmas": False,
}

# Full-size SDXL base 1.0 configs (from its unet/vae/text_encoder*/config.json), for the random-full profile.
SDXL_UNET_CONFIG: dict[str, Any] = {
    "sample_size": 128,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "block_out_channels": [320, 640, 1280],
    "layers_per_block": 2,
    "attention_head_dim": [5, 10, 20],
    "transformer_layers_per_block": [1, 2, 10],
    "cross_attention_dim": 2048,
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 2816,
    "norm_num_groups": 32,
}
SDXL_VAE_CONFIG: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "block_out_channels": [128, 256, 512, 512],
    "layers_per_block": 2,
    "latent_channels": 4,
    "norm_num_groups": 32,
    "sample_size": 1024,
    "scaling_factor": 0.13025,
    "force_upcast": True,
}
SDXL_TEXT_ENCODER_CONFIG: dict[str, Any] = {  # CLIP ViT-L/14 text tower
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "projection_dim": 768,
    "hidden_act": "quick_gelu",
}
SDXL_TEXT_ENCODER_2_CONFIG: dict[str, Any] = {  # OpenCLIP ViT-bigG/14 text tower
    "hidden_size": 1280,
    "intermediate_size": 5120,
    "num_hidden_layers": 32,
    "num_attention_heads": 20,
    "projection_dim": 1280,
    "hidden_act": "gelu",
}

# Tiny: same block types, narrow. cross_attention_dim = 32 + 32 (both encoders' hidden states are concatenated);
# projection_class_embeddings_input_dim = 6 * addition_time_embed_dim + text_encoder_2.projection_dim.
TINY_UNET_CONFIG: dict[str, Any] = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"],
    "block_out_channels": [32, 64],
    "layers_per_block": 2,
    "attention_head_dim": [2, 4],
    "transformer_layers_per_block": [1, 2],
    "cross_attention_dim": 64,
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 8,
    "projection_class_embeddings_input_dim": 80,
    "norm_num_groups": 32,
}
TINY_VAE_CONFIG: dict[str, Any] = {
    **SDXL_VAE_CONFIG,
    "block_out_channels": [32, 32, 64, 64],  # four levels: latents at 1/8 of the image, like SDXL
    "layers_per_block": 1,
    "norm_num_groups": 16,
    "sample_size": 512,
}
TINY_TEXT_ENCODER_CONFIG: dict[str, Any] = {
    "hidden_size": 32,
    "intermediate_size": 37,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "projection_dim": 32,
    "hidden_act": "gelu",
}


def _clip_text_config(overrides: dict[str, Any]):
    from transformers import CLIPTextConfig

    # Ids as in SDXL's own text encoder configs; eos_token_id 2 makes CLIP pool at argmax(input_ids) = EOS.
    return CLIPTextConfig(
        vocab_size=49408, max_position_embeddings=77, bos_token_id=0, eos_token_id=2, pad_token_id=1, **overrides
    )


def build_sdxl_components(
    unet_config: dict[str, Any],
    vae_config: dict[str, Any],
    text_config: dict[str, Any],
    text_config_2: dict[str, Any],
    seed: int = 0,
) -> dict[str, Any]:
    """Random-weight SDXL components from configs. Each component is seeded on its own, so builds are repeatable."""
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    from serving.models.clip_tokenizer import load_clip_tokenizer

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**unet_config)
    torch.manual_seed(seed)
    vae = AutoencoderKL(**vae_config)
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(_clip_text_config(text_config))
    torch.manual_seed(seed)
    text_encoder_2 = CLIPTextModelWithProjection(_clip_text_config(text_config_2))
    return {
        "unet": unet.eval(),
        "vae": vae.eval(),
        "text_encoder": text_encoder.eval(),
        "text_encoder_2": text_encoder_2.eval(),
        "tokenizer": load_clip_tokenizer(),
        "tokenizer_2": load_clip_tokenizer(pad_token="!"),  # SDXL's second tokenizer pads with "!"
        "scheduler": EulerDiscreteScheduler(**SDXL_SCHEDULER_CONFIG),
    }


def build_tiny_sdxl(seed: int = 0) -> StableDiffusionXLPipeline:
    """Tiny SDXL: seconds per 512² edit on CPU. Same seed -> identical weights."""
    from diffusers import StableDiffusionXLPipeline

    components = build_sdxl_components(
        TINY_UNET_CONFIG, TINY_VAE_CONFIG, TINY_TEXT_ENCODER_CONFIG, TINY_TEXT_ENCODER_CONFIG, seed
    )
    return StableDiffusionXLPipeline(**components)


def build_random_full_sdxl(seed: int = 0) -> StableDiffusionXLPipeline:
    """Full-size SDXL base with random weights (about 3.5 B parameters; minutes to build on CPU)."""
    from diffusers import StableDiffusionXLPipeline

    components = build_sdxl_components(
        SDXL_UNET_CONFIG, SDXL_VAE_CONFIG, SDXL_TEXT_ENCODER_CONFIG, SDXL_TEXT_ENCODER_2_CONFIG, seed
    )
    return StableDiffusionXLPipeline(**components)


def sdxl_weights_present(path: Path) -> bool:
    """A diffusers folder (has model_index.json) or a single .safetensors file."""
    path = Path(path)
    return (path / "model_index.json").is_file() or (path.is_file() and path.suffix == ".safetensors")


def load_sdxl(path: Path, dtype: torch.dtype | None = None) -> StableDiffusionXLPipeline:
    """The `real` loader, offline: a diffusers folder or a single `.safetensors` checkpoint."""
    from diffusers import StableDiffusionXLPipeline

    path = Path(path)
    if not sdxl_weights_present(path):
        raise WeightsError(
            f"SDXL model not found at {path}: expected a diffusers folder with model_index.json or a single "
            f".safetensors file. Get {SDXL_REPO_ID} (https://huggingface.co/{SDXL_REPO_ID}) with "
            f"`python -m serving weights --download`, or `huggingface-cli download {SDXL_REPO_ID} --local-dir "
            f"{path}`, or set MOODSHIFT_SDXL_MODEL."
        )
    try:
        if path.is_dir():
            pipe = StableDiffusionXLPipeline.from_pretrained(path, torch_dtype=dtype, local_files_only=True)
        else:
            pipe = StableDiffusionXLPipeline.from_single_file(path, torch_dtype=dtype, local_files_only=True)
    except Exception as exc:  # a partial download, a non-SDXL file, a missing config for a single file
        raise WeightsError(
            f"{path} could not be loaded as SDXL ({type(exc).__name__}: {str(exc)[:300]}). Use a complete diffusers "
            f"folder of {SDXL_REPO_ID} or its sd_xl_base_1.0.safetensors file."
        ) from None
    return pipe


def build_sdxl(settings: Settings) -> tuple[StableDiffusionXLPipeline, ResolvedProfile, str]:
    """The SDXL pipeline for the settings' profile: (pipeline, resolved profile, model name). Weights on CPU."""
    path = settings.sdxl_model_path
    resolved = resolve_profile(settings.stage_profile("diffusion"), sdxl_weights_present(path), f"SDXL model {path}")
    if resolved.profile == "real":
        return load_sdxl(path), resolved, f"sdxl {path.name}"
    if resolved.profile == "random-full":
        return build_random_full_sdxl(settings.seed), resolved, "sdxl-base (random weights)"
    return build_tiny_sdxl(settings.seed), resolved, "sdxl-tiny (random weights)"
