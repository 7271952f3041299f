"""SDXL components for every profile, as a diffusers `StableDiffusionXLPipeline`.

`real` loads, offline, every layout `sdxl_layouts.find_sdxl` accepts: a diffusers folder in full precision or its
fp16 variant, a repo id in the local Hugging Face cache (`from_pretrained`), a single original-format `.safetensors`
file (`sdxl_single_file`), with an fp16-safe VAE folder when present; `tiny` builds small seeded UNet/VAE/CLIP
encoders from configs, with a 4-level VAE (latents are 1/8 of the image, like SDXL) and CLIP's real vocabulary;
`random-full` builds SDXL base's own configs with random weights. Whatever the profile, the same pipeline class
and the same runner code use them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from serving.core.prompt_text import PROMPT_TOKEN_BUDGET
from serving.models.errors import WeightsError
from serving.models.profiles import ResolvedProfile, resolve_profile

if TYPE_CHECKING:
    import torch
    from diffusers import StableDiffusionXLPipeline

    from serving.models.sdxl_layouts import SdxlWeights
    from serving.settings import Settings

SDXL_REPO_ID = "stabilityai/stable-diffusion-xl-base-1.0"
SDXL_VAE_FP16_REPO_ID = "madebyollin/sdxl-vae-fp16-fix"  # SDXL's VAE fine-tuned to run in float16 without NaNs

# SDXL base's model_index.json: component -> (library, class). The folder checks, the download patterns and the
# single-file loader's config folder all follow it.
SDXL_PIPELINE_INDEX: dict[str, Any] = {
    "_class_name": "StableDiffusionXLPipeline",
    "force_zeros_for_empty_prompt": True,
    "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "tokenizer_2": ["transformers", "CLIPTokenizer"],
    "scheduler": ["diffusers", "EulerDiscreteScheduler"],
}

# SDXL base 1.0's scheduler (EulerDiscreteScheduler) as published in its scheduler_config.json, with the keys Euler
# does not use: the few-step schedulers built from it (DDIM, LCM, TCD) read clip_sample and set_alpha_to_one.
# Build it with `sdxl_scheduler`, which keeps them.
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
    "clip_sample": False,
    "sample_max_value": 1.0,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "trained_betas": None,
}


def sdxl_scheduler():
    """SDXL base's EulerDiscreteScheduler from its published config (every key kept in its `config`)."""
    from diffusers import EulerDiscreteScheduler

    return EulerDiscreteScheduler.from_config(SDXL_SCHEDULER_CONFIG)


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

# Tiny: same block types and the same rules as SDXL, narrow, so a tiny model saved in any layout (single file
# included, see sdxl_single_file.py) loads through the real code: what the weights do not record (activations,
# norm groups, the attention head split) follows SDXL's. The encoders differ in width, as SDXL's do (768, 1280).
# cross_attention_dim = 32 + 64 (both encoders' hidden states are concatenated);
# projection_class_embeddings_input_dim = 6 * addition_time_embed_dim + text_encoder_2.projection_dim.
TINY_UNET_CONFIG: dict[str, Any] = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"],
    "block_out_channels": [32, 64],
    "layers_per_block": 2,
    "attention_head_dim": [2, 4],  # heads of 16 channels (see sdxl_single_file.attention_heads)
    "transformer_layers_per_block": [1, 2],
    "cross_attention_dim": 96,
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
    "sample_size": 512,
}
TINY_TEXT_ENCODER_CONFIG: dict[str, Any] = {
    **SDXL_TEXT_ENCODER_CONFIG,
    "hidden_size": 32,
    "intermediate_size": 37,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "projection_dim": 32,
}
TINY_TEXT_ENCODER_2_CONFIG: dict[str, Any] = {
    **SDXL_TEXT_ENCODER_2_CONFIG,
    "hidden_size": 64,
    "intermediate_size": 37,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "projection_dim": 32,
}


def clip_text_config(fields: dict[str, Any]):
    """A transformers `CLIPTextConfig`: SDXL's token ids and window, then `fields` (widths, depth, activation)."""
    from transformers import CLIPTextConfig

    # Ids as in SDXL's own text encoder configs; eos_token_id 2 makes CLIP pool at argmax(input_ids) = EOS.
    defaults = {
        "vocab_size": 49408,
        "max_position_embeddings": PROMPT_TOKEN_BUDGET,  # CLIP's window
        "bos_token_id": 0,
        "eos_token_id": 2,
    }
    return CLIPTextConfig(**{**defaults, "pad_token_id": 1, **fields})


def build_sdxl_components(
    unet_config: dict[str, Any],
    vae_config: dict[str, Any],
    text_config: dict[str, Any],
    text_config_2: dict[str, Any],
    seed: int = 0,
) -> dict[str, Any]:
    """Random-weight SDXL components from configs. Each component is seeded on its own, so builds are repeatable."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    from serving.models.clip_tokenizer import load_clip_tokenizer

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**unet_config)
    torch.manual_seed(seed)
    vae = AutoencoderKL(**vae_config)
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(clip_text_config(text_config))
    torch.manual_seed(seed)
    text_encoder_2 = CLIPTextModelWithProjection(clip_text_config(text_config_2))
    return {
        "unet": unet.eval(),
        "vae": vae.eval(),
        "text_encoder": text_encoder.eval(),
        "text_encoder_2": text_encoder_2.eval(),
        "tokenizer": load_clip_tokenizer(),
        "tokenizer_2": load_clip_tokenizer(pad_token="!"),  # SDXL's second tokenizer pads with "!"
        "scheduler": sdxl_scheduler(),
    }


def build_tiny_sdxl(seed: int = 0) -> StableDiffusionXLPipeline:
    """Tiny SDXL: seconds per 512² edit on CPU. Same seed -> identical weights."""
    from diffusers import StableDiffusionXLPipeline

    components = build_sdxl_components(
        TINY_UNET_CONFIG, TINY_VAE_CONFIG, TINY_TEXT_ENCODER_CONFIG, TINY_TEXT_ENCODER_2_CONFIG, seed
    )
    return StableDiffusionXLPipeline(**components)


def build_random_full_sdxl(seed: int = 0) -> StableDiffusionXLPipeline:
    """Full-size SDXL base with random weights (about 3.5 B parameters; minutes to build on CPU)."""
    from diffusers import StableDiffusionXLPipeline

    components = build_sdxl_components(
        SDXL_UNET_CONFIG, SDXL_VAE_CONFIG, SDXL_TEXT_ENCODER_CONFIG, SDXL_TEXT_ENCODER_2_CONFIG, seed
    )
    return StableDiffusionXLPipeline(**components)


def sdxl_weights(settings: Settings, prefer_fp16: bool = False) -> SdxlWeights:
    """The settings' SDXL weights, inspected: MOODSHIFT_SDXL_MODEL (default checkpoints/sdxl-base; a path or a repo
    id in the local Hugging Face cache) and the fp16-safe VAE (MOODSHIFT_SDXL_VAE, default
    checkpoints/sdxl-vae-fp16-fix, used when present)."""
    from serving.models.sdxl_layouts import find_sdxl

    # A setting may name a repo id in the hub cache (a str); the default is a folder (a Path).
    model = str(settings.sdxl_model) if settings.sdxl_model is not None else settings.sdxl_model_path
    return find_sdxl(
        model, vae=settings.sdxl_vae_path, vae_required=settings.sdxl_vae is not None, prefer_fp16=prefer_fp16
    )


def load_sdxl(weights: SdxlWeights | Path | str, dtype: torch.dtype | None = None) -> StableDiffusionXLPipeline:
    """The `real` loader, offline, for every layout `find_sdxl` accepts (given as its result or as a path/repo id).
    Whatever stops it is a `WeightsError` naming the file and the fix."""
    import torch
    from diffusers import AutoencoderKL, StableDiffusionXLPipeline

    from serving.models.sdxl_layouts import HUB_CACHE, SINGLE_FILE, SdxlWeights, find_sdxl, how_to_get_sdxl
    from serving.models.sdxl_single_file import load_single_file_sdxl
    from serving.models.weight_files import safetensors_shapes

    if not isinstance(weights, SdxlWeights):
        weights = find_sdxl(weights, prefer_fp16=dtype == torch.float16)
    if weights.problem:
        raise WeightsError(weights.problem)
    try:
        vae = None
        if weights.vae is not None:
            vae = AutoencoderKL.from_pretrained(
                weights.vae, variant=weights.vae_variant, torch_dtype=dtype, local_files_only=True
            )
        if weights.layout == SINGLE_FILE:
            return load_single_file_sdxl(weights.path, safetensors_shapes(weights.path), dtype, vae)
        return StableDiffusionXLPipeline.from_pretrained(
            weights.path,
            variant=weights.variant,
            torch_dtype=dtype,
            local_files_only=True,
            **({"vae": vae} if vae is not None else {}),
        )
    except Exception as exc:  # what the checks cannot see: flipped bytes, a config that does not fit its weights
        raise WeightsError(
            f"{weights.path} could not be loaded as SDXL ({type(exc).__name__}: {str(exc)[:300]}). "
            f"{how_to_get_sdxl(None if weights.layout == HUB_CACHE else weights.path)}"
        ) from None


def build_sdxl(
    settings: Settings, dtype: torch.dtype | None = None
) -> tuple[StableDiffusionXLPipeline, ResolvedProfile, str]:
    """The SDXL pipeline for the settings' profile: (pipeline, resolved profile, model name). Weights on CPU;
    real weights load in `dtype` (the fp16 variant is preferred for float16)."""
    import torch

    weights = sdxl_weights(settings, prefer_fp16=dtype == torch.float16)
    resolved = resolve_profile(settings.stage_profile("diffusion"), weights.problem, weights.label)
    if resolved.profile == "real":
        return load_sdxl(weights, dtype), resolved, f"sdxl {Path(weights.setting).name} ({weights.summary})"
    if resolved.profile == "random-full":
        return build_random_full_sdxl(settings.seed), resolved, "sdxl-base (random weights)"
    return build_tiny_sdxl(settings.seed), resolved, "sdxl-tiny (random weights)"
