"""The fallback mood: image statistics move the mood words in the expected direction."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from serving.core.mood_heuristic import ImageStats, heuristic_mood, image_stats, mood_words


@pytest.fixture(scope="module")
def cat() -> np.ndarray:
    from skimage import data

    return data.chelsea().astype(np.float32)


def _u8(array: np.ndarray) -> np.ndarray:
    return np.clip(array, 0, 255).astype(np.uint8)


def test_dark_and_bright_versions_of_a_photo(cat):
    dark, bright = _u8(cat * 0.3), _u8(cat * 0.5 + 140)
    assert image_stats(dark).brightness < 0.2 < 0.7 < image_stats(bright).brightness
    dark_words, bright_words = heuristic_mood(dark), heuristic_mood(bright)
    assert "dark" in dark_words and "bright" not in dark_words
    assert "bright" in bright_words and not {"dark", "dim"} & set(bright_words)
    assert "serene" in bright_words and "serene" not in dark_words


def test_warm_and_cool_versions_of_a_photo(cat):
    shift = np.array([40.0, 0.0, -40.0], dtype=np.float32)
    warm, cool = _u8(cat + shift), _u8(cat - shift)
    assert image_stats(warm).warmth > 0.2 > 0 > image_stats(cool).warmth
    warm_words, cool_words = heuristic_mood(warm), heuristic_mood(cool)
    assert "warm" in warm_words and "cool" not in warm_words
    assert "cool" in cool_words and "warm" not in cool_words


def test_saturation_gives_vivid_muted_and_pastel(coffee):
    grey = np.repeat(np.asarray(Image.fromarray(coffee).convert("L"))[:, :, None], 3, axis=2)
    assert image_stats(coffee).saturation > 0.6 and image_stats(grey).saturation == pytest.approx(0.0, abs=1e-6)
    assert "vivid" in heuristic_mood(coffee) and "muted" in heuristic_mood(grey)
    washed = _u8(coffee.astype(np.float32) * 0.25 + 190)  # light, low-saturation: a pastel
    assert "pastel" in heuristic_mood(washed)


def test_contrast_gives_dramatic_or_soft():
    stripes = np.zeros((64, 64, 3), np.uint8)
    stripes[:, ::2] = 255
    flat = np.full((64, 64, 3), (120, 118, 116), np.uint8)
    assert image_stats(stripes).contrast == pytest.approx(0.5, abs=0.01)
    assert image_stats(flat).contrast == pytest.approx(0.0, abs=1e-6)
    assert "dramatic" in heuristic_mood(stripes) and "soft" in heuristic_mood(flat)


@pytest.mark.parametrize(
    ("rgb", "hue", "word"),
    [
        ((200, 20, 20), 0.0, "passionate"),
        ((230, 120, 20), 30.0, "cozy"),
        ((30, 160, 40), 120.0, "fresh"),
        ((30, 60, 200), 225.0, "calm"),
        ((140, 40, 200), 275.0, "mysterious"),
    ],
)
def test_dominant_hue_of_a_flat_colour(rgb, hue, word):
    image = np.full((32, 32, 3), rgb, np.uint8)
    stats = image_stats(image)
    assert stats.dominant_hue == pytest.approx(hue, abs=10.0) or (hue == 0.0 and stats.dominant_hue > 345)
    assert word in heuristic_mood(image)


def test_grey_image_has_no_dominant_hue_and_still_three_words():
    stats = image_stats(np.full((16, 16, 3), 128, np.uint8))
    assert stats.dominant_hue is None
    words = mood_words(stats)
    assert len(words) >= 3 and len(set(words)) == len(words)


def test_accepts_pil_greyscale_and_rgba(astronaut):
    from_pil = image_stats(Image.fromarray(astronaut))
    assert from_pil == image_stats(astronaut)
    grey = np.full((8, 8), 30, np.uint8)
    assert image_stats(grey).brightness == pytest.approx(30 / 255, abs=1e-4)
    rgba = np.dstack([astronaut, np.zeros(astronaut.shape[:2], np.uint8)])
    assert image_stats(rgba) == image_stats(astronaut)  # alpha ignored


def test_a_huge_image_is_sampled_and_gives_the_same_statistics(astronaut):
    big = np.kron(astronaut, np.ones((4, 4, 1), np.uint8))  # 2048×2048, every pixel repeated
    small, large = image_stats(astronaut), image_stats(big)
    assert large.brightness == pytest.approx(small.brightness, abs=0.01)
    assert large.warmth == pytest.approx(small.warmth, abs=0.01)


def test_bad_shape_is_rejected():
    with pytest.raises(ValueError, match=r"shape \(4, 4, 2\)"):
        image_stats(np.zeros((4, 4, 2), np.uint8))


def test_limit_is_respected():
    stats = ImageStats(brightness=0.8, warmth=0.2, saturation=0.2, contrast=0.05, dominant_hue=30.0)
    assert mood_words(stats) == ["bright", "warm", "pastel", "soft", "serene", "dreamy", "cozy"]
    assert mood_words(stats, limit=2) == ["bright", "warm"]
