"""Mask overlay, outline, the cut-out's soft edge, before/after wipe and thumbnails (PIL/numpy)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from ui.overlay import (
    MASK_TINT,
    OUTLINE_COLOR,
    SOFT_EDGE_COLOR,
    compare_split,
    fit_within,
    mask_array,
    mask_outline,
    overlay_mask,
    overlay_soft_edge,
    thumbnail,
)


def _square_mask(size: int = 20, lo: int = 5, hi: int = 15) -> Image.Image:
    mask = np.zeros((size, size), np.uint8)
    mask[lo:hi, lo:hi] = 255
    return Image.fromarray(mask)


def test_mask_array_thresholds_and_resizes():
    mask = mask_array(_square_mask(), (20, 20))
    assert mask.dtype == bool and mask.sum() == 100
    half = mask_array(_square_mask(), (10, 10))
    assert half.shape == (10, 10) and half[5, 5] and not half[0, 0]


def test_mask_outline_is_the_inner_border():
    subject = mask_array(_square_mask(), (20, 20))
    outline = mask_outline(subject, width=1)
    assert outline.sum() == 36  # the 10×10 square's 1-pixel ring
    assert outline[5, 5] and outline[14, 10] and not outline[10, 10] and not outline[4, 10]


def test_mask_outline_draws_along_the_picture_edge_too():
    subject = np.ones((6, 6), bool)
    outline = mask_outline(subject, width=1)
    assert outline.sum() == 20 and not outline[2:4, 2:4].any()


def test_overlay_tints_the_subject_outlines_it_and_leaves_the_background():
    photo = Image.new("RGB", (20, 20), (100, 100, 100))
    out = np.asarray(overlay_mask(photo, _square_mask(), alpha=0.5, outline_width=1))
    assert tuple(out[0, 0]) == (100, 100, 100)
    expected = tuple(round(0.5 * 100 + 0.5 * c) for c in MASK_TINT)
    assert tuple(out[10, 10]) == expected
    assert tuple(out[5, 10]) == OUTLINE_COLOR


def test_the_soft_edge_is_amber_even_when_shrunk_and_the_subject_tinted_by_its_alpha():
    photo = Image.new("RGB", (40, 40), (100, 100, 100))
    rgba = np.zeros((160, 160, 4), np.uint8)
    rgba[40:120, 40:120, 3] = 255
    rgba[40:120, 118:120, 3] = 128  # a 2-pixel soft edge: half a pixel once shrunk to 40×40
    out = np.asarray(overlay_soft_edge(photo, Image.fromarray(rgba), alpha=0.5))
    assert tuple(out[0, 0]) == (100, 100, 100)
    assert tuple(out[20, 20]) == tuple(round(0.5 * 100 + 0.5 * c) for c in MASK_TINT)
    assert (np.abs(out[10:30, 29].astype(int) - SOFT_EDGE_COLOR) < 60).all()  # the edge column, amber
    assert not (np.abs(out[10:30, 20].astype(int) - SOFT_EDGE_COLOR) < 60).all(axis=1).any()


def test_overlay_of_an_empty_mask_is_the_photo():
    photo = Image.fromarray(np.random.default_rng(0).integers(0, 255, (8, 12, 3), dtype=np.uint8))
    empty = Image.new("L", (24, 16), 0)
    assert np.array_equal(np.asarray(overlay_mask(photo, empty)), np.asarray(photo))


def test_compare_split_shows_before_left_and_after_right_with_a_divider():
    before = Image.new("RGB", (100, 10), (255, 0, 0))
    after = Image.new("RGB", (100, 10), (0, 0, 255))
    out = np.asarray(compare_split(before, after, 0.3, divider=2))
    assert tuple(out[5, 10]) == (255, 0, 0)
    assert tuple(out[5, 90]) == (0, 0, 255)
    assert tuple(out[5, 30]) == (255, 255, 255)
    assert np.array_equal(np.asarray(compare_split(before, after, 0.0)), np.asarray(after))
    assert np.array_equal(np.asarray(compare_split(before, after, 1.0)), np.asarray(before))


def test_compare_split_refuses_different_sizes():
    with pytest.raises(ValueError, match=r"\(10, 10\) vs \(10, 11\)"):
        compare_split(Image.new("RGB", (10, 10)), Image.new("RGB", (10, 11)), 0.5)


def test_thumbnail_and_fit_within_keep_the_aspect_ratio_and_never_upscale():
    photo = Image.new("RGB", (1500, 1000))
    assert thumbnail(photo, 300).size == (300, 200)
    assert fit_within(photo, 600, 600).size == (600, 400)
    small = Image.new("RGB", (50, 40))
    assert fit_within(small, 600, 600) is small
