"""GPU memory modes of the diffusion stage: SDXL whole on the GPU, offloaded model by model, or layer by layer.

`choose_offload` is the rule, a pure function of the free memory CUDA reports and the sizes the stages need;
`plan_offload` gathers those inputs for the runner and `weights`. Sizes (float16):

- SDXL base weights ~6.9 GB: UNet 5.1, text encoders 0.25 + 1.4, VAE 0.17 (0.33 when kept in float32);
- denoising and decoding add ~3 GB at 1024² (one image, classifier-free guidance), ~10 GB in all; this part
  scales with the working area (`ACTIVATION_BYTES_PER_MEGAPIXEL`);
- SAM ViT-H: 1.3 GB of encoder weights in half precision plus ~1 GB for an encoder pass (ViT-L 0.6 + 1,
  ViT-B 0.2 + 1), kept free for it when both stages share one GPU (`reserved_bytes`).

Modes: `none` needs all weights plus activations; `model` (diffusers' `enable_model_cpu_offload`) needs the largest
model (the UNet) plus activations, and costs a host-to-GPU copy of each model per edit; `sequential`
(`enable_sequential_cpu_offload`) needs little more than the activations and is several times slower. On a 24 GB
GPU SDXL runs whole beside SAM; on 12 GB it runs `model`; on 8 GB `sequential` (tiling the VAE then helps).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import torch
    from diffusers import StableDiffusionXLPipeline

    from serving.settings import Settings

OffloadMode = Literal["none", "model", "sequential"]
GB = 1024**3
ACTIVATION_BYTES_PER_MEGAPIXEL = 3 * GB  # UNet with classifier-free guidance + VAE decode, per 1024² in float16
HEADROOM_BYTES = GB // 2  # CUDA context growth, allocator fragmentation, cuDNN workspaces
SAM_ENCODE_BYTES = GB  # one image-encoder pass of SAM at 1024²


@dataclass(frozen=True)
class MemoryPlan:
    """The offload mode and why, in words for `/info` and `weights`."""

    offload: OffloadMode
    reason: str


def choose_offload(
    requested: str,
    device_type: str,
    free_bytes: int,
    model_bytes: Mapping[str, int],
    activation_bytes: int,
    reserved_bytes: int = 0,
) -> MemoryPlan:
    """The memory mode for SDXL: `none` when all weights and the activations fit in the free memory (less what is
    reserved and a headroom), `model` when the largest model and the activations fit, else `sequential`. A mode set
    explicitly wins on CUDA; elsewhere nothing offloads.

    requested: `auto`, `none`, `model` or `sequential` (MOODSHIFT_OFFLOAD). device_type: where the models run;
    offloading only exists to spare GPU memory. free_bytes: what `torch.cuda.mem_get_info` reports. model_bytes:
    each model's weights in the dtype it runs in. activation_bytes: the peak of one edit beyond the weights.
    reserved_bytes: memory left to another stage on the same GPU (SAM)."""
    if device_type != "cuda":
        note = f" (MOODSHIFT_OFFLOAD={requested} has no effect there)" if requested not in ("auto", "none") else ""
        return MemoryPlan("none", f"runs on {device_type}: no GPU memory to spare{note}")
    if requested != "auto":
        return MemoryPlan(requested, f"MOODSHIFT_OFFLOAD={requested}")  # type: ignore[arg-type]
    budget = free_bytes - reserved_bytes - HEADROOM_BYTES
    whole = sum(model_bytes.values()) + activation_bytes
    largest = max(model_bytes.values(), default=0) + activation_bytes
    free = f"{_gb(free_bytes)} free" + (
        f", {_gb(reserved_bytes)} of it kept for other models" if reserved_bytes else ""
    )
    if whole <= budget:
        return MemoryPlan("none", f"auto: {free}; SDXL needs {_gb(whole)} on the GPU")
    if largest <= budget:
        return MemoryPlan("model", f"auto: {free}; SDXL needs {_gb(whole)} whole, {_gb(largest)} one model at a time")
    return MemoryPlan(
        "sequential", f"auto: {free}; SDXL needs {_gb(largest)} even one model at a time: layer by layer (slow)"
    )


def activation_bytes(working_pixels: int) -> int:
    """The peak of one edit beyond the weights, at a working area of `working_pixels`."""
    return int(ACTIVATION_BYTES_PER_MEGAPIXEL * working_pixels / 1024**2)


def reserved_for_sam(settings: Settings, dtype: torch.dtype) -> int:
    """GPU bytes to leave to SAM: MOODSHIFT_GPU_RESERVE_GB when set; else, when the segmentation stage runs on this
    machine (MOODSHIFT_SEGMENT_SERVICE_URL unset) with real or full-size weights, its weights (the encoder in
    `dtype`) and one encoder pass, for the architecture it will build (`plan_sam`)."""
    from serving.models.sam_builders import SAM_PARAMETERS, plan_sam

    if settings.gpu_reserve_gb is not None:
        return int(settings.gpu_reserve_gb * GB)
    if settings.segment_service_url is not None:
        return 0
    plan = plan_sam(settings)
    if plan.profile.profile == "tiny":
        return 0
    return SAM_PARAMETERS.get(plan.model_type, 0) * dtype.itemsize + SAM_ENCODE_BYTES


def vae_dtype_for(dtype: torch.dtype, force_upcast: bool) -> torch.dtype:
    """The VAE's dtype: SDXL's own VAE overflows to NaN (black images) in float16 and asks, by `force_upcast`, to
    run in float32; an fp16-safe VAE (sdxl-vae-fp16-fix, `force_upcast: false`) runs in float16 like the rest."""
    import torch

    return torch.float32 if dtype == torch.float16 and force_upcast else dtype


def pipeline_model_bytes(pipe: StableDiffusionXLPipeline, dtype: torch.dtype) -> dict[str, int]:
    """Bytes of each model's weights once in the dtype it runs in (`dtype`; the VAE's by `vae_dtype_for`)."""
    import torch

    vae_dtype = vae_dtype_for(dtype, pipe.vae.config.force_upcast)
    return {
        name: sum(p.numel() for p in module.parameters()) * (vae_dtype if name == "vae" else dtype).itemsize
        for name, module in pipe.components.items()
        if isinstance(module, torch.nn.Module)
    }


def with_fast_model(settings: Settings, model_bytes: Mapping[str, int], dtype: torch.dtype) -> dict[str, int]:
    """`model_bytes` with the few-step LoRA of MOODSHIFT_FAST_MODEL (`fast_gpu_bytes`) counted in the UNet's: the
    LoRA's layers live inside the UNet module, so under model offload they come to the GPU with it, and the largest
    model is the UNet and its LoRA together. Used by the runner and by `weights`, so both plan the same mode."""
    from serving.models.fast_models import fast_gpu_bytes, find_fast_model

    fast = fast_gpu_bytes(find_fast_model(settings), dtype)
    return {**model_bytes, "unet": model_bytes.get("unet", 0) + fast}


def plan_offload(
    settings: Settings,
    device: torch.device,
    dtype: torch.dtype,
    model_bytes: Mapping[str, int],
    working_pixels: int | None = None,
) -> MemoryPlan:
    """`choose_offload` for these settings on `device`, with the free memory CUDA reports, at `working_pixels`
    (default SDXL's native 1024²)."""
    import torch

    if device.type != "cuda":
        return choose_offload(settings.offload, device.type, 0, model_bytes, 0)
    free = torch.cuda.mem_get_info(device)[0]
    reserved = reserved_for_sam(settings, dtype)
    needed = activation_bytes(working_pixels or 1024**2)
    return choose_offload(settings.offload, device.type, free, model_bytes, needed, reserved)


def _gb(size: int) -> str:
    return f"{size / GB:.1f} GB"
