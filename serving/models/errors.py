"""Errors raised while finding or loading weights: one clear message, never a raw traceback for the user."""

from serving.core.errors import InternalError


class WeightsError(InternalError):
    """Weights are missing or unusable. The message names the path and how to get the right file.

    An internal error (not the caller's fault): a model that loads on first use (SAM on a first click) answers a 500
    whose message is this one in full, the fix included."""
