"""Model profiles (`real`, `tiny`, `random-full`) and the torch device/dtype a stage runs on.

`auto` means `real` when the stage's weights are present and loadable (complete, intact), else `tiny`; the resolved
profile carries the reason so `/info` and the UI can say why demo models are in use.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import torch

    from serving.settings import Settings

ConcreteProfile = Literal["real", "tiny", "random-full"]


@dataclass(frozen=True)
class ResolvedProfile:
    """The profile a stage actually runs and, when `auto` chose it, why."""

    profile: ConcreteProfile
    reason: str | None = None

    @property
    def is_demo(self) -> bool:
        """True for random weights: outputs are noise, fit for tests and benchmarks only."""
        return self.profile != "real"


def resolve_profile(requested: str, weights_problem: str | None, weights_label: str) -> ResolvedProfile:
    """Turn a requested profile (maybe `auto`) into a concrete one.

    weights_problem: None when the stage's weights are there and load (complete, intact), else why not; `auto`
    then runs the tiny models and says why."""
    if requested != "auto":
        return ResolvedProfile(requested)  # type: ignore[arg-type]
    if weights_problem is None:
        return ResolvedProfile("real", f"auto: found {weights_label}")
    return ResolvedProfile("tiny", f"auto: using tiny random-weight demo models: {weights_problem}")


def resolve_device(settings: Settings) -> torch.device:
    """`auto` is CUDA when available, else CPU."""
    import torch

    if settings.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if settings.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("MOODSHIFT_DEVICE=cuda but no CUDA device is available; use auto or cpu")
    return torch.device(settings.device)


def resolve_dtype(settings: Settings, device: torch.device) -> torch.dtype:
    """`auto` is float16 on CUDA (half the memory, tensor cores) and float32 on CPU (CPU half is slow and lossy)."""
    import torch

    if settings.dtype == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    return getattr(torch, settings.dtype)
