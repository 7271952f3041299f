"""Which weights Moodshift expects, whether they are present, and fetching them where a network exists."""

from __future__ import annotations

import os
import shutil
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from serving.models.errors import WeightsError
from serving.models.sdxl_builders import SDXL_REPO_ID, sdxl_weights_present
from serving.settings import SAM_CHECKPOINT_NAMES, Settings

DOWNLOAD_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class WeightsEntry:
    """One expected weights file or folder."""

    stage: str
    name: str
    path: Path
    present: bool
    size_bytes: int
    source: str
    selected: bool  # the one the settings use (others are alternatives)


def _size_of(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return 0


def list_weights(settings: Settings) -> list[WeightsEntry]:
    """Every SAM variant and the SDXL model, with presence and size on disk."""
    entries = []
    for model_type, name in SAM_CHECKPOINT_NAMES.items():
        selected = model_type == settings.sam_model_type
        path = settings.sam_checkpoint_path if selected else settings.checkpoints_dir / name
        entries.append(
            WeightsEntry(
                "segment",
                f"SAM {model_type}",
                path,
                path.is_file(),
                _size_of(path),
                settings.sam_download_url.format(name=name),
                selected,
            )
        )
    sdxl = settings.sdxl_model_path
    entries.append(
        WeightsEntry(
            "diffusion",
            "SDXL base 1.0",
            sdxl,
            sdxl_weights_present(sdxl),
            _size_of(sdxl),
            f"https://huggingface.co/{SDXL_REPO_ID}",
            True,
        )
    )
    return entries


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
        partial.unlink(missing_ok=True)
        reason = getattr(exc, "reason", exc)
        raise WeightsError(
            f"could not download {url} ({reason}). This machine may have no access to it: download the file "
            f"elsewhere and copy it to {destination}."
        ) from None
    return destination


def download_sdxl(destination: Path, timeout_s: float = DOWNLOAD_TIMEOUT_S) -> Path:
    """SDXL base in diffusers layout, fp16 safetensors only (about 7 GB)."""
    os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", str(int(timeout_s)))
    os.environ.setdefault("HF_HUB_DOWNLOAD_TIMEOUT", str(int(timeout_s)))
    from huggingface_hub import snapshot_download

    try:
        snapshot_download(
            SDXL_REPO_ID,
            local_dir=destination,
            allow_patterns=["model_index.json", "*/*.json", "*/*.txt", "*/*.fp16.safetensors"],
        )
    except Exception as exc:  # the hub client raises many types (offline, DNS, HTTP); all mean the same here
        detail = " ".join(str(exc).split())[:200]
        raise WeightsError(
            f"could not download {SDXL_REPO_ID} ({type(exc).__name__}: {detail}). Download it where a network "
            f"exists (`huggingface-cli download {SDXL_REPO_ID} --local-dir {destination}`) and copy the folder here."
        ) from None
    shutil.rmtree(Path(destination) / ".cache", ignore_errors=True)
    return Path(destination)
