"""HTTP benchmark of a running service: /segment (new image, repeat click) and /edit at several client counts,
batching on vs off, and the HTTP overhead of a repeat click against the same call in-process.

Images are synthetic and seeded; every request is bounded by a timeout, and only loopback servers are started.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

import numpy as np
import requests

from serving.core.images import encode_png_base64

REQUEST_TIMEOUT_S = 600
REPEAT_CLICK_GOAL_MS = 20  # what HTTP may add to a repeat click (p50) over the same click in-process


@dataclass
class LoadResult:
    """One scenario at one client count."""

    scenario: str
    batching: str
    clients: int
    requests: int
    errors: int
    seconds: float
    error_statuses: dict[str, int]
    latencies_ms: list[float] = field(repr=False)

    @property
    def requests_per_s(self) -> float:
        """Successful requests per second: a refused request is quick and would flatter the rate."""
        return (self.requests - self.errors) / self.seconds if self.seconds else float("nan")

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else float("nan")

    def row(self) -> dict:
        data = asdict(self)
        data.pop("latencies_ms")
        return {
            **data,
            "requests_per_s": self.requests_per_s,
            "p50_ms": self.percentile(50),
            "p95_ms": self.percentile(95),
        }


def timed_ms(send: Callable[[], requests.Response]) -> float:
    """Milliseconds one request takes; a `RuntimeError` naming the URL and the answer when it is not a 200."""
    began = time.perf_counter()
    response = send()
    elapsed = (time.perf_counter() - began) * 1000
    if response.status_code != 200:
        raise RuntimeError(f"{response.request.url} answered {response.status_code}: {response.text[:200]}")
    return elapsed


def synthetic_photos(count: int, size: tuple[int, int], seed: int = 0) -> list[str]:
    """Seeded noise photos as base64 PNG (the encoder's cost does not depend on pixel values)."""
    rng = np.random.default_rng(seed)
    width, height = size
    return [encode_png_base64(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)) for _ in range(count)]


def centre_click(size: tuple[int, int]) -> list[dict[str, float]]:
    """One subject click in the middle of a photo of `size` (width, height), as the HTTP API takes clicks."""
    return [{"x": size[0] / 2, "y": size[1] / 2, "label": 1}]


def centre_mask(size: tuple[int, int]) -> str:
    """A subject mask (base64 PNG) over the middle half of a photo of `size` (width, height) each way."""
    width, height = size
    mask = np.zeros((height, width), dtype=bool)
    mask[height // 4 : 3 * height // 4, width // 4 : 3 * width // 4] = True
    return encode_png_base64(mask)


def run_load(
    name: str, batching: str, clients: int, requests_total: int, send: Callable[[int], requests.Response]
) -> LoadResult:
    """`requests_total` calls of `send(i)` from `clients` threads; latencies of the successful ones."""

    def timed(index: int) -> tuple[float, str]:
        began = time.perf_counter()
        try:
            status = str(send(index).status_code)
        except requests.RequestException as exc:
            status = type(exc).__name__
        return (time.perf_counter() - began) * 1000, status

    began = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        outcomes = list(pool.map(timed, range(requests_total)))
    seconds = time.perf_counter() - began
    latencies = [ms for ms, status in outcomes if status == "200"]
    errors = Counter(status for _, status in outcomes if status != "200")
    return LoadResult(name, batching, clients, requests_total, sum(errors.values()), seconds, dict(errors), latencies)


def bench_server(
    url: str, batching: str, clients: list[int], per_client: int, size: tuple[int, int], edit_steps: int
) -> list[LoadResult]:
    """Every scenario against one server."""
    session = requests.Session()
    results = []
    click = centre_click(size)
    mask_b64 = centre_mask(size)
    repeat_photo = synthetic_photos(1, size, seed=99)[0]
    first = session.post(f"{url}/segment", json={"image": repeat_photo, "points": click}, timeout=REQUEST_TIMEOUT_S)
    repeat_id = first.json()["image_id"]
    for count in clients:
        total = count * per_client
        photos = synthetic_photos(total, size, seed=count)  # new images: every request encodes
        results.append(
            run_load(
                "segment, new image",
                batching,
                count,
                total,
                lambda i, photos=photos: session.post(
                    f"{url}/segment", json={"image": photos[i], "points": click}, timeout=REQUEST_TIMEOUT_S
                ),
            )
        )
        results.append(
            run_load(
                "segment, repeat click",
                batching,
                count,
                total,
                lambda i: session.post(
                    f"{url}/segment", json={"image": repeat_photo, "points": click}, timeout=REQUEST_TIMEOUT_S
                ),
            )
        )
        results.append(
            run_load(
                "segment, click by id",
                batching,
                count,
                total,
                lambda i: session.post(
                    f"{url}/segment", json={"image_id": repeat_id, "points": click}, timeout=REQUEST_TIMEOUT_S
                ),
            )
        )
        results.append(
            run_load(
                "edit",
                batching,
                count,
                count,
                lambda i, photos=photos: session.post(
                    f"{url}/edit",
                    json={"image": photos[i], "mask": mask_b64, "prompt": "a forest", "steps": edit_steps, "seed": i},
                    timeout=REQUEST_TIMEOUT_S,
                ),
            )
        )
    return results


def in_process_repeat_click_ms(size: tuple[int, int], repeats: int, settings) -> dict[str, list[float]]:
    """The HTTP repeat-click scenarios through the pipeline in this process (no HTTP, no JSON): with the upload
    decoded as the gateway decodes it, and by image id."""
    from serving.core.images import decode_base64_image, to_rgb_array
    from serving.pipeline import Pipeline

    pipeline = Pipeline.in_process(settings)  # only the segmentation stage is used, so only SAM loads
    photo = synthetic_photos(1, size, seed=99)[0]
    click = centre_click(size)
    first = pipeline.segment(to_rgb_array(decode_base64_image(photo, settings.max_image_pixels)), click, None)
    latencies: dict[str, list[float]] = {"segment, repeat click": [], "segment, click by id": []}
    for _ in range(repeats):
        began = time.perf_counter()
        rgb = to_rgb_array(decode_base64_image(photo, settings.max_image_pixels))
        pipeline.segment(rgb, click, None)
        latencies["segment, repeat click"].append((time.perf_counter() - began) * 1000)
        began = time.perf_counter()
        pipeline.segment_by_id(first.image_id, click, None)
        latencies["segment, click by id"].append((time.perf_counter() - began) * 1000)
    return latencies


def format_table(results: list[LoadResult], overhead: dict[str, dict[str, float]] | None) -> str:
    lines = [
        f"{'scenario':<22} {'batching':<8} {'clients':>7} {'req':>5} {'err':>4} {'req/s':>8} {'p50 ms':>9} "
        f"{'p95 ms':>9}"
    ]
    for r in results:
        lines.append(
            f"{r.scenario:<22} {r.batching:<8} {r.clients:>7} {r.requests:>5} {r.errors:>4} "
            f"{r.requests_per_s:>8.2f} {r.percentile(50):>9.1f} {r.percentile(95):>9.1f}"
        )
    failed = [r for r in results if r.errors]
    for r in failed:
        lines.append(f"  {r.scenario} ({r.batching}, {r.clients} clients) errors: {r.error_statuses}")
    for scenario, numbers in (overhead or {}).items():
        lines.append(
            f"{scenario} p50: HTTP {numbers['http_p50_ms']:.1f} ms, in-process {numbers['in_process_p50_ms']:.1f} ms, "
            f"overhead {numbers['overhead_p50_ms']:.1f} ms (goal ≤ {REPEAT_CLICK_GOAL_MS} ms)"
        )
    return "\n".join(lines)
