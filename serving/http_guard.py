"""ASGI middleware for the gateway: cross-site protection, JSON or multipart bodies (file uploads become the same
JSON the APIs take), a request-body limit (BentoML has none), clear JSON error bodies, and an answer to every request.

Cross-site protection follows Go 1.25's `net/http.CrossOriginProtection`: browsers mark their requests
(`Sec-Fetch-Site`, and `Origin`), so a request a browser marks as cross-site is refused with 403 unless its origin is
trusted (MOODSHIFT_TRUSTED_ORIGINS), while scripts and tools, which send neither header, pass. This, not refusing
form uploads, is what stops a web page from making a visitor's browser drive a local service.

BentoML answers a schema violation with `{"error": "1 validation error for Input", "detail": [...]}` and a
4xx `BentoMLException` with a one-element JSON *list*; callers of Moodshift get `{"error": "..."}` naming the
field and the problem instead, with the original `detail` kept.

BentoML's traffic-timeout middleware (outside this one) waits for a response to *start*: a request whose app
raises, or whose client leaves before the body arrives, would otherwise hold its slot, and block a graceful
shutdown, for the whole `traffic_timeout_s` (BentoML 1.4's gateway `/readyz` raises while the stage services
start, so every early health probe used to hang). This middleware answers those requests itself.
"""

from __future__ import annotations

import base64
import copy
import json
import logging
import typing
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

Scope = dict[str, Any]
HEALTH_PATHS = frozenset({"/readyz", "/livez", "/healthz"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
BODY_TYPES = (b"application/json", b"multipart/form-data")
FILE_FIELDS = ("image", "mask")  # what an upload sends as files; the JSON bodies take them as base64
OPENAPI_PATH = "/docs.json"
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


def cross_site_refusal(method: str, headers: Mapping[bytes, bytes], trusted: frozenset[str]) -> str | None:
    """Why a request must be refused as cross-site, or None to let it in (the rule of Go's CrossOriginProtection).

    Safe methods pass. With `Sec-Fetch-Site` (every current browser sends it), `same-origin` and `none` (typed in
    the address bar) pass; without it, a request with no `Origin` is not from a browser and passes, and one whose
    `Origin` names this service's own host passes. Anything else passes only when its origin is trusted.
    """
    if method in SAFE_METHODS:
        return None
    origin = headers.get(b"origin", b"").decode("latin-1").strip().rstrip("/").lower()
    fetch_site = headers.get(b"sec-fetch-site", b"").decode("latin-1").strip().lower()
    if fetch_site in ("same-origin", "none"):
        return None
    if not fetch_site:
        if not origin:
            return None
        if urlsplit(origin).netloc == headers.get(b"host", b"").decode("latin-1").strip().lower():
            return None
    if origin and origin in trusted:
        return None
    return (
        f"cross-site request refused: a browser sent it from {origin or 'another site'}, which is not trusted; "
        "to let a page there call this service, add its origin to MOODSHIFT_TRUSTED_ORIGINS"
    )


def text_fields_of(service: Any) -> dict[str, frozenset[str]]:
    """Per API route, the body fields that are text: an uploaded form sends them as they are, and every other
    field as JSON text (numbers, lists, objects)."""

    def is_text(annotation: Any) -> bool:  # str, or str | None
        return annotation is str or set(typing.get_args(annotation)) == {str, type(None)}

    return {
        api.route: frozenset(name for name, field in api.input_spec.model_fields.items() if is_text(field.annotation))
        for api in service.apis.values()
    }


async def multipart_as_json(scope: Scope, body: bytes, text_fields: frozenset[str]) -> bytes:
    """A multipart/form-data body as the JSON body the APIs take: files as base64, text fields as they are, other
    fields read as JSON text. Raises `ValueError` for a body that is not valid multipart."""
    from starlette.datastructures import UploadFile
    from starlette.requests import Request

    try:
        form = await Request(scope, _replay(body, _no_more_body)).form(max_files=len(FILE_FIELDS), max_fields=64)
    except Exception as exc:  # starlette raises its own MultiPartException and others for a broken body
        raise ValueError(f"the multipart body cannot be read ({exc})") from None
    data: dict[str, Any] = {}
    for name, value in form.multi_items():
        if isinstance(value, UploadFile):
            data[name] = base64.b64encode(await value.read()).decode("ascii")
        elif name in text_fields:
            data[name] = value
        else:
            try:
                data[name] = json.loads(value)
            except ValueError:
                data[name] = value  # the API names the field and the type it wanted
    return json.dumps(data).encode()


def with_file_uploads(openapi: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI document with a multipart/form-data body beside each JSON body that takes an image, the image
    and mask as binary files (the same fields, the same rules)."""
    document = copy.deepcopy(openapi)
    schemas = document.get("components", {}).get("schemas", {})
    for operation in (op for path in document.get("paths", {}).values() for op in path.values()):
        content = operation.get("requestBody", {}).get("content", {})
        schema = content.get("application/json", {}).get("schema")
        if not schema:
            continue
        if "$ref" in schema:
            schema = schemas.get(schema["$ref"].rsplit("/", 1)[-1], {})
        properties = schema.get("properties", {})
        if "image" not in properties:
            continue
        form = copy.deepcopy(schema)
        for name in FILE_FIELDS:
            if name in form.get("properties", {}):
                form["properties"][name] = {"type": "string", "format": "binary", "description": f"The {name} file."}
        form["description"] = "The same fields as the JSON body; files for image and mask, lists as JSON text."
        content["multipart/form-data"] = {"schema": form}
    return document


class RequestGuardMiddleware:
    """Refuse cross-site browser requests (403), bodies of other types (415) and over `max_body_bytes` (413) before
    the app reads them; turn uploads into JSON; rewrite 4xx error bodies.

    `get_aliases`: paths whose GET is served as a POST with an empty JSON body (BentoML APIs are POST-only, the
    contract has `GET /info`). `trusted_origins`: origins a browser may call from (read per request).
    `text_fields`: per route, the body fields an upload sends as plain text (see `text_fields_of`).
    """

    def __init__(
        self,
        app,
        max_body_bytes: int | Callable[[], int],
        get_aliases: tuple[str, ...] = (),
        trusted_origins: Callable[[], frozenset[str]] = frozenset,
        text_fields: Mapping[str, frozenset[str]] | None = None,
    ) -> None:
        self.app = app
        self._max_body_bytes = max_body_bytes
        self.get_aliases = frozenset(get_aliases)
        self.trusted_origins = trusted_origins
        self.text_fields = dict(text_fields or {})

    @property
    def max_body_bytes(self) -> int:
        """The limit now (a callable limit is read per request, so settings can change under tests)."""
        limit = self._max_body_bytes
        return limit() if callable(limit) else limit

    async def __call__(self, scope: Scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        refusal = cross_site_refusal(scope["method"], headers, self.trusted_origins())
        if refusal is not None:
            await _send_error(send, 403, refusal)
            return
        if scope["method"] == "GET" and scope["path"] in self.get_aliases:
            scope = _as_json_post(scope, 2)
            await self._call_app(scope, _replay(b"{}", receive), send)
            return
        if scope["method"] == "GET" and scope["path"] == OPENAPI_PATH:
            await self._call_app(scope, receive, _openapi_rewriting_send(send))
            return
        media_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if scope["method"] == "POST" and media_type not in BODY_TYPES:
            # BentoML also parses text/plain and form bodies, and takes a body without a type as JSON; only the two
            # documented types get through, so every request is read one way.
            got = media_type.decode("latin-1")[:60] or "none"
            await _send_error(
                send, 415, f"send the body as JSON (application/json) or as a multipart/form-data upload (got: {got})"
            )
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
        body = b"".join(chunks)
        if media_type == b"multipart/form-data":
            try:
                body = await multipart_as_json(scope, body, self.text_fields.get(scope["path"], frozenset()))
            except ValueError as exc:
                await _send_error(send, 400, str(exc))
                return
            scope = _as_json_post(scope, len(body))
        await self._call_app(scope, _replay(body, receive), send)

    async def _call_app(self, scope: Scope, receive, send) -> None:
        """Run the app; if it raises before answering, answer for it: 503 for a health probe, else a short 500."""
        started = False

        async def tracking_send(message: dict[str, Any]) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, _error_rewriting_send(tracking_send))
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


def _as_json_post(scope: Scope, length: int) -> Scope:
    """The request as a POST with a JSON body of `length` bytes (the headers the app reads the body by)."""
    headers = [(k, v) for k, v in scope.get("headers", []) if k not in (b"content-type", b"content-length")]
    headers += [(b"content-type", b"application/json"), (b"content-length", str(length).encode())]
    return {**scope, "method": "POST", "headers": headers}


async def _no_more_body() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


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


class _RewritingSend:
    """Buffers a response that `wanted(start message)` picks and sends it with its body replaced by
    `rewrite(status, body)`; every other response passes straight through."""

    def __init__(self, send, wanted: Callable[[dict[str, Any]], bool], rewrite: Callable[[int, bytes], bytes]) -> None:
        self.send = send
        self.wanted = wanted
        self.rewrite = rewrite
        self.start: dict[str, Any] | None = None
        self.chunks: list[bytes] = []

    async def __call__(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            if self.wanted(message):
                self.start = message
                return
        elif message["type"] == "http.response.body" and self.start is not None:
            self.chunks.append(message.get("body", b""))
            if message.get("more_body"):
                return
            body = self.rewrite(self.start["status"], b"".join(self.chunks))
            headers = [(k, v) for k, v in self.start.get("headers", []) if k.lower() != b"content-length"]
            headers.append((b"content-length", str(len(body)).encode()))
            await self.send({**self.start, "headers": headers})
            await self.send({"type": "http.response.body", "body": body})
            self.start = None
            return
        await self.send(message)


def _is_json_4xx(start: dict[str, Any]) -> bool:
    content_type = dict(start.get("headers") or []).get(b"content-type", b"")
    return 400 <= start["status"] < 500 and content_type.startswith(b"application/json")


def _error_rewriting_send(send) -> _RewritingSend:
    """BentoML's 4xx JSON bodies rewritten to `{"error": ...}` naming the problem (`rewrite_error_body`)."""
    return _RewritingSend(send, _is_json_4xx, rewrite_error_body)


def _openapi_rewriting_send(send) -> _RewritingSend:
    """The OpenAPI document sent with the upload forms added (`with_file_uploads`)."""
    return _RewritingSend(
        send,
        lambda start: start["status"] == 200,
        lambda _status, body: json.dumps(with_file_uploads(json.loads(body))).encode(),
    )
