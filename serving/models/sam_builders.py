"""SAM models for every profile, built from segment-anything's own modules.

`real` loads a checkpoint (the official `sam_vit_h_4b8939.pth`, `sam_vit_l_0b3195.pth`, `sam_vit_b_01ec64.pth`, or
any file of those architectures) into the registry's architecture with `map_location`, so a CUDA-saved file loads
on CPU; the type comes from the file's shapes unless MOODSHIFT_SAM_MODEL_TYPE names it. `tiny` is a seeded,
narrow SAM (same modules, same 1024-px input and 256-px low-res masks);
`random-full` is the registry's full-size architecture with random weights.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from serving.models.errors import WeightsError
from serving.models.profiles import ResolvedProfile, resolve_profile
from serving.models.weight_files import file_problem

if TYPE_CHECKING:
    import torch
    from segment_anything.modeling import Sam

    from serving.settings import Settings

SAM_IMAGE_SIZE = 1024  # SAM's encoder input; the prompt encoder and low-res masks (256 px) follow from it
# (image encoder width, blocks) -> type: segment-anything's registry, and the project's tiny SAM.
SAM_ARCHITECTURES = {(1280, 32): "vit_h", (1024, 24): "vit_l", (768, 12): "vit_b", (64, 2): "tiny"}
# Parameters of each type (encoder + prompt encoder + decoder), for memory planning without building it.
SAM_PARAMETERS = {"vit_h": 641_090_608, "vit_l": 312_342_832, "vit_b": 93_735_472}


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


@dataclass(frozen=True)
class SamWeights:
    """The settings' SAM checkpoint, inspected: `problem` is None when it loads, else the message for the user.

    model_type: what the file holds (read from its tensor shapes) or, without a usable file, the configured type;
    type_from_file: MOODSHIFT_SAM_MODEL_TYPE was left unset, so the file decides."""

    path: Path
    model_type: str
    type_from_file: bool
    problem: str | None

    @property
    def size_bytes(self) -> int:
        return self.path.stat().st_size if self.path.is_file() else 0

    @property
    def label(self) -> str:
        """What `auto` says it found: "SAM vit_b checkpoints/sam_vit_b_01ec64.pth"."""
        return f"SAM {self.model_type} {self.path}"


def sam_type_of(shapes: Mapping[str, Any]) -> str | None:
    """The SAM type of a state dict (or key -> shape), from its image encoder's width and depth; None if unknown."""
    patch = shapes.get("image_encoder.patch_embed.proj.weight")
    if patch is None:
        return None
    depth = len({key.split(".")[2] for key in shapes if key.startswith("image_encoder.blocks.")})
    return SAM_ARCHITECTURES.get((getattr(patch, "shape", patch)[0], depth))


def find_sam(settings: Settings) -> SamWeights:
    """Which SAM file the settings mean and whether it loads, in well under a second (the file is memory-mapped,
    not read). MOODSHIFT_SAM_CHECKPOINT names a file; else the official file of MOODSHIFT_SAM_MODEL_TYPE; with
    the type left unset, the first official file present (vit_h, vit_l, vit_b) and its type from its shapes."""
    from serving.settings import SAM_CHECKPOINT_NAMES

    configured = settings.sam_model_type if "sam_model_type" in settings.model_fields_set else None
    if settings.sam_checkpoint is not None:
        path = settings.sam_checkpoint
    elif configured is not None:
        path = settings.checkpoints_dir / SAM_CHECKPOINT_NAMES[configured]
    else:
        official = [settings.checkpoints_dir / name for name in SAM_CHECKPOINT_NAMES.values()]
        path = next((file for file in official if file.is_file()), settings.sam_checkpoint_path)
    found, problem = inspect_sam_file(path, configured, settings.sam_download_url)
    return SamWeights(Path(path), found or configured or settings.sam_model_type, configured is None, problem)


def inspect_sam_file(path: Path, model_type: str | None, download_url: str) -> tuple[str | None, str | None]:
    """(type the file holds, problem) for `path`; `model_type` None accepts any SAM type. Reads the header only."""
    from serving.settings import SAM_CHECKPOINT_NAMES

    path = Path(path)
    if not path.is_file():
        name = path.name
        return None, (
            f"SAM checkpoint not found at {path}. Download the official {name} from "
            f"{download_url.format(name=name)} into {path.parent}/ (or run `python -m serving weights "
            f"--download`), or set MOODSHIFT_SAM_CHECKPOINT."
        )
    expected = model_type or "vit_h/vit_l/vit_b"
    again = _fetch_again(path, model_type, download_url)
    if problem := file_problem(path):
        return None, f"{path} is not a usable SAM {expected} checkpoint: {problem}. Delete it and {again}."
    try:
        found = sam_type_of(_read_state(path))
    except Exception as exc:  # a damaged pickle inside a whole zip
        why = f"{type(exc).__name__}: {str(exc)[:200]}"
        return None, f"{path} is not a usable SAM {expected} checkpoint ({why}). Delete it and {again}."
    if found is None:
        return None, f"{path} is not a SAM checkpoint (no image encoder of a known size). Use an official one: {again}."
    if model_type is not None and found != model_type:
        official = SAM_CHECKPOINT_NAMES.get(model_type)
        other = f", or use the official {model_type} file: {download_url.format(name=official)}" if official else ""
        if found in SAM_CHECKPOINT_NAMES:
            fix = f"Set MOODSHIFT_SAM_MODEL_TYPE={found} (or leave it unset: the type is read from the file)"
        else:
            fix = "Leave MOODSHIFT_SAM_MODEL_TYPE unset (the type is read from the file)"
        return found, f"{path} is a SAM {found} checkpoint, but MOODSHIFT_SAM_MODEL_TYPE={model_type}. {fix}{other}."
    return found, None


def load_sam_checkpoint(
    model_type: str | None,
    path: Path,
    download_url: str,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
) -> Sam:
    """The `real` loader: check the file, build the architecture of the type it holds, load it with `map_location`
    (a CUDA-saved file loads on CPU), then place it (see `place_sam`).

    model_type: the configured type, or None to take it from the file. `download_url`: where the official file can
    be had (`{name}` stands for its file name), for the messages. Anything that stops it is a `WeightsError`."""
    found, problem = inspect_sam_file(path, model_type, download_url)
    if problem:
        raise WeightsError(problem)
    sam = build_sam_architecture(found)
    try:
        sam.load_state_dict(_read_state(path))
    except Exception as exc:  # keys or shapes that fit no SAM of that type
        why = f"{type(exc).__name__}: {str(exc)[:200]}"
        again = _fetch_again(Path(path), found, download_url)
        raise WeightsError(f"{path} is not a usable SAM {found} checkpoint ({why}). Delete it and {again}.") from None
    return place_sam(sam, device, dtype)


def place_sam(sam: Sam, device: torch.device | str, dtype: torch.dtype | None = None) -> Sam:
    """SAM on `device`. In a half dtype the image encoder's weights are stored in it (ViT-H: 1.3 GB instead of 2.5)
    and the segmenter's autocast runs it; the prompt encoder and mask decoder are small and stay float32."""
    import torch

    sam = sam.to(device)
    if dtype in (torch.float16, torch.bfloat16):
        sam.image_encoder.to(dtype)
    return sam.eval()


def _read_state(path: Path) -> dict[str, Any]:
    """The checkpoint's tensors, memory-mapped: nothing is read until a tensor is used."""
    import torch

    return torch.load(path, map_location="cpu", weights_only=True, mmap=True)


def _fetch_again(path: Path, model_type: str | None, download_url: str) -> str:
    """How to replace a bad SAM file: the official download of its type or official name, else its own source."""
    from serving.settings import SAM_CHECKPOINT_NAMES

    official = SAM_CHECKPOINT_NAMES.values()
    name = SAM_CHECKPOINT_NAMES.get(model_type or "") or (path.name if path.name in official else None)
    if name:
        return f"download it again from {download_url.format(name=name)}"
    examples = ", ".join(download_url.format(name=name) for name in official)
    return f"download it again from where it came from, or use an official file ({examples})"


@dataclass(frozen=True)
class SamPlan:
    """What the settings' SAM stage will run, known without building it: the weights, the resolved profile, the
    architecture that will be built (`model_type`: the file's for real weights, MOODSHIFT_SAM_MODEL_TYPE for
    random-full, `tiny`) and the model's name (`sam-vit_h`, `sam-tiny (random weights)`)."""

    weights: SamWeights
    profile: ResolvedProfile
    model_type: str
    model_name: str


def plan_sam(settings: Settings) -> SamPlan:
    """The SAM stage of the settings: which weights, profile and architecture, and its name (reads file headers
    only)."""
    weights = find_sam(settings)
    resolved = resolve_profile(settings.stage_profile("sam"), weights.problem, weights.label)
    if resolved.profile == "real":
        return SamPlan(weights, resolved, weights.model_type, f"sam-{weights.model_type}")
    if resolved.profile == "random-full":
        model_type = settings.sam_model_type
        return SamPlan(weights, resolved, model_type, f"sam-{model_type} (random weights)")
    return SamPlan(weights, resolved, "tiny", "sam-tiny (random weights)")


def build_sam(
    settings: Settings, device: torch.device | str = "cpu", dtype: torch.dtype | None = None
) -> tuple[Sam, ResolvedProfile, str]:
    """The SAM model for the settings' profile, placed on `device` (see `place_sam`): (model, resolved profile,
    human-readable model name)."""
    plan = plan_sam(settings)
    weights, resolved = plan.weights, plan.profile
    if resolved.profile == "real":
        configured = None if weights.type_from_file else settings.sam_model_type
        sam = load_sam_checkpoint(configured, weights.path, settings.sam_download_url, device, dtype)
    elif resolved.profile == "random-full":
        sam = place_sam(build_sam_architecture(plan.model_type, settings.seed), device, dtype)
    else:
        sam = place_sam(build_tiny_sam(settings.seed), device, dtype)
    return sam, resolved, plan.model_name
