"""HTTP client for the Moodshift service contract (/segment, /matte, /mood, /prompt, /edit_submit...).

Every failure becomes a `ServiceError` that names the URL tried, the HTTP status (if any) and a message a
person can act on, so the UI can show it without a traceback.
"""

from __future__ import annotations

import base64
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import requests

CONNECT_TIMEOUT_S = 3.0
# Read timeouts: the first SAM embedding and an Ollama call may take a while on CPU.
INFO_TIMEOUT_S = 5.0
STAGE_TIMEOUT_S = 300.0
STATUS_TIMEOUT_S = 15.0
# What a request carries beside its photo (points, options, prompt, field names): the service's limit is on the
# whole body, so this much is kept free of it. A mask sent along with a photo the service had let go is not counted:
# that is rare, and a two-level mask compresses to little.
REQUEST_OVERHEAD_BYTES = 64_000


class ServiceError(RuntimeError):
    """A call to the service failed: `url` tried, `status` (None when no answer came) and `message`."""

    def __init__(self, url: str, message: str, status: int | None = None) -> None:
        self.url = url
        self.status = status
        self.message = message
        detail = f"HTTP {status}" if status is not None else "no response"
        super().__init__(f"{message} ({detail} from {url})")


@dataclass(frozen=True)
class Segmentation:
    """`/segment`'s answer: the subject mask (PNG bytes, white = subject, same size as the image) and the `engine`
    that made it (the salient model for the automatic subject, "...+clicks" or SAM once clicks refine it)."""

    mask_png: bytes
    score: float
    image_id: str
    cached: bool
    elapsed_s: float
    engine: str = ""


@dataclass(frozen=True)
class Cutout:
    """`/matte`'s answer: the subject as an RGBA PNG (straight alpha, soft edge, the photo's size)."""

    png: bytes
    image_id: str


@dataclass(frozen=True)
class Mood:
    keywords: list[str]
    source: str
    reason: str | None = None


@dataclass(frozen=True)
class PromptDraft:
    prompt: str
    tokens: int
    source: str
    reason: str | None = None


@dataclass(frozen=True)
class EditResult:
    """A finished edit job's `result`: result images as PNG bytes."""

    images: list[bytes]
    seeds: list[int]
    prompt: str
    timings: dict[str, Any]
    image_id: str | None

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> EditResult:
        return cls(
            images=[decode_image(data) for data in body["images"]],
            seeds=[int(seed) for seed in body["seeds"]],
            prompt=str(body.get("prompt", "")),
            timings=dict(body.get("timings") or {}),
            image_id=body.get("image_id"),
        )


@dataclass(frozen=True)
class JobStatus:
    """One poll of an edit job: `state` is queued, running, done, failed or cancelled."""

    job_id: str
    state: str
    step: int
    total: int
    result: EditResult | None = None
    error: str | None = None
    stage: str | None = None  # what a running job is doing (segment, prompt, diffusion), when the service says
    preview: bytes | None = None  # PNG of the background forming, while the job runs

    @property
    def finished(self) -> bool:
        return self.state in ("done", "failed", "cancelled")


@dataclass(frozen=True)
class EditJob:
    """`/edit_submit`'s answer: the job to poll and the denoising steps it will make."""

    job_id: str
    total_steps: int


@dataclass
class Photo:
    """The photo being edited as the service knows it: sent once, then named by the `image_id` the service answered
    with. Kept in the session, so clicks, the mood and the edit after the first request send no pixels."""

    data: bytes = field(repr=False)
    image_id: str | None = None

    @property
    def b64(self) -> str:
        return encode_image(self.data)


def encode_image(data: bytes) -> str:
    """Image file bytes (PNG/JPEG) as the base64 string the service takes."""
    return base64.b64encode(data).decode("ascii")


def request_bytes(image_size: int) -> int:
    """The body of a request that carries an image file of `image_size` bytes: the file as base64 (4 characters for
    every 3 bytes, rounded up) and the rest of the JSON."""
    return 4 * math.ceil(image_size / 3) + REQUEST_OVERHEAD_BYTES


def decode_image(data: str) -> bytes:
    """A base64 image from the service (a `data:` URL prefix is tolerated) as file bytes."""
    if data.startswith("data:"):
        data = data.split(",", 1)[1]
    return base64.b64decode(data)


class ServiceClient:
    """The service at `base_url` (e.g. http://127.0.0.1:3000), over one `requests.Session`."""

    def __init__(self, base_url: str, session: requests.Session | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.session = session or requests.Session()

    def info(self) -> dict[str, Any]:
        """GET /info: stages, profiles, device, `demo_models`, `notice`, the edit `options` table and `limits`."""
        return self._call("GET", "/info", None, INFO_TIMEOUT_S)

    def ready(self) -> bool:
        """Whether GET /readyz answers 200 (False instead of an error when the service is not up)."""
        try:
            response = self.session.get(self.url("/readyz"), timeout=(CONNECT_TIMEOUT_S, INFO_TIMEOUT_S))
        except requests.RequestException:
            return False
        return response.status_code == 200

    def segment(
        self, photo: Photo, points: list[dict[str, int]], box: list[int] | None = None, auto: bool = True
    ) -> Segmentation:
        """POST /segment with points in original-image pixels: with `auto` they refine the automatic subject (none:
        the automatic subject itself), else they are SAM's prompts."""
        body: dict[str, Any] = {"points": points, "auto": auto}
        if box is not None:
            body["box"] = box
        started = time.perf_counter()
        answer = self._with_photo("/segment", photo, body, STAGE_TIMEOUT_S)
        return Segmentation(
            mask_png=decode_image(answer["mask"]),
            score=float(answer.get("score", 0.0)),
            image_id=str(answer.get("image_id", "")),
            cached=bool(answer.get("cached", False)),
            elapsed_s=time.perf_counter() - started,
            engine=str(answer.get("engine", "")),
        )

    def cutout(self, photo: Photo, mask_png: bytes) -> Cutout:
        """POST /matte with the subject mask (PNG bytes, white = subject, the photo's size)."""
        answer = self._with_photo("/matte", photo, {"mask": encode_image(mask_png)}, STAGE_TIMEOUT_S)
        return Cutout(decode_image(answer["cutout"]), str(answer.get("image_id", "")))

    def mood(self, photo: Photo) -> Mood:
        answer = self._with_photo("/mood", photo, {}, STAGE_TIMEOUT_S)
        return Mood([str(k) for k in answer["keywords"]], str(answer.get("source", "")), answer.get("reason"))

    def prompt(self, keywords: list[str], user_keyword: str) -> PromptDraft:
        answer = self._call("POST", "/prompt", {"keywords": keywords, "user_keyword": user_keyword}, STAGE_TIMEOUT_S)
        return PromptDraft(
            str(answer["prompt"]), int(answer.get("tokens", 0)), str(answer.get("source", "")), answer.get("reason")
        )

    def submit_edit(self, photo: Photo, body: dict[str, Any]) -> EditJob:
        """POST /edit_submit: the edit of `photo` with `body`'s mask or clicks, prompt or word, and options."""
        answer = self._with_photo("/edit_submit", photo, body, STAGE_TIMEOUT_S)
        return EditJob(str(answer["job_id"]), int(answer.get("total_steps", 0)))

    def edit_status(self, job_id: str) -> JobStatus:
        answer = self._call("POST", "/edit_status", {"job_id": job_id}, STATUS_TIMEOUT_S)
        result = answer.get("result")
        return JobStatus(
            job_id=str(answer.get("job_id", job_id)),
            state=str(answer["state"]),
            step=int(answer.get("step", 0)),
            total=int(answer.get("total", 0)),
            result=EditResult.from_json(result) if result else None,
            error=answer.get("error"),
            stage=answer.get("stage"),
            preview=decode_image(answer["preview"]) if answer.get("preview") else None,
        )

    def cancel_edit(self, job_id: str) -> str:
        """POST /edit_cancel; the job's state afterwards."""
        return str(self._call("POST", "/edit_cancel", {"job_id": job_id}, STATUS_TIMEOUT_S).get("state", ""))

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    def _with_photo(self, path: str, photo: Photo, body: dict[str, Any], read_timeout_s: float) -> dict[str, Any]:
        """POST `body` with the photo: by its id once the service has it, the pixels again (once) when it answers
        409 (no longer kept) or has given no id yet. The answer's `image_id`, when it has one, is remembered."""
        if photo.image_id is not None:
            try:
                return self._call("POST", path, {**body, "image_id": photo.image_id}, read_timeout_s)
            except ServiceError as exc:
                if exc.status != 409:
                    raise
        answer = self._call("POST", path, {**body, "image": photo.b64}, read_timeout_s)
        photo.image_id = answer.get("image_id") or photo.image_id
        return answer

    def _call(self, method: str, path: str, body: dict[str, Any] | None, read_timeout_s: float) -> dict[str, Any]:
        url = self.url(path)
        try:
            response = self.session.request(method, url, json=body, timeout=(CONNECT_TIMEOUT_S, read_timeout_s))
        except requests.ConnectionError as exc:
            raise ServiceError(url, f"Cannot reach the Moodshift service ({_reason(exc)})") from None
        except requests.Timeout:
            raise ServiceError(url, f"The service did not answer within {read_timeout_s:.0f} s") from None
        except requests.RequestException as exc:
            raise ServiceError(url, f"Request failed: {_reason(exc)}") from None
        if response.status_code >= 400:
            what = "rejected the request" if response.status_code < 500 else "failed"
            raise ServiceError(url, f"The service {what}: {_error_text(response)}", response.status_code)
        try:
            answer = response.json()
        except ValueError:
            message = "The service answered with something other than JSON"
            raise ServiceError(url, message, response.status_code) from None
        if not isinstance(answer, dict):
            raise ServiceError(url, "The service answered with unexpected JSON", response.status_code)
        return answer


def _error_text(response: requests.Response) -> str:
    """The contract's `{"error": ...}` message, or the start of whatever else came back."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and body.get("error"):
        return str(body["error"])
    text = response.text.strip()
    return text[:300] if text else response.reason or "no details"


def _reason(exc: requests.RequestException) -> str:
    text = str(exc)
    if "Connection refused" in text or "ConnectionRefused" in text:
        return "connection refused: is it running?"
    if "Name or service not known" in text or "NameResolution" in text:
        return "unknown host"
    return text[:200]


_threads = threading.local()


def _thread_session() -> requests.Session:
    """This thread's HTTP session. A `requests.Session` is not thread-safe, and Streamlit runs every browser
    session's script in threads of its own (a cut run may still wait on the service while the next one starts), so
    one session is never shared between threads; within a run, polls and clicks reuse its connections."""
    session = getattr(_threads, "session", None)
    if session is None:
        session = _threads.session = requests.Session()
    return session


def get_client(base_url: str) -> ServiceClient:
    """The studio's client for `base_url`, over the calling thread's HTTP session."""
    return ServiceClient(base_url, _thread_session())
