"""Model profiles: tiny builders are deterministic, load through the `real` code, and missing weights say so."""

from pathlib import Path

import numpy as np
import pytest
import torch

from serving.models.errors import WeightsError
from serving.models.profiles import resolve_profile
from serving.models.sam_builders import build_sam, build_tiny_sam, load_sam_checkpoint
from serving.models.sdxl_builders import build_sdxl, build_tiny_sdxl, load_sdxl
from serving.settings import Settings

SAM_URL = Settings().sam_download_url


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _txt2img(pipe, seed: int = 3) -> np.ndarray:
    generator = torch.Generator().manual_seed(seed)
    return pipe(
        "a quiet forest at dusk", num_inference_steps=2, height=128, width=192, generator=generator, output_type="np"
    ).images[0]


@pytest.fixture(scope="module")
def tiny_sdxl():
    return build_tiny_sdxl(seed=0)


def test_tiny_sam_is_deterministic_per_seed():
    assert _same_weights(build_tiny_sam(0), build_tiny_sam(0))
    assert not _same_weights(build_tiny_sam(0), build_tiny_sam(1))


def test_tiny_sdxl_is_deterministic_and_sdxl_shaped(tiny_sdxl):
    again = build_tiny_sdxl(seed=0)
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        assert _same_weights(getattr(tiny_sdxl, name), getattr(again, name)), name
    assert tiny_sdxl.vae_scale_factor == 8, "4-level VAE: latents are 1/8 of the image like SDXL"
    assert tiny_sdxl.tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]


def test_tiny_sdxl_saved_loads_through_real_code_with_same_output(tiny_sdxl, tmp_path):
    tiny_sdxl.save_pretrained(tmp_path / "sdxl")
    loaded = load_sdxl(tmp_path / "sdxl")
    expected = _txt2img(tiny_sdxl)
    assert expected.shape == (128, 192, 3)
    # Loaded weights are identical; kernels may order float sums differently, hence ~1e-6, far below 1/255.
    np.testing.assert_allclose(_txt2img(loaded), expected, atol=1e-4)
    assert np.abs(_txt2img(loaded, seed=4) - expected).max() > 1e-2, "a different seed must change the image"


def test_tiny_sam_pth_loads_through_real_code(tmp_path):
    sam = build_tiny_sam(5)
    path = tmp_path / "sam_tiny.pth"
    torch.save(sam.state_dict(), path)
    loaded = load_sam_checkpoint("tiny", path, SAM_URL)
    assert _same_weights(sam, loaded)
    assert not _same_weights(build_tiny_sam(0), loaded)


def test_missing_sam_checkpoint_names_path_and_download(tmp_path):
    with pytest.raises(WeightsError) as info:
        load_sam_checkpoint("vit_h", tmp_path / "sam_vit_h_4b8939.pth", SAM_URL)
    message = str(info.value)
    assert f"SAM checkpoint not found at {tmp_path / 'sam_vit_h_4b8939.pth'}" in message
    assert "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth" in message


def test_wrong_sam_file_gives_clear_message(tmp_path):
    bad = tmp_path / "sam_vit_b_01ec64.pth"
    bad.write_bytes(b"<html>not a checkpoint</html>")
    with pytest.raises(WeightsError, match=r"is not a usable SAM vit_b checkpoint"):
        load_sam_checkpoint("vit_b", bad, SAM_URL)


def test_missing_sdxl_names_path_and_repo(tmp_path):
    with pytest.raises(WeightsError) as info:
        load_sdxl(tmp_path / "sdxl-base")
    message = str(info.value)
    assert f"SDXL model not found at {tmp_path / 'sdxl-base'}" in message
    assert "stabilityai/stable-diffusion-xl-base-1.0" in message


def test_broken_sdxl_folder_gives_clear_message(tmp_path):
    folder = tmp_path / "sdxl-base"
    folder.mkdir()
    (folder / "model_index.json").write_text("{not json")
    with pytest.raises(WeightsError, match=r"model_index.json is not a valid model_index.json\. Get stabilityai/"):
        load_sdxl(folder)


def test_real_profile_without_weights_raises_not_falls_back(tmp_path):
    settings = Settings(profile="real", checkpoints_dir=tmp_path)
    with pytest.raises(WeightsError, match="SAM checkpoint not found"):
        build_sam(settings)
    with pytest.raises(WeightsError, match="SDXL model not found"):
        build_sdxl(settings)


def test_auto_falls_back_to_tiny_and_says_why(tmp_path):
    settings = Settings(profile="auto", checkpoints_dir=tmp_path)
    sam, resolved, name = build_sam(settings)
    assert resolved.profile == "tiny" and resolved.is_demo
    assert "not found" in resolved.reason and str(tmp_path) in resolved.reason
    assert name == "sam-tiny (random weights)"
    assert sam.image_encoder.img_size == 1024


def test_auto_uses_real_sdxl_when_present(tiny_sdxl, tmp_path):
    tiny_sdxl.save_pretrained(tmp_path / "sdxl-base")
    pipe, resolved, _ = build_sdxl(Settings(profile="auto", checkpoints_dir=tmp_path))
    assert resolved.profile == "real" and not resolved.is_demo
    assert _same_weights(pipe.unet, tiny_sdxl.unet)


def test_stage_profile_overrides_global():
    assert resolve_profile("random-full", weights_problem="missing", weights_label="x").profile == "random-full"
    assert resolve_profile("auto", weights_problem=None, weights_label="x").profile == "real"
    assert resolve_profile("auto", weights_problem="x is truncated", weights_label="x").reason.endswith(
        "x is truncated"
    )
    settings = Settings(profile="tiny", sam_profile="random-full", sam_model_type="vit_b")
    assert settings.stage_profile("sam") == "random-full" and settings.stage_profile("diffusion") == "tiny"


def test_checkpoints_readme_is_kept_in_git():
    readme = Path(__file__).resolve().parents[1] / "checkpoints" / "README.md"
    assert "sam_vit_h_4b8939.pth" in readme.read_text()
