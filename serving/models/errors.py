"""Errors raised while finding or loading weights: one clear message, never a raw traceback for the user."""


class WeightsError(RuntimeError):
    """Weights are missing or unusable. The message names the path and how to get the right file."""
