"""The pure tools of the automatic subject (`serving.core.saliency`) on maps and photos built here."""

from __future__ import annotations

import numpy as np
import pytest

from serving.core.clicks import Clicks, Point
from serving.core.saliency import (
    ClickView,
    edit_with_clicks,
    normalise_saliency,
    subject_box,
    subject_from_saliency,
)


def test_logits_go_through_a_sigmoid_and_every_map_is_stretched_to_0_1():
    logits = np.array([[-4.0, 0.0], [2.0, 6.0]], dtype=np.float32)
    saliency = normalise_saliency(logits)
    assert saliency.min() == 0 and saliency.max() == 1
    sigmoid = 1 / (1 + np.exp(-logits))
    assert np.allclose(saliency, (sigmoid - sigmoid.min()) / (sigmoid.max() - sigmoid.min()))
    probabilities = np.array([[0.1, 0.3], [0.5, 0.9]], dtype=np.float32)  # already in [0, 1]: no sigmoid
    assert np.allclose(normalise_saliency(probabilities), (probabilities - 0.1) / 0.8)
    assert not normalise_saliency(np.full((4, 4), 0.7)).any()  # a flat map: nothing stands out


def test_the_subject_is_the_map_at_half_resized_to_the_photo():
    saliency = np.zeros((4, 4), dtype=np.float32)
    saliency[1:3, 1:3] = 1.0
    subject = subject_from_saliency(saliency, (40, 20))
    assert subject.shape == (20, 40) and subject[10, 20] and not subject[0, 0] and not subject[19, 39]


@pytest.fixture
def two_squares():
    """A grey photo with a red and a blue square; the map sees only the red one as salient."""
    rgb = np.full((200, 300, 3), 128, dtype=np.uint8)
    rgb[40:120, 30:110] = (220, 30, 30)
    rgb[60:160, 180:280] = (30, 30, 220)
    saliency = np.zeros((200, 300), dtype=np.float32)
    saliency[40:120, 30:110] = 1.0
    return rgb, ClickView.of(rgb, saliency), subject_from_saliency(saliency, (300, 200))


def test_a_click_takes_the_region_of_similar_colour_and_saliency_around_it(two_squares):
    _, view, _ = two_squares
    blue = view.region_under(230, 110)
    height, width = blue.shape
    assert (width, height) == (300, 200)  # under ANALYSIS_SIDE: the photo's own size
    beyond_the_square = np.ones_like(blue)
    beyond_the_square[55:165, 175:285] = False  # the blue square and 5 px of blurred rim
    assert blue[70:150, 190:270].all() and not blue[beyond_the_square].any()
    assert not view.region_under(70, 80)[110:140, 200:260].any()  # the red square's region stays out of the blue


def test_a_click_on_a_plain_background_takes_no_more_than_max_region(two_squares):
    _, view, _ = two_squares
    region = view.region_under(5, 5)  # the grey covers 70% of the photo: more than MAX_REGION
    assert region.mean() <= 0.4 and region[5, 5]


def test_clicks_add_and_remove_regions_and_a_box_crops(two_squares):
    _, view, subject = two_squares
    added = edit_with_clicks(subject, view, Clicks((Point(x=230, y=110, label=1),)))
    assert added[100, 70] and added[110, 230]  # the red square stays, the blue one joins
    removed = edit_with_clicks(added, view, Clicks((Point(x=70, y=80, label=0),)))
    assert not removed[80, 70] and removed[110, 230]
    cropped = edit_with_clicks(added, view, Clicks((), box=(0, 0, 150, 200)))
    assert cropped[100, 70] and not cropped[110, 230]
    assert view.mean_saliency(subject) == pytest.approx(1.0, abs=0.05) and view.mean_saliency(~subject) < 0.1


def test_sams_box_surrounds_the_subject_and_the_subject_clicks_with_a_margin():
    subject = np.zeros((100, 200), dtype=bool)
    subject[20:60, 50:90] = True
    x0, y0, x1, y1 = subject_box(subject, [])
    assert (x0, y0, x1, y1) == pytest.approx((48, 18, 92, 62))  # 5% of 40 px on each side
    x0, y0, x1, y1 = subject_box(subject, [Point(x=150, y=80, label=1), Point(x=5, y=5, label=0)])
    assert x0 < 50 and y0 < 20 and x1 > 150 and y1 > 80 and x0 > 5  # a not-subject click does not widen it
    assert subject_box(np.zeros((10, 10), dtype=bool), [Point(x=3, y=3)]) is None  # no area: SAM gets the click only
