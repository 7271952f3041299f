"""The real Moodshift service with one switch for the fault tests: a prompt holding `FAULT_MARKER` makes the
diffusion runner raise in the middle of its run (at the VAE decode, after the denoising loop), the way a CUDA
out-of-memory error or a driver fault would.

The reliability suite serves `tests.reliability.fault_service:Moodshift` instead of `serving.service:Moodshift`.
BentoML starts every worker (gateway, SAM, diffusion) by importing this import string, so the patch below is in
place in the diffusion worker too, and no fault-injection code ships in `serving/`. Without the marker every
request runs the unpatched code.
"""

from __future__ import annotations

from serving.models.blended_sdxl import BlendedSDXLRunner
from serving.service import DiffusionService, Moodshift, SegmentationService
from tests.reliability import FAULT_MARKER

FAULT_MESSAGE = (
    "CUDA out of memory. Tried to allocate 20.00 GiB (GPU 0; 79.15 GiB total capacity) "
    "[injected by tests/reliability/fault_service.py]"
)

_run_group = BlendedSDXLRunner._run_group
_decode = BlendedSDXLRunner._decode


def _run_group_with_fault(self, edits, size):
    # Runs are serialized by the runner's lock, so a flag on the runner is enough to reach `_decode`.
    self._fault_armed = any(FAULT_MARKER in edit.prompt for edit in edits)
    try:
        return _run_group(self, edits, size)
    finally:
        self._fault_armed = False


def _decode_with_fault(self, latents):
    if getattr(self, "_fault_armed", False):
        raise RuntimeError(FAULT_MESSAGE)
    return _decode(self, latents)


BlendedSDXLRunner._run_group = _run_group_with_fault
BlendedSDXLRunner._decode = _decode_with_fault

__all__ = ["FAULT_MARKER", "DiffusionService", "Moodshift", "SegmentationService"]
