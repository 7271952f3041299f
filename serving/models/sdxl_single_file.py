"""SDXL from one original-format `.safetensors` file (Stability's sd_xl_base_1.0, A1111 / Civitai fine-tunes), offline.

diffusers' `from_single_file` converts the original ("LDM") keys, but it needs the model's diffusers configs, which
it fetches from the hub (or its cache). Here they come from the project: SDXL base's own configs (`sdxl_builders`),
with everything that varies between checkpoints and is visible in the tensor shapes (widths, depths, attention and
text-encoder sizes, latent channels) read from the file's header, written to a temporary folder in diffusers
layout and passed as `config=`. Tokenizers and scheduler are the project's (CLIP's shipped vocabulary, SDXL's
scheduler config). One code path loads the real SDXL file and the tiny test checkpoint.

What the weights cannot tell (activations, norm groups, how attention splits into heads) is SDXL's, see
`attention_heads`.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from serving.models.sdxl_builders import (
    SDXL_PIPELINE_INDEX,
    SDXL_TEXT_ENCODER_2_CONFIG,
    SDXL_TEXT_ENCODER_CONFIG,
    SDXL_UNET_CONFIG,
    SDXL_VAE_CONFIG,
    clip_text_config,
)

if TYPE_CHECKING:
    import torch
    from diffusers import AutoencoderKL, StableDiffusionXLPipeline

Shapes = dict[str, tuple[int, ...]]

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
TEXT_PREFIX = "conditioner.embedders.0.transformer.text_model."  # CLIP ViT-L, transformers' key names
TEXT_2_PREFIX = "conditioner.embedders.1.model."  # OpenCLIP ViT-bigG, open_clip's key names
# Which model a key of the original format belongs to.
COMPONENT_PREFIXES = {
    UNET_PREFIX: "unet",
    VAE_PREFIX: "vae",
    "conditioner.embedders.0.": "text_encoder",
    "conditioner.embedders.1.": "text_encoder_2",
}
SDXL_HEAD_CHANNELS = 64  # every attention of SDXL (UNet, both text encoders) uses 64-channel heads
ADD_TIME_IDS = 6  # SDXL's micro-conditioning numbers: original size, crop corner, target size (2 each)


def attention_heads(width: int, base_width: int) -> int:
    """Heads of an attention layer `width` channels wide in a model of `base_width` (the UNet's first level, a
    text encoder's hidden size).

    The split is not in the weights. SDXL and its fine-tunes use 64-channel heads (`num_head_channels: 64` in
    sd_xl_base.yaml); a model too narrow for that (base width under 128: the project's tiny models) uses heads of
    half its base width, the same width everywhere, as SDXL does."""
    return width // min(SDXL_HEAD_CHANNELS, base_width // 2)


def single_file_problem(path: Path, shapes: Shapes, vae: Path | None) -> str | None:
    """None when the keys are SDXL base's original format, else what the file is instead and what to use. `vae`:
    the VAE folder used beside the file when it is there (`Settings.sdxl_vae_path`)."""
    use = "Use an SDXL base model (sd_xl_base_1.0.safetensors or a fine-tune of it)."
    if UNET_PREFIX + "input_blocks.0.0.weight" not in shapes:
        return f"{path} is not a Stable Diffusion checkpoint in the original format (no {UNET_PREFIX} keys). {use}"
    if any(key.startswith("cond_stage_model.") for key in shapes):
        return f"{path} is a Stable Diffusion 1.x/2.x checkpoint, not SDXL. {use}"
    text_keys = (TEXT_PREFIX + "embeddings.token_embedding.weight", TEXT_2_PREFIX + "text_projection")
    if any(key not in shapes for key in text_keys):
        return f"{path} is not SDXL base (an SDXL refiner or another model: its text encoders differ). {use}"
    if shapes[UNET_PREFIX + "input_blocks.0.0.weight"][1] != 4:
        return f"{path} is an inpainting checkpoint (its UNet takes extra mask channels). {use}"
    has_vae = vae is not None and vae.is_dir()
    if not has_vae and VAE_PREFIX + "decoder.conv_in.weight" not in shapes:
        place = f"at {vae} " if vae is not None else ""
        return (
            f"{path} has no VAE inside. Put an SDXL VAE folder {place}(`python -m serving weights --download` "
            f"fetches one) or set MOODSHIFT_SDXL_VAE."
        )
    return None


def _indices(shapes: Shapes, prefix: str) -> list[int]:
    """The distinct numbers that follow `prefix` in the keys: `input_blocks.` -> the input block numbers."""
    found = set()
    for key in shapes:
        if key.startswith(prefix):
            head = key[len(prefix) :].split(".", 1)[0]
            if head.isdigit():
                found.add(int(head))
    return sorted(found)


def _unet_config(shapes: Shapes, text_2_projection_dim: int) -> dict[str, Any]:
    def shape(key: str) -> tuple[int, ...]:
        return shapes[UNET_PREFIX + key]

    # input_blocks: 0 is conv_in, then per level `layers` resnets (each maybe followed by a transformer at .1) and,
    # except on the last level, one downsampler (`.0.op`).
    blocks = _indices(shapes, UNET_PREFIX + "input_blocks.")
    downsamplers = sum(UNET_PREFIX + f"input_blocks.{i}.0.op.weight" in shapes for i in blocks)
    levels = downsamplers + 1
    layers = (len(blocks) - 1 - downsamplers) // levels
    firsts = [1 + level * (layers + 1) for level in range(levels)]
    widths = [shape(f"input_blocks.{first}.0.out_layers.3.weight")[0] for first in firsts]
    depths = [len(_indices(shapes, UNET_PREFIX + f"input_blocks.{first}.1.transformer_blocks.")) for first in firsts]
    attention = next(f"input_blocks.{first}.1." for first, depth in zip(firsts, depths, strict=True) if depth)
    added = shape("label_emb.0.0.weight")[1]
    return {
        **SDXL_UNET_CONFIG,
        "in_channels": shape("input_blocks.0.0.weight")[1],
        "out_channels": shape("out.2.weight")[0],
        "down_block_types": ["CrossAttnDownBlock2D" if depth else "DownBlock2D" for depth in depths],
        "up_block_types": ["CrossAttnUpBlock2D" if depth else "UpBlock2D" for depth in reversed(depths)],
        "block_out_channels": widths,
        "layers_per_block": layers,
        "attention_head_dim": [attention_heads(width, widths[0]) for width in widths],  # diffusers: = head count
        "transformer_layers_per_block": [max(depth, 1) for depth in depths],  # 1 where unused, as SDXL's config
        "cross_attention_dim": shape(attention + "transformer_blocks.0.attn2.to_k.weight")[1],
        "use_linear_projection": len(shape(attention + "proj_in.weight")) == 2,
        "projection_class_embeddings_input_dim": added,
        "addition_time_embed_dim": (added - text_2_projection_dim) // ADD_TIME_IDS,
    }


def _vae_config(shapes: Shapes) -> dict[str, Any]:
    levels = _indices(shapes, VAE_PREFIX + "encoder.down.")
    return {
        **SDXL_VAE_CONFIG,
        "in_channels": shapes[VAE_PREFIX + "encoder.conv_in.weight"][1],
        "out_channels": shapes[VAE_PREFIX + "decoder.conv_out.weight"][0],
        "down_block_types": ["DownEncoderBlock2D"] * len(levels),
        "up_block_types": ["UpDecoderBlock2D"] * len(levels),
        "block_out_channels": [shapes[VAE_PREFIX + f"encoder.down.{i}.block.0.conv2.weight"][0] for i in levels],
        "layers_per_block": len(_indices(shapes, VAE_PREFIX + "encoder.down.0.block.")),
        "latent_channels": shapes[VAE_PREFIX + "decoder.conv_in.weight"][1],
    }


def _text_config(shapes: Shapes) -> dict[str, Any]:
    vocab, hidden = shapes[TEXT_PREFIX + "embeddings.token_embedding.weight"]
    return {
        **SDXL_TEXT_ENCODER_CONFIG,
        "vocab_size": vocab,
        "hidden_size": hidden,
        "max_position_embeddings": shapes[TEXT_PREFIX + "embeddings.position_embedding.weight"][0],
        "num_hidden_layers": len(_indices(shapes, TEXT_PREFIX + "encoder.layers.")),
        "intermediate_size": shapes[TEXT_PREFIX + "encoder.layers.0.mlp.fc1.weight"][0],
        "num_attention_heads": attention_heads(hidden, hidden),
        "projection_dim": hidden,  # CLIPTextModel has no projection; SDXL's config says its width
    }


def _text_2_config(shapes: Shapes) -> dict[str, Any]:
    vocab, hidden = shapes[TEXT_2_PREFIX + "token_embedding.weight"]
    return {
        **SDXL_TEXT_ENCODER_2_CONFIG,
        "vocab_size": vocab,
        "hidden_size": hidden,
        "max_position_embeddings": shapes[TEXT_2_PREFIX + "positional_embedding"][0],
        "num_hidden_layers": len(_indices(shapes, TEXT_2_PREFIX + "transformer.resblocks.")),
        "intermediate_size": shapes[TEXT_2_PREFIX + "transformer.resblocks.0.mlp.c_fc.weight"][0],
        "num_attention_heads": attention_heads(hidden, hidden),
        "projection_dim": shapes[TEXT_2_PREFIX + "text_projection"][1],  # open_clip stores it (width, projection)
    }


def sdxl_configs_from_shapes(shapes: Shapes, with_vae: bool = True) -> dict[str, dict[str, Any]]:
    """Diffusers configs of unet, vae, text_encoder, text_encoder_2 for an original-format SDXL checkpoint."""
    text_2 = _text_2_config(shapes)
    configs = {
        "unet": _unet_config(shapes, text_2["projection_dim"]),
        "text_encoder": _text_config(shapes),
        "text_encoder_2": text_2,
    }
    if with_vae:
        configs["vae"] = _vae_config(shapes)
    return configs


def write_config_folder(folder: Path, configs: dict[str, dict[str, Any]]) -> None:
    """A diffusers-layout folder of configs only (model_index.json, <component>/config.json): `config=` for
    `from_single_file`."""
    import diffusers

    folder.mkdir(parents=True, exist_ok=True)
    index = {**SDXL_PIPELINE_INDEX, "_diffusers_version": diffusers.__version__}
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))
    for name in ("unet", "vae"):
        if name in configs:
            (folder / name).mkdir(exist_ok=True)
            (folder / name / "config.json").write_text(json.dumps(configs[name], indent=2))
    for name in ("text_encoder", "text_encoder_2"):
        clip_text_config(configs[name]).save_pretrained(folder / name)


def load_single_file_sdxl(
    path: Path, shapes: Shapes, dtype: torch.dtype | None = None, vae: AutoencoderKL | None = None
) -> StableDiffusionXLPipeline:
    """The pipeline of an original-format SDXL `.safetensors` file, without the hub (`shapes`: its header).

    `vae`: a VAE to use instead of the file's own (an fp16-safe one)."""
    from diffusers import StableDiffusionXLPipeline

    from serving.models.clip_tokenizer import load_clip_tokenizer
    from serving.models.sdxl_builders import sdxl_scheduler

    given = {
        "tokenizer": load_clip_tokenizer(),
        "tokenizer_2": load_clip_tokenizer(pad_token="!"),  # SDXL's second tokenizer pads with "!"
        "scheduler": sdxl_scheduler(),
    }
    if vae is not None:
        given["vae"] = vae
    with tempfile.TemporaryDirectory(prefix="moodshift-sdxl-configs-") as folder:
        write_config_folder(Path(folder), sdxl_configs_from_shapes(shapes, with_vae=vae is None))
        return StableDiffusionXLPipeline.from_single_file(
            str(path), config=folder, local_files_only=True, torch_dtype=dtype, **given
        )
