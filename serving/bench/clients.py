"""What HTTP clients pay: a repeat click by image id over HTTP against the same click in-process, a 12 MP JPEG sent
as a multipart upload against base64 JSON, and an edit with live previews against one without. Each pair runs
alternately on one service, so a busy neighbour slows both alike."""

from __future__ import annotations

import base64
import io
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import requests
from PIL import Image

from serving.bench.serve import (
    REPEAT_CLICK_GOAL_MS,
    REQUEST_TIMEOUT_S,
    centre_click,
    centre_mask,
    synthetic_photos,
    timed_ms,
)
from serving.jobs import FINISHED


@dataclass
class Pair:
    """Latencies (ms) of two ways to do one thing, and the goal their difference is held to."""

    name: str
    first: str
    second: str
    first_ms: list[float] = field(default_factory=list)
    second_ms: list[float] = field(default_factory=list)
    goal: str = ""

    def p50(self, which: str) -> float:
        return float(np.median(self.first_ms if which == "first" else self.second_ms))

    def row(self) -> dict:
        first, second = self.p50("first"), self.p50("second")
        return {**asdict(self), "first_p50_ms": first, "second_p50_ms": second, "difference_ms": second - first}


def repeat_click(url: str, size: tuple[int, int], repeats: int, settings, auto: bool) -> Pair:
    """A repeat click by image id through the pipeline in this process and over HTTP, alternately (the same models
    on both sides when `settings` are the service's; the HTTP side also ships the mask back as a PNG, which is part
    of what it costs). `auto`: the click refines the automatic subject, as the studio's clicks do; else it is SAM's
    prompt. The service is asked first, so one that does not answer costs no model load here. When the two sides'
    models differ (another service's settings), the pair's name says so and it has no goal."""
    from serving.pipeline import Pipeline

    session = requests.Session()
    photo = synthetic_photos(1, size, seed=99)[0]
    click = centre_click(size)
    body = {"image": photo, "points": click, "auto": auto}
    remote = session.post(f"{url}/segment", json=body, timeout=REQUEST_TIMEOUT_S).json()
    body = {"image_id": remote["image_id"], "points": click, "auto": auto}
    pipeline = Pipeline.in_process(settings)
    rgb = np.asarray(Image.open(io.BytesIO(base64.b64decode(photo))))
    local = pipeline.segment(rgb, click, None, auto)
    if local.engine == remote["engine"]:
        name, goal = f"repeat click by image id ({remote['engine']})", f"≤ +{REPEAT_CLICK_GOAL_MS} ms p50"
    else:
        name, goal = f"repeat click by image id (HTTP {remote['engine']}, in-process {local.engine})", "not comparable"
    pair = Pair(name, "in-process", "HTTP", goal=goal)
    for _ in range(repeats):
        began = time.perf_counter()
        pipeline.segment_by_id(local.image_id, click, None, auto)
        pair.first_ms.append((time.perf_counter() - began) * 1000)
        pair.second_ms.append(timed_ms(lambda: session.post(f"{url}/segment", json=body, timeout=REQUEST_TIMEOUT_S)))
    return pair


def jpeg_photo(width: int, height: int, seed: int = 0) -> bytes:
    """A photo-like JPEG (smooth gradients and noise, as a camera's file compresses) of width×height."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width]
    base = np.stack([xs * 255 // width, ys * 255 // height, (xs + ys) * 255 // (width + height)], axis=-1)
    pixels = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def uploads(url: str, jpeg: bytes, repeats: int) -> Pair:
    """/mood of the same JPEG sent as base64 JSON and as a multipart upload (the encoding on the client's side is
    counted: a client has to do it)."""
    session = requests.Session()
    pair = Pair(f"/mood, {len(jpeg) / 1e6:.1f} MB JPEG", "JSON (base64)", "multipart upload", goal="upload not slower")
    for _ in range(repeats):
        pair.first_ms.append(
            timed_ms(
                lambda: session.post(
                    f"{url}/mood", json={"image": base64.b64encode(jpeg).decode()}, timeout=REQUEST_TIMEOUT_S
                )
            )
        )
        pair.second_ms.append(
            timed_ms(
                lambda: session.post(
                    f"{url}/mood", files={"image": ("photo.jpg", jpeg, "image/jpeg")}, timeout=REQUEST_TIMEOUT_S
                )
            )
        )
    return pair


def previews(url: str, size: tuple[int, int], repeats: int, steps: int) -> Pair:
    """Edits through the job API, polled as the studio polls, with previews off and on."""
    session = requests.Session()
    photo = synthetic_photos(1, size, seed=5)[0]
    edit = {"image": photo, "mask": centre_mask(size), "prompt": "a forest", "steps": steps, "seed": 1}
    pair = Pair(f"edit, {steps} steps, polled", "previews off", "previews on", goal="≤ +5 %")

    def run(preview: bool) -> float:
        began = time.perf_counter()
        job = session.post(f"{url}/edit_submit", json={**edit, "preview": preview}, timeout=REQUEST_TIMEOUT_S).json()
        while True:
            status = session.post(f"{url}/edit_status", json={"job_id": job["job_id"]}, timeout=60).json()
            if status["state"] in FINISHED:
                if status["state"] != "done":
                    raise RuntimeError(f"the edit {status['state']}: {status.get('error')}")
                return (time.perf_counter() - began) * 1000
            time.sleep(0.1)

    run(True)  # warm-up
    for _ in range(repeats):
        pair.first_ms.append(run(False))
        pair.second_ms.append(run(True))
    return pair


def format_pairs(pairs: list[Pair]) -> str:
    width = max(len(pair.name) for pair in pairs)
    lines = [f"{'what':<{width}} {'one way':>22} {'the other':>24} {'difference':>12}  goal"]
    for pair in pairs:
        first, second = pair.p50("first"), pair.p50("second")
        difference = second - first
        lines.append(
            f"{pair.name:<{width}} {pair.first + f' {first:.1f} ms':>22} {pair.second + f' {second:.1f} ms':>24} "
            f"{f'{difference:+.1f} ms':>12}  {pair.goal} ({100 * difference / first:+.1f} %)"
        )
    return "\n".join(lines)
