"""The gateway's photos by image id: a client sends a photo once, and later clicks, the mood and the edit name it by
the `image_id` of an earlier answer. Decoded pixels are kept least recently used first out, bounded in bytes; an id
no longer kept is a `NotCachedError` (409: the client sends the photo again)."""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np

from serving.core.errors import NotCachedError
from serving.core.images import image_id_of


class ImageCache:
    """Thread-safe LRU of decoded photos (HxWx3 uint8) by image id, at most `max_bytes` of pixels."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._images: OrderedDict[str, np.ndarray] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def put(self, rgb: np.ndarray) -> str:
        """Keep `rgb` (a photo larger than the whole cache is not kept) and return its image id."""
        image_id = image_id_of(rgb)
        with self._lock:
            if image_id in self._images:
                self._images.move_to_end(image_id)
            elif rgb.nbytes <= self.max_bytes:
                self._images[image_id] = rgb
                self._bytes += rgb.nbytes
                while self._bytes > self.max_bytes:
                    _, evicted = self._images.popitem(last=False)
                    self._bytes -= evicted.nbytes
        return image_id

    def get(self, image_id: str) -> np.ndarray:
        """The photo of `image_id`; `NotCachedError` when it is not kept (never sent, or evicted since)."""
        with self._lock:
            rgb = self._images.get(image_id)
            if rgb is None:
                self.misses += 1
                raise NotCachedError.image(image_id)
            self._images.move_to_end(image_id)
            self.hits += 1
            return rgb

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {
                "images": len(self._images),
                "bytes": self._bytes,
                "max_bytes": self.max_bytes,
                "hits": self.hits,
                "misses": self.misses,
            }
