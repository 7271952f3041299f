"""The soft edge: on the synthetic set (real photos over a second photo and a screen colour through a known soft
alpha), the matte beats the hard mask on alpha and the raw colours on foreground colour, by clear margins, and
keeps every pixel deeper than the band exact; the cut-out and the composite follow from it."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from serving.bench.matte import MatteSample, score, synthetic_set
from serving.core import matting
from serving.core.matting import band_width, compose_matte, estimate_matte, unknown_band
from serving.core.sizing import resize_image

# Measured on 640×480 (band 3 px): alpha SAD ratio 0.08-0.22, colour error ratio 0.18-0.43 per sample.
MAX_ALPHA_RATIO = 0.3
MAX_COLOUR_RATIO = 0.5


@pytest.fixture(scope="module")
def samples() -> list[MatteSample]:
    return synthetic_set((640, 480))


@pytest.fixture(scope="module")
def mattes(samples):
    return [estimate_matte(sample.image, sample.hard_mask) for sample in samples]


def test_the_matte_beats_the_hard_mask_and_the_raw_colours_in_the_band(samples, mattes):
    for sample, matte in zip(samples, mattes, strict=True):
        result = score(sample, matte)
        assert result.alpha_ratio < MAX_ALPHA_RATIO, (sample.name, result)
        assert result.colour_ratio < MAX_COLOUR_RATIO, (sample.name, result)


def test_pixels_deeper_than_the_band_are_exact_in_the_cutout(samples, mattes):
    for sample, matte in zip(samples, mattes, strict=True):
        core = sample.hard_mask & ~matte.band
        assert core.sum() > 0.2 * sample.hard_mask.sum()
        np.testing.assert_array_equal(matte.core, core)
        cutout = matte.cutout()
        assert cutout.shape == (*sample.image.shape[:2], 4) and cutout.dtype == np.uint8
        np.testing.assert_array_equal(cutout[core][:, :3], sample.image[core])
        assert (cutout[core][:, 3] == 255).all()
        outside = ~sample.hard_mask & ~matte.band
        assert (cutout[outside] == 0).all()


def test_the_cutout_has_straight_alpha_and_the_decontaminated_colours(samples, mattes):
    sample, matte = samples[1], mattes[1]  # over the green screen: the raw edge colours are green-tinged
    cutout = matte.cutout()
    visible = cutout[..., 3] > 0
    np.testing.assert_array_equal(cutout[..., :3][visible], matte.foreground[visible])  # not multiplied by alpha
    half = matte.band & (np.abs(matte.alpha - 0.5) < 0.15)
    assert half.sum() > 100
    assert _green_excess(cutout[half][:, :3]) < _green_excess(sample.image[half]) - 20


def _green_excess(rgb: np.ndarray) -> float:
    """How much greener than red and blue, on average (0-255)."""
    return float((rgb[:, 1].astype(float) - rgb[:, [0, 2]].mean(axis=1)).mean())


def test_the_matte_composite_is_alpha_f_plus_one_minus_alpha_b_and_exact_off_the_band(samples, mattes):
    sample, matte = samples[0], mattes[0]
    height, width = matte.alpha.shape
    background = np.random.default_rng(0).integers(0, 256, (height // 2, width // 2, 3), dtype=np.uint8)
    composed = compose_matte(background, matte)
    resized = resize_image(background, (width, height))
    np.testing.assert_array_equal(composed[matte.core], sample.image[matte.core])
    outside = ~matte.band & ~matte.core
    np.testing.assert_array_equal(composed[outside], resized[outside])
    alpha = matte.alpha[matte.band][:, None]
    expected = alpha * matte.foreground[matte.band] + (1 - alpha) * resized[matte.band]
    assert np.abs(composed[matte.band] - expected).max() <= 0.5 + 1e-3


def test_large_photos_are_solved_scaled_and_upsampled_with_the_same_guarantees(samples, monkeypatch):
    monkeypatch.setattr(matting, "MATTE_PIXELS", 100_000)  # 640×480 is solved at a third of its pixels
    for sample in samples[:2]:
        matte = estimate_matte(sample.image, sample.hard_mask)
        result = score(sample, matte)
        assert result.alpha_ratio < MAX_ALPHA_RATIO and result.colour_ratio < MAX_COLOUR_RATIO, (sample.name, result)
        np.testing.assert_array_equal(matte.cutout()[matte.core][:, :3], sample.image[matte.core])
        assert (matte.alpha[~matte.band] == matte.core[~matte.band]).all()


@pytest.mark.parametrize(
    ("size", "expected"), [((640, 480), 3), ((1000, 2000), 8), ((1414, 1414), 8), ((4000, 3000), 20), ((60, 40), 2)]
)
def test_the_band_is_8_px_at_2_mp_and_scales_with_the_side(size, expected):
    assert band_width(*size) == expected


def test_the_band_has_its_width_on_both_sides_and_none_at_the_frame():
    subject = np.zeros((40, 60), dtype=bool)
    subject[10:30, :30] = True  # touches the left edge of the frame
    band = unknown_band(subject, 3)
    assert band[20, 27:33].all() and not band[20, 26] and not band[20, 33]
    assert not band[20, 0:3].any(), "the frame is no boundary"
    assert band[7:13, 10].all() and not band[6, 10] and not band[13, 10]


def test_parts_thinner_than_the_band_and_away_from_the_body_keep_the_hard_edge():
    """Regression: a speckled mask with no sure subject pixel came back almost transparent (alpha at most 0.09)."""
    image = np.random.default_rng(0).integers(0, 256, (200, 300, 3), dtype=np.uint8)
    subject = np.zeros((200, 300), dtype=bool)
    subject[20:180, 148:151] = True  # a 3-pixel pole: the band (2 px each way) would leave no subject pixel known
    subject[50:52, 40:42] = True  # a speck
    subject[60:140, 200:280] = True  # a body ...
    subject[98:100, 280:295] = True  # ... and a strand leaving it: its root near the body is matted, its tip kept
    matte = estimate_matte(image, subject)
    kept = subject.copy()
    kept[60:140, 200:280] = False
    kept[98:100, 280:282] = False  # within twice the band (2 px) of the body's core
    assert (matte.alpha[kept] == 1).all() and matte.core[kept].all()
    np.testing.assert_array_equal(matte.cutout()[kept][:, :3], image[kept])
    assert matte.band[98:100, 280:282].all() and matte.band[60:140, 198:202].all()


def test_a_soft_mask_is_taken_as_a_prior_and_its_grey_levels_join_the_band(samples):
    sample = samples[0]
    prior = ndimage.gaussian_filter(sample.hard_mask.astype(np.float32), 4)  # grey well beyond the 3-px band
    matte = estimate_matte(sample.image, prior)
    grey = (prior > 0) & (prior < 1)
    assert matte.band[grey].all()
    np.testing.assert_array_equal(matte.core, prior >= 1)
    truth = sample.alpha[matte.band]
    assert np.abs(matte.alpha[matte.band] - truth).sum() < 0.5 * np.abs(prior[matte.band] - truth).sum()
