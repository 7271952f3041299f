"""SAM models for every profile, built from segment-anything's own modules.

`real` loads a checkpoint into the registry's architecture with `map_location`, so a CUDA-saved file loads on
CPU; `tiny` is a seeded, narrow SAM (same modules, same 1024-px input and 256-px low-res masks);
`random-full` is the registry's full-size architecture with random weights.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from serving.models.errors import WeightsError
from serving.models.profiles import ResolvedProfile, resolve_profile

if TYPE_CHECKING:
    import torch
    from segment_anything.modeling import Sam

    from serving.settings import Settings

SAM_DOWNLOAD_URL = "https://dl.fbaipublicfiles.com/segment_anything/{name}"
SAM_IMAGE_SIZE = 1024  # SAM's encoder input; the prompt encoder and low-res masks (256 px) follow from it


def build_tiny_sam(seed: int = 0) -> Sam:
    """A small random-weight SAM: 2-block ViT, 32-d prompts. Same seed -> identical weights."""
    import torch
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    torch.manual_seed(seed)
    prompt_dim, patch = 32, 16
    grid = SAM_IMAGE_SIZE // patch
    return Sam(
        image_encoder=ImageEncoderViT(
            img_size=SAM_IMAGE_SIZE,
            patch_size=patch,
            embed_dim=64,
            depth=2,
            num_heads=2,
            mlp_ratio=4,
            out_chans=prompt_dim,
            qkv_bias=True,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            use_rel_pos=True,
            window_size=14,
            global_attn_indexes=(1,),
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=prompt_dim,
            image_embedding_size=(grid, grid),
            input_image_size=(SAM_IMAGE_SIZE, SAM_IMAGE_SIZE),
            mask_in_chans=16,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=2, embedding_dim=prompt_dim, mlp_dim=64, num_heads=2),
            transformer_dim=prompt_dim,
            iou_head_depth=3,
            iou_head_hidden_dim=32,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    ).eval()


def build_sam_architecture(model_type: str, seed: int = 0) -> Sam:
    """Random-weight SAM of a registry type (`vit_h`, `vit_l`, `vit_b`) or `tiny`."""
    import torch
    from segment_anything import sam_model_registry

    if model_type == "tiny":
        return build_tiny_sam(seed)
    if model_type not in ("vit_h", "vit_l", "vit_b"):
        raise ValueError(f"unknown SAM model type {model_type!r}; expected vit_h, vit_l, vit_b or tiny")
    torch.manual_seed(seed)
    return sam_model_registry[model_type](checkpoint=None).eval()


def load_sam_checkpoint(model_type: str, path: Path, device: torch.device | str = "cpu") -> Sam:
    """The `real` loader: build the architecture, then load `path` with `map_location` (CUDA file on CPU is fine)."""
    import torch

    path = Path(path)
    if not path.is_file():
        name = path.name
        raise WeightsError(
            f"SAM checkpoint not found at {path}. Download the official {name} from "
            f"{SAM_DOWNLOAD_URL.format(name=name)} into {path.parent}/ (or run `python -m serving weights "
            f"--download`), or set MOODSHIFT_SAM_CHECKPOINT."
        )
    sam = build_sam_architecture(model_type)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        sam.load_state_dict(state)
    except Exception as exc:  # a truncated download, a different model type, not a checkpoint at all
        raise WeightsError(
            f"{path} is not a usable SAM {model_type} checkpoint ({type(exc).__name__}: {str(exc)[:200]}). "
            f"Check MOODSHIFT_SAM_MODEL_TYPE matches the file, or download it again from "
            f"{SAM_DOWNLOAD_URL.format(name=path.name)}."
        ) from None
    return sam.to(device).eval()


def build_sam(settings: Settings, device: torch.device | str = "cpu") -> tuple[Sam, ResolvedProfile, str]:
    """The SAM model for the settings' profile: (model, resolved profile, human-readable model name)."""
    checkpoint = settings.sam_checkpoint_path
    resolved = resolve_profile(settings.stage_profile("sam"), checkpoint.is_file(), f"SAM weights {checkpoint}")
    if resolved.profile == "real":
        return (
            load_sam_checkpoint(settings.sam_model_type, checkpoint, device),
            resolved,
            f"sam-{settings.sam_model_type}",
        )
    if resolved.profile == "random-full":
        sam = build_sam_architecture(settings.sam_model_type, settings.seed)
        return sam.to(device), resolved, f"sam-{settings.sam_model_type} (random weights)"
    return build_tiny_sam(settings.seed).to(device), resolved, "sam-tiny (random weights)"
