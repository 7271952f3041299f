"""The kinds of failure every layer raises: a caller's mistake, an unknown id, an id whose data is gone, overload,
and an internal fault. Stages raise what went wrong; `serving.http_errors` alone turns a kind into an HTTP status,
so no stage knows how its errors are answered and no error travels between stages as data.
"""

from __future__ import annotations


class MoodshiftError(Exception):
    """Base of Moodshift's own errors; the message is written for the person who sent the request."""


class InputError(MoodshiftError, ValueError):
    """The caller sent something unusable (a bad image, click, option or text); the message names it."""


class TooLargeError(InputError):
    """An image or a body over a limit, or a decompression bomb."""


class NotFoundError(MoodshiftError, LookupError):
    """An id that names nothing (never issued, or forgotten)."""


class NotCachedError(MoodshiftError, LookupError):
    """An id whose data is no longer kept (evicted from a cache): the caller sends the data itself again."""

    @classmethod
    def image(cls, image_id: str) -> NotCachedError:
        return cls(f"image_id {image_id!r} is not cached (never sent, or evicted since): send the image itself again")


class OverloadedError(MoodshiftError):
    """Too much work in progress to take this request now; the caller may try again shortly."""


class QueueFullError(OverloadedError):
    """As many edit jobs as allowed are queued or running already."""


class InternalError(MoodshiftError, RuntimeError):
    """A stage failed for a reason that is not the caller's (a model fault, a stage that did not answer)."""


class CancelledError(MoodshiftError):
    """The caller cancelled the work before it finished (an outcome of a job, not an HTTP answer)."""

    BY_CALLER = "cancelled by the caller"  # what a job cancelled by its caller reports
