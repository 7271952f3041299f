"""What `python -m serving weights` reports and fetches.

For each stage (SAM, SDXL, the automatic subject's salient model): the weights the settings select, whether they
are complete and intact (sizes; the sha256 of SAM's official files and of U²-Netp), and what will run (profile,
layout, variant, dtype, device, offload mode) and why; offline, in seconds (headers are read, not weights).
`--download` fetches what is missing, exactly in the layouts the loaders load, where a network exists.
"""

from __future__ import annotations

import os
import re
import shutil
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from serving.models.errors import WeightsError
from serving.models.fast_models import DEFAULT_FAST_URL, FAMILIES, find_fast_model
from serving.models.memory import plan_offload, vae_dtype_for, with_fast_model
from serving.models.profiles import ResolvedProfile, resolve_device, resolve_dtype, resolve_profile
from serving.models.salient_weights import find_salient
from serving.models.sam_builders import find_sam, plan_sam
from serving.models.sdxl_builders import SDXL_REPO_ID, SDXL_VAE_FP16_REPO_ID, sdxl_weights
from serving.models.sdxl_layouts import (
    HUB_CACHE,
    SINGLE_FILE,
    component_parameters,
    download_patterns,
    hub_cache_snapshot,
    is_repo_id,
    vae_download_patterns,
    vae_force_upcast,
)
from serving.models.weight_files import sha256_hex
from serving.settings import SAM_CHECKPOINT_NAMES, Settings

if TYPE_CHECKING:
    import torch

DOWNLOAD_TIMEOUT_S = 15.0
_OFFICIAL_SAM = re.compile(r"sam_(vit_[hlb])_([0-9a-f]{6})\.pth")  # the hex is the start of the file's sha256


@dataclass(frozen=True)
class StageReport:
    """One stage's weights and what runs. facts: (label, text) lines in order. problem: why the selected weights
    cannot load (None when they load); broken: they are there but incomplete, damaged or of the wrong kind."""

    stage: str
    profile: ResolvedProfile
    facts: list[tuple[str, str]]
    problem: str | None
    broken: bool


@dataclass(frozen=True)
class Download:
    """One thing `--download` fetches: a file from a URL, or files of a hub repo (`patterns`) into `destination`
    (None: into the local Hugging Face cache, for a repo id setting)."""

    name: str
    source: str
    destination: Path | None
    patterns: list[str] | None = None
    sha256_prefix: str | None = None


def report_weights(settings: Settings, check_sha256: bool = True) -> list[StageReport]:
    """The segment and diffusion stages' reports, fast mode's few-step weights, then the automatic subject's
    (`salient`). check_sha256: hash the SAM file (about a second per GB; the 4.6 MB U²-Netp is always hashed)."""
    device = resolve_device(settings)
    dtype = resolve_dtype(settings, device)
    diffusion = _sdxl_report(settings, device, dtype)
    return [
        _sam_report(settings, device, dtype, check_sha256),
        diffusion,
        _fast_report(settings, diffusion.profile),
        _salient_report(settings),
    ]


def sam_sha256_note(path: Path, model_type: str) -> str:
    """The file's sha256 prefix against the official file of the type it holds."""
    digest = sha256_hex(path)[:12]
    official = SAM_CHECKPOINT_NAMES.get(model_type)
    if official is None:
        return f"{digest}… (SAM {model_type} has no official file to compare with)"
    expected = official_sha256_prefix(official)
    if digest.startswith(expected):
        return f"{digest}… matches the official {official}"
    return (
        f"{digest}… does not match the official {official} ({expected}…): a fine-tune, or a damaged download. "
        f"It loads; if segmentation looks wrong, delete it and run `python -m serving weights --download`."
    )


def official_sha256_prefix(name: str) -> str:
    return _OFFICIAL_SAM.fullmatch(name)[2]  # type: ignore[index]


def _sam_report(settings: Settings, device: torch.device, dtype: torch.dtype, check_sha256: bool) -> StageReport:
    import torch

    weights = find_sam(settings)
    resolved = resolve_profile(settings.stage_profile("sam"), weights.problem, weights.label)
    facts = []
    if weights.problem:
        facts.append(("weights", weights.problem))
    else:
        source = "read from the file" if weights.type_from_file else "MOODSHIFT_SAM_MODEL_TYPE"
        size = human_size(weights.size_bytes)
        facts.append(("weights", f"{weights.path}: SAM {weights.model_type} ({source}), {size}, intact"))
        if check_sha256:
            facts.append(("sha256", sam_sha256_note(weights.path, weights.model_type)))
    half = dtype in (torch.float16, torch.bfloat16)
    precision = f"image encoder {_name(dtype)} (autocast), decoder float32" if half else _name(dtype)
    facts.append(("runs", f"profile {resolved.profile}{_why(resolved, settings, 'sam')}; {device.type}, {precision}"))
    others = [name for name in SAM_CHECKPOINT_NAMES.values() if name != weights.path.name]
    present = [f"{name} ({'present' if (settings.checkpoints_dir / name).is_file() else 'missing'})" for name in others]
    facts.append(("others", f"in {settings.checkpoints_dir}: {', '.join(present)}"))
    return StageReport("segment", resolved, facts, weights.problem, weights.path.is_file() and bool(weights.problem))


def _sdxl_report(settings: Settings, device: torch.device, dtype: torch.dtype) -> StageReport:
    import torch

    weights = sdxl_weights(settings, prefer_fp16=dtype == torch.float16)
    resolved = resolve_profile(settings.stage_profile("diffusion"), weights.problem, weights.label)
    facts = []
    if weights.problem:
        facts.append(("weights", weights.problem))
    else:
        where = f"{weights.setting} -> {weights.path}" if weights.setting != str(weights.path) else str(weights.path)
        size = human_size(weights.size_bytes)
        facts.append(("weights", f"{where}: {weights.summary}, {size}, complete and intact"))
        vae_dtype = vae_dtype_for(dtype, vae_force_upcast(weights))
        if weights.vae:
            facts.append(("vae", f"{weights.vae}, runs in {_name(vae_dtype)}"))
        elif vae_dtype != dtype:
            why = f"SDXL's VAE overflows in float16; an fp16-safe VAE in {settings.sdxl_vae_path} would run in float16"
            facts.append(("vae", f"the model's own, runs in {_name(vae_dtype)} ({why})"))
        else:
            facts.append(("vae", f"the model's own, runs in {_name(vae_dtype)}"))
    runs = f"profile {resolved.profile}{_why(resolved, settings, 'diffusion')}; {device.type}, {_name(dtype)}"
    if resolved.profile == "real" and not weights.problem:
        model_bytes = {
            name: count * (vae_dtype if name == "vae" else dtype).itemsize
            for name, count in component_parameters(weights).items()
        }
        model_bytes = with_fast_model(settings, model_bytes, dtype)  # as the runner counts it
        plan = plan_offload(settings, device, dtype, model_bytes, settings.working_pixels)
        runs += f", offload {plan.offload} ({plan.reason})"
    elif device.type != "cuda":
        plan = plan_offload(settings, device, dtype, {})
        runs += f", offload {plan.offload} ({plan.reason})"
    else:
        runs += ", offload decided when the models load (GET /info says)"
    facts.append(("runs", runs))
    return StageReport(
        "diffusion", resolved, facts, weights.problem, weights.layout is not None and bool(weights.problem)
    )


def _fast_report(settings: Settings, diffusion: ResolvedProfile) -> StageReport:
    """The few-step weights of `mode=fast`: what the file is (family, kind), the scheduler, steps and guidance it
    runs with; or why fast mode is refused. Broken: a file is there but does not load."""
    if diffusion.profile != "real":
        lightning = FAMILIES["lightning"]
        stand_in = f"none needed: the {diffusion.profile} profile builds a random few-step stand-in LoRA"
        runs = f"{lightning.describe()}, {lightning.steps} steps, guidance {lightning.guidance:g} (SDXL-Lightning's)"
        return StageReport("fast", diffusion, [("weights", stand_in), ("runs", runs)], None, False)
    found = find_fast_model(settings)
    if found.problem:
        facts = [("weights", found.problem), ("runs", "mode fast is refused with this reason; quality edits as ever")]
        return StageReport("fast", diffusion, facts, found.problem, found.exists)
    family = found.family
    kind = "LoRA" if found.kind == "lora" else "UNet"
    facts = [
        ("weights", f"{found.path}: {family.name} {kind} ({family.source}), {human_size(found.path.stat().st_size)}"),
        ("runs", f"{family.describe()}, {family.steps} steps, guidance {family.guidance:g}"),
    ]
    return StageReport("fast", diffusion, facts, None, False)


def _salient_report(settings: Settings) -> StageReport:
    weights = find_salient(settings)
    facts = []
    if weights.problem:
        facts.append(("weights", weights.problem))
    else:
        if weights.embedded:
            source = "embedded, sha256 matches"
        elif settings.salient_model is not None:
            source = "MOODSHIFT_SALIENT_MODEL"
        else:
            source = f"found in {settings.checkpoints_dir}, used instead of the embedded U²-Netp"
        size = human_size(weights.path.stat().st_size)
        facts.append(("weights", f"{weights.path}: {weights.spec.name} ({weights.spec.about}), {size}, {source}"))
    clicks = "SAM" if not plan_sam(settings).profile.is_demo else "regions of its map (SAM has no real weights)"
    runs = f"{weights.spec.name} finds the subject without a click (onnxruntime); clicks refine it with {clicks}"
    facts.append(("runs", runs))
    broken = weights.path.is_file() and bool(weights.problem)
    return StageReport("salient", ResolvedProfile("real", f"found {weights.label}"), facts, weights.problem, broken)


def _why(resolved: ResolvedProfile, settings: Settings, stage: Literal["sam", "diffusion"]) -> str:
    if resolved.reason is None:
        own = settings.sam_profile if stage == "sam" else settings.diffusion_profile
        return f" (set by MOODSHIFT_{stage.upper()}_PROFILE)" if own else " (set by MOODSHIFT_PROFILE)"
    return " (auto: no usable weights, see above)" if resolved.is_demo else f" ({resolved.reason})"


def _name(dtype: torch.dtype) -> str:
    return str(dtype).split(".")[-1]


def human_size(size: int) -> str:
    for unit in ("B", "KB", "MB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"


# --- downloads ---------------------------------------------------------------------------------------------------


def missing_downloads(settings: Settings) -> list[Download]:
    """What `--download` fetches for these settings: the SAM file when absent, SDXL in the fp16-variant diffusers
    layout when absent or incomplete (resumed in place), the fp16-safe VAE and fast mode's SDXL-Lightning 4-step
    LoRA when absent."""
    downloads = []
    sam = find_sam(settings)
    if not sam.path.is_file():
        name = SAM_CHECKPOINT_NAMES[sam.model_type]
        url = settings.sam_download_url.format(name=name)
        downloads.append(Download(f"SAM {sam.model_type}", url, sam.path, sha256_prefix=official_sha256_prefix(name)))
    sdxl = sdxl_weights(settings)
    if sdxl.problem and sdxl.layout != SINGLE_FILE:
        if sdxl.layout == HUB_CACHE or (sdxl.layout is None and is_repo_id(sdxl.setting)):
            downloads.append(Download(f"SDXL {sdxl.setting}", sdxl.setting, None, download_patterns()))
        else:
            downloads.append(Download("SDXL base 1.0", SDXL_REPO_ID, sdxl.path, download_patterns()))
    vae = settings.sdxl_vae_path
    if not vae.is_dir():
        downloads.append(Download("SDXL VAE fp16-fix", SDXL_VAE_FP16_REPO_ID, vae, vae_download_patterns()))
    fast = find_fast_model(settings)
    if settings.fast_model is None and not fast.exists:  # the default few-step file; another one is the user's
        downloads.append(Download("SDXL-Lightning 4-step LoRA", DEFAULT_FAST_URL, fast.path))
    return downloads


def run_download(
    download: Download, progress: Callable[[int, int], None] | None = None, timeout_s: float = DOWNLOAD_TIMEOUT_S
) -> Path:
    """Fetch one `Download`; a `WeightsError` with the manual way when it fails."""
    if download.patterns is None:
        assert download.destination is not None
        path = download_file(download.source, download.destination, timeout_s, progress)
        if download.sha256_prefix and not sha256_hex(path).startswith(download.sha256_prefix):
            path.unlink()
            raise WeightsError(
                f"{download.source} did not give the official file (its sha256 does not start with "
                f"{download.sha256_prefix}): the download was damaged or the URL serves another file. Run it again, "
                f"or check MOODSHIFT_SAM_DOWNLOAD_URL."
            )
        return path
    return download_repo(download.source, download.destination, download.patterns, timeout_s)


def download_file(
    url: str,
    destination: Path,
    timeout_s: float = DOWNLOAD_TIMEOUT_S,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Fetch `url` to `destination` through a `.part` file, renamed only when complete (nothing half-written)."""
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(destination.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response, partial.open("wb") as out:
            total = int(response.headers.get("Content-Length") or 0)
            done = 0
            while chunk := response.read(1 << 20):
                out.write(chunk)
                done += len(chunk)
                if progress:
                    progress(done, total)
        if total and done != total:
            raise WeightsError(f"download of {url} stopped at {done} of {total} bytes; run it again")
        os.replace(partial, destination)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        raise WeightsError(
            f"could not download {url} ({reason}). This machine may have no access to it: download the file "
            f"elsewhere and copy it to {destination}."
        ) from None
    finally:
        partial.unlink(missing_ok=True)  # whatever stopped it (after the rename there is nothing left to remove)
    return destination


def download_repo(
    repo_id: str, destination: Path | None, patterns: list[str], timeout_s: float = DOWNLOAD_TIMEOUT_S
) -> Path:
    """The files of `repo_id` matching `patterns`, into `destination` (a plain folder), or into the local Hugging
    Face cache when it is None. Resumes a partial folder."""
    os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", str(int(timeout_s)))
    os.environ.setdefault("HF_HUB_DOWNLOAD_TIMEOUT", str(int(timeout_s)))
    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(repo_id, local_dir=destination, allow_patterns=patterns)
    except Exception as exc:  # the hub client raises many types (offline, DNS, HTTP); all mean the same here
        detail = " ".join(str(exc).split())[:200]
        where = f" into {destination}" if destination else " into the Hugging Face cache (HF_HUB_CACHE)"
        raise WeightsError(
            f"could not download {repo_id} ({type(exc).__name__}: {detail}). Download it where a network exists "
            f"(`hf download {repo_id}`; checkpoints/README.md lists the files) and copy it{where}."
        ) from None
    if destination is not None:
        shutil.rmtree(Path(destination) / ".cache", ignore_errors=True)
        return Path(destination)
    return hub_cache_snapshot(repo_id) or Path(folder)
