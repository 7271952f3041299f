"""The gateway's ASGI guard: every request gets an answer (an app that raises, or a client that leaves mid-body, so
BentoML's traffic-timeout middleware never holds the request for the whole timeout); browsers' cross-site requests
are refused unless trusted; uploads become the JSON the APIs take; the OpenAPI document shows both."""

from __future__ import annotations

import asyncio
import base64
import json
import logging

import pytest

from serving.http_guard import RequestGuardMiddleware, cross_site_refusal, multipart_as_json, with_file_uploads


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


@pytest.mark.parametrize("content_type", [b"text/plain;charset=UTF-8", b"application/x-www-form-urlencoded", None])
def test_a_post_that_is_neither_json_nor_an_upload_is_refused_before_the_app_sees_it(content_type):
    ran = []

    async def app(scope, receive, send):
        ran.append(True)

    status, body = answer(call(app, content_type=content_type))
    assert status == 415 and "JSON (application/json) or as a multipart/form-data upload" in body["error"]
    assert ran == []


def test_a_broken_upload_is_a_400_naming_the_problem():
    ran = []

    async def app(scope, receive, send):
        ran.append(True)

    status, body = answer(call(app, content_type=b"multipart/form-data; boundary=x"))
    assert status == 400 and "multipart body cannot be read" in body["error"] and ran == []


def test_json_with_a_charset_is_json():
    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    assert call(app, content_type=b"Application/JSON; charset=utf-8")[0]["status"] == 204


# --- cross-site protection (the rule of Go 1.25's net/http.CrossOriginProtection) ---------------------------------

TRUSTED = frozenset({"http://studio.example:8501"})


@pytest.mark.parametrize(
    ("method", "headers", "refused"),
    [
        ("POST", {}, False),  # curl, requests, SDKs: no browser header at all
        ("POST", {"sec-fetch-site": "same-origin", "origin": "http://127.0.0.1:3000"}, False),
        ("POST", {"sec-fetch-site": "none"}, False),  # typed into the address bar
        ("POST", {"sec-fetch-site": "cross-site", "origin": "http://evil.example"}, True),
        ("POST", {"sec-fetch-site": "same-site", "origin": "http://other.127.0.0.1.nip.io"}, True),
        ("POST", {"sec-fetch-site": "cross-site", "origin": "http://studio.example:8501"}, False),  # trusted
        ("POST", {"origin": "http://evil.example"}, True),  # an older browser: Origin only
        ("POST", {"origin": "http://127.0.0.1:3000"}, False),  # its own origin
        ("POST", {"origin": "http://studio.example:8501/"}, False),  # trusted, with a trailing slash
        ("GET", {"sec-fetch-site": "cross-site", "origin": "http://evil.example"}, False),  # safe methods pass
    ],
)
def test_the_cross_site_rule(method, headers, refused):
    raw = {b"host": b"127.0.0.1:3000", **{k.encode(): v.encode() for k, v in headers.items()}}
    refusal = cross_site_refusal(method, raw, TRUSTED)
    assert (refusal is not None) == refused
    if refused:
        assert "MOODSHIFT_TRUSTED_ORIGINS" in refusal and headers["origin"] in refusal


def test_a_cross_site_request_is_a_403_before_the_app_or_the_body():
    ran = []

    async def app(scope, receive, send):
        ran.append(True)

    sent: list[dict] = []

    async def receive():
        raise AssertionError("the body of a refused request is never read")

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/edit",
        "headers": [(b"host", b"127.0.0.1:3000"), (b"sec-fetch-site", b"cross-site"), (b"origin", b"http://evil.x")],
    }
    asyncio.run(RequestGuardMiddleware(app, max_body_bytes=1000)(scope, receive, send))
    status, body = answer(sent)
    assert status == 403 and body["error"].startswith("cross-site request refused") and ran == []


# --- uploads ---------------------------------------------------------------------------------------------------


def multipart(fields: dict[str, str], files: dict[str, bytes]) -> tuple[bytes, bytes]:
    """A multipart/form-data body (and its content type) as a browser or curl -F sends it."""
    boundary = "moodshiftboundary"
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in fields.items()
    ]
    parts += [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{name}.png"\r\n'
        f"Content-Type: image/png\r\n\r\n".encode()
        + data
        + b"\r\n"
        for name, data in files.items()
    ]
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}".encode()


def test_an_upload_becomes_the_json_body_with_files_as_base64_and_fields_typed():
    body, content_type = multipart(
        {"points": '[{"x": 3, "y": 4}]', "seed": "7", "prompt": "123 misty forest", "user_keyword": "42"},
        {"image": b"\x89PNG fake bytes", "mask": b"\x00\x01"},
    )
    scope = {"type": "http", "method": "POST", "path": "/edit", "headers": [(b"content-type", content_type)]}
    converted = json.loads(asyncio.run(multipart_as_json(scope, body, frozenset({"prompt", "user_keyword"}))))
    assert converted == {
        "points": [{"x": 3, "y": 4}],
        "seed": 7,
        "prompt": "123 misty forest",
        "user_keyword": "42",  # a text field stays text, even when it reads as a number
        "image": base64.b64encode(b"\x89PNG fake bytes").decode(),
        "mask": base64.b64encode(b"\x00\x01").decode(),
    }


def test_the_app_gets_the_converted_json_with_its_length():
    seen = {}

    async def app(scope, receive, send):
        message = await receive()
        seen["headers"], seen["body"] = dict(scope["headers"]), message["body"]
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    body, content_type = multipart({"steps": "2"}, {"image": b"abc"})
    call(app, path="/edit", content_type=content_type, messages=[{"type": "http.request", "body": body}])
    assert json.loads(seen["body"]) == {"steps": 2, "image": "YWJj"}
    assert seen["headers"][b"content-type"] == b"application/json"
    assert seen["headers"][b"content-length"] == str(len(seen["body"])).encode()


def test_the_openapi_document_offers_an_upload_beside_each_json_body_that_takes_an_image():
    document = {
        "paths": {
            "/segment": {"post": {"requestBody": {"content": {"application/json": {"schema": {
                "type": "object", "properties": {"image": {"type": "string"}, "points": {"type": "array"}}}}}}}},
            "/edit": {"post": {"requestBody": {"content": {"application/json": {"schema": {
                "$ref": "#/components/schemas/Edit"}}}}}},
            "/prompt": {"post": {"requestBody": {"content": {"application/json": {"schema": {
                "type": "object", "properties": {"keywords": {"type": "array"}}}}}}}},
        },
        "components": {"schemas": {"Edit": {"properties": {"image": {"type": "string"}, "mask": {"type": "string"}}}}},
    }  # fmt: skip
    patched = with_file_uploads(document)
    segment = patched["paths"]["/segment"]["post"]["requestBody"]["content"]
    assert segment["multipart/form-data"]["schema"]["properties"]["image"]["format"] == "binary"
    assert segment["multipart/form-data"]["schema"]["properties"]["points"] == {"type": "array"}
    edit = patched["paths"]["/edit"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert edit["properties"]["mask"]["format"] == "binary"
    assert "multipart/form-data" not in patched["paths"]["/prompt"]["post"]["requestBody"]["content"]
    assert "multipart/form-data" not in document["paths"]["/segment"]["post"]["requestBody"]["content"]  # a copy
