"""Fast mode: few-step SDXL weights in the ways they are published (SDXL-Lightning LoRA and UNet, Hyper-SD LoRA,
LCM-LoRA), loaded offline through the `real` profile from tiny random-weight files in those formats; the diffusers
oracle with the same LoRA, scheduler and steps; switching modes leaves quality bit for bit as it was; requests in
both modes at once; the scheduler table and the step count each scheduler makes."""

from __future__ import annotations

import base64
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from serving.core.edit_options import EditOptionError, check_edit_options, fast_mode_rules, mode_rules
from serving.core.sizing import resize_image
from serving.models.blended_sdxl import BlendedSDXLRunner, DiffusionRequest
from serving.models.fast_models import FAMILIES, family_of, find_fast_model
from serving.models.sdxl_builders import build_tiny_sdxl
from serving.settings import Settings
from tests.inpaint_oracle import inpaint_pipeline_edit

PROMPT = "a misty pine forest at dawn, soft light"
WIDTH, HEIGHT = 320, 256
LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2", "conv1",
                "conv2", "conv_shortcut", "time_emb_proj"]  # fmt: skip
# What each model card does: the scheduler (from SDXL's config) with its overrides, and the guidance it asks for.
CARDS = {
    "lightning-lora": ("EulerDiscreteScheduler", {"timestep_spacing": "trailing"}, 0.0),
    "lightning-unet": ("EulerDiscreteScheduler", {"timestep_spacing": "trailing"}, 0.0),
    "hyper-lora": ("DDIMScheduler", {"timestep_spacing": "trailing"}, 0.0),
    "lcm-lora": ("LCMScheduler", {}, 1.0),
}


def peft_lora(seed: int, rank: int = 4) -> dict[str, torch.Tensor]:
    """A LoRA made with peft on the tiny UNet (random up weights, so it changes something), in peft's key format."""
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    unet = build_tiny_sdxl(seed=0).unet
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian", target_modules=LORA_TARGETS))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in unet.named_parameters():
            if "lora_B" in name:
                parameter.copy_(0.05 * torch.randn(parameter.shape, generator=generator))
    return {key: value.contiguous() for key, value in get_peft_model_state_dict(unet).items()}


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Tiny SDXL as a diffusers folder, and few-step files as published: kohya-style LoRAs under Lightning's and
    Hyper-SD's names, a diffusers-style LoRA in an `lcm-lora-sdxl` folder, a float16 diffusers UNet state dict under
    Lightning's UNet name."""
    from diffusers import StableDiffusionXLPipeline
    from diffusers.utils import convert_state_dict_to_kohya

    root = tmp_path_factory.mktemp("fast")
    build_tiny_sdxl(seed=0).save_pretrained(root / "sdxl")
    paths = {
        "sdxl": root / "sdxl",
        "lightning-lora": root / "sdxl_lightning_4step_lora.safetensors",
        "hyper-lora": root / "Hyper-SDXL-4steps-lora.safetensors",
        "lcm-lora": root / "lcm-lora-sdxl" / "pytorch_lora_weights.safetensors",
        "lightning-unet": root / "sdxl_lightning_4step_unet.safetensors",
    }
    for name, seed in (("lightning-lora", 1), ("hyper-lora", 2)):
        kohya = convert_state_dict_to_kohya({f"unet.{key}": value for key, value in peft_lora(seed).items()})
        save_file({key: value.to(torch.float16).contiguous() for key, value in kohya.items()}, paths[name])
    # What diffusers' training scripts (LCM-LoRA's among them) save: peft keys under "unet.".
    StableDiffusionXLPipeline.save_lora_weights(paths["lcm-lora"].parent, unet_lora_layers=peft_lora(3))
    unet = build_tiny_sdxl(seed=0).unet.state_dict()
    generator = torch.Generator().manual_seed(4)
    fast_unet = {key: (value + 0.02 * torch.randn(value.shape, generator=generator)) for key, value in unet.items()}
    save_file({key: value.to(torch.float16).contiguous() for key, value in fast_unet.items()}, paths["lightning-unet"])
    return paths


def real(files: dict[str, Path], fast: str | None = None, **fields) -> Settings:
    """Settings of the real profile on the tiny SDXL folder, with one of the few-step files (or none)."""
    fields.setdefault("fast_model", files[fast] if fast else files["sdxl"] / "no-fast-weights-here.safetensors")
    return Settings(profile="real", device="cpu", sdxl_model=files["sdxl"], **fields)


@pytest.fixture(scope="module")
def runners(files) -> dict[str, BlendedSDXLRunner]:
    """One runner per format, each loaded through the real profile (built on first use)."""
    built: dict[str, BlendedSDXLRunner] = {}

    class Runners(dict):
        def __missing__(self, name: str) -> BlendedSDXLRunner:
            built[name] = BlendedSDXLRunner.from_settings(real(files, name, working_pixels=WIDTH * HEIGHT))
            return built[name]

    return Runners()


@pytest.fixture(scope="module")
def scene(astronaut) -> tuple[np.ndarray, np.ndarray]:
    image = resize_image(astronaut, (WIDTH, HEIGHT))
    subject = np.zeros((HEIGHT, WIDTH), dtype=bool)
    subject[64:232, 104:208] = True  # on 8-px cells: the pipeline's nearest mask resize agrees with ours
    return image, subject


def request(runner: BlendedSDXLRunner, scene, **options) -> DiffusionRequest:
    """A request as the entrance makes one: mode fast takes the runner's few-step model's steps and guidance."""
    values = {"seed": 11, "negative_prompt": "blurry", "shrink_steps": 0, **options}
    checked = check_edit_options(values, mode_rules=lambda mode: mode_rules(mode, runner.describe_fast))
    image, subject = scene
    return DiffusionRequest(image, subject, PROMPT, checked, composite=False)


# --- the published formats through the real profile --------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "family", "kind"),
    [
        ("lightning-lora", "SDXL-Lightning", "lora"),
        ("hyper-lora", "Hyper-SD", "lora"),
        ("lcm-lora", "LCM-LoRA", "lora"),
        ("lightning-unet", "SDXL-Lightning", "unet"),
    ],
)
def test_each_published_format_loads_through_the_real_profile(runners, files, name, family, kind):
    from peft.tuners.tuners_utils import BaseTunerLayer

    runner = runners[name]
    assert runner.profile.profile == "real" and runner.fast is not None, runner.fast_problem
    described = runner.fast.describe()
    assert (described["family"], described["kind"], described["steps"]) == (family, kind, 4)
    assert described["model"] == files[name].name and described["available"]
    lora_layers = sum(isinstance(module, BaseTunerLayer) for module in runner.pipe.unet.modules())
    targets = sum(1 for key, module in build_tiny_sdxl(0).unet.named_modules() if key.endswith(tuple(LORA_TARGETS)))
    assert lora_layers == (targets if kind == "lora" else 0)  # every layer of the file found its place
    assert runner.weights_mode == "quality"


# --- the oracle: diffusers' SDXL inpaint pipeline with the same weights, scheduler and steps ---------------------


def diffusers_fast_inpaint(files, name: str, scene, strength: float) -> tuple[torch.Tensor, np.ndarray]:
    """What the model card's recipe gives in diffusers' inpaint pipeline: final latents and pixels."""
    import diffusers
    from diffusers import StableDiffusionXLPipeline, UNet2DConditionModel
    from safetensors.torch import load_file

    pipe = StableDiffusionXLPipeline.from_pretrained(files["sdxl"])
    if name.endswith("lora"):
        pipe.load_lora_weights(str(files[name]))
        pipe.fuse_lora()
    else:
        unet = UNet2DConditionModel.from_config(pipe.unet.config)
        unet.load_state_dict(load_file(files[name]))
        pipe.register_modules(unet=unet.eval())
    scheduler, overrides, guidance = CARDS[name]
    pipe.scheduler = getattr(diffusers, scheduler).from_config(pipe.scheduler.config, **overrides)
    image, subject = scene
    return inpaint_pipeline_edit(
        pipe.components,
        image,
        subject,
        PROMPT,
        seed=11,
        strength=strength,
        num_inference_steps=4,
        guidance_scale=guidance,
        negative_prompt="blurry",
    )


@pytest.mark.parametrize(
    ("name", "strength"),
    [("lightning-lora", 1.0), ("lightning-lora", 0.6), ("hyper-lora", 1.0), ("lcm-lora", 1.0), ("lcm-lora", 0.6),
     ("lightning-unet", 1.0)],
)  # fmt: skip
def test_a_fast_edit_matches_diffusers_inpaint_pipeline_with_the_same_weights(runners, files, scene, name, strength):
    runner = runners[name]
    result = runner.run(request(runner, scene, mode="fast", strength=strength))
    assert result.timings["steps"] == int(4 * strength)
    latents, pixels = diffusers_fast_inpaint(files, name, scene, strength)
    assert (result.latents - latents).abs().max().item() <= 1e-3
    assert np.abs(result.images[0].astype(int) - pixels).max() <= 1


# --- switching modes ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["lightning-lora", "lightning-unet"])
def test_quality_fast_quality_gives_bit_identical_quality_results(runners, scene, name):
    runner = runners[name]
    runner.use_mode("quality")
    weights = {key: value.clone() for key, value in runner.pipe.unet.state_dict().items()}
    quality = runner.run(request(runner, scene, steps=3))
    fast = runner.run(request(runner, scene, mode="fast"))
    assert runner.weights_mode == "fast"
    again = runner.run(request(runner, scene, steps=3))
    assert runner.weights_mode == "quality"
    assert torch.equal(quality.latents, again.latents) and np.array_equal(quality.images[0], again.images[0])
    assert all(torch.equal(weights[key], value) for key, value in runner.pipe.unet.state_dict().items())
    assert np.abs(fast.images[0].astype(int) - quality.images[0]).mean() > 5  # fast mode is another model


def test_a_mixed_batch_runs_one_unet_batch_per_mode_current_mode_first(runners, scene):
    runner = runners["lightning-lora"]
    runner.use_mode("fast")
    switches = runner.fast.switches
    requests = [request(runner, scene, mode=mode, steps=4, guidance=0.0) for mode in ("quality", "fast", "quality")]
    results = runner.run_batch(requests)
    assert [result.timings["batch_images"] for result in results] == [2.0, 1.0, 2.0]  # modes never share a batch
    assert runner.fast.switches == switches + 1 and runner.weights_mode == "quality"  # fast ran first, then one switch
    alone = runner.run(requests[1])
    assert torch.equal(alone.latents, results[1].latents)


def test_concurrent_quality_and_fast_requests_all_succeed_and_none_mixes_weights(runners, scene):
    from serving.backends import DiffusionBackend, DiffusionJob
    from serving.core.wire import WireArray

    runner = runners["lightning-lora"]
    backend = DiffusionBackend(runner)
    image, subject = scene

    def job(index: int, mode: str) -> DiffusionJob:
        options = request(runner, scene, mode=mode, steps=2, seed=index).options
        return DiffusionJob(
            job_id=f"{mode}-{index}",
            image=WireArray.of(image),
            subject_mask=WireArray.of(subject),
            original_size=(WIDTH, HEIGHT),
            prompt=PROMPT,
            options={**options.to_dict(), "preview": False},
        )

    jobs = [job(index, ("quality", "fast")[index % 2]) for index in range(6)]
    expected = [backend.run([each])[0].backgrounds[0].to_numpy() for each in jobs]
    answers: dict[int, np.ndarray] = {}
    failures: list[BaseException] = []

    def send(index: int) -> None:
        try:
            answers[index] = backend.run([jobs[index]])[0].backgrounds[0].to_numpy()
        except BaseException as exc:  # a failed request must fail the test, not vanish in its thread
            failures.append(exc)

    threads = [threading.Thread(target=send, args=(index,)) for index in range(len(jobs))]
    for thread in threads:
        thread.start()
    mixed = backend.run(jobs[:4])  # and a batch holding both modes at once
    for thread in threads:
        thread.join()
    assert not failures and len(answers) == len(jobs)
    for index, picture in answers.items():
        assert np.array_equal(picture, expected[index]), jobs[index].job_id
    for outcome, picture in zip(mixed, expected, strict=False):
        assert np.abs(outcome.backgrounds[0].to_numpy().astype(int) - picture).max() <= 1
    assert backend.info()["fast"]["family"] == "SDXL-Lightning" and backend.stats()["mode_switches"] > 0


# --- the scheduler table and the steps each scheduler makes ------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "family", "scheduler", "steps", "guidance", "overrides"),
    [
        ("sdxl_lightning_2step_lora.safetensors", "SDXL-Lightning", "EulerDiscreteScheduler", 2, 0.0, {}),
        ("sdxl_lightning_8step_unet.safetensors", "SDXL-Lightning", "EulerDiscreteScheduler", 8, 0.0, {}),
        ("sdxl_lightning_1step_unet_x0.safetensors", "SDXL-Lightning", "EulerDiscreteScheduler", 1, 0.0,
         {"prediction_type": "sample"}),
        ("Hyper-SDXL-8steps-lora.safetensors", "Hyper-SD", "DDIMScheduler", 8, 0.0, {}),
        ("Hyper-SDXL-12steps-CFG-lora.safetensors", "Hyper-SD", "DDIMScheduler", 12, 5.0, {}),
        ("Hyper-SDXL-1step-lora.safetensors", "Hyper-SD", "TCDScheduler", 1, 0.0, {}),
        ("lcm-lora-sdxl/pytorch_lora_weights.safetensors", "LCM-LoRA", "LCMScheduler", 4, 1.0, {}),
    ],
)  # fmt: skip
def test_the_family_and_its_card_settings_are_read_from_the_published_name(
    name, family, scheduler, steps, guidance, overrides
):
    found = family_of(Path("checkpoints") / name)
    assert (found.name, found.scheduler, found.steps, found.guidance) == (family, scheduler, steps, guidance)
    assert {key: found.scheduler_config[key] for key in overrides} == overrides
    assert family_of(Path("my-fast-model.safetensors")) is None
    assert family_of(Path("my-fast-model.safetensors"), "hyper-sd") == FAMILIES["hyper-sd"]


@pytest.mark.parametrize("family", ["lightning", "hyper-sd", "lcm", "tcd"])
def test_every_scheduler_makes_the_steps_the_options_table_counts(runners, family, monkeypatch):
    runner = runners["lightning-lora"]
    table = FAMILIES | {"tcd": family_of(Path("Hyper-SDXL-1step-lora.safetensors"))}
    monkeypatch.setattr(runner.fast, "family", table[family])
    for steps in (1, 2, 4, 8, 30):
        for strength in (1.0, 0.75, 0.5, 0.3):
            if int(steps * strength) < 1:
                continue  # the entrance refuses it: no denoising step
            options = check_edit_options({"steps": steps, "strength": strength, "mode": "fast"})
            scheduler, timesteps = runner._timesteps(steps, strength, "fast")
            assert type(scheduler).__name__ == table[family].scheduler and scheduler.order == 1
            assert len(timesteps) == options.denoising_steps, (steps, strength)
    # Built from SDXL's published config, as the cards do: DDIM, LCM and TCD read these keys Euler keeps unused.
    assert (scheduler.config.clip_sample, scheduler.config.set_alpha_to_one) == (False, False)


def test_lcm_refuses_more_steps_than_it_can_make_at_the_entrance():
    lcm = {"available": True, "family": "LCM-LoRA", "steps": 4, "guidance": 1.0, "max_steps": 50}
    checked = check_edit_options({"mode": "fast"}, mode_rules=lambda mode: fast_mode_rules(lcm))
    assert (checked.steps, checked.guidance) == (4, 1.0)
    with pytest.raises(EditOptionError, match="steps 60 must be an integer from 1 to 50 in mode fast"):
        check_edit_options({"mode": "fast", "steps": 60}, mode_rules=lambda mode: fast_mode_rules(lcm))


# --- files that do not work: one message naming the file and what to do -----------------------------------------


def test_missing_or_unusable_fast_files_are_named_and_quality_still_loads(files, tmp_path):
    from diffusers import StableDiffusionXLPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.tuners.tuners_utils import BaseTunerLayer

    settings = real(files)
    missing = find_fast_model(settings)
    assert missing.problem.startswith(f"no few-step weights at {settings.fast_model}: put SDXL-Lightning's 4-step")
    assert "MOODSHIFT_FAST_MODEL" in missing.problem and "huggingface.co/ByteDance/SDXL-Lightning" in missing.problem
    default = find_fast_model(Settings(checkpoints_dir=tmp_path))
    assert default.path == tmp_path / "sdxl_lightning_4step_lora.safetensors"

    unknown = tmp_path / "my-fast-model.safetensors"
    unknown.write_bytes(files["lightning-lora"].read_bytes())
    assert (
        "set MOODSHIFT_FAST_FAMILY to one of lightning, hyper-sd, lcm"
        in find_fast_model(real(files, fast_model=unknown)).problem
    )
    assert find_fast_model(real(files, fast_model=unknown, fast_family="lightning")).kind == "lora"
    cut = tmp_path / "sdxl_lightning_4step_lora.safetensors"
    cut.write_bytes(files["lightning-lora"].read_bytes()[:500])
    assert "is truncated or not a safetensors file" in find_fast_model(real(files, fast_model=cut)).problem
    pickled = tmp_path / "sdxl_lightning_4step_lora.ckpt"
    pickled.write_bytes(b"not loaded")
    assert "not a .safetensors file" in find_fast_model(real(files, fast_model=pickled)).problem
    whole = tmp_path / "sdxl_lightning_4step.safetensors"
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(2, 2)}, whole)
    assert "is a whole SDXL checkpoint" in find_fast_model(real(files, fast_model=whole)).problem
    hyper_unet = tmp_path / "Hyper-SDXL-1step-Unet.safetensors"
    hyper_unet.write_bytes(files["lightning-unet"].read_bytes())
    assert "at the one timestep 800" in find_fast_model(real(files, fast_model=hyper_unet)).problem
    folder = find_fast_model(real(files, fast_model=files["lcm-lora"].parent))
    assert folder.path == files["lcm-lora"] and folder.family.name == "LCM-LoRA"

    # A LoRA of another model: fast mode is off with the reason; quality edits are untouched.
    other = tmp_path / "sdxl_lightning_8step_lora.safetensors"
    save_file({"lora_unet_down_blocks_9_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 32),
               "lora_unet_down_blocks_9_attentions_0_proj_in.lora_up.weight": torch.zeros(32, 4)}, other)  # fmt: skip
    runner = BlendedSDXLRunner.from_settings(real(files, fast_model=other, working_pixels=64 * 64))
    assert runner.fast is None and f"{other} could not be attached to this SDXL" in runner.fast_problem
    # Keys that mix formats (diffusers' own converter writes such a file): diffusers would place half of them.
    mixed = tmp_path / "lcm-mixed" / "pytorch_lora_weights.safetensors"
    StableDiffusionXLPipeline.save_lora_weights(
        mixed.parent, unet_lora_layers=convert_state_dict_to_diffusers(peft_lora(5))
    )
    half = BlendedSDXLRunner.from_settings(real(files, fast_model=mixed, working_pixels=64 * 64))
    assert half.fast is None and "only 79 of the 175 layers of pytorch_lora_weights.safetensors" in half.fast_problem
    assert not any(isinstance(module, BaseTunerLayer) for module in half.pipe.unet.modules())  # unloaded again
    image = np.zeros((64, 64, 3), dtype=np.uint8)
    subject = np.zeros((64, 64), dtype=bool)
    subject[16:48, 16:48] = True
    assert runner.run(DiffusionRequest(image, subject, PROMPT, check_edit_options({"steps": 1}))).images


def test_weights_and_serve_say_which_fast_model_runs_and_a_broken_file_fails_weights(files, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from serving.cli import app
    from serving.cli.serve import check_weights_or_fail
    from serving.settings import get_settings

    monkeypatch.setenv("MOODSHIFT_CHECKPOINTS_DIR", str(tmp_path))
    monkeypatch.setenv("MOODSHIFT_DIFFUSION_PROFILE", "real")
    monkeypatch.setenv("MOODSHIFT_SDXL_MODEL", str(files["sdxl"]))
    monkeypatch.setenv("MOODSHIFT_FAST_MODEL", str(files["lcm-lora"].parent))
    result = CliRunner().invoke(app, ["weights"])
    assert result.exit_code == 0, result.output
    fast = result.output[result.output.index("\nfast\n") :]
    assert f"weights  {files['lcm-lora']}: LCM-LoRA LoRA (https://huggingface.co/latent-consistency/" in fast
    assert "runs     LCMScheduler, 4 steps, guidance 1" in fast
    get_settings.cache_clear()
    assert f"fast mode: LCM-LoRA lora {files['lcm-lora']}" in check_weights_or_fail()

    cut = tmp_path / "sdxl_lightning_4step_lora.safetensors"
    cut.write_bytes(files["lightning-lora"].read_bytes()[:1000])
    monkeypatch.delenv("MOODSHIFT_FAST_MODEL")
    get_settings.cache_clear()
    result = CliRunner().invoke(app, ["weights"])
    assert result.exit_code == 1 and f"{cut} is truncated or not a safetensors file" in result.output
    assert "mode fast is refused with this reason; quality edits as ever" in result.output
    lines = check_weights_or_fail()  # the service still starts: quality does not need the file
    assert any(line.startswith(f"fast mode: off ({cut} is truncated") for line in lines)


# --- the entrance: mode checked where the edit enters, before any model runs ----------------------------------------


class StubDiffusion:
    """A diffusion stage that only answers `info()` (counting the questions): what the entrance asks."""

    def __init__(self, fast: dict) -> None:
        self.fast, self.asked = fast, 0

    def info(self) -> dict:
        self.asked += 1
        return {"working_pixels": 128 * 128, "fast": self.fast}


def test_the_entrance_fills_in_the_few_step_models_defaults_or_names_the_file_to_add(coffee):
    from serving.core.errors import InputError
    from serving.models.fast_models import unavailable
    from serving.models.ollama_stage import PromptStage
    from serving.pipeline import Pipeline

    settings = Settings(ollama_enabled=False)
    subject = np.zeros(coffee.shape[:2], dtype=bool)
    subject[100:300, 200:400] = True
    missing = "no few-step weights at checkpoints/sdxl_lightning_4step_lora.safetensors: put SDXL-Lightning's ..."
    stage = StubDiffusion(unavailable(missing))
    pipeline = Pipeline(None, stage, PromptStage(settings), settings)

    def prepare(**options):
        return pipeline.prepare_edit(coffee, subject_mask=subject, prompt="a galaxy", options=options)

    assert prepare().options.mode == "quality" and stage.asked == 0  # quality asks the stage nothing
    with pytest.raises(InputError, match="guidance 99 must be a number from 0 to 30"):
        prepare(mode="fast", guidance=99)
    assert stage.asked == 0  # a typo is named before the stage is asked
    with pytest.raises(InputError, match=f"mode fast is not available: {missing}"):
        prepare(mode="fast")
    with pytest.raises(InputError, match="mode 'turbo' must be one of quality, fast"):
        prepare(mode="turbo")

    stage.fast = {"available": True, "family": "SDXL-Lightning", "steps": 4, "guidance": 0.0, "max_steps": None}
    pipeline = Pipeline(None, stage, PromptStage(settings), settings)
    fast = prepare(mode="fast")
    assert (fast.options.steps, fast.options.guidance, fast.total_steps) == (4, 0.0, 4)
    assert prepare(mode="fast", steps=8, strength=0.5).total_steps == 4  # what the caller sets wins


def test_fast_edits_over_http_report_their_mode_and_leave_quality_bit_identical(gateway, coffee):
    from serving.core.images import encode_png_base64
    from serving.core.masks import mask_to_png_bytes

    info = gateway.get("/info").json()
    assert info["fast"]["available"] and info["fast"]["family"] == "SDXL-Lightning" and info["fast"]["steps"] == 4
    assert "fast" not in info["stages"]["diffusion"]
    assert {row["name"]: row for row in info["options"]}["mode"]["choices"] == ["quality", "fast"]
    subject = np.zeros(coffee.shape[:2], dtype=bool)
    subject[120:300, 200:420] = True
    body = {
        "image": encode_png_base64(coffee),
        "mask": base64.b64encode(mask_to_png_bytes(subject)).decode(),
        "prompt": "dunes",
        "seed": 5,
        "edge": "hard",
    }
    quality = gateway.post("/edit", json=body).json()
    fast = gateway.post("/edit", json={**body, "mode": "fast"}).json()
    again = gateway.post("/edit", json=body).json()
    assert (quality["mode"], quality["steps"]) == ("quality", 2)  # the gateway's MOODSHIFT_DEFAULT_STEPS
    assert (fast["mode"], fast["steps"], fast["guidance"]) == ("fast", 4, 0.0)
    assert again["images"] == quality["images"] and fast["images"] != quality["images"]
    job = gateway.post("/edit_submit", json={**body, "mode": "fast"}).json()
    assert job["total_steps"] == 4
    response = gateway.post("/edit", json={**body, "mode": "fast", "steps": 151})
    assert response.status_code == 400 and "steps 151" in response.json()["error"]


def test_the_cli_takes_mode_fast_and_says_what_to_put_where_without_weights(files, coffee_file, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from serving.cli import app
    from serving.settings import get_settings

    mask = tmp_path / "mask.png"
    subject = np.zeros((400, 600), dtype=np.uint8)
    subject[100:300, 200:400] = 255
    Image.fromarray(subject).save(mask)
    monkeypatch.setenv("MOODSHIFT_DIFFUSION_PROFILE", "real")
    monkeypatch.setenv("MOODSHIFT_SAM_PROFILE", "tiny")
    monkeypatch.setenv("MOODSHIFT_SDXL_MODEL", str(files["sdxl"]))
    monkeypatch.setenv("MOODSHIFT_CHECKPOINTS_DIR", str(tmp_path))
    monkeypatch.setenv("MOODSHIFT_WORKING_PIXELS", str(128 * 128))
    arguments = ["edit", str(coffee_file), "--mask", str(mask), "--prompt", "dunes", "-o", str(tmp_path / "out.png")]
    result = CliRunner().invoke(app, [*arguments, "--mode", "fast", "--edge", "hard"])
    assert result.exit_code == 2, result.output
    assert (
        f"mode fast is not available: no few-step weights at {tmp_path / 'sdxl_lightning_4step_lora.safetensors'}"
        in (result.output)
    )
    monkeypatch.setenv("MOODSHIFT_FAST_MODEL", str(files["lightning-unet"]))
    get_settings.cache_clear()
    result = CliRunner().invoke(app, [*arguments, "--mode", "fast", "--edge", "hard", "--seed", "1"])
    assert result.exit_code == 0, result.output
    assert "fast mode (sdxl_lightning_4step_unet.safetensors), 4 steps, guidance 0" in result.stdout
    assert (tmp_path / "out.png").is_file()


def test_sequential_offload_turns_fast_mode_off_with_the_reason():
    from serving.models.fast_models import load_fast_weights

    fast, reason = load_fast_weights(Settings(), build_tiny_sdxl(seed=0), "tiny", "sequential")
    assert fast is None and "MOODSHIFT_OFFLOAD=sequential" in reason and "use MOODSHIFT_OFFLOAD=model or none" in reason
