"""A salient-object ONNX model (U²-Netp by default) run with onnxruntime: a photo in, its saliency map out.

The model takes one square image (its own side, e.g. 320² for U²-Net), normalised per channel, and answers a map of
the same side; `serving.core.saliency` turns that into a subject mask at the photo's size. Safe to call from many
threads (an onnxruntime session is).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from serving.core.saliency import normalise_saliency
from serving.models.errors import WeightsError
from serving.models.salient_weights import SalientSpec, SalientWeights, embedded_salient, find_salient

if TYPE_CHECKING:
    import onnxruntime

    from serving.settings import Settings

logger = logging.getLogger(__name__)


class SalientDetector:
    """One loaded salient-object model: `saliency(rgb)` gives its map (float32 side×side in [0, 1])."""

    def __init__(self, session: onnxruntime.InferenceSession, spec: SalientSpec) -> None:
        self.session = session
        self.spec = spec
        self.name = spec.name
        model_input = session.get_inputs()[0]
        self.input_name = model_input.name
        fixed = [dim for dim in model_input.shape[2:] if isinstance(dim, int)]
        self.side = fixed[0] if len(fixed) == 2 and fixed[0] == fixed[1] else spec.input_side

    @classmethod
    def load(cls, weights: SalientWeights, use_cuda: bool = False) -> SalientDetector:
        """The model of `weights`; `WeightsError` naming the file when it is missing, damaged or not a model."""
        import onnxruntime

        if weights.problem:
            raise WeightsError(weights.problem)
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # onnxruntime's own warnings are about graph optimisations, not for users
        available = onnxruntime.get_available_providers()
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
        if not use_cuda:
            providers = ["CPUExecutionProvider"]
        try:
            session = onnxruntime.InferenceSession(str(weights.path), options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own types for a cut, foreign or unsupported file
            raise WeightsError(
                f"{weights.path} is not a usable salient-object ONNX model ({type(exc).__name__}: {str(exc)[:200]})"
            ) from None
        return cls(session, weights.spec)

    def saliency(self, rgb: np.ndarray) -> np.ndarray:
        """The saliency map (float32, side×side, in [0, 1]) of an HWC uint8 RGB photo of any size and aspect."""
        square = Image.fromarray(rgb).resize((self.side, self.side), Image.Resampling.LANCZOS)
        pixels = np.asarray(square, dtype=np.float32) / 255.0
        pixels = (pixels - np.asarray(self.spec.mean, np.float32)) / np.asarray(self.spec.std, np.float32)
        batch = np.ascontiguousarray(pixels.transpose(2, 0, 1)[None], dtype=np.float32)
        first_output = self.session.run(None, {self.input_name: batch})[0]  # U²-Net's fused map comes first
        return normalise_saliency(np.asarray(first_output).reshape(first_output.shape[-2:]))


def load_salient(
    settings: Settings, use_cuda: bool = False
) -> tuple[SalientDetector | None, SalientWeights, str | None]:
    """The settings' salient-object model, loaded: (detector, the weights it runs, problem).

    A larger model found in checkpoints/ that does not load (a cut download, a foreign file) falls back to the
    embedded U²-Netp rather than leaving the automatic subject off: `problem` then says why the larger one is not
    running. A model named by MOODSHIFT_SALIENT_MODEL is the user's choice and does not fall back. Nothing that
    loads: detector None, and `problem` says why."""
    weights = find_salient(settings)
    try:
        return SalientDetector.load(weights, use_cuda), weights, None
    except WeightsError as exc:
        problem = str(exc)
    if weights.embedded or settings.salient_model is not None:
        return None, weights, problem
    embedded = embedded_salient()
    try:
        detector = SalientDetector.load(embedded, use_cuda)
    except WeightsError as exc:
        return None, weights, f"{problem}; the embedded U²-Netp does not load either: {exc}"
    problem = f"{problem}; the embedded U²-Netp runs instead"
    logger.warning("salient-object model: %s", problem)
    return detector, embedded, problem
