"""GPU memory modes, on CPU: every branch of the offload choice with SDXL's real sizes, the runner applying a mode,
SAM's encoder in half precision."""

import numpy as np
import pytest
import torch

from serving.core.edit_options import check_edit_options
from serving.models.blended_sdxl import BlendedSDXLRunner, DiffusionRequest
from serving.models.memory import (
    GB,
    HEADROOM_BYTES,
    activation_bytes,
    choose_offload,
    pipeline_model_bytes,
    plan_offload,
    reserved_for_sam,
    vae_dtype_for,
    with_fast_model,
)
from serving.models.sdxl_builders import build_tiny_sdxl, sdxl_scheduler
from serving.settings import Settings
from tests.sdxl_on_meta import sdxl_base_on_meta

SAM_VIT_H_FP16 = 641_090_608 * 2 + GB  # weights in float16 and one encoder pass


@pytest.fixture(scope="module")
def sdxl_bytes() -> dict[str, int]:
    """SDXL base's model sizes in float16 (VAE in float32, as SDXL's asks), from its real architecture on `meta`."""
    from diffusers import StableDiffusionXLPipeline

    models = sdxl_base_on_meta()
    pipe = StableDiffusionXLPipeline(**models, tokenizer=None, tokenizer_2=None, scheduler=sdxl_scheduler())
    return pipeline_model_bytes(pipe, torch.float16)


def test_sdxl_sizes_are_the_documented_ones(sdxl_bytes):
    assert 5.0 < sdxl_bytes["unet"] / 1e9 < 5.3  # 2.57 B parameters
    assert 1.3 < sdxl_bytes["text_encoder_2"] / 1e9 < 1.5 and 0.2 < sdxl_bytes["text_encoder"] / 1e9 < 0.3
    assert 0.3 < sdxl_bytes["vae"] / 1e9 < 0.4  # float32
    assert 6.8 < sum(sdxl_bytes.values()) / 1e9 < 7.3
    assert activation_bytes(1024**2) == 3 * GB and activation_bytes(512**2) == 3 * GB // 4


@pytest.mark.parametrize(
    ("free_gb", "shared_with_sam", "expected"),
    [
        (23.5, True, "none"),  # 24 GB card: SDXL and ViT-H side by side
        (15.5, True, "none"),  # 16 GB card
        (11.5, False, "none"),  # 12 GB card, SAM on another machine
        (11.5, True, "model"),  # 12 GB card shared with ViT-H: one model at a time
        (7.5, False, "sequential"),  # 8 GB card: the UNet alone plus its activations do not fit
    ],
)
def test_auto_picks_the_mode_from_free_memory(sdxl_bytes, free_gb, shared_with_sam, expected):
    reserved = SAM_VIT_H_FP16 if shared_with_sam else 0
    plan = choose_offload("auto", "cuda", int(free_gb * GB), sdxl_bytes, activation_bytes(1024**2), reserved)
    assert plan.offload == expected
    assert plan.reason.startswith(f"auto: {free_gb:.1f} GB free")
    assert ("kept for other models" in plan.reason) == shared_with_sam


def test_auto_thresholds_are_whole_then_largest_model():
    models, active = {"unet": 5 * GB, "text_encoder_2": 2 * GB}, GB
    just = 5 * GB + 2 * GB + active + HEADROOM_BYTES
    assert choose_offload("auto", "cuda", just, models, active).offload == "none"
    assert choose_offload("auto", "cuda", just - 1, models, active).offload == "model"
    assert choose_offload("auto", "cuda", just, models, active, reserved_bytes=1).offload == "model"
    assert choose_offload("auto", "cuda", 5 * GB + active + HEADROOM_BYTES, models, active).offload == "model"
    plan = choose_offload("auto", "cuda", 5 * GB + active + HEADROOM_BYTES - 1, models, active)
    assert plan.offload == "sequential" and "layer by layer" in plan.reason


@pytest.mark.parametrize("mode", ["none", "model", "sequential"])
def test_a_mode_set_by_the_settings_wins_on_cuda(mode):
    plan = choose_offload(mode, "cuda", 100 * GB if mode != "none" else 0, {"unet": GB}, GB)
    assert plan.offload == mode and plan.reason == f"MOODSHIFT_OFFLOAD={mode}"


@pytest.mark.parametrize("requested", ["auto", "none", "model"])
def test_nothing_offloads_on_cpu(requested):
    plan = choose_offload(requested, "cpu", 0, {"unet": 5 * GB}, 3 * GB)
    assert plan.offload == "none" and plan.reason.startswith("runs on cpu")
    assert ("no effect" in plan.reason) == (requested == "model")


def test_plan_reads_free_cuda_memory_and_reserves_for_sam(monkeypatch, tmp_path, sdxl_bytes):
    cuda = torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (int(11.5 * GB), 12 * GB))
    # tiny SAM (no weights) takes nothing from the GPU; a set reserve or a remote segmentation stage override it.
    tiny_sam = Settings(checkpoints_dir=tmp_path)
    assert reserved_for_sam(tiny_sam, torch.float16) == 0
    assert plan_offload(tiny_sam, cuda, torch.float16, sdxl_bytes).offload == "none"
    reserved = Settings(checkpoints_dir=tmp_path, gpu_reserve_gb=2.5)
    assert reserved_for_sam(reserved, torch.float16) == int(2.5 * GB)
    assert plan_offload(reserved, cuda, torch.float16, sdxl_bytes).offload == "model"
    assert plan_offload(reserved, cuda, torch.float16, sdxl_bytes, working_pixels=512**2).offload == "none"
    remote = Settings(profile="random-full", checkpoints_dir=tmp_path, segment_service_url="http://sam:3000")
    assert reserved_for_sam(remote, torch.float16) == 0
    full_size = Settings(profile="random-full", checkpoints_dir=tmp_path)
    assert reserved_for_sam(full_size, torch.float16) == SAM_VIT_H_FP16
    assert plan_offload(Settings(offload="sequential"), cuda, torch.float16, sdxl_bytes).offload == "sequential"


def test_the_few_step_lora_counts_in_the_unets_bytes_not_as_a_model_of_its_own(tmp_path, sdxl_bytes):
    from safetensors.torch import save_file

    lora = {"lora_unet_mid.lora_down.weight": torch.zeros(4096, 4096, dtype=torch.float16)}
    save_file(lora, tmp_path / "sdxl_lightning_4step_lora.safetensors")  # fast mode's default file
    lora_bytes = 4096 * 4096 * 2
    counted = with_fast_model(Settings(checkpoints_dir=tmp_path), sdxl_bytes, torch.float16)
    assert counted == {**sdxl_bytes, "unet": sdxl_bytes["unet"] + lora_bytes}
    assert with_fast_model(Settings(checkpoints_dir=tmp_path / "none"), sdxl_bytes, torch.float16) == sdxl_bytes
    # Under model offload the LoRA comes to the GPU inside the UNet: where the UNet alone would just fit, it does not.
    active = activation_bytes(1024**2)
    free = sdxl_bytes["unet"] + active + HEADROOM_BYTES + lora_bytes // 2
    assert choose_offload("auto", "cuda", free, {**sdxl_bytes, "fast": lora_bytes}, active).offload == "model"
    plan = choose_offload("auto", "cuda", free, counted, active)
    assert plan.offload == "sequential" and "layer by layer" in plan.reason


def test_vae_runs_in_float32_only_when_it_asks_to():
    assert vae_dtype_for(torch.float16, force_upcast=True) == torch.float32  # SDXL's own VAE
    assert vae_dtype_for(torch.float16, force_upcast=False) == torch.float16  # sdxl-vae-fp16-fix
    assert vae_dtype_for(torch.float32, force_upcast=True) == torch.float32
    assert vae_dtype_for(torch.bfloat16, force_upcast=True) == torch.bfloat16


def _edit(runner: BlendedSDXLRunner) -> np.ndarray:
    image = (np.random.default_rng(0).random((128, 128, 3)) * 255).astype(np.uint8)
    subject = np.zeros((128, 128), dtype=bool)
    subject[40:90, 40:90] = True
    options = check_edit_options({"steps": 2, "seed": 0})
    return runner.run(DiffusionRequest(image, subject, "a misty forest", options)).images[0]


def test_runner_with_model_offload_runs_on_the_execution_device_and_gives_the_same_edit():
    # diffusers' model offload works onto the CPU too, so the runner's offload path runs here for real.
    plain = BlendedSDXLRunner(build_tiny_sdxl(), "cpu", torch.float32, working_pixels=128 * 128)
    offloaded = BlendedSDXLRunner(build_tiny_sdxl(), "cpu", torch.float32, working_pixels=128 * 128, offload="model")
    assert offloaded.offload == "model" and hasattr(offloaded.pipe.unet, "_hf_hook")
    assert offloaded.device == offloaded.pipe._execution_device
    np.testing.assert_array_equal(_edit(offloaded), _edit(plain))


def test_runner_with_sequential_offload_hands_the_pipeline_to_diffusers(monkeypatch):
    # Sequential offload needs a GPU (accelerate's hooks fail on diffusers' `cpu:0`): check the hand-over only.
    pipe = build_tiny_sdxl()
    calls = []
    monkeypatch.setattr(pipe, "enable_sequential_cpu_offload", lambda device: calls.append(device))
    runner = BlendedSDXLRunner(pipe, "cpu", torch.float16, offload="sequential")
    assert calls == [torch.device("cpu")] and runner.offload == "sequential"
    assert pipe.unet.dtype == torch.float16 and pipe.vae.dtype == torch.float32  # cast, not moved


def test_from_settings_reports_the_mode_on_cpu():
    runner = BlendedSDXLRunner.from_settings(Settings(profile="tiny", device="cpu", offload="model"))
    assert runner.offload == "none" and "no effect" in runner.offload_reason


def test_sam_encoder_in_half_precision_segments_like_float32(astronaut):
    from serving.models.sam import Segmenter

    results = {}
    for dtype in ("float32", "bfloat16"):  # CPU autocast runs bfloat16; on CUDA the default is float16
        segmenter = Segmenter.from_settings(Settings(profile="tiny", device="cpu", dtype=dtype))
        assert segmenter.sam.image_encoder.patch_embed.proj.weight.dtype == getattr(torch, dtype)
        assert segmenter.sam.mask_decoder.iou_token.weight.dtype == torch.float32
        results[dtype] = segmenter.segment(astronaut, [(250, 200, 1)])
    assert abs(results["bfloat16"].score - results["float32"].score) < 0.02
    agree = (results["bfloat16"].mask == results["float32"].mask).mean()
    assert agree > 0.98
