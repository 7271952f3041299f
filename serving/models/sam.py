"""The SAM segmenter: encode each image once (LRU cache of embeddings), decode every click on top of it.

Built on segment-anything's own pieces: `ResizeLongestSide` + `Sam.preprocess` for the encoder input (batched
here, one forward pass for several images) and a `SamPredictor` per call for the prompt transforms and the
decoder, restored from the cached embedding. The HTTP API is stateless, so the low-res logits of every call are
kept too, keyed by (image, clicks): the next click (same points plus one) feeds them back as `mask_input`, the
way SAM's interactive loop refines one mask. Safe to call from many threads.
"""

from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from serving.core.clicks import Clicks, validate_clicks
from serving.core.errors import NotCachedError
from serving.core.images import image_id_of, to_rgb_array
from serving.core.masks import clean_mask
from serving.settings import Settings

if TYPE_CHECKING:
    import torch
    from PIL import Image
    from segment_anything.modeling import Sam

    from serving.models.profiles import ResolvedProfile

# Logit entries kept per cached image: enough for a long click session plus a few abandoned branches.
LOGITS_PER_IMAGE = 8


def setting_default(name: str) -> Any:
    """A settings field's own default (not the environment's value): the defaults of the segmentation stage's
    constructors, so a test that builds one directly gets what a service gets unconfigured."""
    return Settings.model_fields[name].default


@dataclass(frozen=True)
class ImageEmbedding:
    """SAM's image embedding and the two sizes the decoder needs to map prompts and masks back."""

    features: torch.Tensor  # 1×C×64×64 float32 on the model's device
    original_size: tuple[int, int]  # (H, W) of the image the user sent
    input_size: tuple[int, int]  # (H, W) after ResizeLongestSide, before padding to 1024²


@dataclass(frozen=True)
class SegmentResult:
    """One segmentation: the cleaned subject mask (bool H×W, image size) and how it was obtained."""

    mask: np.ndarray
    score: float  # SAM's predicted IoU of the chosen mask
    image_id: str
    cached: bool  # the embedding was reused: this call ran no image encoder
    used_mask_input: bool  # the previous click's logits refined this mask
    engine: str  # the model that made the mask (SAM's name here; see `serving.models.subject`)


class Encoded(NamedTuple):
    """Outcome of `encode_batch` for one image."""

    image_id: str
    cached: bool  # already in the cache, not encoded again


def _resize_longest_side(rgb: np.ndarray, target_length: int) -> np.ndarray:
    """`ResizeLongestSide.apply_image`, except that no side shrinks to 0 px: segment-anything would resize a
    1×4000 strip to 0×1024 and PIL refuses. The decoder crops to the stored input size, so a 1-px side works."""
    from segment_anything.utils.transforms import ResizeLongestSide
    from torchvision.transforms.functional import resize, to_pil_image

    height, width = ResizeLongestSide.get_preprocess_shape(rgb.shape[0], rgb.shape[1], target_length)
    return np.array(resize(to_pil_image(rgb), [max(1, height), max(1, width)]))


class Segmenter:
    """Point/box segmentation with SAM; embeddings cached per image (LRU), safe under concurrent threads.

    Counters for tests and metrics: `encoder_passes` (forward passes of the image encoder), `encoded_images`,
    `batch_sizes` (images per recent encoder pass), `decoder_calls`, `cache_hits`, `cache_misses`.
    """

    def __init__(
        self,
        sam: Sam,
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype | None = None,
        cache_size: int = setting_default("sam_cache_size"),
        max_hole_area: int = setting_default("mask_min_hole_area"),
        max_island_area: int = setting_default("mask_min_island_area"),
        max_points: int = setting_default("max_points"),
        model_name: str = "sam",
        profile: ResolvedProfile | None = None,
    ) -> None:
        import torch
        from segment_anything.utils.transforms import ResizeLongestSide

        if cache_size < 1:
            raise ValueError(f"cache_size must be >= 1, got {cache_size}")
        self.device = torch.device(device)
        self.dtype = dtype or torch.float32
        # Half precision comes from autocast around the encoder (see `_autocast`), which keeps LayerNorm/softmax in
        # float32; on CUDA `from_settings` also stores the encoder's weights in half precision to halve its memory.
        self.sam = sam.to(self.device).eval()
        self.transform = ResizeLongestSide(self.sam.image_encoder.img_size)
        self.cache_size = cache_size
        self.max_hole_area = max_hole_area
        self.max_island_area = max_island_area
        self.max_points = max_points
        self.model_name = model_name
        self.profile = profile

        self._lock = threading.Lock()  # guards the caches, the in-flight table and the counters
        self._encode_lock = threading.Lock()  # one encoder pass at a time: it is the memory (and compute) peak
        self._embeddings: OrderedDict[str, ImageEmbedding] = OrderedDict()
        self._logits: OrderedDict[tuple[str, Clicks], np.ndarray] = OrderedDict()
        self._in_flight: dict[str, threading.Event] = {}  # image ids some thread is encoding right now

        self.encoder_passes = 0
        self.encoded_images = 0
        self.batch_sizes: deque[int] = deque(maxlen=1024)  # recent passes only: the service runs for days
        self.decoder_calls = 0
        self.cache_hits = 0
        self.cache_misses = 0

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> Segmenter:
        """The segmenter of the settings' SAM profile, device and dtype."""
        from serving.models.profiles import resolve_device, resolve_dtype
        from serving.models.sam_builders import build_sam
        from serving.settings import get_settings

        settings = settings or get_settings()
        device = resolve_device(settings)
        dtype = resolve_dtype(settings, device)
        sam, profile, model_name = build_sam(settings, device, dtype)  # the encoder's weights in a half dtype
        return cls(
            sam,
            device=device,
            dtype=dtype,
            cache_size=settings.sam_cache_size,
            max_hole_area=settings.mask_min_hole_area,
            max_island_area=settings.mask_min_island_area,
            max_points=settings.max_points,
            model_name=model_name,
            profile=profile,
        )

    # --- public API ---------------------------------------------------------------------------------

    def segment(
        self, image: np.ndarray | Image.Image, points: Sequence[Any] | None = None, box: Any = None
    ) -> SegmentResult:
        """Subject mask for `points` (`Point`, `{x, y, label}` or `(x, y[, label])`, in click order) and/or `box`.

        `image` is HWC uint8 RGB or a PIL image, upright (see `serving.core.images.load_image`). Coordinates
        are image pixels; raises `ClickError` (an `InputError`) for unusable clicks.
        """
        key, rgb, clicks = self._request(image, points, box)
        [(embedding, cached)] = self._embeddings_for([(key, rgb)])
        return self._decode(key, embedding, clicks, cached)

    def segment_cached(self, image_id: str, points: Sequence[Any] | None = None, box: Any = None) -> SegmentResult:
        """`segment` by image id alone, for an image whose embedding is cached; `NotCachedError` when it is not.

        Lets a caller in another process send a repeat click without the pixels.
        """
        with self._lock:
            embedding = self._embeddings.get(image_id)
            if embedding is None:
                raise NotCachedError.image(image_id)
            self._embeddings.move_to_end(image_id)
            self.cache_hits += 1
        height, width = embedding.original_size
        clicks = validate_clicks(points, box, (width, height), self.max_points)
        return self._decode(image_id, embedding, clicks, cached=True)

    def encode_batch(self, images: Sequence[np.ndarray | Image.Image]) -> list[Encoded]:
        """Put every image's embedding in the cache; all the uncached ones go through ONE encoder pass."""
        items = []
        for image in images:
            rgb = to_rgb_array(image)
            items.append((image_id_of(rgb), rgb))
        outcomes = self._embeddings_for(items)
        return [Encoded(key, cached) for (key, _), (_, cached) in zip(items, outcomes, strict=True)]

    def embedding(self, image_id: str) -> ImageEmbedding | None:
        """The cached embedding of an image id, or None (does not count as a use for the LRU order)."""
        with self._lock:
            return self._embeddings.get(image_id)

    def cached_image_ids(self) -> list[str]:
        """Ids in the embedding cache, least recently used first."""
        with self._lock:
            return list(self._embeddings)

    def clear_cache(self) -> None:
        """Forget every embedding and every kept logit (counters stay)."""
        with self._lock:
            self._embeddings.clear()
            self._logits.clear()

    def stats(self) -> dict[str, int | float]:
        """Counters for metrics: encoder passes, images encoded, mean batch size, decoder calls, cache use."""
        with self._lock:
            passes = self.encoder_passes
            return {
                "encoder_passes": passes,
                "encoded_images": self.encoded_images,
                "mean_batch_size": self.encoded_images / passes if passes else 0.0,
                "decoder_calls": self.decoder_calls,
                "cache_hits": self.cache_hits,
                "cache_misses": self.cache_misses,
                "cached_images": len(self._embeddings),
            }

    # --- embeddings ---------------------------------------------------------------------------------

    def _request(
        self, image: np.ndarray | Image.Image, points: Sequence[Any] | None, box: Any
    ) -> tuple[str, np.ndarray, Clicks]:
        """(image id, RGB pixels, validated clicks) of one request."""
        rgb = to_rgb_array(image)
        clicks = validate_clicks(points, box, (rgb.shape[1], rgb.shape[0]), self.max_points)
        return image_id_of(rgb), rgb, clicks

    def _embeddings_for(self, items: Sequence[tuple[str, np.ndarray]]) -> list[tuple[ImageEmbedding, bool]]:
        """(embedding, was_cached) per item; the uncached images are encoded together in one pass.

        An image another thread is already encoding is waited for, not encoded twice.
        """
        pixels = dict(items)  # same id -> same pixels, so duplicates collapse
        found: dict[str, tuple[ImageEmbedding, bool]] = {}
        while len(found) < len(pixels):
            claimed, waiting = [], []
            with self._lock:
                for key in pixels:
                    if key in found:
                        continue
                    if key in self._embeddings:
                        self._embeddings.move_to_end(key)
                        found[key] = (self._embeddings[key], True)
                        self.cache_hits += 1
                    elif key in self._in_flight:
                        waiting.append(self._in_flight[key])
                    else:
                        self._in_flight[key] = threading.Event()
                        claimed.append(key)
                        self.cache_misses += 1
            if claimed:
                try:
                    encoded = dict(zip(claimed, self._encode([pixels[key] for key in claimed]), strict=True))
                except BaseException:
                    self._release(claimed)  # waiters wake up, find no entry and try the encode themselves
                    raise
                with self._lock:
                    self._store_embeddings(encoded)
                self._release(claimed)
                found.update({key: (embedding, False) for key, embedding in encoded.items()})
            for event in waiting:
                event.wait()
        return [found[key] for key, _ in items]

    def _release(self, keys: Sequence[str]) -> None:
        with self._lock:
            for key in keys:
                self._in_flight.pop(key).set()

    def _store_embeddings(self, new: dict[str, ImageEmbedding]) -> None:
        """Insert under `_lock`, evicting the least recently used beyond `cache_size`."""
        for key, embedding in new.items():
            self._embeddings[key] = embedding
            self._embeddings.move_to_end(key)
        while len(self._embeddings) > self.cache_size:
            self._embeddings.popitem(last=False)

    def _encode(self, images: Sequence[np.ndarray]) -> list[ImageEmbedding]:
        """One image-encoder forward pass over `images` (HWC uint8 RGB, any sizes)."""
        import torch

        inputs, sizes = [], []
        for rgb in images:
            # SamPredictor.set_image's preprocessing, so a batched embedding equals a single one.
            resized = torch.as_tensor(_resize_longest_side(rgb, self.transform.target_length), device=self.device)
            resized = resized.permute(2, 0, 1).contiguous()[None]
            sizes.append(((rgb.shape[0], rgb.shape[1]), (resized.shape[-2], resized.shape[-1])))
            inputs.append(self.sam.preprocess(resized))  # normalise, pad to 1024²
        with self._encode_lock, torch.no_grad(), self._autocast():
            features = self.sam.image_encoder(torch.cat(inputs)).float()
        with self._lock:
            self.encoder_passes += 1
            self.encoded_images += len(images)
            self.batch_sizes.append(len(images))
        return [
            ImageEmbedding(features[i : i + 1].clone(), original, resized)
            for i, (original, resized) in enumerate(sizes)
        ]

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        """fp16/bf16 autocast for the encoder when a half dtype is set (the default on CUDA), else nothing."""
        import torch

        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    # --- decoding -----------------------------------------------------------------------------------

    def _decode(self, key: str, embedding: ImageEmbedding, clicks: Clicks, cached: bool) -> SegmentResult:
        from segment_anything import SamPredictor

        # A fresh predictor per call holds this call's image state, so threads never share one.
        predictor = SamPredictor(self.sam)
        predictor.features = embedding.features
        predictor.original_size = embedding.original_size
        predictor.input_size = embedding.input_size
        predictor.is_image_set = True

        previous_logits = self._previous_logits(key, clicks)
        coords = np.array([[p.x, p.y] for p in clicks.points], dtype=np.float64) if clicks.points else None
        labels = np.array([p.label for p in clicks.points], dtype=np.int64) if clicks.points else None
        masks, scores, low_res_logits = predictor.predict(
            point_coords=coords,
            point_labels=labels,
            box=None if clicks.box is None else np.array(clicks.box, dtype=np.float64),
            mask_input=previous_logits,
            # A single click is ambiguous (shirt, person, group): let SAM propose three and keep the best.
            multimask_output=len(clicks.points) == 1 and clicks.box is None,
        )
        best = int(np.argmax(scores))
        self._keep_logits(key, clicks, low_res_logits[best : best + 1])
        with self._lock:
            self.decoder_calls += 1
        return SegmentResult(
            mask=clean_mask(masks[best], self.max_hole_area, self.max_island_area),
            score=float(scores[best]),
            image_id=key,
            cached=cached,
            used_mask_input=previous_logits is not None,
            engine=self.model_name,
        )

    def _previous_logits(self, key: str, clicks: Clicks) -> np.ndarray | None:
        """Logits of the call that had exactly these clicks minus the last one (same box), when kept."""
        if not clicks.points or clicks.without_last_point().is_empty:
            return None
        with self._lock:
            logits = self._logits.get((key, clicks.without_last_point()))
            if logits is not None:
                self._logits.move_to_end((key, clicks.without_last_point()))
            return logits

    def _keep_logits(self, key: str, clicks: Clicks, logits: np.ndarray) -> None:
        with self._lock:
            self._logits[(key, clicks)] = logits
            self._logits.move_to_end((key, clicks))
            while len(self._logits) > self.cache_size * LOGITS_PER_IMAGE:
                self._logits.popitem(last=False)
