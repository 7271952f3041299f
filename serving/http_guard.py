"""ASGI middleware for the gateway: JSON bodies only, a request-body limit (BentoML has none), clear JSON error
bodies, and an answer to every request.

BentoML answers a schema violation with `{"error": "1 validation error for Input", "detail": [...]}` and a
4xx `BentoMLException` with a one-element JSON *list*; callers of Moodshift get `{"error": "..."}` naming the
field and the problem instead, with the original `detail` kept.

BentoML's traffic-timeout middleware (outside this one) waits for a response to *start*: a request whose app
raises, or whose client leaves before the body arrives, would otherwise hold its slot, and block a graceful
shutdown, for the whole `traffic_timeout_s` (BentoML 1.4's gateway `/readyz` raises while the stage services
start, so every early health probe used to hang). This middleware answers those requests itself.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

Scope = dict[str, Any]
HEALTH_PATHS = frozenset({"/readyz", "/livez", "/healthz"})
logger = logging.getLogger("moodshift.http_guard")


def _json_error(message: str, status: int, detail: Any = None) -> tuple[int, bytes]:
    body: dict[str, Any] = {"error": message}
    if detail is not None:
        body["detail"] = detail
    return status, json.dumps(body).encode()


def describe_validation_errors(detail: list[dict[str, Any]]) -> str:
    """One line naming each bad field: "steps: Input should be a valid integer"."""
    parts = []
    for error in detail[:5]:
        location = ".".join(str(part) for part in error.get("loc", ()) if part not in ("body",))
        message = error.get("msg", "invalid value")
        if error.get("type") == "json_invalid":
            return f"request body is not valid JSON ({error.get('ctx', {}).get('error', message)})"
        parts.append(f"{location}: {message}" if location else message)
    more = f" (and {len(detail) - 5} more)" if len(detail) > 5 else ""
    return "invalid request: " + "; ".join(parts) + more


def rewrite_error_body(status: int, body: bytes) -> bytes:
    """Turn BentoML's 4xx bodies into `{"error": ...}` objects that name the problem."""
    try:
        data = json.loads(body or b"null")
    except ValueError:
        return _json_error(body.decode("utf-8", "replace")[:500] or f"HTTP {status}", status)[1]
    if isinstance(data, list) and len(data) == 1 and isinstance(data[0], dict):
        data = data[0]  # BentoML wraps BentoMLException bodies in a tuple
    if not isinstance(data, dict):
        return _json_error(str(data)[:500], status)[1]
    if isinstance(data.get("detail"), list):
        data["error"] = describe_validation_errors(data["detail"])
    return json.dumps(data).encode()


class RequestGuardMiddleware:
    """Refuse bodies over `max_body_bytes` with 413 before the app reads them; rewrite 4xx error bodies.

    `get_aliases`: paths whose GET is served as a POST with an empty JSON body (BentoML APIs are POST-only, the
    contract has `GET /info`).
    """

    def __init__(self, app, max_body_bytes: int | Callable[[], int], get_aliases: tuple[str, ...] = ()) -> None:
        self.app = app
        self._max_body_bytes = max_body_bytes
        self.get_aliases = frozenset(get_aliases)

    @property
    def max_body_bytes(self) -> int:
        """The limit now (a callable limit is read per request, so settings can change under tests)."""
        limit = self._max_body_bytes
        return limit() if callable(limit) else limit

    async def __call__(self, scope: Scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["method"] == "GET" and scope["path"] in self.get_aliases:
            headers = [(k, v) for k, v in scope.get("headers", []) if k not in (b"content-type", b"content-length")]
            headers += [(b"content-type", b"application/json"), (b"content-length", b"2")]
            scope = {**scope, "method": "POST", "headers": headers}

            await self._call_app(scope, _replay(b"{}", receive), send)
            return
        headers = dict(scope.get("headers") or [])
        media_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if scope["method"] == "POST" and media_type != b"application/json":
            # BentoML also parses text/plain, form and multipart bodies, and takes a body without a type as JSON:
            # a web page could then make a visitor's browser run edits on their local service (no CORS preflight
            # for those). JSON with its content type needs one, which this service never grants.
            got = media_type.decode("latin-1")[:60] or "none"
            await _send_error(send, 415, f"send the body as JSON with content-type: application/json (got: {got})")
            return
        limit = self.max_body_bytes
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._send_too_large(send, int(declared), limit)
            return
        # Chunked or lying uploads: read the body here, bounded by the limit, then replay it to the app.
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                # Answer anyway (the server drops it): BentoML's timeout middleware waits for a response start, and
                # without one it keeps this request, and a graceful shutdown, waiting for the whole traffic timeout.
                await _send_error(send, 499, "the client disconnected before sending the whole request body")
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await self._send_too_large(send, size, limit)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        await self._call_app(scope, _replay(b"".join(chunks), receive), send)

    async def _call_app(self, scope: Scope, receive, send) -> None:
        """Run the app; if it raises before answering, answer for it: 503 for a health probe, else a short 500."""
        started = False

        async def tracking_send(message: dict[str, Any]) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, _ErrorRewritingSend(tracking_send))
        except Exception as exc:
            if started:
                raise  # too late for an error response; the server closes the connection
            reason = f"{type(exc).__name__}: {str(exc)[:200]}" if str(exc) else type(exc).__name__
            if scope["path"] in HEALTH_PATHS:  # expected while the stage services start: no traceback
                logger.warning("%s %s failed: %s", scope["method"], scope["path"], reason)
                await _send_error(send, 503, f"not ready ({reason})")
                return
            logger.exception("unhandled error in %s %s", scope["method"], scope["path"])
            await _send_error(send, 500, f"internal error: {reason}")

    @staticmethod
    async def _send_too_large(send, size: int, limit: int) -> None:
        limit_mb = limit / 1e6
        message = f"request body is {size / 1e6:.1f} MB; the limit is {limit_mb:.1f} MB (MOODSHIFT_MAX_UPLOAD_MB)"
        await _send_error(send, 413, message)


async def _send_error(send, status: int, message: str) -> None:
    status, body = _json_error(message, status)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _replay(body: bytes, receive):
    """A `receive` that hands the app `body` once, then the real channel (so disconnects still arrive).

    The body is dropped once handed over: this closure outlives the request (BentoML's request context is kept by
    timers of its HTTP client until the traffic timeout), and must not keep an upload alive with it.
    """
    pending = [body]

    async def replaying_receive():
        if pending:
            return {"type": "http.request", "body": pending.pop(), "more_body": False}
        return await receive()

    return replaying_receive


class _ErrorRewritingSend:
    """Buffers a JSON 4xx response so its body can be rewritten; everything else passes straight through."""

    def __init__(self, send) -> None:
        self.send = send
        self.start: dict[str, Any] | None = None
        self.chunks: list[bytes] = []

    async def __call__(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            headers = dict(message.get("headers") or [])
            is_json = headers.get(b"content-type", b"").startswith(b"application/json")
            if 400 <= message["status"] < 500 and is_json:
                self.start = message
                return
        elif message["type"] == "http.response.body" and self.start is not None:
            self.chunks.append(message.get("body", b""))
            if message.get("more_body"):
                return
            body = rewrite_error_body(self.start["status"], b"".join(self.chunks))
            headers = [(k, v) for k, v in self.start.get("headers", []) if k.lower() != b"content-length"]
            headers.append((b"content-length", str(len(body)).encode()))
            await self.send({**self.start, "headers": headers})
            await self.send({"type": "http.response.body", "body": body})
            self.start = None
            return
        await self.send(message)
