"""The prompt stage over Ollama: LLaVA reads mood keywords, Llama 2 writes the SDXL background prompt.

Every call has a timeout (the `ollama` client's default is none) and every fault (server down, model missing,
too slow, unusable reply) falls back to the image-statistics mood or the template prompt. Results say which
source answered and, for a fallback, why.
"""

from __future__ import annotations

import contextlib
import io
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from PIL import Image

from serving.core.images import image_id_of
from serving.core.mood_heuristic import heuristic_mood
from serving.core.prompt_text import (
    MAX_REPLY_CHARS,
    PROMPT_TOKEN_BUDGET,
    check_keyword_fits,
    clean_keywords,
    finalize_prompt,
    parse_mood_keywords,
    sanitize_user_keyword,
    template_prompt,
    writer_messages,
)
from serving.settings import Settings, get_settings

logger = logging.getLogger(__name__)

_LLAVA_MAX_SIDE = 672  # LLaVA 1.6's largest tile grid; a bigger photo only costs upload and encode time
_PROBE_TIMEOUT_S = 5.0  # /api/tags answers at once when the server is up
_MOOD_OPTIONS = {"temperature": 0.2, "num_predict": 64}
_PROMPT_OPTIONS = {"temperature": 0.7, "num_predict": 160}


@dataclass(frozen=True)
class MoodResult:
    """Mood keywords of one image; `reason` says why the heuristic answered instead of LLaVA."""

    keywords: list[str]
    source: Literal["llava", "heuristic"]
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class PromptResult:
    """An SDXL background prompt and its CLIP token count (BOS and EOS included, ≤ 77)."""

    prompt: str
    tokens: int
    source: Literal["llm", "template"]
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class OllamaReadiness:
    """What `/api/tags` says: is the server reachable, and which of the configured models are missing."""

    host: str
    reachable: bool
    available: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()
    reason: str | None = None

    @property
    def ready(self) -> bool:
        return self.reachable and not self.missing

    @property
    def fix(self) -> str | None:
        """The shell command that fetches the missing models."""
        return " && ".join(f"ollama pull {name}" for name in self.missing) or None

    def message(self) -> str:
        if not self.reachable:
            return f"Ollama is not reachable at {self.host} ({self.reason}); start it with `ollama serve`"
        if self.missing:
            return f"Ollama at {self.host} lacks {', '.join(self.missing)}; fix: {self.fix}"
        return f"Ollama at {self.host} is ready"


class OllamaFault(Exception):
    """One Ollama call failed; the message is the fallback's reason."""


def has_model(available: Sequence[str], name: str) -> bool:
    """Whether `name` is among the server's models; a name without a tag means `:latest`, as in Ollama."""
    wanted = name if ":" in name else f"{name}:latest"
    return any(model in (name, wanted) for model in available)


def _jpeg_bytes(image: Image.Image) -> bytes:
    small = image.copy()
    small.thumbnail((_LLAVA_MAX_SIDE, _LLAVA_MAX_SIDE))
    buffer = io.BytesIO()
    small.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def token_counter(tokenizer) -> Callable[[str], int]:
    """CLIP tokens of a text, BOS and EOS included, counted without truncation by a transformers tokenizer."""

    def count(text: str) -> int:
        return len(tokenizer(text, truncation=False, verbose=False)["input_ids"])

    return count


class PromptStage:
    """Mood keywords (LLaVA) and the background prompt (Llama 2) through one Ollama server, with fallbacks.

    Thread-safe: the mood cache is locked and the underlying httpx client may be shared.
    """

    def __init__(self, settings: Settings | None = None, tokenizer=None) -> None:
        settings = settings or get_settings()
        self.host = settings.ollama_host
        self.mood_model = settings.ollama_mood_model
        self.prompt_model = settings.ollama_prompt_model
        self.timeout_s = settings.ollama_timeout_s
        self.enabled = settings.ollama_enabled
        self.mood_question = settings.mood_question
        self.max_tokens = PROMPT_TOKEN_BUDGET
        self._count: Callable[[str], int] | None = None if tokenizer is None else token_counter(tokenizer)
        self._mood_cache: OrderedDict[str, list[str]] = OrderedDict()
        self._cache_size = settings.mood_cache_size
        self._lock = threading.Lock()
        self._clients: dict[float, Any] = {}

    # --- tokens -----------------------------------------------------------------------------------

    def count_tokens(self, text: str) -> int:
        """CLIP tokens of `text`, BOS and EOS included (the bundled vocabulary when no pipeline is loaded)."""
        if self._count is None:
            from serving.models.clip_tokenizer import default_clip_tokenizer

            self._count = token_counter(default_clip_tokenizer())
        return self._count(text)

    # --- Ollama calls -----------------------------------------------------------------------------

    def _client(self, timeout_s: float):
        """An `ollama.Client` whose every connect/read/write waits at most `timeout_s` (one per timeout)."""
        with self._lock:
            if timeout_s not in self._clients:
                import httpx
                import ollama

                self._clients[timeout_s] = ollama.Client(host=self.host, timeout=httpx.Timeout(timeout_s))
            return self._clients[timeout_s]

    def _chat(self, model: str, messages: list[dict[str, Any]], options: dict[str, Any]) -> str:
        """The model's whole reply text, streamed so a reply that trickles past the deadline is cut off.

        The deadline is checked between chunks and every socket wait is bounded by the timeout, so a server that
        never answers gives up after `timeout_s`; one that stalls mid-stream just before the deadline can take up
        to one more `timeout_s`.

        Raises `OllamaFault` whose message names the fault (unreachable, timed out, model missing, bad response).
        """
        import httpx
        import ollama

        deadline = time.monotonic() + self.timeout_s
        parts: list[str] = []
        try:
            stream = self._client(self.timeout_s).chat(model=model, messages=messages, options=options, stream=True)
            with contextlib.closing(stream):
                for chunk in stream:
                    parts.append((chunk.message.content if chunk.message else None) or "")
                    if chunk.done or sum(map(len, parts)) >= MAX_REPLY_CHARS:
                        break
                    if time.monotonic() > deadline:
                        raise TimeoutError
        except ollama.ResponseError as exc:
            if exc.status_code == 404:
                raise OllamaFault(
                    f'model "{model}" not found on Ollama at {self.host}; fix: ollama pull {model}'
                ) from None
            status = f" (status {exc.status_code})" if exc.status_code > 0 else ""  # -1: an error inside a stream
            raise OllamaFault(f"Ollama error from {model} at {self.host}: {exc.error}{status}") from None
        except (TimeoutError, httpx.TimeoutException):
            raise OllamaFault(f"{model} timed out after {self.timeout_s:g} s at {self.host}") from None
        except (ConnectionError, httpx.TransportError) as exc:
            raise OllamaFault(f"Ollama unreachable at {self.host} ({type(exc).__name__})") from None
        except ValueError as exc:  # a body that is not Ollama's JSON (JSONDecodeError, pydantic ValidationError)
            raise OllamaFault(f"malformed response from {model} at {self.host}: {str(exc)[:120]}") from None
        return "".join(parts)

    def readiness(self) -> OllamaReadiness:
        """Ask `/api/tags` which models the server has; name the missing ones and `ollama pull` to fix them."""
        import httpx
        import ollama

        try:
            listing = self._client(min(self.timeout_s, _PROBE_TIMEOUT_S)).list()
        except (ConnectionError, httpx.TransportError, ollama.ResponseError, ValueError) as exc:
            return OllamaReadiness(self.host, reachable=False, reason=f"{type(exc).__name__}: {str(exc)[:160]}")
        available = tuple(model.model for model in listing.models if model.model)
        wanted = dict.fromkeys((self.mood_model, self.prompt_model))
        missing = tuple(name for name in wanted if not has_model(available, name))
        return OllamaReadiness(self.host, reachable=True, available=available, missing=missing)

    def info(self) -> dict[str, dict[str, Any]]:
        """The `mood` and `prompt` entries of `GET /info`: model, host, and whether it can answer now."""
        state = self.readiness() if self.enabled else None
        entries = {}
        for stage, model in (("mood", self.mood_model), ("prompt", self.prompt_model)):
            reachable = bool(state and state.reachable and model not in state.missing)
            entry: dict[str, Any] = {"model": model, "host": self.host, "reachable": reachable}
            if not reachable:
                entry["reason"] = self._disabled_reason() if state is None else state.message()
            entries[stage] = entry
        return entries

    def _disabled_reason(self) -> str:
        return "Ollama disabled (MOODSHIFT_OLLAMA_ENABLED=false)"

    # --- mood -------------------------------------------------------------------------------------

    def read_mood(self, image: Image.Image | np.ndarray, image_id: str | None = None) -> MoodResult:
        """Mood keywords of an RGB image (PIL or HWC uint8): LLaVA's, cached per `image_id`, else the heuristic's.

        Without `image_id` the id is derived from the pixels.
        """
        picture = image.convert("RGB") if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image))
        key = image_id or image_id_of(np.asarray(picture))
        with self._lock:
            if key in self._mood_cache:
                self._mood_cache.move_to_end(key)
                return MoodResult(list(self._mood_cache[key]), "llava")
        if not self.enabled:
            return self._heuristic(picture, self._disabled_reason())
        message = {"role": "user", "content": self.mood_question, "images": [_jpeg_bytes(picture)]}
        try:
            reply = self._chat(self.mood_model, [message], _MOOD_OPTIONS)
        except OllamaFault as fault:
            return self._heuristic(picture, str(fault))
        keywords = parse_mood_keywords(reply)
        if not keywords:
            return self._heuristic(picture, f"unusable reply from {self.mood_model}: {reply[:80]!r}")
        with self._lock:
            self._mood_cache[key] = keywords
            self._mood_cache.move_to_end(key)
            while len(self._mood_cache) > self._cache_size:
                self._mood_cache.popitem(last=False)
        return MoodResult(list(keywords), "llava")

    def _heuristic(self, picture: Image.Image, reason: str) -> MoodResult:
        logger.info("mood from image statistics: %s", reason)
        return MoodResult(heuristic_mood(picture), "heuristic", reason)

    # --- prompt -----------------------------------------------------------------------------------

    def check_user_keyword(self, user_keyword: str) -> str:
        """The user's word cleaned, or `KeywordError` when it is empty after cleaning or alone over the budget."""
        word = sanitize_user_keyword(user_keyword)
        check_keyword_fits(word, self.count_tokens, self.max_tokens)
        return word

    def write_prompt(self, keywords: Sequence[str], user_keyword: str) -> PromptResult:
        """One SDXL background prompt from the mood keywords and the user's word, ≤ 77 CLIP tokens.

        Raises `KeywordError` (a ValueError) for a user word that is empty after cleaning or alone over budget.
        """
        word = self.check_user_keyword(user_keyword)
        moods = clean_keywords(keywords)
        if not self.enabled:
            return self._template(word, moods, self._disabled_reason())
        try:
            reply = self._chat(self.prompt_model, writer_messages(moods, word), _PROMPT_OPTIONS)
        except OllamaFault as fault:
            return self._template(word, moods, str(fault))
        prompt = finalize_prompt(reply, word, self.count_tokens, self.max_tokens)
        if prompt is None:
            return self._template(word, moods, f"unusable reply from {self.prompt_model}: {reply[:80]!r}")
        return PromptResult(prompt, self.count_tokens(prompt), "llm")

    def _template(self, word: str, moods: list[str], reason: str) -> PromptResult:
        logger.info("prompt from the template: %s", reason)
        prompt = template_prompt(word, moods, self.count_tokens, self.max_tokens)
        return PromptResult(prompt, self.count_tokens(prompt), "template", reason)
