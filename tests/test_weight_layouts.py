"""Weights in every on-disk layout users have, loaded offline through the `real` profile's one code path.

SDXL: a full-precision diffusers folder, the fp16-variant snapshot `weights --download` leaves, a single
original-format (A1111 / Civitai, "LDM") `.safetensors` file, a repo id in the local Hugging Face cache, an fp16-safe
VAE beside them. SAM: the official file names and formats (ViT-B with full-size random weights; ViT-L and ViT-H as
meta-tensor files that hold their exact keys and shapes). All from random weights; the hub is unreachable
(HF_HUB_OFFLINE) and its cache empty unless a test fills it. Broken files give one message naming file and fix.
"""

import hashlib
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from serving.cli import app
from serving.core.edit_options import check_edit_options
from serving.models.blended_sdxl import BlendedSDXLRunner, DiffusionRequest
from serving.models.errors import WeightsError
from serving.models.sam_builders import SAM_PARAMETERS, build_tiny_sam, find_sam, inspect_sam_file, sam_type_of
from serving.models.sdxl_builders import (
    SDXL_REPO_ID,
    SDXL_TEXT_ENCODER_2_CONFIG,
    SDXL_TEXT_ENCODER_CONFIG,
    SDXL_UNET_CONFIG,
    SDXL_VAE_CONFIG,
    TINY_VAE_CONFIG,
    build_tiny_sdxl,
    load_sdxl,
    sdxl_weights,
)
from serving.models.sdxl_layouts import component_parameters, download_patterns
from serving.models.sdxl_single_file import sdxl_configs_from_shapes, single_file_problem
from serving.models.weights import missing_downloads, run_download
from serving.settings import get_settings
from tests.sdxl_on_meta import sdxl_base_on_meta

WORKING_PIXELS = 128 * 128  # edits at 128², seconds on a shared CPU
MODELS = ("unet", "vae", "text_encoder", "text_encoder_2")


# --- the original key format, written by the tests (after diffusers' scripts/convert_diffusers_to_original_sdxl.py,
# generalised to any number of levels and layers, with the text projection it leaves out) ------------------------

RESNET_NAMES = [  # (diffusers, original)
    ("norm1", "in_layers.0"),
    ("conv1", "in_layers.2"),
    ("norm2", "out_layers.0"),
    ("conv2", "out_layers.3"),
    ("time_emb_proj", "emb_layers.1"),
    ("conv_shortcut", "skip_connection"),
]
UNET_NAMES = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
    "add_embedding.linear_1": "label_emb.0.0",
    "add_embedding.linear_2": "label_emb.0.2",
}
VAE_ATTENTION_NAMES = [
    ("group_norm.", "norm."),
    ("to_q.", "q."),
    ("to_k.", "k."),
    ("to_v.", "v."),
    ("to_out.0.", "proj_out."),
]
OPEN_CLIP_NAMES = [
    ("text_model.encoder.layers.", "transformer.resblocks."),
    ("layer_norm1", "ln_1"),
    ("layer_norm2", "ln_2"),
    (".fc1.", ".c_fc."),
    (".fc2.", ".c_proj."),
    (".self_attn", ".attn"),
    ("text_model.final_layer_norm.", "ln_final."),
    ("text_model.embeddings.token_embedding.weight", "token_embedding.weight"),
    ("text_model.embeddings.position_embedding.weight", "positional_embedding"),
]


def unet_to_original(state: dict, config) -> dict:
    levels, layers = len(config["block_out_channels"]), config["layers_per_block"]
    prefixes = {"mid_block.attentions.0.": "middle_block.1."}
    prefixes.update({f"mid_block.resnets.{j}.": f"middle_block.{2 * j}." for j in range(2)})
    for i in range(levels):
        for j in range(layers):
            prefixes[f"down_blocks.{i}.resnets.{j}."] = f"input_blocks.{(layers + 1) * i + j + 1}.0."
            prefixes[f"down_blocks.{i}.attentions.{j}."] = f"input_blocks.{(layers + 1) * i + j + 1}.1."
        for j in range(layers + 1):
            prefixes[f"up_blocks.{i}.resnets.{j}."] = f"output_blocks.{(layers + 1) * i + j}.0."
            prefixes[f"up_blocks.{i}.attentions.{j}."] = f"output_blocks.{(layers + 1) * i + j}.1."
        if i < levels - 1:
            prefixes[f"down_blocks.{i}.downsamplers.0.conv."] = f"input_blocks.{(layers + 1) * (i + 1)}.0.op."
            after = 2 if config["up_block_types"][i].startswith("CrossAttn") else 1  # after the attention, if any
            prefixes[f"up_blocks.{i}.upsamplers.0."] = f"output_blocks.{(layers + 1) * i + layers}.{after}."
    converted = {}
    for key, value in state.items():
        stem, _, leaf = key.rpartition(".")
        if stem in UNET_NAMES:
            converted[f"{UNET_NAMES[stem]}.{leaf}"] = value
            continue
        prefix = next(prefix for prefix in prefixes if key.startswith(prefix))
        rest = key[len(prefix) :]
        if ".resnets." in prefix:
            for ours, theirs in RESNET_NAMES:
                if rest.startswith(ours + "."):
                    rest = theirs + rest[len(ours) :]
        converted[prefixes[prefix] + rest] = value
    return {"model.diffusion_model." + key: value for key, value in converted.items()}


def vae_to_original(state: dict, config) -> dict:
    levels = len(config["block_out_channels"])
    prefixes = {}
    for i in range(levels):
        prefixes[f"encoder.down_blocks.{i}.resnets."] = f"encoder.down.{i}.block."
        prefixes[f"encoder.down_blocks.{i}.downsamplers.0."] = f"encoder.down.{i}.downsample."
        prefixes[f"decoder.up_blocks.{i}.resnets."] = f"decoder.up.{levels - 1 - i}.block."
        prefixes[f"decoder.up_blocks.{i}.upsamplers.0."] = f"decoder.up.{levels - 1 - i}.upsample."
    for part in ("encoder.", "decoder."):
        prefixes.update({f"{part}mid_block.resnets.{k}.": f"{part}mid.block_{k + 1}." for k in range(2)})
        prefixes[f"{part}mid_block.attentions.0."] = f"{part}mid.attn_1."
        prefixes[f"{part}conv_norm_out."] = f"{part}norm_out."
    converted = {}
    for key, value in state.items():
        prefix = next((prefix for prefix in prefixes if key.startswith(prefix)), "")
        new = (prefixes[prefix] if prefix else "") + key[len(prefix) :]
        new = new.replace("conv_shortcut", "nin_shortcut")
        if ".attn_1." in new:
            for ours, theirs in VAE_ATTENTION_NAMES:
                new = new.replace(".attn_1." + ours, ".attn_1." + theirs)
            if value.ndim == 2:  # the original's attention projections are 1x1 convolutions
                value = value[:, :, None, None]
        converted[new] = value
    return {"first_stage_model." + key: value for key, value in converted.items()}


def text_encoder_to_original(state: dict) -> dict:
    # transformers >= 5.6 dropped CLIPTextModel's `text_model.` level; the original format keeps it.
    prefix = "conditioner.embedders.0.transformer."
    return {prefix + (key if key.startswith("text_model.") else "text_model." + key): v for key, v in state.items()}


def text_encoder_2_to_original(state: dict) -> dict:
    converted, qkv = {}, {}
    for key, value in state.items():
        if key == "text_projection.weight":
            converted["text_projection"] = value.T.contiguous()  # open_clip stores x @ P, transformers P x
            continue
        for ours, theirs in OPEN_CLIP_NAMES:
            key = key.replace(ours, theirs)
        part = next((name for name in ("q_proj", "k_proj", "v_proj") if f".attn.{name}." in key), None)
        if part is None:
            converted[key] = value
        else:
            stem, kind = key.split(f".{part}.")
            qkv.setdefault((stem, kind), {})[part] = value
    for (stem, kind), parts in qkv.items():
        converted[f"{stem}.in_proj_{kind}"] = torch.cat([parts["q_proj"], parts["k_proj"], parts["v_proj"]])
    return {"conditioner.embedders.1.model." + key: value for key, value in converted.items()}


def sdxl_to_original(models: dict, dtype: torch.dtype | None = None) -> dict:
    """One state dict in SDXL's original key format (what sd_xl_base_1.0.safetensors holds)."""
    state = {
        **unet_to_original(models["unet"].state_dict(), models["unet"].config),
        **vae_to_original(models["vae"].state_dict(), models["vae"].config),
        **text_encoder_to_original(models["text_encoder"].state_dict()),
        **text_encoder_2_to_original(models["text_encoder_2"].state_dict()),
    }
    return {key: value.to(dtype) if dtype else value for key, value in state.items()}


# --- fixtures: the layouts, from one tiny SDXL ----------------------------------------------------------------


def write_hub_cache(cache: Path, repo_id: str, folder: Path) -> Path:
    """`folder` as the Hugging Face cache holds a download of `repo_id`: blobs by hash, a snapshot of relative
    symlinks to them, refs/main naming the snapshot."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    revision = hashlib.sha1(repo_id.encode()).hexdigest()
    for file in sorted(folder.rglob("*")):
        if file.is_file():
            data = file.read_bytes()
            blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
            blob.parent.mkdir(parents=True, exist_ok=True)
            blob.write_bytes(data)
            link = repo / "snapshots" / revision / file.relative_to(folder)
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    return repo / "snapshots" / revision


@pytest.fixture(scope="module")
def layouts(tmp_path_factory) -> dict[str, Path]:
    """The same tiny SDXL weights as: full-precision folder, fp16-variant folder (fp16 tensors), original-format
    single file (fp16, as sd_xl_base_1.0.safetensors is), hub cache of the fp16 snapshot; and a hub repo with all
    of it plus files a download must skip."""
    root = tmp_path_factory.mktemp("layouts")
    pipe = build_tiny_sdxl(seed=0)
    pipe.save_pretrained(root / "full")
    save_file(sdxl_to_original(pipe.components, torch.float16), root / "sd_xl_tiny.safetensors")
    build_tiny_sdxl(seed=0).to(torch.float16).save_pretrained(root / "fp16", variant="fp16")
    write_hub_cache(root / "hub", SDXL_REPO_ID, root / "fp16")
    repo = root / "repo"  # as huggingface.co holds SDXL base: both variants, other formats, the single file
    shutil.copytree(root / "full", repo)
    shutil.copytree(root / "fp16", repo, dirs_exist_ok=True)
    shutil.copy(root / "sd_xl_tiny.safetensors", repo / "sd_xl_base_1.0.safetensors")
    shutil.copytree(root / "fp16" / "vae", repo / "vae_1_0")
    (repo / "text_encoder" / "flax_model.msgpack").write_bytes(b"flax")
    (repo / "unet" / "openvino_model.xml").write_text("<xml/>")
    return {
        "full": root / "full",
        "fp16": root / "fp16",
        "single": root / "sd_xl_tiny.safetensors",
        "hub": root / "hub",
    }


@pytest.fixture(autouse=True)
def offline_hub(monkeypatch, tmp_path_factory):
    """No network and an empty hub cache: whatever loads, loads from the layout under test."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path_factory.mktemp("empty-hub-cache")))


def use_hub_cache(monkeypatch, cache: Path) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))


def edit(runner: BlendedSDXLRunner, astronaut: np.ndarray) -> np.ndarray:
    ys, xs = np.mgrid[0:512, 0:512]
    subject = ((xs - 256) / 140) ** 2 + ((ys - 280) / 190) ** 2 < 1
    options = check_edit_options({"steps": 1, "seed": 0})
    return runner.run(DiffusionRequest(astronaut, subject, "a misty pine forest", options, composite=False)).images[0]


def real(**fields):
    from serving.settings import Settings

    return Settings(profile="real", device="cpu", working_pixels=WORKING_PIXELS, **fields)


# --- the single-file format: the tests' converter round-trips; the loader reads SDXL's own configs -----------


def test_original_format_converter_round_trips_through_diffusers():
    from diffusers.loaders.single_file_utils import (
        convert_ldm_clip_checkpoint,
        convert_ldm_unet_checkpoint,
        convert_ldm_vae_checkpoint,
        convert_open_clip_checkpoint,
    )

    pipe = build_tiny_sdxl(seed=0)
    original = sdxl_to_original(pipe.components)
    back = {
        "unet": convert_ldm_unet_checkpoint(original, dict(pipe.unet.config)),
        "vae": convert_ldm_vae_checkpoint(original, dict(pipe.vae.config)),
        "text_encoder": {k.removeprefix("text_model."): v for k, v in convert_ldm_clip_checkpoint(original).items()},
        "text_encoder_2": convert_open_clip_checkpoint(pipe.text_encoder_2, original, "conditioner.embedders.1.model."),
    }
    for name, state in back.items():
        expected = {k: v for k, v in getattr(pipe, name).state_dict().items() if not k.endswith("position_ids")}
        expected = {k.removeprefix("text_model.") if name == "text_encoder" else k: v for k, v in expected.items()}
        assert state.keys() == expected.keys(), name
        assert all(torch.equal(state[key], expected[key]) for key in state), name


def test_configs_read_from_the_real_sdxl_key_format_are_sdxl_base():
    """sd_xl_base_1.0.safetensors' keys and shapes (from SDXL's architecture on `meta`) give SDXL base's configs."""
    models = sdxl_base_on_meta()
    shapes = {key: tuple(value.shape) for key, value in sdxl_to_original(models).items()}
    # A few keys of sd_xl_base_1.0.safetensors: the converter writes SDXL's own layout.
    assert shapes["model.diffusion_model.output_blocks.2.2.conv.weight"] == (1280, 1280, 3, 3)
    assert shapes["model.diffusion_model.input_blocks.7.1.transformer_blocks.9.attn2.to_k.weight"] == (1280, 2048)
    assert shapes["conditioner.embedders.1.model.transformer.resblocks.31.attn.in_proj_weight"] == (3840, 1280)
    assert shapes["first_stage_model.decoder.up.0.block.0.nin_shortcut.weight"] == (128, 256, 1, 1)
    assert single_file_problem(Path("sd_xl_base_1.0.safetensors"), shapes, vae=None) is None
    configs = sdxl_configs_from_shapes(shapes)
    for name, shipped in (
        ("unet", SDXL_UNET_CONFIG),
        ("vae", SDXL_VAE_CONFIG),
        ("text_encoder", SDXL_TEXT_ENCODER_CONFIG),
        ("text_encoder_2", SDXL_TEXT_ENCODER_2_CONFIG),
    ):
        assert {key: configs[name][key] for key in shipped} == shipped, name
    assert configs["unet"]["attention_head_dim"] == [5, 10, 20]


def test_non_sdxl_single_files_are_named(tmp_path):
    unet = {"model.diffusion_model.input_blocks.0.0.weight": (320, 4, 3, 3)}
    sd15 = {**unet, "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight": (49408, 768)}
    assert "is a Stable Diffusion 1.x/2.x checkpoint, not SDXL" in single_file_problem(tmp_path, sd15, None)
    assert "not a Stable Diffusion checkpoint" in single_file_problem(tmp_path, {"weight": (1,)}, None)
    from serving.models.sdxl_single_file import TEXT_2_PREFIX, TEXT_PREFIX
    from serving.settings import Settings

    no_vae = {
        **unet,
        TEXT_PREFIX + "embeddings.token_embedding.weight": (49408, 768),
        TEXT_2_PREFIX + "text_projection": (1280, 1280),
    }
    vae = Settings(checkpoints_dir=tmp_path).sdxl_vae_path
    assert (
        vae == tmp_path / "sdxl-vae-fp16-fix"
        and Settings(sdxl_vae=tmp_path / "mine").sdxl_vae_path == tmp_path / "mine"
    )
    assert single_file_problem(tmp_path / "x.safetensors", no_vae, vae) == (
        f"{tmp_path / 'x.safetensors'} has no VAE inside. Put an SDXL VAE folder at {vae} (`python -m serving "
        f"weights --download` fetches one) or set MOODSHIFT_SDXL_VAE."
    )


# --- every SDXL layout through the real profile -------------------------------------------------------------------


def test_every_sdxl_layout_loads_through_the_real_profile_and_edits_alike(layouts, monkeypatch, astronaut):
    use_hub_cache(monkeypatch, layouts["hub"])
    settings = {
        "full": real(sdxl_model=layouts["full"]),
        "fp16": real(sdxl_model=layouts["fp16"]),
        "single": real(sdxl_model=layouts["single"]),
        "hub": real(sdxl_model=SDXL_REPO_ID),
    }
    expected_names = {
        "full": "sdxl full (diffusers folder, full precision)",
        "fp16": "sdxl fp16 (diffusers folder, fp16 variant)",
        "single": "sdxl sd_xl_tiny.safetensors (single file)",
        "hub": "sdxl stable-diffusion-xl-base-1.0 (hub cache, fp16 variant)",
    }
    edits, unets = {}, {}
    for layout, layout_settings in settings.items():
        runner = BlendedSDXLRunner.from_settings(layout_settings)
        assert runner.profile.profile == "real" and runner.model_name == expected_names[layout]
        assert runner.offload == "none" and runner.pipe.unet.dtype == torch.float32
        # `weights` sizes the memory plan from the files' headers alone: the same parameter counts.
        loaded = {name: sum(p.numel() for p in getattr(runner.pipe, name).parameters()) for name in MODELS}
        assert component_parameters(sdxl_weights(layout_settings)) == loaded, layout
        edits[layout], unets[layout] = edit(runner, astronaut), runner.pipe.unet.state_dict()
    # The fp16 files hold the same numbers, rounded: identical to each other, close to full precision.
    for layout in ("single", "hub"):
        assert all(torch.equal(unets[layout][k], unets["fp16"][k]) for k in unets["fp16"]), layout
        np.testing.assert_array_equal(edits[layout], edits["fp16"])
    gap = np.abs(edits["fp16"].astype(int) - edits["full"]).max()
    assert gap <= 3, f"fp16 weights changed the edit by {gap} levels"
    assert np.abs(edits["full"].astype(int) - astronaut).mean() > 10, "the edit changed the background"


def test_auto_picks_a_complete_layout_and_the_fp16_variant_for_float16(layouts, tmp_path):
    shutil.copytree(layouts["full"], tmp_path / "sdxl-base")
    shutil.copytree(layouts["fp16"], tmp_path / "sdxl-base", dirs_exist_ok=True)  # both variants present
    from serving.settings import Settings

    assert sdxl_weights(Settings(checkpoints_dir=tmp_path)).variant is None
    assert sdxl_weights(Settings(checkpoints_dir=tmp_path), prefer_fp16=True).variant == "fp16"
    # One component in full precision only, the others fp16 only: diffusers takes the plain file for that one.
    (tmp_path / "sdxl-base" / "unet" / "diffusion_pytorch_model.fp16.safetensors").unlink()
    for name in ("vae", "text_encoder", "text_encoder_2"):
        for plain in (tmp_path / "sdxl-base" / name).glob("*model.safetensors"):
            plain.unlink()
    mixed = sdxl_weights(Settings(checkpoints_dir=tmp_path))
    assert mixed.problem is None and mixed.variant == "fp16"
    assert load_sdxl(mixed).unet.dtype == torch.float32


def test_fp16_safe_vae_replaces_the_models_own_and_runs_in_float16(layouts, tmp_path, monkeypatch):
    from diffusers import AutoencoderKL

    torch.manual_seed(7)
    fp16_fix = AutoencoderKL(**{**TINY_VAE_CONFIG, "force_upcast": False})
    fp16_fix.save_pretrained(tmp_path / "sdxl-vae-fp16-fix")
    for model in (layouts["fp16"], layouts["single"]):
        settings = real(checkpoints_dir=tmp_path, sdxl_model=model)
        weights = sdxl_weights(settings)
        assert weights.vae == tmp_path / "sdxl-vae-fp16-fix" and weights.problem is None
        pipe = load_sdxl(weights)
        assert not pipe.vae.config.force_upcast
        assert torch.equal(pipe.vae.decoder.conv_out.weight, fp16_fix.decoder.conv_out.weight)
        assert BlendedSDXLRunner(pipe, "cpu", torch.float16).vae_dtype == torch.float16
    own = load_sdxl(layouts["fp16"])
    assert BlendedSDXLRunner(own, "cpu", torch.float16).vae_dtype == torch.float32  # SDXL's own VAE asks for it
    named = sdxl_weights(real(sdxl_model=layouts["fp16"], sdxl_vae=tmp_path / "missing-vae"))
    assert f"{tmp_path / 'missing-vae'}/config.json is missing" in named.problem
    assert "MOODSHIFT_SDXL_VAE" in named.problem


def test_download_patterns_fetch_exactly_a_layout_that_loads(layouts, tmp_path, monkeypatch, astronaut):
    """`weights --download`'s `allow_patterns`, applied by the hub's own filter to a repo laid out like SDXL base's."""
    import huggingface_hub
    from huggingface_hub.utils import filter_repo_objects

    repo = layouts["full"].parent / "repo"
    asked = {}

    def snapshot_download(repo_id, local_dir=None, allow_patterns=None, **_):
        asked[repo_id] = allow_patterns
        names = [file.relative_to(repo).as_posix() for file in repo.rglob("*") if file.is_file()]
        for name in filter_repo_objects(names, allow_patterns=allow_patterns):
            (Path(local_dir) / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(repo / name, Path(local_dir) / name)
        return str(local_dir)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    settings = real(checkpoints_dir=tmp_path)
    [download] = [item for item in missing_downloads(settings) if item.source == SDXL_REPO_ID]
    run_download(download)
    assert asked[SDXL_REPO_ID] == download_patterns()
    fetched = sorted(
        file.relative_to(tmp_path / "sdxl-base").as_posix() for file in tmp_path.rglob("*.*") if file.is_file()
    )
    assert [name for name in fetched if name.endswith("safetensors")] == [
        "text_encoder/model.fp16.safetensors",
        "text_encoder_2/model.fp16.safetensors",
        "unet/diffusion_pytorch_model.fp16.safetensors",
        "vae/diffusion_pytorch_model.fp16.safetensors",
    ]
    assert not any(name.startswith("vae_1_0") or name.endswith((".msgpack", ".xml")) for name in fetched)
    runner = BlendedSDXLRunner.from_settings(settings)
    assert runner.model_name == "sdxl sdxl-base (diffusers folder, fp16 variant)"
    fp16 = BlendedSDXLRunner.from_settings(real(sdxl_model=layouts["fp16"]))
    np.testing.assert_array_equal(edit(runner, astronaut), edit(fp16, astronaut))


def test_weights_reports_layout_variant_and_memory_mode(layouts, tmp_path, monkeypatch):
    monkeypatch.setenv("MOODSHIFT_CHECKPOINTS_DIR", str(tmp_path))
    monkeypatch.setenv("MOODSHIFT_SDXL_MODEL", str(layouts["fp16"]))
    result = CliRunner().invoke(app, ["weights"])
    assert result.exit_code == 0, result.output
    diffusion = result.output[result.output.index("diffusion\n") :]
    assert f"weights  {layouts['fp16']}: diffusers folder, fp16 variant, " in diffusion
    assert "complete and intact" in diffusion and "vae      the model's own, runs in float32" in diffusion
    assert "runs     profile real (auto: found SDXL" in diffusion
    assert "cpu, float32, offload none (runs on cpu" in diffusion


def test_weights_plans_memory_with_the_sizes_the_runner_plans_with(layouts, tmp_path, monkeypatch):
    """`weights` predicts the mode `serve` picks: both count the same models, the few-step LoRA in the UNet's."""
    import serving.models.memory as memory_module
    import serving.models.weights as weights_module

    lora = {"lora_unet_mid.lora_down.weight": torch.zeros(64, 64, dtype=torch.float16)}
    save_file(lora, tmp_path / "sdxl_lightning_4step_lora.safetensors")
    settings = real(sdxl_model=layouts["full"], checkpoints_dir=tmp_path)
    planned = []

    def plan_offload(settings, device, dtype, model_bytes, working_pixels=None):
        planned.append(dict(model_bytes))
        return memory_module.MemoryPlan("none", "recorded")

    monkeypatch.setattr(weights_module, "plan_offload", plan_offload)
    monkeypatch.setattr(memory_module, "plan_offload", plan_offload)
    weights_module.report_weights(settings, check_sha256=False)
    BlendedSDXLRunner.from_settings(settings)
    reported, served = planned
    assert reported == served and set(served) == {"unet", "vae", "text_encoder", "text_encoder_2"}
    unet = sum(p.numel() for p in build_tiny_sdxl().unet.parameters()) * 4  # float32 on the CPU
    assert served["unet"] == unet + 64 * 64 * 4


def test_weights_on_a_gpu_reports_fp16_variant_vae_upcast_and_offload(layouts, monkeypatch):
    """The report's GPU path, simulated on CPU: CUDA with 1 GB free."""
    import serving.models.weights as weights_module
    from serving.settings import Settings

    monkeypatch.setattr(weights_module, "resolve_device", lambda settings: torch.device("cuda"))
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (1024**3, 8 * 1024**3))
    settings = Settings(sdxl_model=layouts["single"], segment_service_url="http://elsewhere:3000")
    _, diffusion, *_ = weights_module.report_weights(settings, check_sha256=False)
    facts = dict(diffusion.facts)
    assert "runs in float32 (SDXL's VAE overflows in float16; an fp16-safe VAE in" in facts["vae"]
    assert "; cuda, float16, offload sequential (auto: 1.0 GB free; SDXL needs " in facts["runs"]
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (80 * 1024**3, 80 * 1024**3))
    offload_model = settings.model_copy(update={"offload": "model"})
    _, diffusion, *_ = weights_module.report_weights(offload_model, check_sha256=False)
    assert "offload model (MOODSHIFT_OFFLOAD=model)" in dict(diffusion.facts)["runs"]


# --- SAM's official files --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def official_vit_b(tmp_path_factory) -> Path:
    """SAM ViT-B with full-size random weights, saved as the official file is (a state dict under its name)."""
    from segment_anything import sam_model_registry

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("sam") / "sam_vit_b_01ec64.pth"
    torch.save(sam_model_registry["vit_b"](checkpoint=None).state_dict(), path)
    return path


def meta_sam_file(folder: Path, model_type: str, name: str | None = None) -> Path:
    """A file with exactly the keys and shapes of SAM `model_type`'s official checkpoint and no data (meta tensors)."""
    from segment_anything import sam_model_registry

    from serving.settings import SAM_CHECKPOINT_NAMES

    with torch.device("meta"):
        sam = sam_model_registry[model_type](checkpoint=None)
    path = folder / (name or SAM_CHECKPOINT_NAMES[model_type])
    torch.save(sam.state_dict(), path)
    return path


@pytest.mark.slow
def test_official_vit_b_file_loads_through_the_real_profile_with_its_type_read_from_it(official_vit_b, astronaut):
    from serving.models.sam import Segmenter

    settings = real(checkpoints_dir=official_vit_b.parent)  # MOODSHIFT_SAM_MODEL_TYPE left unset
    found = find_sam(settings)
    assert found.path == official_vit_b and found.model_type == "vit_b" and found.type_from_file
    segmenter = Segmenter.from_settings(settings)
    assert segmenter.model_name == "sam-vit_b" and segmenter.profile.profile == "real"
    saved = torch.load(official_vit_b, weights_only=True)
    assert all(torch.equal(segmenter.sam.state_dict()[key], value) for key, value in saved.items())
    assert segmenter.segment(astronaut, [(250, 200, 1)]).mask.shape == (512, 512)


@pytest.mark.slow
def test_weights_checks_the_official_sha256_and_says_a_random_file_is_not_it(official_vit_b, monkeypatch):
    monkeypatch.setenv("MOODSHIFT_CHECKPOINTS_DIR", str(official_vit_b.parent))
    result = CliRunner().invoke(app, ["weights"])
    assert result.exit_code == 0, result.output  # it loads: a fine-tune is allowed
    assert f"weights  {official_vit_b}: SAM vit_b (read from the file), 357.7 MB, intact" in result.output
    assert "does not match the official sam_vit_b_01ec64.pth (01ec64…): a fine-tune, or a damaged download" in (
        result.output
    )


@pytest.mark.slow
def test_a_sam_file_of_another_type_than_configured_is_one_clear_message(official_vit_b):
    message = inspect_sam_file(official_vit_b, "vit_l", get_settings().sam_download_url)[1]
    assert message.startswith(f"{official_vit_b} is a SAM vit_b checkpoint, but MOODSHIFT_SAM_MODEL_TYPE=vit_l.")
    assert "Set MOODSHIFT_SAM_MODEL_TYPE=vit_b" in message


@pytest.mark.parametrize("model_type", ["vit_h", "vit_l", "vit_b"])
def test_official_vit_keys_and_shapes_fit_the_registry_architecture(tmp_path, model_type):
    from segment_anything import sam_model_registry

    path = meta_sam_file(tmp_path, model_type)
    state = torch.load(path, weights_only=True, mmap=True)
    assert sam_type_of(state) == model_type
    with torch.device("meta"):
        registry = sam_model_registry[model_type](checkpoint=None)
    registry.load_state_dict(state, strict=True, assign=True)  # every key, every shape
    assert sum(parameter.numel() for parameter in registry.parameters()) == SAM_PARAMETERS[model_type]
    assert inspect_sam_file(path, None, get_settings().sam_download_url) == (model_type, None)
    found = find_sam(real(checkpoints_dir=tmp_path))
    assert (found.path, found.model_type, found.problem) == (path, model_type, None)


def test_the_gpu_reserve_for_sam_is_the_architecture_that_will_be_built(tmp_path):
    from serving.models.memory import GB, reserved_for_sam
    from serving.models.sam_builders import plan_sam
    from serving.settings import Settings

    meta_sam_file(tmp_path, "vit_b")  # a ViT-B file; random-full builds MOODSHIFT_SAM_MODEL_TYPE's (ViT-H) anyway
    random_full = Settings(checkpoints_dir=tmp_path, profile="random-full")
    plan = plan_sam(random_full)
    assert (plan.weights.model_type, plan.model_type, plan.model_name) == (
        "vit_b",
        "vit_h",
        "sam-vit_h (random weights)",
    )
    assert reserved_for_sam(random_full, torch.float16) == SAM_PARAMETERS["vit_h"] * 2 + GB
    assert reserved_for_sam(real(checkpoints_dir=tmp_path), torch.float16) == SAM_PARAMETERS["vit_b"] * 2 + GB
    assert plan_sam(Settings(checkpoints_dir=tmp_path, profile="tiny")).model_type == "tiny"


def test_unset_sam_type_prefers_the_largest_official_file_present(tmp_path):
    from serving.settings import Settings

    meta_sam_file(tmp_path, "vit_b")
    meta_sam_file(tmp_path, "vit_l")
    assert find_sam(Settings(checkpoints_dir=tmp_path)).model_type == "vit_l"
    configured = find_sam(Settings(checkpoints_dir=tmp_path, sam_model_type="vit_b"))
    assert (configured.model_type, configured.type_from_file) == ("vit_b", False)
    missing = find_sam(Settings(checkpoints_dir=tmp_path, sam_model_type="vit_h"))
    assert missing.problem.startswith(f"SAM checkpoint not found at {tmp_path / 'sam_vit_h_4b8939.pth'}")


# --- broken weights: one message naming the file and the fix, from the loaders, `weights` and `serve` -----------


def _truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.unlink()  # a hub-cache symlink or a copy: replace it by a cut file
    path.write_bytes(data[: int(len(data) * keep)])


def _cut_unet(layouts, checkpoints) -> tuple[str, dict, list[str]]:
    shutil.copytree(layouts["fp16"], checkpoints / "sdxl-base")
    unet = checkpoints / "sdxl-base" / "unet" / "diffusion_pytorch_model.fp16.safetensors"
    _truncate(unet)
    return "diffusion", {}, [f"{unet} is truncated or not a safetensors file", "download it again"]


def _missing_component(layouts, checkpoints) -> tuple[str, dict, list[str]]:
    shutil.copytree(layouts["fp16"], checkpoints / "sdxl-base")
    (checkpoints / "sdxl-base" / "text_encoder_2" / "model.fp16.safetensors").unlink()
    folder = checkpoints / "sdxl-base"
    expected = f"{folder} is incomplete: {folder / 'text_encoder_2' / 'model'}.safetensors (or its fp16 variant"
    return "diffusion", {}, [expected, "python -m serving weights --download"]


def _cut_single_file(layouts, checkpoints) -> tuple[str, dict, list[str]]:
    single = checkpoints / "sd_xl_base_1.0.safetensors"
    shutil.copy(layouts["single"], single)
    _truncate(single, keep=0.9)
    return "diffusion", {"MOODSHIFT_SDXL_MODEL": str(single)}, [f"{single} is truncated", "Download it again"]


def _cut_sam(layouts, checkpoints) -> tuple[str, dict, list[str]]:
    sam = checkpoints / "sam_vit_b_01ec64.pth"
    torch.save(build_tiny_sam(0).state_dict(), sam)
    _truncate(sam)
    url = "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth"
    return "segment", {}, [f"{sam} is not a usable SAM vit_h/vit_l/vit_b checkpoint: {sam} is truncated", url]


def _sam_of_another_type(layouts, checkpoints) -> tuple[str, dict, list[str]]:
    sam = meta_sam_file(checkpoints, "vit_l", name="sam_vit_h_4b8939.pth")  # a ViT-L under ViT-H's name
    expected = (
        f"{sam} is a SAM vit_l checkpoint, but MOODSHIFT_SAM_MODEL_TYPE=vit_h. Set MOODSHIFT_SAM_MODEL_TYPE=vit_l"
    )
    return "segment", {"MOODSHIFT_SAM_MODEL_TYPE": "vit_h"}, [expected]


BROKEN = [_cut_unet, _missing_component, _cut_single_file, _cut_sam, _sam_of_another_type]


@pytest.mark.parametrize("breakage", BROKEN, ids=lambda case: case.__name__.strip("_"))
def test_broken_weights_give_one_message_naming_the_file_and_the_fix(breakage, layouts, tmp_path, monkeypatch, capsys):
    import typer

    from serving.cli.serve import check_weights_or_fail
    from serving.models.sam import Segmenter

    stage, environment, expected = breakage(layouts, tmp_path)
    monkeypatch.setenv("MOODSHIFT_CHECKPOINTS_DIR", str(tmp_path))
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()

    # `weights`: the report says it, and the exit status says the weights are broken.
    result = CliRunner().invoke(app, ["weights", "--no-sha256"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert all(part in result.output for part in expected), result.output

    # `serve` with the real profile stops before starting anything; with auto the stage says why it runs tiny.
    stage_profile = "MOODSHIFT_SAM_PROFILE" if stage == "segment" else "MOODSHIFT_DIFFUSION_PROFILE"
    monkeypatch.setenv(stage_profile, "real")
    get_settings.cache_clear()
    with pytest.raises(typer.Exit):
        check_weights_or_fail()
    error = capsys.readouterr().err
    assert error.startswith("error: ") and all(part in error for part in expected), error

    # The loader raises the same message as a WeightsError.
    load = Segmenter.from_settings if stage == "segment" else BlendedSDXLRunner.from_settings
    with pytest.raises(WeightsError) as info:
        load(get_settings())
    assert all(part in str(info.value) for part in expected), str(info.value)

    monkeypatch.setenv(stage_profile, "auto")
    get_settings.cache_clear()
    [line] = [line for line in check_weights_or_fail() if line.startswith(stage)]
    assert line.startswith(f"{stage}: tiny (auto: using tiny random-weight demo models: ") and expected[0] in line
