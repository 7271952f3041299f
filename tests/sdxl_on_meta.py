"""SDXL base's four models with their real configs on torch's `meta` device: every key and shape, no memory."""

from __future__ import annotations

from typing import Any

import torch

from serving.models.sdxl_builders import (
    SDXL_TEXT_ENCODER_2_CONFIG,
    SDXL_TEXT_ENCODER_CONFIG,
    SDXL_UNET_CONFIG,
    SDXL_VAE_CONFIG,
    clip_text_config,
)


def sdxl_base_on_meta() -> dict[str, Any]:
    """{"unet", "vae", "text_encoder", "text_encoder_2"}: SDXL base 1.0's architectures, weights unallocated."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    with torch.device("meta"):
        return {
            "unet": UNet2DConditionModel(**SDXL_UNET_CONFIG),
            "vae": AutoencoderKL(**SDXL_VAE_CONFIG),
            "text_encoder": CLIPTextModel(clip_text_config(SDXL_TEXT_ENCODER_CONFIG)),
            "text_encoder_2": CLIPTextModelWithProjection(clip_text_config(SDXL_TEXT_ENCODER_2_CONFIG)),
        }
