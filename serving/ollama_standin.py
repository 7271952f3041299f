"""A stand-in Ollama server with scripted replies and no model: the demo's `--fake-ollama`, and the tests' Ollama.

Speaks `/api/chat`, `/api/generate` (streaming NDJSON or one JSON object, as the request's `stream` says) and
`/api/tags`; answers 404 "model not found" for a model it has no reply for; can be slow before answering or
between streamed chunks. Threaded, on 127.0.0.1, a random port by default.

    with FakeOllama({"llava": "calm, warm", "llama2": "misty forest, soft light"}) as fake:
        ...  # point MOODSHIFT_OLLAMA_HOST at fake.url

    python -m serving.ollama_standin --port 11434
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

DEFAULT_MOOD_REPLY = "Sure! The mood keywords of this image are: calm, warm, serene, nostalgic."
DEFAULT_PROMPT_REPLY = (
    "Sure! Here is a background prompt for your photo:\n\n"
    '"dreamy landscape at golden hour, soft volumetric light, gentle haze, rolling hills, matte painting, '
    'in the style of Albert Bierstadt, highly detailed, 8k"\n\nI hope this helps!'
)


@dataclass(frozen=True)
class RawReply:
    """Send these bytes as the whole response body instead of Ollama's JSON (for malformed-response tests)."""

    body: bytes
    status: int = 200
    content_type: str = "application/json"


# A reply is text, a raw body, a list answered in turn (the last one repeats), or a function of the request body.
Reply = str | RawReply | list | Callable[[dict], str | RawReply]


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    body: dict[str, Any]


def _now() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


def _tagged(name: str) -> str:
    return name if ":" in name else f"{name}:latest"


class FakeOllama:
    """The server. Attributes `replies`, `delay_s` and `chunk_delay_s` may be changed while it runs."""

    def __init__(
        self,
        replies: Mapping[str, Reply] | None = None,
        *,
        port: int = 0,
        delay_s: float = 0.0,
        chunk_delay_s: float = 0.0,
        chunk_chars: int = 12,
    ) -> None:
        self.replies: dict[str, Reply] = dict(default_replies() if replies is None else replies)
        self.delay_s = delay_s  # before the response starts
        self.chunk_delay_s = chunk_delay_s  # between streamed chunks
        self.chunk_chars = chunk_chars
        self.requests: list[RecordedRequest] = []
        self._turns: dict[str, int] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = self._bind(port)
        self._port = self._server.server_address[1]
        self._thread: threading.Thread | None = None

    def _bind(self, port: int) -> ThreadingHTTPServer:
        server = ThreadingHTTPServer(("127.0.0.1", port), _handler_for(self))
        server.daemon_threads = True
        server.block_on_close = False  # a handler sleeping for a timeout test must not delay stop()
        return server

    @property
    def port(self) -> int:
        return self._port

    @property
    def running(self) -> bool:
        """Whether the port is open (False after `stop()` until `start()`)."""
        return self._server is not None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeOllama:
        """Serve in a background thread; after `stop()`, serve again on the same port (an Ollama restart)."""
        if self._server is None:
            self._server = self._bind(self._port)
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-ollama", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Close the port: callers get "connection refused" until `start()` again."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self._server = None

    def __enter__(self) -> FakeOllama:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def model_names(self) -> list[str]:
        return [_tagged(name) for name in self.replies]

    def _reply_for(self, model: str, body: dict) -> str | RawReply | None:
        """The scripted reply for `model` (None: unknown model)."""
        key = next((name for name in self.replies if _tagged(name) == _tagged(model)), None)
        if key is None:
            return None
        reply = self.replies[key]
        if isinstance(reply, list):
            with self._lock:
                turn = self._turns.get(key, 0)
                self._turns[key] = turn + 1
            reply = reply[min(turn, len(reply) - 1)]
        return reply(body) if callable(reply) else reply

    def requests_to(self, path: str) -> list[RecordedRequest]:
        return [request for request in self.requests if request.path == path]


def default_replies(mood_model: str = "llava", prompt_model: str = "llama2") -> dict[str, Reply]:
    """A chatty but usable mood reply and prompt reply, as real models give them."""
    return {mood_model: DEFAULT_MOOD_REPLY, prompt_model: DEFAULT_PROMPT_REPLY}


def start_fake_ollama(
    port: int = 0,
    replies: Mapping[str, Reply] | None = None,
    *,
    mood_model: str = "llava",
    prompt_model: str = "llama2",
    delay_s: float = 0.0,
) -> FakeOllama:
    """Start a fake server in a background thread (stop it with `.stop()`); default replies for the two models."""
    replies = default_replies(mood_model, prompt_model) if replies is None else replies
    return FakeOllama(replies, port=port, delay_s=delay_s).start()


def _handler_for(fake: FakeOllama) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "FakeOllama/1.0"

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep test output clean

        def do_GET(self) -> None:
            fake.requests.append(RecordedRequest("GET", self.path, {}))
            if self.path == "/api/tags":
                models = [
                    {
                        "name": name,
                        "model": name,
                        "modified_at": _now(),
                        "size": 1,
                        "digest": "0" * 64,
                        "details": {"format": "gguf", "family": "fake"},
                    }
                    for name in fake.model_names()
                ]
                self._send_json(200, {"models": models})
            elif self.path == "/api/version":
                self._send_json(200, {"version": "0.0.0-fake"})
            elif self.path == "/":
                self._send(200, b"Ollama is running", "text/plain")
            else:
                self._send_json(404, {"error": "not found"})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            try:
                body = json.loads(self.rfile.read(length) or b"{}")
            except json.JSONDecodeError:
                self._send_json(400, {"error": "invalid JSON body"})
                return
            fake.requests.append(RecordedRequest("POST", self.path, body))
            if self.path not in ("/api/chat", "/api/generate"):
                self._send_json(404, {"error": "not found"})
                return
            model = str(body.get("model", ""))
            reply = fake._reply_for(model, body)
            if fake.delay_s:
                time.sleep(fake.delay_s)
            if reply is None:
                self._send_json(404, {"error": f'model "{model}" not found, try pulling it first'})
            elif isinstance(reply, RawReply):
                self._send(reply.status, reply.body, reply.content_type)
            elif body.get("stream", True):  # Ollama streams unless told not to
                self._stream(model, reply, chat=self.path == "/api/chat")
            else:
                self._send_json(200, {**_payload(model, reply, chat=self.path == "/api/chat"), **_done()})

        def _stream(self, model: str, text: str, chat: bool) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/x-ndjson")
            self.end_headers()  # HTTP/1.0: the body ends when the connection closes
            step = max(1, fake.chunk_chars)
            chunks = [text[i : i + step] for i in range(0, len(text), step)]
            try:
                for chunk in chunks:
                    self._write_line({**_payload(model, chunk, chat), "done": False})
                    if fake.chunk_delay_s:
                        time.sleep(fake.chunk_delay_s)
                self._write_line({**_payload(model, "", chat), **_done()})
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (a timeout test); nothing to clean up

        def _write_line(self, payload: dict) -> None:
            self.wfile.write(json.dumps(payload).encode() + b"\n")
            self.wfile.flush()

        def _send_json(self, status: int, payload: dict) -> None:
            self._send(status, json.dumps(payload).encode(), "application/json")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            try:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass

    return Handler


def _payload(model: str, text: str, chat: bool) -> dict[str, Any]:
    content = {"message": {"role": "assistant", "content": text}} if chat else {"response": text}
    return {"model": model, "created_at": _now(), **content}


def _done() -> dict[str, Any]:
    return {"done": True, "done_reason": "stop", "total_duration": 1, "eval_count": 1}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m serving.ollama_standin", description="Run a stand-in Ollama server with scripted replies."
    )
    parser.add_argument("--port", type=int, default=11434, help="port on 127.0.0.1 (0 = any free port)")
    parser.add_argument("--mood-model", default="llava", help="model name that answers the mood question")
    parser.add_argument("--prompt-model", default="llama2", help="model name that writes the prompt")
    parser.add_argument("--mood-reply", default=DEFAULT_MOOD_REPLY, help="text the mood model answers")
    parser.add_argument("--prompt-reply", default=DEFAULT_PROMPT_REPLY, help="text the prompt model answers")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds to wait before every answer")
    args = parser.parse_args(argv)
    replies = {args.mood_model: args.mood_reply, args.prompt_model: args.prompt_reply}
    fake = start_fake_ollama(args.port, replies, delay_s=args.delay)
    print(f"fake Ollama serving {', '.join(fake.model_names())} at {fake.url} (Ctrl-C to stop)", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        fake.stop()


if __name__ == "__main__":
    main()
