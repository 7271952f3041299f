"""Canvas <-> image coordinate mapping for the point canvas (pure functions)."""

from __future__ import annotations

import pytest

from ui.canvas import (
    LABEL_COLORS,
    NEGATIVE,
    POSITIVE,
    BackgroundFit,
    Point,
    canvas_to_image,
    circle_center,
    drawing_to_points,
    fit_canvas,
    image_to_canvas,
    point_object,
    points_to_drawing,
)


def test_fit_canvas_scales_a_wide_photo_to_the_width_and_keeps_its_aspect_ratio():
    geometry = fit_canvas(1500, 1000, max_width=560, max_height=560)
    assert (geometry.display_width, geometry.display_height) == (560, 373)
    assert geometry.scale == pytest.approx(560 / 1500)


def test_fit_canvas_scales_a_tall_photo_to_the_height():
    geometry = fit_canvas(427, 640, max_width=560, max_height=560)
    assert (geometry.display_width, geometry.display_height) == (374, 560)


def test_fit_canvas_never_upscales_a_small_photo():
    geometry = fit_canvas(300, 200, max_width=560, max_height=560)
    assert (geometry.display_width, geometry.display_height) == (300, 200)


def test_fit_canvas_rejects_an_empty_image():
    with pytest.raises(ValueError, match="0×10"):
        fit_canvas(0, 10, 560, 560)


def test_canvas_to_image_maps_a_scaled_non_square_photo_per_axis():
    geometry = fit_canvas(1500, 1000, 560, 560)  # 560×373 on screen
    # x: 280 * 1500/560 = 750; y uses its own ratio: 186 * 1000/373 = 498.66 -> pixel 498
    assert canvas_to_image(280, 186, geometry) == (750, 498)
    assert canvas_to_image(100.5, 300.25, geometry) == (269, 804)
    assert canvas_to_image(0, 0, geometry) == (0, 0)


def test_canvas_to_image_puts_the_far_edge_on_the_last_pixel():
    geometry = fit_canvas(1500, 1000, 560, 560)
    assert canvas_to_image(560, 373, geometry) == (1499, 999)


def test_canvas_to_image_drops_clicks_off_the_photo():
    geometry = fit_canvas(1500, 1000, 560, 560)
    assert canvas_to_image(-1, 10, geometry) is None
    assert canvas_to_image(10, 373.5, geometry) is None


def test_canvas_to_image_uses_the_reported_fit_scale_and_offset():
    """A 'contain' fit of a 300×200 background on a 600×600 canvas: scale 2, centred with a 100 px top margin."""
    geometry = fit_canvas(1200, 800, 600, 600)  # the app's own geometry would be 600×400
    fit = BackgroundFit(natural_width=300, natural_height=200, scale_x=2, scale_y=2, offset_x=0, offset_y=100)
    # (150, 300) on the canvas -> (75, 100) in the 300×200 background -> (300, 400) in the 1200×800 photo
    assert canvas_to_image(150, 300, geometry, fit) == (300, 400)
    assert canvas_to_image(150, 50, geometry, fit) is None  # in the top margin


def test_image_to_canvas_round_trips_every_pixel_of_a_scaled_photo():
    geometry = fit_canvas(1500, 1000, 560, 560)
    for x, y in [(0, 0), (1499, 999), (750, 498), (3, 997), (1234, 1)]:
        assert canvas_to_image(*image_to_canvas(x, y, geometry), geometry) == (x, y)


def test_circle_center_reads_the_point_tools_encoding():
    """The 0.13 point tool stores left = x - (radius + strokeWidth / 2), top = y, origin left/center."""
    obj = {"type": "Circle", "left": 100 - (5 + 2 / 2), "top": 40, "radius": 5, "strokeWidth": 2,
           "originX": "left", "originY": "center"}  # fmt: skip
    assert circle_center(obj) == pytest.approx((100, 40))
    centred = {**obj, "left": 100, "top": 40, "originX": "center", "originY": "center"}
    assert circle_center(centred) == pytest.approx((100, 40))
    top_left = {**obj, "left": 94, "top": 34, "originX": "left", "originY": "top"}
    assert circle_center(top_left) == pytest.approx((100, 40))


def test_drawing_to_points_maps_clicks_keeps_labels_and_order_and_skips_other_shapes():
    geometry = fit_canvas(1500, 1000, 560, 560)
    drawing = {
        "objects": [
            point_object(280, 186, POSITIVE),
            {"type": "Rect", "left": 10, "top": 10, "width": 5, "height": 5},
            point_object(56, 37.3, NEGATIVE),
            point_object(600, 10, POSITIVE),  # off the photo
        ]
    }
    assert drawing_to_points(drawing, geometry) == [Point(750, 498, POSITIVE), Point(150, 100, NEGATIVE)]


def test_drawing_to_points_applies_the_canvas_background_fit():
    geometry = fit_canvas(1200, 800, 600, 600)
    fit = {"natural_width": 300, "natural_height": 200, "scale_x": 2, "scale_y": 2, "offset_x": 0, "offset_y": 100}
    points = drawing_to_points({"objects": [point_object(150, 300, POSITIVE)]}, geometry, fit)
    assert points == [Point(300, 400, POSITIVE)]


def test_drawing_to_points_of_nothing_is_empty():
    geometry = fit_canvas(10, 10, 560, 560)
    assert drawing_to_points(None, geometry) == []
    assert drawing_to_points({"objects": []}, geometry) == []


def test_unknown_fill_colours_count_as_subject():
    geometry = fit_canvas(100, 100, 560, 560)
    obj = {**point_object(10, 10, NEGATIVE), "fill": "#123456"}
    assert drawing_to_points({"objects": [obj]}, geometry)[0].label == POSITIVE
    assert point_object(10, 10, NEGATIVE)["fill"] == LABEL_COLORS[NEGATIVE]


def test_points_to_drawing_round_trips_points_and_labels():
    geometry = fit_canvas(1500, 1000, 560, 560)
    points = [Point(750, 498, POSITIVE), Point(0, 999, NEGATIVE), Point(1499, 0, POSITIVE)]
    assert drawing_to_points(points_to_drawing(points, geometry), geometry) == points
