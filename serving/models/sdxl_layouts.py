"""Where SDXL's weights are and whether they load, decided from the files alone (no weights read, no network).

The layouts users have: a diffusers folder in full precision or as the fp16-variant snapshot (`*.fp16.safetensors`,
what `weights --download` fetches), a repo id found in the local Hugging Face cache (a snapshot folder), a single
original-format `.safetensors` file; optionally an fp16-safe VAE folder. `find_sdxl` names the layout, the variant
to load and, when it cannot load, the one problem to tell the user. The loader, the `auto` profile, `serve` and
`weights` all ask it, so none of them picks a layout the loader then fails on.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from serving.models.sdxl_builders import SDXL_PIPELINE_INDEX, SDXL_REPO_ID, SDXL_VAE_FP16_REPO_ID
from serving.models.weight_files import file_problem, safetensors_shapes

DIFFUSERS_FOLDER, HUB_CACHE, SINGLE_FILE = "diffusers folder", "hub cache", "single file"
USABLE_VARIANTS = (None, "fp16")  # plain (full precision) and the fp16 variant, as SDXL base publishes them
# Weight file names of one model component, as diffusers and transformers save them: a whole file or an index of
# shards, plain or with a variant (`unet/diffusion_pytorch_model.fp16.safetensors`, `model.safetensors.index.json`).
_STEM = r"(?:diffusion_pytorch_model|model|pytorch_model)"
_WEIGHTS = re.compile(_STEM + r"(?:\.(?P<variant>[a-z0-9_]+))?\.(safetensors|bin)")
_INDEX = re.compile(_STEM + r"\.(safetensors|bin)\.index(?:\.(?P<variant>[a-z0-9_]+))?\.json")
_REPO_ID = re.compile(r"[\w.-]+/[\w.-]+")
# The same files as `download_patterns()` in three globs (plus a few small extras), for a command a person types.
MANUAL_SDXL_DOWNLOAD = f"hf download {SDXL_REPO_ID} --include '*.json' --include '*.txt' --include '*.fp16.safetensors'"


@dataclass(frozen=True)
class SdxlWeights:
    """What `find_sdxl` found. `problem` is None when it loads; else the message for the user (file and fix).

    files: per component, the weight files that will load (a single file: `{"checkpoint": (file,)}`)."""

    setting: str
    path: Path
    layout: str | None
    variant: str | None = None
    problem: str | None = None
    files: dict[str, tuple[Path, ...]] = field(default_factory=dict)
    vae: Path | None = None  # an fp16-safe VAE folder loaded instead of the model's own
    vae_variant: str | None = None

    @property
    def size_bytes(self) -> int:
        return sum(file.stat().st_size for files in self.files.values() for file in files if file.is_file())

    @property
    def label(self) -> str:
        """What `auto` says it found: "SDXL checkpoints/sdxl-base (diffusers folder, fp16 variant)"."""
        return f"SDXL {self.setting} ({self.summary})"

    @property
    def summary(self) -> str:
        """Layout and variant in words: "diffusers folder, fp16 variant", "single file", "not found"."""
        if self.layout is None:
            return "not found"
        if self.layout == SINGLE_FILE:
            return self.layout
        return f"{self.layout}, {'fp16 variant' if self.variant == 'fp16' else 'full precision'}"


def how_to_get_sdxl(destination: Path | None) -> str:
    """The fix for missing or broken SDXL weights; `destination` None: the copy in the Hugging Face cache."""
    manual = f"{MANUAL_SDXL_DOWNLOAD} --local-dir {destination}" if destination else MANUAL_SDXL_DOWNLOAD
    return (
        f"Get {SDXL_REPO_ID} (https://huggingface.co/{SDXL_REPO_ID}) with `python -m serving weights --download`, "
        f"or `{manual}`, or set MOODSHIFT_SDXL_MODEL to a diffusers folder, a single .safetensors file or a repo id "
        f"in the local Hugging Face cache."
    )


def download_patterns(variant: str | None = "fp16") -> list[str]:
    """The files of an SDXL repo that make a folder `find_sdxl` accepts (the `allow_patterns` of the download):
    configs, tokenizers, and each model component's weights in `variant` only."""
    patterns = ["model_index.json"]
    suffix = f".{variant}.safetensors" if variant else ".safetensors"
    for name, (library, class_name) in _components(SDXL_PIPELINE_INDEX).items():
        kind = _kind(class_name)
        if kind == "model":
            stem = "model" if library == "transformers" else "diffusion_pytorch_model"
            patterns += [f"{name}/config.json", f"{name}/{stem}{suffix}"]
        elif kind == "tokenizer":
            patterns.append(f"{name}/*")
        else:
            patterns.append(f"{name}/scheduler_config.json")
    return patterns


def vae_download_patterns() -> list[str]:
    """The files of the fp16-fix VAE repo that make a VAE folder (config and full-precision safetensors)."""
    return ["config.json", "diffusion_pytorch_model.safetensors"]


def find_sdxl(
    model: str | Path, *, vae: Path | None = None, vae_required: bool = False, prefer_fp16: bool = False
) -> SdxlWeights:
    """Inspect `model` and the VAE folder. `model`: a folder or a `.safetensors` file; a `str` that is neither may
    be a repo id in the local Hugging Face cache (a `Path` is never looked up there).

    prefer_fp16: load the fp16 variant when both variants are complete (half the bytes to read for a float16 run).
    vae_required: the VAE folder was named explicitly, so its absence is a problem rather than "not used"."""
    setting = str(model)
    path = Path(model)
    if path.is_file():
        found = _single_file(setting, path, vae)
    elif path.is_dir():
        found = _folder(setting, path, DIFFUSERS_FOLDER, prefer_fp16)
    elif isinstance(model, str) and is_repo_id(model) and (snapshot := hub_cache_snapshot(model)) is not None:
        found = _folder(setting, snapshot, HUB_CACHE, prefer_fp16)
    else:
        in_cache = isinstance(model, str) and is_repo_id(model)
        cache = f", and no {setting} in the local Hugging Face cache" if in_cache else ""
        fix = how_to_get_sdxl(None if in_cache else path)
        problem = f"SDXL model not found at {path} (no such folder or file{cache}). {fix}"
        return SdxlWeights(setting, path, None, problem=problem)
    if found.problem or vae is None or (not vae.is_dir() and not vae_required):
        return found
    vae_variants, problem = _model_component(vae)
    if problem:
        problem = (
            f"{problem} (the SDXL VAE folder named by MOODSHIFT_SDXL_VAE). Get {SDXL_VAE_FP16_REPO_ID} with "
            f"`python -m serving weights --download`, or unset MOODSHIFT_SDXL_VAE to use the model's own VAE."
        )
        return SdxlWeights(found.setting, found.path, found.layout, found.variant, problem, found.files)
    vae_variant = None if None in vae_variants else "fp16"
    files = {**found.files, "vae": _files(vae, vae_variant)}
    return SdxlWeights(found.setting, found.path, found.layout, found.variant, None, files, vae, vae_variant)


def is_repo_id(setting: str) -> bool:
    """`org/name` that is no local path: a Hugging Face repo id."""
    return bool(_REPO_ID.fullmatch(setting)) and not Path(setting).exists()


def hub_cache_snapshot(repo_id: str) -> Path | None:
    """The snapshot folder of `repo_id`'s main revision in the local Hugging Face cache (HF_HUB_CACHE / HF_HOME),
    found without the network; None when the cache does not hold it."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except (LocalEntryNotFoundError, ValueError, OSError):  # not cached, or not a valid repo id after all
        return None


# --- the layouts -------------------------------------------------------------------------------------------------


def _single_file(setting: str, path: Path, vae: Path | None) -> SdxlWeights:
    from serving.models.sdxl_single_file import single_file_problem

    if path.suffix != ".safetensors":
        problem = (
            f"{path} is not a .safetensors file. SDXL single files load from .safetensors only (a .ckpt runs code "
            f"when loaded): download the model's .safetensors file and set MOODSHIFT_SDXL_MODEL to it."
        )
        return SdxlWeights(setting, path, SINGLE_FILE, problem=problem)
    problem = file_problem(path)
    if problem is None:
        problem = single_file_problem(path, safetensors_shapes(path), vae)
    else:
        problem = f"{problem}. Download it again (compare its size with the source's)."
    return SdxlWeights(setting, path, SINGLE_FILE, problem=problem, files={"checkpoint": (path,)})


def _folder(setting: str, folder: Path, layout: str, prefer_fp16: bool) -> SdxlWeights:
    fix = how_to_get_sdxl(folder if layout == DIFFUSERS_FOLDER else None)

    def broken(problem: str) -> SdxlWeights:
        return SdxlWeights(setting, folder, layout, problem=f"{problem}. {fix}")

    index_path = folder / "model_index.json"
    try:
        components = _components(json.loads(index_path.read_text()))
    except FileNotFoundError:
        return broken(f"{folder} is not a diffusers folder: it has no model_index.json")
    except (ValueError, AttributeError, TypeError):
        return broken(f"{index_path} is not a valid model_index.json")
    missing = [name for name in _components(SDXL_PIPELINE_INDEX) if name not in components]
    if missing:
        return broken(f"{folder} is not an SDXL base pipeline: model_index.json lists no {', '.join(missing)}")
    variants: dict[str, set[str | None]] = {}
    for name, (library, class_name) in components.items():
        kind = _kind(class_name)
        if kind == "model":
            variants[name], problem = _model_component(folder / name, library)
        else:
            problem = _config_problem(folder / name, kind)
        if problem:
            return broken(f"{folder} is incomplete: {problem}")
    # fp16 when some component has only fp16 weights: diffusers then falls back to the plain files of the others.
    full = all(None in found for found in variants.values())
    half = all("fp16" in found for found in variants.values())
    variant = None if full and not (prefer_fp16 and half) else "fp16"
    files = {name: _files(folder / name, variant if variant in found else None) for name, found in variants.items()}
    for component_files in files.values():
        for file in component_files:
            if problem := file_problem(file):
                return broken(f"{problem}: download it again")
    return SdxlWeights(setting, folder, layout, variant, None, files)


def _components(index: dict) -> dict[str, tuple[str, str]]:
    """model_index.json's components that exist: name -> (library, class)."""
    return {
        name: (value[0], value[1])
        for name, value in index.items()
        if not name.startswith("_") and isinstance(value, list) and len(value) == 2 and value[0] and value[1]
    }


def _kind(class_name: str) -> str:
    if class_name.endswith(("Tokenizer", "TokenizerFast")):
        return "tokenizer"
    return "scheduler" if "Scheduler" in class_name else "model"


def _config_problem(folder: Path, kind: str) -> str | None:
    if kind == "scheduler":
        return None if (folder / "scheduler_config.json").is_file() else f"{folder}/scheduler_config.json is missing"
    if (folder / "tokenizer.json").is_file() or all((folder / name).is_file() for name in ("vocab.json", "merges.txt")):
        return None
    return f"{folder} has no tokenizer files (vocab.json and merges.txt, or tokenizer.json)"


def _model_component(folder: Path, library: str = "diffusers") -> tuple[set[str | None], str | None]:
    """(variants whose weights are all there, problem) of one model component folder."""
    if not (folder / "config.json").is_file():
        return set(), f"{folder}/config.json is missing"
    found = {variant for variant in USABLE_VARIANTS if _files(folder, variant)}
    if not found:
        stem = folder / ("model" if library == "transformers" else "diffusion_pytorch_model")
        return found, f"{stem}.safetensors (or its fp16 variant {stem.name}.fp16.safetensors) is missing"
    return found, None


def _files(folder: Path, variant: str | None) -> tuple[Path, ...]:
    """The weight files of one component in `variant`: one file, or the shards an index names (safetensors first)."""
    if not folder.is_dir():
        return ()
    for file in sorted(folder.iterdir(), key=lambda file: ".safetensors" not in file.name):
        match = _WEIGHTS.fullmatch(file.name)
        if match and match["variant"] == variant:
            return (file,)
        match = _INDEX.fullmatch(file.name)
        if match and match["variant"] == variant:
            try:
                shards = sorted(set(json.loads(file.read_text())["weight_map"].values()))
            except (ValueError, KeyError, AttributeError):
                continue
            return tuple(folder / shard for shard in shards)
    return ()


# --- sizes, for the memory plan of `weights` (no weights loaded) --------------------------------------------------


def component_parameters(weights: SdxlWeights) -> dict[str, int]:
    """Parameters of each model (unet, vae, text_encoder, text_encoder_2), counted from the safetensors headers;
    a `.bin` file is estimated from its size."""
    from serving.models.sdxl_single_file import COMPONENT_PREFIXES

    counts: dict[str, int] = {}
    for name, files in weights.files.items():
        for file in files:
            if file.suffix != ".safetensors":
                counts[name] = counts.get(name, 0) + file.stat().st_size // (2 if weights.variant == "fp16" else 4)
                continue
            for key, shape in safetensors_shapes(file).items():
                component = name
                if name == "checkpoint":  # one file holds all: its key prefixes say which model a tensor is
                    component = next((c for prefix, c in COMPONENT_PREFIXES.items() if key.startswith(prefix)), "")
                    if not component or (component == "vae" and "vae" in weights.files):
                        continue
                counts[component] = counts.get(component, 0) + math.prod(shape)
    return counts


def vae_force_upcast(weights: SdxlWeights) -> bool:
    """Whether the VAE that will run asks for float32 under float16 (SDXL's own does; the fp16-fix does not)."""
    config = weights.vae / "config.json" if weights.vae else weights.path / "vae" / "config.json"
    if weights.layout == SINGLE_FILE and not weights.vae:
        return True  # the single-file loader gives the file's VAE SDXL's config
    try:
        return bool(json.loads(config.read_text()).get("force_upcast", True))
    except (OSError, ValueError):
        return True
