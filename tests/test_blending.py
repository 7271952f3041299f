"""Blending and sizing math: working sizes, latent edit masks, shrinking, the composite and the seam score."""

import numpy as np
import pytest
from scipy import ndimage

from serving.core.blending import (
    composite,
    dilate,
    fully_subject_cells,
    seam_score,
    shrink_radii,
    step_edit_masks,
    subject_alpha,
)
from serving.core.masks import feather
from serving.core.sizing import resize_image, working_size


@pytest.mark.parametrize(
    ("width", "height"), [(512, 512), (640, 427), (427, 640), (300, 200), (1500, 1000), (4000, 3000), (333, 999)]
)
def test_working_size_is_about_the_pixels_in_multiples_of_64_with_the_aspect(width, height):
    target = 1024 * 1024
    w, h = working_size(width, height, target)
    assert w % 64 == 0 and h % 64 == 0
    assert abs(w * h - target) / target < 0.12
    # Rounding each side to 64 moves the aspect by at most half a block per side.
    assert w / h == pytest.approx(width / height, rel=64 / min(w, h))


def test_working_size_ignores_the_input_scale():
    assert working_size(300, 200, 1024 * 1024) == working_size(3000, 2000, 1024 * 1024) == (1280, 832)
    assert working_size(512, 512, 512 * 512) == (512, 512)


def test_extreme_aspect_is_clamped_to_4_to_1_with_every_side_at_least_64():
    assert working_size(1, 4000, 1024 * 1024) == (512, 2048)
    assert working_size(4000, 1, 1024 * 1024) == (2048, 512)
    assert working_size(1, 4000, 64 * 64) == (64, 128)


def test_working_size_rejects_nonsense():
    with pytest.raises(ValueError, match="0×10"):
        working_size(0, 10, 1024 * 1024)
    with pytest.raises(ValueError, match="working pixels 100"):
        working_size(10, 10, 100)


def test_resize_image_keeps_same_size_and_resizes_to_width_height():
    image = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    assert resize_image(image, (30, 20)) is image
    resized = resize_image(image, (64, 40))
    assert resized.shape == (40, 64, 3) and resized.dtype == np.uint8


def test_fully_subject_cells_equals_block_all_at_exact_scale():
    rng = np.random.default_rng(1)
    for _ in range(5):
        mask = rng.random((48, 64)) < 0.7
        blocks_all_subject = mask.reshape(6, 8, 8, 8).all(axis=(1, 3))  # 8×8 blocks, exactly the latent cells
        assert np.array_equal(fully_subject_cells(mask, (8, 6)), blocks_all_subject)


def test_a_cell_straddling_the_edge_is_not_kept():
    subject = np.zeros((32, 32), dtype=bool)
    subject[:, :13] = True  # columns 0..12: cell 0 (0-7) fully subject, cell 1 (8-15) straddles
    cells = fully_subject_cells(subject, (4, 4))
    assert cells[:, 0].all() and not cells[:, 1:].any()


def test_fully_subject_cells_at_other_scales():
    # Downscale: 4000 px wide, 40 cells of 100 px; one background pixel spoils exactly its cell.
    subject = np.ones((100, 4000), dtype=bool)
    subject[50, 1234] = False
    cells = fully_subject_cells(subject, (40, 1))
    assert cells.sum() == 39 and not cells[0, 12]
    # Non-integer ratio: a cell touching a background pixel at all is not kept.
    subject = np.ones((10, 10), dtype=bool)
    subject[:, 4] = False  # cells of 10/3 px: column 4 lies in cell 1 (3.33..6.67)
    assert np.array_equal(fully_subject_cells(subject, (3, 3))[0], [True, False, True])
    # Upscale: 3×2 pixels onto a 6×4 grid, each pixel covers 2×2 cells exactly.
    small = np.array([[True, False, True], [True, True, False]])
    assert np.array_equal(fully_subject_cells(small, (6, 4)), np.kron(small, np.ones((2, 2), dtype=bool)))


def test_shrink_radii_decrease_then_stay_zero():
    assert shrink_radii(3, 6) == [3, 2, 1, 0, 0, 0]
    assert shrink_radii(0, 3) == [0, 0, 0]
    assert shrink_radii(4, 2) == [4, 3]


def test_step_edit_masks_shrink_to_the_background_cells():
    subject = np.zeros((64, 96), dtype=bool)
    subject[16:50, 30:70] = True
    masks = step_edit_masks(subject, (12, 8), shrink_steps=2, total_steps=5)
    base = ~fully_subject_cells(subject, (12, 8))
    assert base.sum() < base.size  # some cells are kept
    assert np.array_equal(masks[0], dilate(base, 2)) and np.array_equal(masks[1], dilate(base, 1))
    assert all(np.array_equal(mask, base) for mask in masks[2:])
    assert masks[0].sum() > masks[1].sum() > masks[2].sum()
    assert all(mask is masks[2] for mask in masks[2:])  # one array for the unshrunk steps


def test_dilate_grows_a_square():
    mask = np.zeros((7, 7), dtype=bool)
    mask[3, 3] = True
    grown = dilate(mask, 2)
    assert grown.sum() == 25 and grown[1:6, 1:6].all()
    assert np.array_equal(dilate(mask, 0), mask)


def test_composite_keeps_alpha_one_pixels_exactly_and_blends_the_rest():
    rng = np.random.default_rng(2)
    original = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)
    background = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)
    alpha = np.zeros((6, 5), dtype=np.float32)
    alpha[:2] = 1.0
    alpha[2] = 0.5
    out = composite(original, background, alpha)
    assert np.array_equal(out[:2], original[:2])
    assert np.array_equal(out[3:], background[3:])
    expected = np.rint((original[2].astype(np.float32) + background[2]) / 2)
    assert np.array_equal(out[2], expected.astype(np.uint8))
    with pytest.raises(ValueError, match="equal sizes"):
        composite(original, background[:5], alpha)


def test_subject_alpha_equals_the_uncropped_feather():
    rng = np.random.default_rng(3)
    for feather_px in (0, 1, 5, 40):
        subject = np.zeros((90, 120), dtype=bool)
        subject[30:50, 40:75] = rng.random((20, 35)) < 0.8
        subject[88, 2] = True  # a far island near the border widens the box to the edge
        assert np.array_equal(subject_alpha(subject, feather_px), feather(subject, feather_px))
        assert np.array_equal(subject_alpha(subject[:60], feather_px), feather(subject[:60], feather_px))
    assert not subject_alpha(np.zeros((5, 5), dtype=bool), 3).any()


def test_feathered_composite_keeps_the_whole_subject_and_softens_outside():
    subject = np.zeros((40, 40), dtype=bool)
    subject[10:30, 10:30] = True
    original = np.full((40, 40, 3), 200, dtype=np.uint8)
    background = np.zeros((40, 40, 3), dtype=np.uint8)
    out = composite(original, background, subject_alpha(subject, 6))
    assert np.array_equal(out[subject], original[subject])
    assert 0 < out[20, 32, 0] < 200  # two pixels outside: blended
    assert out[20, 37, 0] == 0  # beyond the feather: background


def test_seam_score_prefers_a_smooth_edge():
    subject = np.zeros((64, 64), dtype=bool)
    subject[16:48, 16:48] = True
    hard = np.where(subject[..., None], 220, 30).astype(np.uint8).repeat(3, axis=2)
    soft = ndimage.gaussian_filter(hard, sigma=(4, 4, 0))  # the same step, spread wider than the band
    assert seam_score(soft, subject) < 0.7 * seam_score(hard, subject)
    assert seam_score(hard, np.zeros_like(subject)) == 0.0
