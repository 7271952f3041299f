"""Moodshift: SAM subject masks, Ollama mood prompts and blended SDXL backgrounds.

Kept import-light on purpose: the UI and `bentoml build` import parts of this package without torch.
"""

__version__ = "0.1.0"
