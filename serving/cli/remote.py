"""`edit --server URL`: the same edit through a running service's job API, with a progress bar from /edit_status.

The CLI's own small client of the HTTP contract (the studio has its own: the two deploy separately)."""

from __future__ import annotations

import base64
import io
import time
from pathlib import Path
from typing import Any

import typer

from serving.cli.app import fail, read_file, save_atomically

POLL_S = 0.25
CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 300.0


def call(url: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """POST `body` as JSON to the service; its answer, or a clear CLI error with the service's message."""
    import requests

    try:
        response = requests.post(f"{url}{path}", json=body, timeout=(CONNECT_TIMEOUT_S, READ_TIMEOUT_S))
    except requests.RequestException as exc:
        fail(f"Cannot reach the Moodshift service at {url} ({type(exc).__name__}); is it running?")
    try:
        answer = response.json()
    except ValueError:
        answer = None
    if response.status_code >= 400:
        message = answer.get("error") if isinstance(answer, dict) else response.text[:300]
        fail(f"the service answered {response.status_code} on {path}: {message}")
    if not isinstance(answer, dict):
        fail(f"the service answered {path} with something other than a JSON object")
    return answer


def edit_on_server(
    url: str,
    image: Path,
    mask: Path | None,
    clicks: list[tuple[float, ...]],
    box: list[float] | None,
    request: dict[str, Any],
    output: Path,
    preview: Path | None = None,
) -> None:
    """Submit the edit, follow it with a progress bar (saving each new preview to `preview` when given), and write
    each variant like the in-process edit does."""
    from serving.cli.edit import variant_paths

    url = url.rstrip("/")
    body: dict[str, Any] = {key: value for key, value in request.items() if value is not None}
    body["image"] = base64.b64encode(read_file(image, "image ")).decode("ascii")
    if mask is not None:
        body["mask"] = base64.b64encode(read_file(mask, "mask ")).decode("ascii")
    else:
        body["points"] = [dict(zip(("x", "y", "label"), (*click, 1)[:3], strict=True)) for click in clicks]
        if box is not None:
            body["box"] = box
    job = call(url, "/edit_submit", body)
    with typer.progressbar(length=int(job["total_steps"]), label="denoising") as bar:
        shown = 0
        while (status := call(url, "/edit_status", {"job_id": job["job_id"]}))["state"] not in (
            "done",
            "failed",
            "cancelled",
        ):
            bar.update(int(status["step"]) - shown)
            shown = int(status["step"])
            if preview is not None and status.get("preview"):
                save_atomically(preview, base64.b64decode(status["preview"]))
            time.sleep(POLL_S)
        bar.update(int(status["total"]) - shown)
    if status["state"] != "done":
        fail(f"the edit {status['state']}: {status.get('error')}")
    result = status["result"]
    paths = variant_paths(output, len(result["images"]))
    output.parent.mkdir(parents=True, exist_ok=True)
    for path, data, seed in zip(paths, result["images"], result["seeds"], strict=True):
        _write_image(path, base64.b64decode(data))
        typer.echo(f"wrote {path} (seed {seed}) via {url}")
    if "mode" in result:
        typer.echo(f"{result['mode']} mode, {result['steps']} steps, guidance {result['guidance']:g}")


def _write_image(path: Path, png: bytes) -> None:
    """Write a PNG from the service in the format the path's extension asks for."""
    from PIL import Image

    try:
        Image.open(io.BytesIO(png)).save(path)
    except (OSError, ValueError) as exc:
        fail(f"cannot write {path}: {exc}")
