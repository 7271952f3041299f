"""What `GET /info` says: each stage's profile and model (the segment stage's salient model and click engine too), the
device, versions, a notice for demo models, the edit options table (clients draw their controls from it) and the
input limits."""

from __future__ import annotations

import importlib.metadata
import platform
from typing import Any

import serving
from serving.core.edit_options import info_table
from serving.models.fast_models import unavailable
from serving.settings import Settings

DEMO_NOTICE = (
    "Demo models with random weights are running ({stages}): results are noise, not edits. Put the real weights "
    "in checkpoints/ (python -m serving weights --download, or see checkpoints/README.md) and restart."
)
REAL_SUBJECT_NOTICE = (
    " The subject mask is real all the same: {model} finds the subject and clicks edit its map (with SAM's weights, "
    "SAM refines them)."
)
_PACKAGES = ("torch", "diffusers", "transformers", "segment-anything", "onnxruntime", "bentoml", "ollama")


def versions() -> dict[str, str]:
    found = {"moodshift": serving.__version__, "python": platform.python_version()}
    for name in _PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "missing"
    return found


def describe(
    segment: dict[str, Any], diffusion: dict[str, Any], prompt_stages: dict[str, Any], settings: Settings
) -> dict[str, Any]:
    """The /info document from the stages' own `info()` answers and the gateway's settings. `fast`: the diffusion
    stage's few-step model for `mode=fast`, or why there is none (a client disables its fast switch with it)."""
    demo = [name for name, entry in (("segment", segment), ("diffusion", diffusion)) if entry.get("demo")]
    diffusion = dict(diffusion)
    fast = diffusion.pop("fast", None) or unavailable("the diffusion stage does not say it has a few-step model")
    notice = DEMO_NOTICE.format(stages=", ".join(demo)) if demo else None
    salient_model = (segment.get("salient") or {}).get("model")
    if "segment" in demo and salient_model:
        notice += REAL_SUBJECT_NOTICE.format(model=salient_model)
    return {
        "stages": {"segment": segment, "diffusion": diffusion, **prompt_stages},
        "fast": fast,
        "device": diffusion.get("device", "unknown"),
        "dtype": diffusion.get("dtype", "unknown"),
        "versions": versions(),
        "demo_models": bool(demo),
        "notice": notice,
        "options": info_table(settings.edit_defaults()),
        "limits": {
            "max_upload_mb": settings.max_upload_mb,
            "max_image_pixels": settings.max_image_pixels,
            "max_points": settings.max_points,
        },
    }
