"""Few-step SDXL models for `mode=fast`: the files they are published as, the scheduler each needs, and how their
weights go into the UNet and out again.

The scheduler table (`FAMILIES`), from the model cards, keyed by the family read from the file's name (or
MOODSHIFT_FAST_FAMILY when the name does not say it). Each scheduler is built `from_config` of the SDXL model's own
scheduler config with the card's overrides, as the cards do; the step count comes from the name:

- SDXL-Lightning (huggingface.co/ByteDance/SDXL-Lightning): `sdxl_lightning_{2,4,8}step_lora.safetensors` and
  `..._unet.safetensors`: EulerDiscreteScheduler with `timestep_spacing="trailing"`, guidance 0;
  `sdxl_lightning_1step_unet_x0.safetensors` also `prediction_type="sample"`.
- Hyper-SD (huggingface.co/ByteDance/Hyper-SD): `Hyper-SDXL-{2,4,8}steps-lora.safetensors`: DDIMScheduler with
  `timestep_spacing="trailing"`, guidance 0; `Hyper-SDXL-{8,12}steps-CFG-lora.safetensors` the same with guidance 5
  (the card: 5 to 8); `Hyper-SDXL-1step-lora.safetensors`: TCDScheduler, eta 1.0.
- LCM-LoRA (huggingface.co/latent-consistency/lcm-lora-sdxl): `pytorch_lora_weights.safetensors` in a folder named
  `lcm-lora-sdxl` (any name with "lcm"): LCMScheduler, 4 steps (the card: 2 to 8; LCM refuses more than 50),
  guidance 1 (the card: off, or 1 to 2).

A LoRA goes in through diffusers' `load_lora_weights` (kohya-style and diffusers/peft-style keys both load) and is
fused into the UNet while fast mode runs; a full few-step UNet (a diffusers UNet state dict) is copied into the
UNet's own parameters. Either way the quality weights are kept on the CPU and copied back when the mode switches
back: unfusing subtracts the LoRA again, which is not exact in floating point, and quality edits must stay bit for
bit what they were. Switching happens only between UNet batches, under the runner's lock.

Not checked offline (no hub access): the published files themselves. The tests mirror their formats (key styles,
file names, a diffusers UNet state dict in float16) with tiny random weights; the exact key names inside the
published LoRAs could not be compared.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from serving.models.errors import WeightsError
from serving.models.weight_files import file_problem, safetensors_shapes

if TYPE_CHECKING:
    import torch
    from diffusers import StableDiffusionXLPipeline

    from serving.settings import Settings

ADAPTER = "fast"  # the LoRA's adapter name in the pipeline
DEFAULT_FAST_FILE = "sdxl_lightning_4step_lora.safetensors"  # MOODSHIFT_FAST_MODEL's default, in checkpoints/
DEFAULT_FAST_URL = f"https://huggingface.co/ByteDance/SDXL-Lightning/resolve/main/{DEFAULT_FAST_FILE}"
LORA_FOLDER_FILE = "pytorch_lora_weights.safetensors"  # what a diffusers LoRA folder (lcm-lora-sdxl) holds
# The layers LCM-LoRA SDXL was trained on (diffusers' train_lcm_distill_lora_sdxl.py), the stand-in LoRA's too.
LORA_TARGETS = (
    "to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2", "conv1", "conv2",
    "conv_shortcut", "downsamplers.0.conv", "upsamplers.0.conv", "time_emb_proj",
)  # fmt: skip


@dataclass(frozen=True)
class FastFamily:
    """A few-step model's settings from its model card: the scheduler class and the overrides of SDXL's scheduler
    config, the default steps and guidance, the most steps the scheduler can make, and `eta` for schedulers that
    take one."""

    name: str
    source: str
    scheduler: str
    scheduler_config: Mapping[str, Any]
    steps: int
    guidance: float
    max_steps: int | None = None
    eta: float = 0.0

    def describe(self) -> str:
        """ "EulerDiscreteScheduler (timestep_spacing=trailing)"."""
        overrides = ", ".join(f"{key}={value}" for key, value in self.scheduler_config.items())
        eta = f", eta={self.eta:g}" if self.eta else ""
        return f"{self.scheduler} ({overrides}{eta})" if overrides or eta else self.scheduler


FAMILIES: dict[str, FastFamily] = {
    "lightning": FastFamily(
        "SDXL-Lightning",
        "https://huggingface.co/ByteDance/SDXL-Lightning",
        "EulerDiscreteScheduler",
        {"timestep_spacing": "trailing"},
        steps=4,
        guidance=0.0,
    ),
    "hyper-sd": FastFamily(
        "Hyper-SD",
        "https://huggingface.co/ByteDance/Hyper-SD",
        "DDIMScheduler",
        {"timestep_spacing": "trailing"},
        steps=4,
        guidance=0.0,
    ),
    "lcm": FastFamily(
        "LCM-LoRA",
        "https://huggingface.co/latent-consistency/lcm-lora-sdxl",
        "LCMScheduler",
        {},
        steps=4,
        guidance=1.0,
        max_steps=50,  # LCM's original_inference_steps: it refuses more
    ),
}
# Published names: the step count is in them, and the 1-step and CFG variants change the card's settings.
_LIGHTNING_NAME = re.compile(r"sdxl_lightning_(?P<steps>\d+)step_(?:lora|unet)(?P<x0>_x0)?\.safetensors", re.I)
_HYPER_NAME = re.compile(r"hyper-sdxl-(?P<steps>\d+)steps?(?P<cfg>-cfg)?-lora\.safetensors", re.I)
_HYPER_UNET_NAME = re.compile(r"hyper-sdxl-1step-unet.*\.safetensors", re.I)
_LORA_DOWN = re.compile(r"(lora_down|lora_A|lora\.down)(\.[\w-]+)?\.weight$")  # one key per layer of a LoRA


def family_of(path: Path, family: str | None = None) -> FastFamily | None:
    """The settings for a few-step file: from its name (with the steps it was distilled for), or the family named
    by `family` (MOODSHIFT_FAST_FAMILY) with that family's defaults; None when neither says."""
    name = path.name
    if match := _LIGHTNING_NAME.fullmatch(name):
        lightning = FAMILIES["lightning"]
        config = dict(lightning.scheduler_config)
        if match["x0"]:  # the 1-step UNet predicts the clean sample, not the noise
            config["prediction_type"] = "sample"
        return dataclasses.replace(lightning, steps=int(match["steps"]), scheduler_config=config)
    if match := _HYPER_NAME.fullmatch(name):
        steps, hyper = int(match["steps"]), FAMILIES["hyper-sd"]
        if steps == 1:  # the card's 1-step unified LoRA: TCD, eta 1.0 (lower eta for more steps)
            tcd = {"scheduler": "TCDScheduler", "scheduler_config": {}, "max_steps": 50, "eta": 1.0}
            return dataclasses.replace(hyper, steps=1, **tcd)
        return dataclasses.replace(hyper, steps=steps, guidance=5.0 if match["cfg"] else hyper.guidance)
    if family is not None:
        return FAMILIES[family]
    if any("lcm" in part.lower() for part in (path.parent.name, name)):
        return FAMILIES["lcm"]
    return None


@dataclass(frozen=True)
class FastModelFile:
    """What `find_fast_model` found: the file, its kind (`lora` or `unet`) and the family's settings; or `problem`,
    the message that says what to put where."""

    path: Path
    kind: str | None = None
    family: FastFamily | None = None
    problem: str | None = None

    @property
    def exists(self) -> bool:
        return self.path.is_file()


def how_to_get_fast() -> str:
    """Where few-step weights come from, for a message that already names the file's place."""
    return (
        f"put SDXL-Lightning's 4-step LoRA there ({DEFAULT_FAST_URL}; `python -m serving weights --download` fetches "
        f"it), or set MOODSHIFT_FAST_MODEL to another few-step LoRA or UNet file (checkpoints/README.md lists them)"
    )


def fast_model_path(settings: Settings) -> Path:
    """MOODSHIFT_FAST_MODEL, or checkpoints/sdxl_lightning_4step_lora.safetensors; a folder means the LoRA in it."""
    path = settings.fast_model or settings.checkpoints_dir / DEFAULT_FAST_FILE
    return path / LORA_FOLDER_FILE if path.is_dir() else path


def find_fast_model(settings: Settings) -> FastModelFile:
    """Inspect the few-step file the settings name, from its name and header alone (no weights read)."""
    path = fast_model_path(settings)
    if not path.is_file():
        return FastModelFile(path, problem=f"no few-step weights at {path}: {how_to_get_fast()}")
    if path.suffix != ".safetensors":
        problem = (
            f"{path} is not a .safetensors file: few-step weights load from .safetensors only (a .ckpt or .bin "
            f"runs code when loaded)"
        )
        return FastModelFile(path, problem=problem)
    if problem := file_problem(path):
        return FastModelFile(path, problem=f"{problem}. Download it again.")
    kind, problem = _kind_of(path, safetensors_shapes(path))
    if problem:
        return FastModelFile(path, problem=problem)
    if _HYPER_UNET_NAME.fullmatch(path.name):
        problem = (
            f"{path.name} runs with LCMScheduler at the one timestep 800, which fast mode does not do: use "
            f"Hyper-SDXL-1step-lora.safetensors or an N-step Hyper-SD LoRA"
        )
        return FastModelFile(path, problem=problem)
    family = family_of(path, settings.fast_family)
    if family is None:
        problem = (
            f"cannot tell which few-step model {path.name} is from its name: set MOODSHIFT_FAST_FAMILY to one of "
            f"{', '.join(FAMILIES)} (its scheduler and steps then follow that family's model card)"
        )
        return FastModelFile(path, problem=problem)
    return FastModelFile(path, kind, family)


def _kind_of(path: Path, shapes: Mapping[str, tuple[int, ...]]) -> tuple[str | None, str | None]:
    """`lora` (any key of a LoRA: lora_down/lora_up, lora_A/lora_B) or `unet` (a diffusers UNet state dict)."""
    if shapes and all("lora" in key for key in shapes):
        return "lora", None
    if "conv_in.weight" in shapes and any(key.startswith("down_blocks.") for key in shapes):
        return "unet", None
    if any(key.startswith("model.diffusion_model.") for key in shapes):
        return None, (
            f"{path} is a whole SDXL checkpoint (all-in-one, original format), not a LoRA or a UNet: use the "
            f"family's _lora or _unet file here, or set MOODSHIFT_SDXL_MODEL to this file"
        )
    return None, f"{path} is neither a LoRA nor a diffusers UNet state dict"


def fast_gpu_bytes(found: FastModelFile, dtype: torch.dtype) -> int:
    """What the few-step model adds to the device's memory: a LoRA's weights (a full UNet's stay on the CPU)."""
    import math

    if found.problem or found.kind != "lora":
        return 0
    return sum(math.prod(shape) for shape in safetensors_shapes(found.path).values()) * dtype.itemsize


# --- in and out of the UNet -------------------------------------------------------------------------------------


class FastWeights:
    """A few-step model attached to a pipeline. `use(mode)` puts the pipeline's weights in that mode's state (call
    it where no model runs: the runner does, under its lock, between UNet batches); `scheduler(config)` is the
    scheduler fast mode runs with. `name` says what it is (a file name, or the stand-in)."""

    def __init__(
        self, pipe: StableDiffusionXLPipeline, family: FastFamily, kind: str, state: dict[str, torch.Tensor], name: str
    ) -> None:
        self.pipe, self.family, self.kind, self.name = pipe, family, kind, name
        self.mode = "quality"
        self._quality: dict[str, torch.Tensor] | None = None  # taken at the first switch, once the dtype is final
        self._fast_unet: dict[str, torch.Tensor] = {}
        self._components: list[str] = []
        if kind == "lora":
            self._attach_lora(state)
        else:
            self._fast_unet = _fitting_unet_state(pipe, state, name)
        self.switches = 0

    @classmethod
    def from_file(cls, pipe: StableDiffusionXLPipeline, found: FastModelFile) -> FastWeights:
        """The file `find_fast_model` found (without a problem), attached to `pipe`. `WeightsError` naming the file
        when it does not fit this SDXL."""
        from safetensors.torch import load_file

        assert found.problem is None and found.kind and found.family, found.problem
        try:
            return cls(pipe, found.family, found.kind, load_file(found.path), found.path.name)
        except WeightsError:
            raise
        except Exception as exc:  # diffusers/peft raise many kinds for a LoRA of another model
            raise WeightsError(
                f"{found.path} could not be attached to this SDXL ({type(exc).__name__}: {str(exc)[:300]}): it is "
                f"a few-step file for another model. {how_to_get_fast()}"
            ) from None

    @classmethod
    def stand_in(cls, pipe: StableDiffusionXLPipeline, seed: int = 0, rank: int = 4) -> FastWeights:
        """For the tiny and random-full profiles: a seeded random LoRA in SDXL-Lightning's file format (kohya keys)
        with SDXL-Lightning's 4-step settings, so fast mode runs (and costs) what the real one does."""
        state = stand_in_lora(pipe.unet, seed, rank)
        return cls(pipe, FAMILIES["lightning"], "lora", state, STAND_IN_NAME)

    def scheduler(self, base_config: Mapping[str, Any]) -> Any:
        """A new scheduler of the family's class from the SDXL model's scheduler config and the card's overrides."""
        import diffusers

        return getattr(diffusers, self.family.scheduler).from_config(base_config, **self.family.scheduler_config)

    def use(self, mode: str) -> None:
        """Put the weights in `mode`'s state (nothing to do when they are in it)."""
        import torch

        if mode == self.mode:
            return
        with torch.no_grad():
            if mode == "fast":
                self._to_fast()
            else:
                self._to_quality()
        self.mode = mode
        self.switches += 1

    def describe(self) -> dict[str, Any]:
        """The few-step model as `GET /info`'s `fast` reports it."""
        return describe_fast(self.family, self.kind, self.name)

    # --- LoRA: diffusers' load_lora_weights, fused while fast -------------------------------------------------

    def _attach_lora(self, state: dict[str, torch.Tensor]) -> None:
        from diffusers.utils import logging as diffusers_logging
        from peft.tuners.tuners_utils import BaseTunerLayer

        verbosity = diffusers_logging.get_verbosity()
        diffusers_logging.set_verbosity_error()  # few-step LoRAs are UNet-only: no warning for each text encoder
        try:
            self.pipe.load_lora_weights(state, adapter_name=ADAPTER)
            self.pipe.disable_lora()  # quality until asked: the base layers alone, as before the LoRA
            self._components = [
                name
                for name in ("unet", "text_encoder", "text_encoder_2")
                if any(isinstance(module, BaseTunerLayer) for module in getattr(self.pipe, name).modules())
            ]
            # diffusers skips layers it cannot place without a word: half a LoRA would quietly give other images.
            placed, layers = len(self._lora_layers()), sum(bool(_LORA_DOWN.search(key)) for key in state)
            if placed != layers:
                raise WeightsError(
                    f"only {placed} of the {layers} layers of {self.name} found their place in this SDXL: it is a "
                    f"LoRA of another model, or its keys mix formats that diffusers reads apart"
                )
        except Exception:
            self.pipe.unload_lora_weights()  # the pipeline as it was: quality edits do not notice
            raise
        finally:
            diffusers_logging.set_verbosity(verbosity)

    def _lora_layers(self) -> dict[str, torch.nn.Module]:
        from peft.tuners.tuners_utils import BaseTunerLayer

        return {
            f"{component}.{name}": module.get_base_layer()
            for component in self._components
            for name, module in getattr(self.pipe, component).named_modules()
            if isinstance(module, BaseTunerLayer)
        }

    def _to_fast(self) -> None:
        if self.kind == "unet":
            self._keep_quality(self.pipe.unet.state_dict())
            self.pipe.unet.load_state_dict(self._fast_unet)
            return
        self._keep_quality({name: layer.weight for name, layer in self._lora_layers().items()})
        self.pipe.enable_lora()  # a merged adapter that is disabled would unmerge itself in the next forward
        self.pipe.fuse_lora(components=self._components, adapter_names=[ADAPTER])

    def _to_quality(self) -> None:
        assert self._quality is not None
        if self.kind == "unet":
            self.pipe.unet.load_state_dict(self._quality)
            return
        self.pipe.unfuse_lora(components=self._components)
        for name, layer in self._lora_layers().items():  # unfusing is not exact: the kept weights are
            layer.weight.copy_(self._quality[name])
        self.pipe.disable_lora()

    def _keep_quality(self, tensors: Mapping[str, torch.Tensor]) -> None:
        if self._quality is None:
            self._quality = {name: tensor.detach().to("cpu", copy=True) for name, tensor in tensors.items()}


def _fitting_unet_state(
    pipe: StableDiffusionXLPipeline, state: dict[str, torch.Tensor], name: str
) -> dict[str, torch.Tensor]:
    """A few-step UNet's state dict, checked to fit the pipeline's UNet key for key and shape for shape, in the
    UNet's dtype on the CPU."""
    own = pipe.unet.state_dict()
    missing, extra = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    wrong = [key for key in set(own) & set(state) if tuple(own[key].shape) != tuple(state[key].shape)]
    if missing or extra or wrong:
        example = (missing or extra or wrong)[0]
        raise WeightsError(
            f"{name} does not fit this SDXL's UNet ({len(missing)} keys missing, {len(extra)} extra, {len(wrong)} of "
            f"another shape, e.g. {example}): it is the UNet of another model"
        )
    return {key: tensor.to("cpu", own[key].dtype) for key, tensor in state.items()}


def stand_in_lora(unet: torch.nn.Module, seed: int, rank: int) -> dict[str, torch.Tensor]:
    """A seeded random LoRA of `rank` on `LORA_TARGETS` of `unet`, with kohya keys as SDXL-Lightning's and LCM-LoRA's
    files have them (`lora_unet_<module path with _>.lora_down.weight`, `.lora_up.weight`, `.alpha`)."""
    import torch

    generator = torch.Generator("cpu").manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for name, module in unet.named_modules():
        if not isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)) or not name.endswith(LORA_TARGETS):
            continue
        key = "lora_unet_" + name.replace(".", "_")
        weight = module.weight
        down_shape = (rank, *weight.shape[1:])
        up_shape = (weight.shape[0], rank, *([1] * (weight.ndim - 2)))
        fan_in = weight[0].numel()
        state[f"{key}.lora_down.weight"] = torch.randn(down_shape, generator=generator) / fan_in**0.5
        state[f"{key}.lora_up.weight"] = 0.02 * torch.randn(up_shape, generator=generator)
        state[f"{key}.alpha"] = torch.tensor(float(rank))
    return state


def load_fast_weights(
    settings: Settings, pipe: StableDiffusionXLPipeline, profile: str, offload: str
) -> tuple[FastWeights | None, str | None]:
    """The settings' few-step model attached to `pipe`, or None and why not (fast mode is then refused at the
    entrance with that reason). Real weights come from the file `find_fast_model` finds; the tiny and random-full
    profiles get the stand-in. A few-step file that does not load leaves quality mode as it was."""
    if offload == "sequential":
        return None, (
            "fast mode switches weights in the UNet, which MOODSHIFT_OFFLOAD=sequential keeps off the GPU layer by "
            "layer: use MOODSHIFT_OFFLOAD=model or none for fast mode"
        )
    if profile != "real":
        return FastWeights.stand_in(pipe, settings.seed, rank=64 if profile == "random-full" else 4), None
    found = find_fast_model(settings)
    if found.problem:
        return None, found.problem
    try:
        return FastWeights.from_file(pipe, found), None
    except WeightsError as exc:
        return None, str(exc)


STAND_IN_NAME = "random few-step stand-in (SDXL-Lightning settings)"


def describe_fast(family: FastFamily, kind: str, name: str) -> dict[str, Any]:
    """`GET /info`'s `fast` for a few-step model: what it is, where it comes from, how fast mode runs it."""
    return {
        "available": True,
        "model": name,
        "family": family.name,
        "kind": kind,
        "scheduler": family.describe(),
        "steps": family.steps,
        "guidance": family.guidance,
        "max_steps": family.max_steps,
        "source": family.source,
        "reason": None,
    }


def unavailable(reason: str) -> dict[str, Any]:
    """`GET /info`'s `fast` when there is no few-step model: the same keys, empty, and the reason."""
    empty = dict.fromkeys(("model", "family", "kind", "scheduler", "steps", "guidance", "max_steps", "source"))
    return {"available": False, **empty, "reason": reason}
