"""What running the stage services on their own servers costs: a repeat click and an edit through a gateway whose
stages are reached by URL (JSON between servers) against the same calls through the single-process service (pickle
over local sockets), alternated so that a busy neighbour slows both alike."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import requests

from serving.bench.serve import REQUEST_TIMEOUT_S, centre_click, centre_mask, synthetic_photos, timed_ms

SCENARIOS = ("repeat click", "edit")
GOALS = {"repeat click": "≤ +15 ms p50", "edit": "≤ +5 % p50"}


@dataclass
class SplitComparison:
    """Latencies (ms) per scenario of the single service and the split deployment, one request at a time."""

    size: tuple[int, int]
    edit_steps: int
    single_ms: dict[str, list[float]]
    split_ms: dict[str, list[float]]

    def p50(self, side: str, scenario: str) -> float:
        return float(np.median((self.single_ms if side == "single" else self.split_ms)[scenario]))

    def overhead_ms(self, scenario: str) -> float:
        return self.p50("split", scenario) - self.p50("single", scenario)

    def to_dict(self) -> dict:
        rows = {
            scenario: {
                "single_p50_ms": self.p50("single", scenario),
                "split_p50_ms": self.p50("split", scenario),
                "overhead_ms": self.overhead_ms(scenario),
                "overhead_percent": 100 * self.overhead_ms(scenario) / self.p50("single", scenario),
            }
            for scenario in SCENARIOS
        }
        return {**asdict(self), "p50": rows}


def compare_split(
    single_url: str, split_url: str, size: tuple[int, int], clicks: int, edits: int, edit_steps: int
) -> SplitComparison:
    """`clicks` repeat clicks (by image id) and `edits` edits on each deployment, alternating between them."""
    session = requests.Session()
    photo = synthetic_photos(1, size, seed=7)[0]
    click = centre_click(size)
    edit = {"image": photo, "mask": centre_mask(size), "prompt": "a forest", "steps": edit_steps, "seed": 1}
    urls = {"single": single_url, "split": split_url}
    image_ids = {}
    for side, url in urls.items():  # the first click encodes the image and warms every worker
        first = session.post(f"{url}/segment", json={"image": photo, "points": click}, timeout=REQUEST_TIMEOUT_S)
        image_ids[side] = first.json()["image_id"]
        session.post(f"{url}/edit", json=edit, timeout=REQUEST_TIMEOUT_S)
    latencies: dict[str, dict[str, list[float]]] = {side: {name: [] for name in SCENARIOS} for side in urls}
    for scenario, count in (("repeat click", clicks), ("edit", edits)):
        for _ in range(count):
            for side, url in urls.items():
                if scenario == "repeat click":
                    body, path = {"image_id": image_ids[side], "points": click}, "/segment"
                else:
                    body, path = edit, "/edit"
                latencies[side][scenario].append(
                    timed_ms(
                        lambda url=url, path=path, body=body: session.post(
                            f"{url}{path}", json=body, timeout=REQUEST_TIMEOUT_S
                        )
                    )
                )
    return SplitComparison(size, edit_steps, latencies["single"], latencies["split"])


def format_split_table(result: SplitComparison) -> str:
    width, height = result.size
    lines = [
        f"stages on their own servers vs one service, {width}×{height} photo, {result.edit_steps}-step edits, p50",
        f"{'scenario':<14} {'single ms':>10} {'split ms':>10} {'overhead':>18}  goal",
    ]
    for scenario in SCENARIOS:
        single, split = result.p50("single", scenario), result.p50("split", scenario)
        overhead = f"{split - single:+.1f} ms ({100 * (split - single) / single:+.1f} %)"
        lines.append(f"{scenario:<14} {single:>10.1f} {split:>10.1f} {overhead:>18}  {GOALS[scenario]}")
    return "\n".join(lines)
