"""The one place where Moodshift's typed errors meet HTTP: which status each kind of failure gets, the
`{"error": "..."}` body the gateway answers, and how an error crosses a stage service's HTTP boundary and comes
back as the same typed error on the gateway's side.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
from collections.abc import Callable
from http import HTTPStatus
from typing import Any, TypeVar

from bentoml.exceptions import BentoMLException
from starlette.responses import JSONResponse

from serving.core.errors import (
    InputError,
    InternalError,
    MoodshiftError,
    NotCachedError,
    NotFoundError,
    OverloadedError,
    QueueFullError,
    TooLargeError,
)

logger = logging.getLogger("moodshift.http_errors")

# Most specific first: a TooLargeError is an InputError too, and must answer 413.
STATUS_OF: tuple[tuple[type[MoodshiftError], int], ...] = (
    (TooLargeError, 413),
    (InputError, 400),
    (NotFoundError, 404),
    (NotCachedError, 409),
    (QueueFullError, 429),
    (OverloadedError, 503),
)
_ERROR_OF_STATUS: dict[int, type[MoodshiftError]] = {status: kind for kind, status in STATUS_OF}
Method = TypeVar("Method", bound=Callable[..., Any])


def status_and_message(exc: BaseException) -> tuple[int, str]:
    """The HTTP status and the message a caller sees for `exc`: a caller's mistake is a 4xx naming it; anything
    else is a 500 with a short reason (the details go to the log, never a traceback to the caller)."""
    if isinstance(exc, BentoMLException):  # e.g. BentoML refusing a body, or a stage that was not converted
        exc = error_from_stage(exc)
    for kind, status in STATUS_OF:
        if isinstance(exc, kind):
            if status == 503:
                logger.warning("overloaded: %s", exc)
            return status, str(exc)
    logger.error("request failed", exc_info=exc)
    reason = str(exc) if isinstance(exc, InternalError) else f"{type(exc).__name__}: {str(exc)[:200]}"
    return 500, f"internal error: {reason}"


def error_response(exc: BaseException) -> JSONResponse:
    """The gateway's answer to a failed request: `{"error": message}` with the status of `status_and_message`."""
    status, message = status_and_message(exc)
    return JSONResponse({"error": message}, status_code=status)


def answers_errors(method: Method) -> Method:
    """A gateway API method whose exceptions become `error_response`s (the signature stays BentoML's to read)."""

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except Exception as exc:
            response = error_response(exc)
            if "ctx" in kwargs:  # BentoML gives a method that takes its context the context's status, not ours
                kwargs["ctx"].response.status_code = response.status_code
            return response

    return wrapper  # type: ignore[return-value]


# --- across a stage service's HTTP boundary ---------------------------------------------------------------------


def raises_over_http(method: Method) -> Method:
    """A stage service API method whose typed errors leave as BentoML exceptions with their HTTP status, so they
    cross to the gateway (BentoML turns them into responses; its client turns those back into exceptions)."""

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except MoodshiftError as exc:
            status, message = status_and_message(exc)
            raise BentoMLException(message, error_code=HTTPStatus(status)) from exc

    return wrapper  # type: ignore[return-value]


def error_from_stage(exc: BentoMLException) -> MoodshiftError:
    """The typed error a stage service raised, from the exception BentoML's client raised for its answer.

    BentoML sends a stage's 4xx message in its body (`[{"error": ...}]`) and replaces a 5xx message with a generic
    one, so an internal failure of a remote stage says only that it failed and where to look.
    """
    status = exc.error_code.value
    if status in (429, 503):  # BentoML shedding load (max_concurrency, batching latency budget): its words, not ours
        return OverloadedError("the service is overloaded; try again shortly")
    message = _unwrap_message(str(exc))
    kind = _ERROR_OF_STATUS.get(status)
    if kind is not None:
        return kind(message)
    if 400 <= status < 500:
        return InputError(message)
    return InternalError(f"a stage service failed: {message[:200]}")


def _unwrap_message(text: str) -> str:
    """The `error` of BentoML's JSON error body (an object, or a one-element list of one), else the text itself."""
    with contextlib.suppress(ValueError, TypeError):
        body = json.loads(text)
        if isinstance(body, list) and len(body) == 1:
            body = body[0]
        if isinstance(body, dict) and isinstance(body.get("error"), str):
            return body["error"]
    return text


class StageClient:
    """A stage service (a local instance or BentoML's proxy to another process) whose calls raise the typed
    errors the stage raised."""

    def __init__(self, service: Any) -> None:
        self._service = service

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self._service, name)

        @functools.wraps(method)
        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return method(*args, **kwargs)
            except BentoMLException as exc:
                raise error_from_stage(exc) from None

        return call
