"""Test helpers for the soft edge: which pixels of a subject the matte keeps bit for bit."""

from __future__ import annotations

import numpy as np

from serving.core.matting import band_width, unknown_band


def core_of(subject: np.ndarray) -> np.ndarray:
    """The subject deeper than the matte's band (HxW bool): where an edit with edge=matte keeps the photo exact."""
    height, width = subject.shape
    return subject & ~unknown_band(subject, band_width(width, height))
