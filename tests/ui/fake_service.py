"""A stand-in for the Moodshift service that speaks the HTTP contract with simple deterministic logic.

- /info: the service's own edit options table (`serving.core.edit_options`), with `option_defaults` in place of
  the `MOODSHIFT_DEFAULT_*` settings (or `options` rows given as they are), the default `limits`, and `fast`: the
  tiny service's few-step stand-in, or `fast_models.unavailable(reason)` to have fast edits refused.
- /segment: no points and no box (or `auto`) start from the "automatic subject", a centred ellipse; each positive
  point adds a disc around it and each negative one removes a smaller disc (without `auto` the discs alone make the
  mask). `engine` says which: fake-salient, fake-salient+clicks, fake-sam. Images are decoded and named
  (`image_id`) by the service's own functions, and any later request may send the id instead.
- /matte: the subject (a mask, or discs around the clicks) as an RGBA PNG whose alpha falls off over a few pixels
  inside its boundary; masks are read and checked by the service's own functions.
- /mood and /prompt: fixed answers (heuristic / template sources).
- /edit_submit + /edit_status: options are checked as the service checks them (mode fast takes `fast`'s steps and
  guidance, or is refused with its reason); a job advances one step per status poll; the result keeps the subject's
  pixels (the mask, the clicks' mask, or the automatic subject) and paints the background a colour derived from the
  seed.
- Caller mistakes get the service's statuses: 400 (bad image, point outside it, bad option), 404 (unknown job),
  409 (an image_id no longer cached), 413 (an image over the pixel limit).
- `fail[endpoint] = (status, message)` makes an endpoint answer with an error; `stop()` takes it down.
- `requests` records every call as `(method, path, json_body)`.

`tests/ui/test_fake_service_contract.py` checks it answers like the real service. Run it alone for manual UI work:
`python -m tests.ui.fake_service --port 3000`.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
from PIL import Image

from serving.core.edit_options import EDIT_OPTIONS, EditOptions, check_edit_options, info_table, mode_rules
from serving.core.errors import NotCachedError, NotFoundError, TooLargeError
from serving.core.images import decode_base64, decode_base64_image, image_id_of, to_rgb_array
from serving.core.masks import check_subject_mask, feather, mask_levels_from_png_bytes
from serving.models.fast_models import FAMILIES, STAND_IN_NAME, describe_fast
from serving.settings import Settings

FAKE_KEYWORDS = ["calm", "warm", "soft"]
SOFT_EDGE_PX = 3  # the fake cut-out's alpha falls off over this many pixels inside the subject
CANCELLED_MESSAGE = "cancelled by the caller"
# The service's default limits (its settings' field defaults, not this process's environment).
DEFAULT_LIMITS = {
    name: Settings.model_fields[name].default for name in ("max_upload_mb", "max_image_pixels", "max_points")
}


def tiny_fast_model() -> dict[str, Any]:
    """The tiny service's few-step stand-in, as its `/info` describes it."""
    return describe_fast(FAMILIES["lightning"], "lora", STAND_IN_NAME)


def automatic_subject(width: int, height: int) -> np.ndarray:
    """The fake's automatic subject: a centred ellipse over the middle half of each side."""
    ys, xs = np.mgrid[0:height, 0:width]
    return ((xs - width / 2) / (width / 4)) ** 2 + ((ys - height / 2) / (height / 4)) ** 2 <= 1


def disc_mask(
    width: int, height: int, points: list[dict[str, Any]], radius: float, start: np.ndarray | None = None
) -> np.ndarray:
    """HW bool: `start` (or nothing) plus discs of `radius` around positive points, minus discs of radius/2 around
    negative points."""
    ys, xs = np.mgrid[0:height, 0:width]
    mask = np.zeros((height, width), bool) if start is None else start.copy()
    for point in points:
        if int(point.get("label", 1)) == 1:
            mask |= (xs - point["x"]) ** 2 + (ys - point["y"]) ** 2 <= radius**2
    for point in points:
        if int(point.get("label", 1)) == 0:
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


def _decode(data: str, max_pixels: int) -> np.ndarray:
    """HWC uint8 RGB, decoded exactly as the service decodes an upload (EXIF orientation, pixel limit, formats)."""
    return to_rgb_array(decode_base64_image(data, max_pixels))


def _check_points(points: list[dict[str, Any]], width: int, height: int) -> None:
    for index, point in enumerate(points):
        x, y = point["x"], point["y"]
        if not (0 <= x < width and 0 <= y < height):
            raise ValueError(f"point {index} ({x:g}, {y:g}) is outside the {width}×{height} image")


@dataclass
class _Job:
    body: dict[str, Any]
    options: EditOptions
    total: int
    step: int = 0
    state: str = "queued"
    result: dict[str, Any] | None = None


@dataclass
class FakeService:
    """The fake server; `url` once started. Settings below may be changed while it runs."""

    demo_models: bool = True
    notice: str | None = "Demo models with random weights: results are noise."
    option_defaults: dict[str, Any] = field(default_factory=dict)  # as MOODSHIFT_DEFAULT_<NAME> sets them
    options: list[dict[str, Any]] | None = None  # /info's rows as given; None: the service's table
    limits: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_LIMITS))
    fast: dict[str, Any] = field(default_factory=tiny_fast_model)  # /info's `fast`
    disc_radius_fraction: float = 0.2
    steps_per_poll: int = 1
    fail: dict[str, tuple[int, str]] = field(default_factory=dict)
    fail_job: str | None = None  # a job error message: jobs fail after their first step
    requests: list[tuple[str, str, dict[str, Any] | None]] = field(default_factory=list)
    host: str = "127.0.0.1"
    port: int = 0

    def __post_init__(self) -> None:
        self._jobs: dict[str, _Job] = {}
        self._images: dict[str, np.ndarray] = {}  # by image_id: what a repeat click may name instead of sending
        # (image_id, auto) analysed so far: the service caches SAM's embedding and the automatic subject apart
        self._analysed: set[tuple[str, bool]] = set()
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

    def forget_images(self) -> None:
        """Forget every photo kept by id (as a restarted or busy service would): the next id gets a 409."""
        with self._lock:
            self._images.clear()

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
            ("POST", "matte"): self._matte,
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
        except TooLargeError as exc:
            handler._send(413, {"error": str(exc)})
        except NotFoundError as exc:
            handler._send(404, {"error": str(exc)})
        except NotCachedError as exc:
            handler._send(409, {"error": str(exc)})
        except (KeyError, ValueError, TypeError, OSError) as exc:
            handler._send(400, {"error": f"bad request: {exc!r}" if isinstance(exc, KeyError) else str(exc)})

    def _info(self, _: dict[str, Any]) -> dict[str, Any]:
        profile = "tiny" if self.demo_models else "real"
        return {
            "stages": {
                "segment": {
                    "profile": profile,
                    "model": "fake-sam",
                    "salient": {"model": "fake-salient", "file": "fake.onnx", "about": "fake", "problem": None},
                    "clicks": "fake-salient+clicks",
                },
                "diffusion": {"profile": profile, "model": "fake-sdxl"},
                "mood": {"model": "llava", "host": "http://127.0.0.1:9", "reachable": False},
                "prompt": {"model": "llama2", "host": "http://127.0.0.1:9", "reachable": False},
            },
            "device": "cpu",
            "dtype": "float32",
            "versions": {"moodshift": "fake"},
            "demo_models": self.demo_models,
            "notice": self.notice if self.demo_models else None,
            "options": self.options if self.options is not None else info_table(self.option_defaults),
            "limits": dict(self.limits),
            "fast": dict(self.fast),
        }

    def _image(self, data: str) -> np.ndarray:
        return _decode(data, int(self.limits["max_image_pixels"]))

    def _mask(self, image: np.ndarray, points: list[dict[str, Any]], auto: bool) -> tuple[np.ndarray, str]:
        """The mask of the clicks (starting from the automatic subject with `auto`) and its engine."""
        height, width = image.shape[:2]
        start = automatic_subject(width, height) if auto else None
        mask = disc_mask(width, height, points, self.disc_radius_fraction * min(width, height), start)
        engine = "fake-sam" if not auto else "fake-salient+clicks" if points else "fake-salient"
        return mask, engine

    @staticmethod
    def _starts_automatic(body: dict[str, Any]) -> bool:
        """As the service decides: asked to (`auto`), or no points and no box."""
        return bool(body.get("auto")) or (not body.get("points") and body.get("box") is None)

    def _photo(self, body: dict[str, Any]) -> tuple[np.ndarray, str, bool]:
        """The photo sent (kept by its id) or named by an earlier answer's `image_id` (409 when not kept), its id,
        and whether it was kept already."""
        if body.get("image") is not None:
            image = self._image(body["image"])
            image_id = image_id_of(image)
            with self._lock:
                kept = image_id in self._images
                self._images[image_id] = image
            return image, image_id, kept
        image_id = str(body.get("image_id"))
        with self._lock:
            image = self._images.get(image_id)
        if image is None:
            raise NotCachedError.image(image_id)
        return image, image_id, True

    def _segment(self, body: dict[str, Any]) -> dict[str, Any]:
        points = body.get("points") or []
        auto = self._starts_automatic(body)
        image, image_id, _ = self._photo(body)
        with self._lock:  # cached: this image was segmented this way before (its model results are kept)
            cached = (image_id, auto) in self._analysed
            self._analysed.add((image_id, auto))
        _check_points(points, image.shape[1], image.shape[0])
        mask, engine = self._mask(image, points, auto)
        mask_png = _png_b64(mask.astype(np.uint8) * 255)
        return {"mask": mask_png, "score": 0.9, "image_id": image_id, "cached": cached, "engine": engine}

    def _matte(self, body: dict[str, Any]) -> dict[str, Any]:
        image, image_id, _ = self._photo(body)
        height, width = image.shape[:2]
        if body.get("mask") is not None:
            if body.get("points") or body.get("box") is not None or body.get("auto"):
                raise ValueError("give either a mask or points/box (or auto), not both")
            levels = mask_levels_from_png_bytes(decode_base64(body["mask"], "mask"), (width, height))
            subject = check_subject_mask(levels, image.shape)
        else:  # clicks, or the automatic subject, as /segment makes them
            points = body.get("points") or []
            _check_points(points, width, height)
            mask, _ = self._mask(image, points, self._starts_automatic(body))
            subject = check_subject_mask(mask, image.shape)
        alpha = 1.0 - feather(~subject, SOFT_EDGE_PX)  # 1 deep inside, falling to 0 at the boundary
        rgba = np.dstack([image * (alpha > 0)[..., None], np.rint(alpha * 255)]).astype(np.uint8)
        return {"cutout": _png_b64(rgba), "image_id": image_id}

    def _mood(self, body: dict[str, Any]) -> dict[str, Any]:
        _, image_id, _ = self._photo(body)
        return {
            "keywords": list(FAKE_KEYWORDS),
            "source": "heuristic",
            "reason": "Ollama is not reachable (fake)",
            "image_id": image_id,
        }

    def _prompt(self, body: dict[str, Any]) -> dict[str, Any]:
        words = [str(body["user_keyword"]), *body["keywords"]]
        prompt = ", ".join(word for word in words if word) + ", cinematic lighting, highly detailed"
        return {"prompt": prompt, "tokens": len(prompt.split()) + 2, "source": "template", "reason": "fake"}

    def _options(self, body: dict[str, Any]) -> EditOptions:
        """The edit's options checked as the service checks them (400 naming a bad one), the seed drawn if absent."""
        values = {name: body.get(name) for name in EDIT_OPTIONS}
        return check_edit_options(values, self.option_defaults, lambda mode: mode_rules(mode, lambda: self.fast))

    def _result(self, body: dict[str, Any], options: EditOptions) -> dict[str, Any]:
        image, image_id, _ = self._photo(body)
        if body.get("mask"):
            mask = Image.open(io.BytesIO(base64.b64decode(body["mask"]))).convert("L")
            subject = np.asarray(mask) >= 128
        else:
            subject, _ = self._mask(image, body.get("points") or [], self._starts_automatic(body))
        images = []
        for seed in options.seeds:
            out = image.copy()
            out[~subject] = seed_color(seed)
            images.append(_png_b64(out))
        prompt = body.get("prompt") or f"{body.get('user_keyword', '')}, fake template prompt"
        return {
            "images": images,
            "seeds": options.seeds,
            "prompt": prompt,
            "prompt_source": "user" if body.get("prompt") else "template",
            "tokens": len(prompt.split()) + 2,
            "image_id": image_id,
            "timings": {"segment_s": 0.0, "diffusion_s": 0.01, "total_s": 0.02},
            "mode": options.mode,
            "steps": options.steps,
            "guidance": options.guidance,
        }

    def _edit(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._result(body, self._options(body))

    def _submit(self, body: dict[str, Any]) -> dict[str, Any]:
        self._photo(body)
        options = self._options(body)
        with self._lock:
            job_id = uuid.uuid4().hex
            self._jobs[job_id] = _Job(body=body, options=options, total=options.denoising_steps)
        return {"job_id": job_id, "total_steps": options.denoising_steps}

    def _job(self, job_id: Any) -> _Job:
        job = self._jobs.get(str(job_id))
        if job is None:
            raise NotFoundError(f"no edit job with id {job_id!r} (unknown or expired)")
        return job

    def _status(self, body: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            job = self._job(body["job_id"])
            if job.state in ("queued", "running"):
                job.state = "running"
                job.step = min(job.total, job.step + self.steps_per_poll)
                if self.fail_job and job.step >= 1:
                    job.state = "failed"
                elif job.step >= job.total:
                    job.state = "done"
            stage = "diffusion" if job.state in ("running", "failed", "cancelled") else job.state
            answer: dict[str, Any] = {
                "job_id": body["job_id"],
                "state": job.state,
                "stage": stage,
                "step": job.step,
                "total": job.total,
            }
        if job.state == "done":
            if job.result is None:
                job.result = self._result(job.body, job.options)
            answer["result"] = job.result
        if job.state == "running" and job.options.preview:  # the background "forming": the seed's colour, darker early
            shade = np.array(seed_color(job.options.seed), dtype=np.float32) * job.step / max(job.total, 1)
            answer["preview"] = _png_b64(np.full((24, 32, 3), shade, dtype=np.uint8))
        if job.state == "failed":
            answer["error"] = self.fail_job
        if job.state == "cancelled":
            answer["error"] = CANCELLED_MESSAGE
        return answer

    def _cancel(self, body: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            job = self._job(body["job_id"])
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
