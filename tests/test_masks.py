"""Mask tools on hand-made masks: holes, islands, feathering, the subject-mask check and PNG round trips."""

import base64
import io

import numpy as np
import pytest
from PIL import Image

from serving.core.images import ImageInputError
from serving.core.masks import (
    clean_mask,
    feather,
    fill_holes,
    is_soft,
    mask_from_png_bytes,
    mask_levels_from_png_bytes,
    mask_to_png_base64,
    mask_to_png_bytes,
    remove_islands,
)


@pytest.fixture
def subject() -> np.ndarray:
    """A 20×30 mask with a 12×12 subject holding a 3-pixel L-shaped hole, plus a 5-pixel island."""
    mask = np.zeros((20, 30), dtype=bool)
    mask[2:14, 2:14] = True
    mask[6, 6] = mask[7, 6] = mask[7, 7] = False  # the 3-pixel hole
    mask[16:18, 20:22] = True
    mask[15, 20] = True  # 2×2 + 1 = the 5-pixel island
    return mask


def test_a_three_pixel_hole_is_filled_and_nothing_else_changes(subject):
    filled = fill_holes(subject, max_area=3)
    assert filled[6, 6] and filled[7, 6] and filled[7, 7]
    assert (filled != subject).sum() == 3


def test_a_hole_larger_than_the_limit_stays(subject):
    assert np.array_equal(fill_holes(subject, max_area=2), subject)
    assert np.array_equal(fill_holes(subject, max_area=0), subject)


def test_background_touching_the_border_is_not_a_hole():
    mask = np.ones((10, 10), dtype=bool)
    mask[0, 4:6] = False  # a 2-pixel notch open to the image edge
    assert np.array_equal(fill_holes(mask, max_area=64), mask)


def test_a_five_pixel_island_is_removed_and_the_subject_kept(subject):
    cleaned = remove_islands(subject, max_area=5)
    assert not cleaned[15:18, 20:22].any()
    assert np.array_equal(cleaned[:14], subject[:14])
    assert np.array_equal(remove_islands(subject, max_area=4), subject)


def test_a_diagonal_touch_keeps_a_piece_attached():
    mask = np.zeros((10, 10), dtype=bool)
    mask[0:5, 0:5] = True
    mask[5, 5] = True  # touches the block only at a corner: 8-connected, so part of the subject
    assert remove_islands(mask, max_area=3)[5, 5]


def test_the_largest_piece_survives_even_when_small():
    mask = np.zeros((10, 10), dtype=bool)
    mask[1:3, 1:3] = True  # 4 px
    mask[6, 6] = True  # 1 px
    cleaned = remove_islands(mask, max_area=64)
    assert cleaned[1:3, 1:3].all() and cleaned.sum() == 4


def test_clean_mask_fills_then_drops(subject):
    expected = np.zeros_like(subject)
    expected[2:14, 2:14] = True
    assert np.array_equal(clean_mask(subject, 64, 64), expected)


def test_feather_is_one_inside_and_falls_to_zero_within_the_radius_outside():
    mask = np.zeros((9, 40), dtype=bool)
    mask[:, :10] = True
    alpha = feather(mask, radius=4)
    assert alpha.dtype == np.float32
    assert np.all(alpha[mask] == 1.0)
    np.testing.assert_allclose(alpha[4, 9:16], [1.0, 0.75, 0.5, 0.25, 0.0, 0.0, 0.0])
    assert np.all(alpha[:, 14:] == 0.0)  # at and beyond the radius


def test_feather_grows_outward_around_a_blob():
    mask = np.zeros((41, 41), dtype=bool)
    mask[15:26, 15:26] = True
    alpha = feather(mask, radius=6)
    distance_row = alpha[20, 25:35]  # from the right edge of the blob outward
    assert distance_row[0] == 1.0 and np.all(np.diff(distance_row) <= 0) and distance_row[-1] == 0.0
    soft = (alpha > 0) & (alpha < 1)
    assert soft.sum() > 0 and not (soft & mask).any()  # the soft band lies outside the subject only


def test_feather_edge_cases():
    mask = np.zeros((5, 5), dtype=bool)
    assert np.array_equal(feather(mask, 3), np.zeros((5, 5), np.float32))
    mask[2, 2] = True
    assert np.array_equal(feather(mask, 0), mask.astype(np.float32))


def test_png_round_trip_white_is_subject(subject):
    data = mask_to_png_bytes(subject)
    image = Image.open(io.BytesIO(data))
    assert image.mode == "L" and image.size == (30, 20)
    assert set(np.unique(np.asarray(image))) == {0, 255}
    assert np.array_equal(np.asarray(image) == 255, subject)
    assert np.array_equal(mask_from_png_bytes(data, size=(30, 20)), subject)


def test_a_ragged_mask_survives_the_run_length_png_exactly():
    ragged = np.random.default_rng(3).random((97, 131)) < 0.5  # what random-weight SAM answers: noise
    data = mask_to_png_bytes(ragged)
    assert Image.open(io.BytesIO(data)).mode == "L"
    assert np.array_equal(mask_from_png_bytes(data, size=(131, 97)), ragged)
    assert base64.b64decode(mask_to_png_base64(ragged)) == data


def test_mask_of_the_wrong_size_is_refused_naming_both_sizes(subject):
    with pytest.raises(ImageInputError, match="30×20 but the image is 31×20"):
        mask_from_png_bytes(mask_to_png_bytes(subject), size=(31, 20))


def test_mask_from_grey_levels_alpha_and_16_bit():
    grey = np.array([[0, 127, 128, 255]], dtype=np.uint8)
    assert mask_from_png_bytes(_png(Image.fromarray(grey))).tolist() == [[False, False, True, True]]

    rgba = np.zeros((1, 3, 4), dtype=np.uint8)
    rgba[..., :3] = 255  # white everywhere, but only the middle pixel is opaque
    rgba[0, 1, 3] = 255
    assert mask_from_png_bytes(_png(Image.fromarray(rgba))).tolist() == [[False, True, False]]

    wide = np.array([[0, 20000, 40000, 65535]], dtype=np.uint16)
    assert mask_from_png_bytes(_png(Image.fromarray(wide))).tolist() == [[False, False, True, True]]


def test_mask_levels_keep_grey_as_a_soft_mask_and_split_where_the_bool_mask_does():
    grey = np.array([[0, 64, 127, 128, 255]], dtype=np.uint8)
    levels = mask_levels_from_png_bytes(_png(Image.fromarray(grey)), size=(5, 1))
    np.testing.assert_allclose(levels, grey / 255, atol=1e-7)
    assert levels.dtype == np.float32 and is_soft(levels) and not is_soft(levels >= 0.5)
    wide = np.array([[0, 32767, 32768, 65535]], dtype=np.uint16)
    assert (mask_levels_from_png_bytes(_png(Image.fromarray(wide))) >= 0.5).tolist() == [[False, False, True, True]]
    with pytest.raises(ImageInputError, match="5×1 but the image is 4×1"):
        mask_levels_from_png_bytes(_png(Image.fromarray(grey)), size=(4, 1))


@pytest.mark.parametrize(("data", "message"), [(b"", "empty"), (b"not a png", "not a readable image")])
def test_unreadable_masks_are_refused(data, message):
    with pytest.raises(ImageInputError, match=message):
        mask_from_png_bytes(data)


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
