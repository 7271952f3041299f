"""`edit --server`: edits through a running service's job API, each followed through /edit_status (its step k of n).

The CLI's own small client of the HTTP contract (the studio has its own: the two deploy separately). Safe to use
from several threads at once: `edit --concurrency N` keeps N edits in flight, so the service batches them."""

from __future__ import annotations

import base64
import io
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from serving.cli.app import save_atomically
from serving.cli.edit import Edited, EditorUnavailable, PhotoFailed, Progress, Subject
from serving.jobs import FINISHED

POLL_S = 0.25
CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 300.0


class RemoteEditor:
    """Edits on the service at `url`: the request's texts and options, the subject as the command line gave it."""

    def __init__(self, url: str, request: dict[str, Any], subject: Subject, preview: Path | None = None) -> None:
        self.url = url.rstrip("/")
        self.request = {key: value for key, value in request.items() if value is not None}
        self.subject = subject
        self.preview = preview  # where to save the preview of the background forming (one photo)
        self._local = threading.local()  # a requests session per thread: sessions are not thread-safe

    def edit(self, photo: Path, progress: Progress) -> Edited:
        """Submit one photo's edit, follow it, and return its images; `PhotoFailed` when the service refuses or
        the edit fails, `EditorUnavailable` when the service cannot be reached at all."""
        from PIL import Image

        body: dict[str, Any] = {**self.request, "image": _base64_of(photo, "image ")}
        if self.subject.mask is not None:
            body["mask"] = _base64_of(self.subject.mask, "mask ")
        if self.subject.clicks:
            body["points"] = [dict(zip(("x", "y", "label"), (*c, 1)[:3], strict=True)) for c in self.subject.clicks]
        if self.subject.box is not None:
            body["box"] = self.subject.box
        if self.subject.auto:
            body["auto"] = True
        job = self.call("/edit_submit", body)
        while (status := self.call("/edit_status", {"job_id": job["job_id"]}))["state"] not in FINISHED:
            progress(int(status["step"]) / max(int(status["total"]), 1))
            if self.preview is not None and status.get("preview"):
                save_atomically(self.preview, base64.b64decode(status["preview"]))
            time.sleep(POLL_S)
        if status["state"] != "done":
            raise PhotoFailed(f"the edit {status['state']}: {status.get('error')}")
        result = status["result"]
        images = [
            np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")) for data in result["images"]
        ]
        ran = ""
        if "mode" in result:
            ran = f", {result['mode']} mode, {result['steps']} steps, guidance {result['guidance']:g}"
        return Edited(images, [int(seed) for seed in result["seeds"]], f"via {self.url}{ran}")

    def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST `body` as JSON; the service's answer, or the error it answered (its message) as `PhotoFailed`."""
        import requests

        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        try:
            response = session.post(f"{self.url}{path}", json=body, timeout=(CONNECT_TIMEOUT_S, READ_TIMEOUT_S))
        except requests.ConnectionError as exc:
            raise EditorUnavailable(
                f"Cannot reach the Moodshift service at {self.url} ({type(exc).__name__}); is it running?"
            ) from None
        except requests.RequestException as exc:
            raise PhotoFailed(f"{path} got no answer from {self.url} ({type(exc).__name__})") from None
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if response.status_code >= 400:
            message = answer.get("error") if isinstance(answer, dict) else response.text[:300]
            raise PhotoFailed(f"the service answered {response.status_code} on {path}: {message}")
        if not isinstance(answer, dict):
            raise PhotoFailed(f"the service answered {path} with something other than a JSON object")
        return answer


def _base64_of(path: Path, what: str) -> str:
    try:
        return base64.b64encode(path.read_bytes()).decode("ascii")
    except OSError as exc:
        raise PhotoFailed(f"cannot read {what}{path}: {exc.strerror or exc}") from None
