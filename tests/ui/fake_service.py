"""A stand-in for the Moodshift service that speaks the HTTP contract with simple deterministic logic.

- /segment: the mask is a disc around each positive point minus a smaller disc around each negative one.
- /mood and /prompt: fixed answers (heuristic / template sources).
- /edit_submit + /edit_status: a job advances one step per status poll; the result keeps the subject's
  pixels and paints the background a colour derived from the seed.
- `fail[endpoint] = (status, message)` makes an endpoint answer with an error; `stop()` takes it down.
- `requests` records every call as `(method, path, json_body)`.

Run it alone for manual UI work: `python -m tests.ui.fake_service --port 3000`.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
from PIL import Image

FAKE_KEYWORDS = ["calm", "warm", "soft"]


def disc_mask(width: int, height: int, points: list[dict[str, Any]], radius: float) -> np.ndarray:
    """HW bool: discs of `radius` around positive points, minus discs of radius/2 around negative points."""
    ys, xs = np.mgrid[0:height, 0:width]
    mask = np.zeros((height, width), bool)
    for point in points:
        if int(point["label"]) == 1:
            mask |= (xs - point["x"]) ** 2 + (ys - point["y"]) ** 2 <= radius**2
    for point in points:
        if int(point["label"]) == 0:
            mask &= (xs - point["x"]) ** 2 + (ys - point["y"]) ** 2 > (radius / 2) ** 2
    return mask


def seed_color(seed: int) -> tuple[int, int, int]:
    """A background colour that depends only on the seed."""
    digest = hashlib.sha256(str(seed).encode()).digest()
    return digest[0], digest[1], digest[2]


def _png_b64(array: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _decode(data: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")


@dataclass
class _Job:
    body: dict[str, Any]
    total: int
    step: int = 0
    state: str = "queued"
    result: dict[str, Any] | None = None


@dataclass
class FakeService:
    """The fake server; `url` once started. Settings below may be changed while it runs."""

    demo_models: bool = True
    notice: str | None = "Demo models with random weights: results are noise."
    disc_radius_fraction: float = 0.2
    steps_per_poll: int = 1
    fail: dict[str, tuple[int, str]] = field(default_factory=dict)
    fail_job: str | None = None  # a job error message: jobs fail after their first step
    requests: list[tuple[str, str, dict[str, Any] | None]] = field(default_factory=list)
    host: str = "127.0.0.1"
    port: int = 0

    def __post_init__(self) -> None:
        self._jobs: dict[str, _Job] = {}
        self._seen_images: set[str] = set()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the fake service first"
        return f"http://{self.host}:{self._server.server_address[1]}"

    def start(self) -> FakeService:
        service = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def do_GET(self) -> None:
                service._handle(self, "GET", None)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else {}
                except ValueError:
                    self._send(400, {"error": "body is not JSON"})
                    return
                service._handle(self, "POST", body)

            def _send(self, status: int, payload: Any) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer((self.host, self.port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Take the service down: further calls get 'connection refused'."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeService:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def calls(self, path: str) -> list[dict[str, Any] | None]:
        """The JSON bodies received on `path`, oldest first."""
        with self._lock:
            return [body for _, p, body in self.requests if p == path]

    # --- request handling ------------------------------------------------------------------------

    def _handle(self, handler: Any, method: str, body: dict[str, Any] | None) -> None:
        path = handler.path.split("?", 1)[0]
        with self._lock:
            self.requests.append((method, path, body))
        endpoint = path.strip("/")
        if endpoint in self.fail:
            status, message = self.fail[endpoint]
            handler._send(status, {"error": message})
            return
        routes = {
            ("GET", "readyz"): lambda _: "ok",
            ("GET", "healthz"): lambda _: "ok",
            ("GET", "info"): self._info,
            ("POST", "segment"): self._segment,
            ("POST", "mood"): self._mood,
            ("POST", "prompt"): self._prompt,
            ("POST", "edit"): self._edit,
            ("POST", "edit_submit"): self._submit,
            ("POST", "edit_status"): self._status,
            ("POST", "edit_cancel"): self._cancel,
        }
        route = routes.get((method, endpoint))
        if route is None:
            handler._send(404, {"error": f"no such endpoint: {method} {path}"})
            return
        try:
            handler._send(200, route(body or {}))
        except (KeyError, ValueError, OSError) as exc:
            handler._send(400, {"error": f"bad request: {exc!r}"})

    def _info(self, _: dict[str, Any]) -> dict[str, Any]:
        profile = "tiny" if self.demo_models else "real"
        return {
            "stages": {
                "segment": {"profile": profile, "model": "fake-sam"},
                "diffusion": {"profile": profile, "model": "fake-sdxl"},
                "mood": {"model": "llava", "host": "http://127.0.0.1:9", "reachable": False},
                "prompt": {"model": "llama2", "host": "http://127.0.0.1:9", "reachable": False},
            },
            "device": "cpu",
            "dtype": "float32",
            "versions": {"moodshift": "fake"},
            "demo_models": self.demo_models,
            "notice": self.notice if self.demo_models else None,
        }

    def _mask(self, image: Image.Image, points: list[dict[str, Any]]) -> np.ndarray:
        radius = self.disc_radius_fraction * min(image.size)
        return disc_mask(image.width, image.height, points, radius)

    def _segment(self, body: dict[str, Any]) -> dict[str, Any]:
        image = _decode(body["image"])
        points = body["points"]
        if not points:
            raise ValueError("points must not be empty")
        image_id = hashlib.sha256(base64.b64decode(body["image"])).hexdigest()[:16]
        with self._lock:
            cached = image_id in self._seen_images
            self._seen_images.add(image_id)
        mask = self._mask(image, points)
        return {"mask": _png_b64(mask.astype(np.uint8) * 255), "score": 0.9, "image_id": image_id, "cached": cached}

    def _mood(self, body: dict[str, Any]) -> dict[str, Any]:
        _decode(body["image"])
        return {"keywords": list(FAKE_KEYWORDS), "source": "heuristic", "reason": "Ollama is not reachable (fake)"}

    def _prompt(self, body: dict[str, Any]) -> dict[str, Any]:
        words = [str(body["user_keyword"]), *body["keywords"]]
        prompt = ", ".join(word for word in words if word) + ", cinematic lighting, highly detailed"
        return {"prompt": prompt, "tokens": len(prompt.split()) + 2, "source": "template", "reason": "fake"}

    def _result(self, body: dict[str, Any]) -> dict[str, Any]:
        image = _decode(body["image"])
        if body.get("mask"):
            subject = np.asarray(_decode(body["mask"]).convert("L")) >= 128
        else:
            subject = self._mask(image, body["points"])
        seed = int(body.get("seed", 0))
        variants = int(body.get("variants", 1))
        images = []
        for seed_i in range(seed, seed + variants):
            out = np.asarray(image).copy()
            out[~subject] = seed_color(seed_i)
            images.append(_png_b64(out))
        prompt = body.get("prompt") or f"{body.get('user_keyword', '')}, fake template prompt"
        return {
            "images": images,
            "seeds": list(range(seed, seed + variants)),
            "prompt": prompt,
            "timings": {"segment_s": 0.0, "diffusion_s": 0.01, "total_s": 0.02},
            "image_id": hashlib.sha256(base64.b64decode(body["image"])).hexdigest()[:16],
        }

    def _edit(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._result(body)

    def _submit(self, body: dict[str, Any]) -> dict[str, Any]:
        _decode(body["image"])
        total = int(body.get("steps", 30))
        with self._lock:
            job_id = f"job-{len(self._jobs) + 1}"
            self._jobs[job_id] = _Job(body=body, total=total)
        return {"job_id": job_id, "total_steps": total}

    def _status(self, body: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            job = self._jobs[body["job_id"]]
            if job.state in ("queued", "running"):
                job.state = "running"
                job.step = min(job.total, job.step + self.steps_per_poll)
                if self.fail_job and job.step >= 1:
                    job.state = "failed"
                elif job.step >= job.total:
                    job.state = "done"
            answer: dict[str, Any] = {
                "job_id": body["job_id"],
                "state": job.state,
                "step": job.step,
                "total": job.total,
            }
        if job.state == "done":
            if job.result is None:
                job.result = self._result(job.body)
            answer["result"] = job.result
        if job.state == "failed":
            answer["error"] = self.fail_job
        return answer

    def _cancel(self, body: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            job = self._jobs[body["job_id"]]
            if job.state in ("queued", "running"):
                job.state = "cancelled"
            return {"job_id": body["job_id"], "state": job.state}


def main() -> None:
    parser = argparse.ArgumentParser(description="Run the fake Moodshift service (for UI development).")
    parser.add_argument("--port", type=int, default=3000)
    parser.add_argument("--steps-per-poll", type=int, default=1)
    args = parser.parse_args()
    service = FakeService(port=args.port, steps_per_poll=args.steps_per_poll).start()
    print(f"fake Moodshift service on {service.url}", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
