"""The gateway's ASGI guard answers every request: an app that raises, or a client that leaves mid-body, still
gets a response, so BentoML's traffic-timeout middleware never holds the request for the whole timeout."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from serving.http_guard import RequestGuardMiddleware


def call(
    app,
    path: str = "/segment",
    messages: list[dict] | None = None,
    method: str = "POST",
    content_type: bytes | None = b"application/json",
) -> list[dict]:
    """Run the guard (with `GET /info` as an alias) around `app` for one request; returns what it sent."""
    sent: list[dict] = []
    incoming = list(messages or [{"type": "http.request", "body": b"{}", "more_body": False}])

    async def receive():
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    headers = [(b"content-type", content_type)] if content_type is not None else []
    scope = {"type": "http", "method": method, "path": path, "headers": headers}
    guard = RequestGuardMiddleware(app, max_body_bytes=1000, get_aliases=("/info",))
    asyncio.run(guard(scope, receive, send))
    return sent


def answer(sent: list[dict]) -> tuple[int, dict]:
    assert sent[0]["type"] == "http.response.start"
    return sent[0]["status"], json.loads(b"".join(m.get("body", b"") for m in sent[1:]))


async def failing_app(scope, receive, send):
    await receive()
    raise TimeoutError


def test_an_app_that_raises_before_answering_gets_a_short_500(caplog):
    async def app(scope, receive, send):
        raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB")

    with caplog.at_level(logging.ERROR, logger="moodshift.http_guard"):
        status, body = answer(call(app))
    assert status == 500
    assert body == {"error": "internal error: RuntimeError: CUDA out of memory. Tried to allocate 20.00 GiB"}
    assert "Traceback" in caplog.text  # the details go to the log, not to the caller


def test_a_health_probe_that_raises_is_503_not_ready():
    """BentoML 1.4's gateway /readyz raises TimeoutError while the stage services start."""
    status, body = answer(call(failing_app, "/readyz", method="GET"))
    assert (status, body) == (503, {"error": "not ready (TimeoutError)"})


def test_a_get_alias_that_raises_is_answered_too():
    async def app(scope, receive, send):
        raise KeyError("stats")

    status, body = answer(call(app, "/info", method="GET"))
    assert (status, body) == (500, {"error": "internal error: KeyError: 'stats'"})


def test_an_error_after_the_response_started_is_not_answered_twice():
    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        raise RuntimeError("broken stream")

    with pytest.raises(RuntimeError, match="broken stream"):
        call(app)


def test_a_client_that_leaves_mid_body_gets_a_499_and_the_app_never_runs():
    ran = []

    async def app(scope, receive, send):
        ran.append(True)

    sent = call(app, messages=[{"type": "http.request", "body": b'{"image": ', "more_body": True}])
    status, body = answer(sent)
    assert status == 499 and "disconnected" in body["error"]
    assert ran == []


def test_a_normal_answer_passes_through_unchanged():
    async def app(scope, receive, send):
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"ok"})

    sent = call(app)
    assert [m.get("status") for m in sent] == [200, None] and sent[1]["body"] == b"ok"


@pytest.mark.parametrize(
    "content_type",
    [b"text/plain;charset=UTF-8", b"application/x-www-form-urlencoded", b"multipart/form-data; boundary=x", None],
)
def test_a_post_that_is_not_json_is_refused_before_the_app_sees_it(content_type):
    """The types (and no type) a web page can POST cross-site without a CORS preflight: refused, so no page can
    make a visitor's browser run edits on their local service."""
    ran = []

    async def app(scope, receive, send):
        ran.append(True)

    status, body = answer(call(app, content_type=content_type))
    assert status == 415 and "content-type: application/json" in body["error"]
    assert ran == []


def test_json_with_a_charset_is_json():
    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    assert call(app, content_type=b"Application/JSON; charset=utf-8")[0]["status"] == 204
