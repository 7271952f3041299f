"""The blended runner's oracle: diffusers' SDXL inpaint pipeline (4-channel UNet) on given components, with the
final latents kept."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image


def inpaint_pipeline_edit(
    components: dict[str, Any], image: np.ndarray, subject: np.ndarray, prompt: str, *, seed: int, **call: Any
) -> tuple[torch.Tensor, np.ndarray]:
    """(final latents, HxWx3 uint8 pixels) of `StableDiffusionXLInpaintPipeline` repainting everything but `subject`
    (HxW bool) of `image` (HxWx3 uint8) at the image's own size; `call`: the pipeline's other arguments (strength,
    num_inference_steps, guidance_scale, negative_prompt)."""
    from diffusers import StableDiffusionXLInpaintPipeline

    pipeline = StableDiffusionXLInpaintPipeline(**components)
    pipeline.set_progress_bar_config(disable=True)
    captured = {}

    def keep_latents(_pipe, _step, _timestep, tensors):
        captured["latents"] = tensors["latents"].clone()
        return tensors

    height, width = subject.shape
    pixels = pipeline(
        prompt,
        image=Image.fromarray(image),
        mask_image=Image.fromarray((~subject).astype(np.uint8) * 255),  # white = repaint = background
        height=height,  # the pipeline's default size comes from the UNet config, not the image
        width=width,
        generator=torch.Generator().manual_seed(seed),
        output_type="np",
        callback_on_step_end=keep_latents,
        **call,
    ).images[0]
    return captured["latents"], np.rint(pixels * 255).astype(np.uint8)
