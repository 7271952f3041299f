"""The segmentation stage's models together: the automatic subject and the clicks on top of it.

- The automatic subject: a salient-object model (U²-Netp by default) maps the photo once; its map and subject mask
  are cached per image id (LRU), so every later click on that image costs no model run.
- Clicks that start from it (`auto`): with SAM's real weights, SAM refines the subject, prompted with a box around the
  automatic subject and the clicks (a box is the prompt SAM was trained to take from another detector; its mask
  prompt was trained on its own low-res logits only). Without them (the demo's random SAM would paint noise), each
  click adds or removes the region of the map and the photo under it (`serving.core.saliency`).
- Clicks alone (no `auto`): SAM, as `serving.models.sam.Segmenter` does it.

`engine` in each result names what made the mask: the salient model ("u2netp"), SAM ("sam-vit_h"), or the
salient model edited by clicks ("u2netp+clicks").
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from serving.core.clicks import Clicks, validate_clicks
from serving.core.errors import InternalError, NotCachedError
from serving.core.images import image_id_of, to_rgb_array
from serving.core.masks import clean_mask
from serving.core.saliency import ClickView, edit_with_clicks, subject_box, subject_from_saliency
from serving.models.sam import Encoded, SegmentResult, setting_default

if TYPE_CHECKING:
    from PIL import Image

    from serving.models.profiles import ResolvedProfile
    from serving.models.salient import SalientDetector
    from serving.models.salient_weights import SalientWeights
    from serving.models.sam import Segmenter
    from serving.settings import Settings


@dataclass(frozen=True)
class AutomaticSubject:
    """An image's automatic subject: the mask at the image's size, bit-packed (a 12 MP mask is 1.5 MB), and the view
    of the map and the photo that clicks are read on."""

    subject_bits: np.ndarray
    image_size: tuple[int, int]  # (width, height)
    view: ClickView

    @property
    def subject(self) -> np.ndarray:
        width, height = self.image_size
        return np.unpackbits(self.subject_bits, count=width * height).astype(bool).reshape(height, width)


class SubjectFinder:
    """The automatic subject, clicks on top of it, and SAM; safe under concurrent threads.

    detector: the salient-object model (`salient`: its weights), or None when it cannot load (`detector_problem` says
    why: the automatic subject then fails with that message while clicks through SAM still work). With a detector,
    `detector_problem` is why it is a fallback, if it is one (a larger model in checkpoints/ that did not load).
    `build_segmenter` makes SAM on first use (a zero-click edit never loads it); `sam_profile`, `sam_name`, `device`
    and `dtype` describe it before then. Counters for metrics: `saliency_runs`, `saliency_hits`, `detect_batch_sizes`.
    """

    def __init__(
        self,
        detector: SalientDetector | None,
        build_segmenter: Callable[[], Segmenter],
        *,
        salient: SalientWeights,
        sam_profile: ResolvedProfile | None,
        sam_name: str,
        device: str = "cpu",
        dtype: str = "float32",
        detector_problem: str | None = None,
        cache_size: int = setting_default("sam_cache_size"),
        max_hole_area: int = setting_default("mask_min_hole_area"),
        max_island_area: int = setting_default("mask_min_island_area"),
        max_points: int = setting_default("max_points"),
    ) -> None:
        self.detector = detector
        self.detector_problem = detector_problem
        self.salient = salient
        self.sam_profile = sam_profile
        self.sam_name = sam_name
        self.device = device  # SAM's (the salient model runs on the CPU unless onnxruntime has CUDA)
        self.dtype = dtype
        self.cache_size = cache_size
        self.max_hole_area = max_hole_area
        self.max_island_area = max_island_area
        self.max_points = max_points
        self._build_segmenter = build_segmenter
        self._segmenter: Segmenter | None = None
        self._lock = threading.Lock()  # guards the cache and the counters
        # Building SAM (a ViT-H load takes many seconds) has its own lock, so cache lookups and stats() never wait
        # for it.
        self._build_lock = threading.Lock()
        self._found: OrderedDict[str, AutomaticSubject] = OrderedDict()
        self.saliency_runs = 0
        self.saliency_hits = 0
        self.detect_batch_sizes: list[int] = []

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> SubjectFinder:
        """The settings' salient model (loaded now: 4.6 MB by default; see `load_salient`) and SAM (loaded on first
        use)."""
        from serving.models.profiles import resolve_device, resolve_dtype
        from serving.models.salient import load_salient
        from serving.models.sam import Segmenter
        from serving.models.sam_builders import plan_sam
        from serving.settings import get_settings

        settings = settings or get_settings()
        device = resolve_device(settings)
        detector, salient, problem = load_salient(settings, use_cuda=device.type == "cuda")
        plan = plan_sam(settings)
        return cls(
            detector,
            lambda: Segmenter.from_settings(settings),
            salient=salient,
            sam_profile=plan.profile,
            sam_name=plan.model_name,
            device=str(device),
            dtype=str(resolve_dtype(settings, device)).split(".")[-1],
            detector_problem=problem,
            cache_size=settings.sam_cache_size,
            max_hole_area=settings.mask_min_hole_area,
            max_island_area=settings.mask_min_island_area,
            max_points=settings.max_points,
        )

    @property
    def segmenter(self) -> Segmenter:
        """SAM, built on first use (once, however many threads ask at the same time)."""
        segmenter = self._segmenter
        if segmenter is None:
            with self._build_lock:
                if self._segmenter is None:
                    self._segmenter = self._build_segmenter()
                segmenter = self._segmenter
        return segmenter

    @property
    def sam_refines(self) -> bool:
        """Clicks on the automatic subject go through SAM (its real weights are there), not the map's regions."""
        return self.sam_profile is not None and not self.sam_profile.is_demo

    @property
    def clicks_engine(self) -> str:
        """What refines clicks that start from the automatic subject."""
        return self.sam_name if self.sam_refines else f"{self._name()}+clicks"

    # --- public API ---------------------------------------------------------------------------------

    def detect_batch(self, images: Sequence[np.ndarray | Image.Image]) -> list[Encoded]:
        """Put every image's automatic subject in the cache (id, and whether it was there already)."""
        detector = self._require_detector()
        with self._lock:
            self.detect_batch_sizes = [*self.detect_batch_sizes[-99:], len(images)]
        outcomes = []
        for image in images:
            rgb = to_rgb_array(image)
            key = image_id_of(rgb)
            found = self._cached(key)
            if found is None:
                self._store(key, self._find(detector, rgb))
            outcomes.append(Encoded(key, found is not None))
        return outcomes

    def segment(
        self, image: np.ndarray | Image.Image, points: Sequence[Any] | None = None, box: Any = None, auto: bool = False
    ) -> SegmentResult:
        """The subject mask of an upright image (HWC uint8 RGB or PIL): the automatic subject refined by the clicks
        when `auto` (none is fine), else SAM from the clicks alone. `ClickError` for unusable clicks."""
        if not auto:
            return self.segmenter.segment(image, points, box)
        detector = self._require_detector()
        rgb = to_rgb_array(image)
        key = image_id_of(rgb)
        found = self._cached(key)
        cached = found is not None
        if found is None:
            found = self._find(detector, rgb)
            self._store(key, found)
        clicks = validate_clicks(points, box, found.image_size, self.max_points, required=False)
        return self._refine(key, found, clicks, cached, rgb)

    def segment_cached(
        self, image_id: str, points: Sequence[Any] | None = None, box: Any = None, auto: bool = False
    ) -> SegmentResult:
        """`segment` by image id, for an image seen before; `NotCachedError` when what it needs is not cached."""
        if not auto:
            return self.segmenter.segment_cached(image_id, points, box)
        self._require_detector()  # a missing model is the answer, not "send the image again"
        found = self._cached(image_id)
        if found is None:
            raise NotCachedError.image(image_id)
        clicks = validate_clicks(points, box, found.image_size, self.max_points, required=False)
        return self._refine(image_id, found, clicks, True, None)

    def stats(self) -> dict[str, Any]:
        """Counters: the salient model's runs and cache use, and SAM's once it is built."""
        with self._lock:
            own = {
                "saliency_runs": self.saliency_runs,
                "saliency_cache_hits": self.saliency_hits,
                "saliency_cached_images": len(self._found),
                "detect_batch_sizes": list(self.detect_batch_sizes),
            }
            segmenter = self._segmenter
        if segmenter is None:
            return own
        return {**segmenter.stats(), "batch_sizes": list(segmenter.batch_sizes)[-100:], **own}

    # --- inside -------------------------------------------------------------------------------------

    def _name(self) -> str:
        return self.detector.name if self.detector is not None else self.salient.spec.name

    def _require_detector(self) -> SalientDetector:
        if self.detector is None:
            raise InternalError(f"the automatic subject is not available: {self.detector_problem}")
        return self.detector

    def _find(self, detector: SalientDetector, rgb: np.ndarray) -> AutomaticSubject:
        saliency = detector.saliency(rgb)
        height, width = rgb.shape[:2]
        subject = clean_mask(subject_from_saliency(saliency, (width, height)), self.max_hole_area, self.max_island_area)
        with self._lock:
            self.saliency_runs += 1
        return AutomaticSubject(np.packbits(subject), (width, height), ClickView.of(rgb, saliency))

    def _cached(self, key: str) -> AutomaticSubject | None:
        with self._lock:
            found = self._found.get(key)
            if found is not None:
                self._found.move_to_end(key)
                self.saliency_hits += 1
            return found

    def _store(self, key: str, found: AutomaticSubject) -> None:
        # Two threads may map the same new image at once; both get the same map, and the second store is harmless.
        with self._lock:
            self._found[key] = found
            self._found.move_to_end(key)
            while len(self._found) > self.cache_size:
                self._found.popitem(last=False)

    def _refine(
        self, key: str, found: AutomaticSubject, clicks: Clicks, cached: bool, rgb: np.ndarray | None
    ) -> SegmentResult:
        """The automatic subject as it is (no clicks), refined by SAM, or edited region by region."""
        subject = found.subject
        if clicks.is_empty:
            mask, engine = subject, self._name()
        elif self.sam_refines:
            box = clicks.box or subject_box(subject, clicks.points)
            points = [point.model_dump() for point in clicks.points]
            if rgb is not None:
                result = self.segmenter.segment(rgb, points, box)
            else:
                result = self.segmenter.segment_cached(key, points, box)
            return replace(result, cached=cached and result.cached)
        else:
            edited = edit_with_clicks(subject, found.view, clicks)
            mask, engine = clean_mask(edited, self.max_hole_area, self.max_island_area), self.clicks_engine
        return SegmentResult(
            mask=mask,
            score=found.view.mean_saliency(mask),
            image_id=key,
            cached=cached,
            used_mask_input=False,
            engine=engine,
        )
