"""Small pictures of a running edit's latents: TAESD-XL (a tiny decoder of SDXL latents) when its weights are in
`checkpoints/`, else the fixed linear map of `serving.core.previews`, which needs no model at all."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from serving.core.previews import fit_preview, latents_to_rgb

if TYPE_CHECKING:
    import torch

    from serving.settings import Settings

logger = logging.getLogger(__name__)


class PreviewDecoder:
    """`decoder(latents)`: (4, h, w) SDXL latents (the UNet's scaled space) -> a small HxWx3 uint8 picture.

    taesd: a diffusers `AutoencoderTiny` (TAESD-XL) on the runner's device, or None for the linear map."""

    def __init__(self, taesd=None) -> None:
        self.taesd = taesd
        self.name = "taesdxl" if taesd is not None else "linear"

    @classmethod
    def from_settings(cls, settings: Settings, device: torch.device, dtype: torch.dtype) -> PreviewDecoder:
        """TAESD-XL from `settings.preview_decoder_path` when a diffusers AutoencoderTiny folder is there; the linear
        map, with a warning, when that folder does not load."""
        path = Path(settings.preview_decoder_path)
        if not (path / "config.json").is_file():
            return cls()
        from diffusers import AutoencoderTiny

        try:
            taesd = AutoencoderTiny.from_pretrained(path, torch_dtype=dtype, local_files_only=True)
        except Exception as exc:  # missing or cut weights, a foreign config: diffusers raises many types for them
            # Previews are optional: a broken preview decoder must not keep the diffusion stage from starting.
            logger.warning(
                "preview decoder %s does not load (%s: %s); previews use the linear map",
                path,
                type(exc).__name__,
                str(exc)[:200],
            )
            return cls()
        return cls(taesd.to(device).eval())

    def __call__(self, latents: torch.Tensor) -> np.ndarray:
        import torch

        if self.taesd is None:
            return fit_preview(latents_to_rgb(latents.float().cpu().numpy()))
        with torch.inference_mode():
            parameter = next(self.taesd.parameters())
            decoded = self.taesd.decode(latents[None].to(parameter.device, parameter.dtype)).sample[0]
        rgb = ((decoded.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()
        return fit_preview(rgb)
