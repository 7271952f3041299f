"""The gateway's photos by image id: kept least recently used first out, bounded in bytes of pixels."""

import numpy as np
import pytest

from serving.core.errors import NotCachedError
from serving.core.images import image_id_of
from serving.image_cache import ImageCache


def photo(value: int) -> np.ndarray:
    return np.full((10, 10, 3), value, dtype=np.uint8)  # 300 bytes


def test_photos_are_kept_by_their_image_id_within_the_byte_bound_least_recently_used_first_out():
    cache = ImageCache(max_bytes=900)
    first, second, third = (cache.put(photo(value)) for value in (1, 2, 3))
    assert first == image_id_of(photo(1))
    assert np.array_equal(cache.get(first), photo(1))  # used: the second is now the least recently used
    fourth = cache.put(photo(4))
    with pytest.raises(NotCachedError, match=second):
        cache.get(second)
    assert all(cache.get(image_id) is not None for image_id in (first, third, fourth))
    assert cache.stats() == {"images": 3, "bytes": 900, "max_bytes": 900, "hits": 4, "misses": 1}


def test_a_photo_larger_than_the_whole_cache_is_not_kept_and_evicts_nothing():
    cache = ImageCache(max_bytes=400)
    kept = cache.put(photo(1))
    large = cache.put(np.zeros((20, 20, 3), dtype=np.uint8))  # 1200 bytes
    assert cache.get(kept) is not None
    with pytest.raises(NotCachedError):
        cache.get(large)
    assert cache.put(photo(1)) == kept and cache.stats()["images"] == 1  # the same photo again: one entry
