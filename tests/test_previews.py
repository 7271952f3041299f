"""Previews of a running edit: the linear latent-to-RGB map, and TAESD-XL when its weights are in checkpoints/."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from serving.core.previews import SDXL_LATENT_RGB, fit_preview, latents_to_rgb
from serving.models.preview_decoder import PreviewDecoder
from serving.settings import Settings


def test_the_linear_map_gives_each_channels_colour():
    latents = np.zeros((4, 2, 3), dtype=np.float32)
    assert (latents_to_rgb(latents) == 128).all()  # zero latents: mid grey
    latents[0] = 1.0  # the luminance channel: brighter everywhere
    expected = np.clip((SDXL_LATENT_RGB[0] + 1) * 127.5, 0, 255).round()
    assert (latents_to_rgb(latents) == expected.astype(np.uint8)).all()
    with pytest.raises(ValueError, match=r"\(4, h, w\)"):
        latents_to_rgb(np.zeros((3, 2, 2)))


def test_a_preview_is_small():
    assert fit_preview(np.zeros((1024, 512, 3), np.uint8)).shape == (256, 128, 3)
    assert fit_preview(np.zeros((64, 64, 3), np.uint8)).shape == (64, 64, 3)


def test_taesd_xl_is_used_when_its_folder_is_there(tmp_path):
    from diffusers import AutoencoderTiny

    torch.manual_seed(0)
    blocks = {"num_encoder_blocks": (1, 1, 1, 1), "num_decoder_blocks": (1, 1, 1, 1)}
    small = AutoencoderTiny(encoder_block_out_channels=(8,) * 4, decoder_block_out_channels=(8,) * 4, **blocks)
    settings = Settings(checkpoints_dir=tmp_path)
    assert PreviewDecoder.from_settings(settings, torch.device("cpu"), torch.float32).name == "linear"
    small.save_pretrained(tmp_path / "taesdxl")  # the layout of madebyollin/taesdxl
    decoder = PreviewDecoder.from_settings(settings, torch.device("cpu"), torch.float32)
    assert decoder.name == "taesdxl"
    latents = torch.randn(4, 16, 24)
    picture = decoder(latents)
    assert picture.dtype == np.uint8 and picture.shape == (128, 192, 3)  # TAESD decodes to 8× the latents
    assert PreviewDecoder()(latents).shape == (16, 24, 3)  # the linear map: one pixel per latent cell


@pytest.mark.parametrize("weights", [None, b"not a safetensors file"])
def test_a_taesd_folder_without_usable_weights_falls_back_to_the_linear_map(tmp_path, caplog, weights):
    from diffusers import AutoencoderTiny

    folder = tmp_path / "taesdxl"
    AutoencoderTiny.save_config(AutoencoderTiny(), folder)  # config.json only: a download that stopped early
    if weights is not None:
        (folder / "diffusion_pytorch_model.safetensors").write_bytes(weights)
    with caplog.at_level("WARNING", logger="serving.models.preview_decoder"):
        decoder = PreviewDecoder.from_settings(Settings(checkpoints_dir=tmp_path), torch.device("cpu"), torch.float32)
    assert decoder.name == "linear" and decoder.taesd is None
    [record] = [record for record in caplog.records if record.name == "serving.models.preview_decoder"]
    assert record.getMessage().startswith(f"preview decoder {folder} does not load (")
    assert record.getMessage().endswith("); previews use the linear map")
