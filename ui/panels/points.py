"""The subject mask drawn over the photo: the automatic subject as soon as a photo arrives, then refined by point
prompts on the canvas (each click asks /segment again, starting from the automatic subject); and the subject's
cut-out from /matte (a PNG with transparency; its soft edge is drawn over the photo too)."""

from __future__ import annotations

import io
from pathlib import Path

import streamlit as st
from PIL import Image
from streamlit_drawable_canvas import st_canvas

from ui.answers import answered_once
from ui.canvas import (
    LABEL_COLORS,
    NEGATIVE,
    POINT_OUTLINE,
    POINT_RADIUS,
    POINT_STROKE,
    POSITIVE,
    CanvasGeometry,
    Point,
    drawing_to_points,
    fit_canvas,
    points_to_drawing,
)
from ui.client import Segmentation, ServiceError, get_client
from ui.feedback import show_service_error
from ui.overlay import mask_array, overlay_mask, overlay_soft_edge
from ui.upload import SourceImage

# Fits the wide layout's left column on a 1400 px window; a wider canvas would scroll sideways.
CANVAS_MAX_WIDTH = 560
CANVAS_MAX_HEIGHT = 560
LABEL_CHOICES = {"subject": POSITIVE, "background": NEGATIVE}


def canvas_key() -> str:
    """The canvas widget's key; a new generation remounts the canvas with the session's points."""
    return f"canvas-{st.session_state.canvas_gen}"


def _remount(points: list[Point]) -> None:
    st.session_state.points = points
    st.session_state.canvas_gen += 1


def _undo() -> None:
    _remount(st.session_state.points[:-1])


def _start_over() -> None:
    _remount([])


def _retry() -> None:
    st.session_state.segment_attempt = None


def _display_image(source: SourceImage, geometry: CanvasGeometry) -> Image.Image:
    size = (geometry.display_width, geometry.display_height)
    cached = st.session_state.get("_display")
    if cached is None or cached[0] != (source.sha256, size):
        cached = ((source.sha256, size), source.image.resize(size, Image.Resampling.LANCZOS))
        st.session_state["_display"] = cached
    return cached[1]


def _segment(source: SourceImage, points: list[Point], display: Image.Image) -> None:
    """Ask /segment for the mask (the automatic subject refined by the points; none: the automatic subject itself)
    and prepare the overlay; errors keep the points and say why."""
    state = st.session_state
    state.update(cutout=None, cutout_error=None)  # a cut-out is of the mask it was made from
    clicks = [point.to_json() for point in points]
    request = (state.service_url, source.sha256, tuple(tuple(click.values()) for click in clicks))

    def ask() -> Segmentation:
        return get_client(state.service_url).segment(source.photo, clicks, auto=True)

    with answered_once("_segment_answers", request, "Finding the subject…", ask) as segmentation:
        if isinstance(segmentation, ServiceError):
            state.update(segmentation=None, mask_overlay=None, segment_error=segmentation, segment_attempt=points)
        else:
            mask = Image.open(io.BytesIO(segmentation.mask_png))
            state.update(
                segmentation=segmentation,
                mask_overlay=overlay_mask(display, mask),
                mask_coverage=float(mask_array(mask, display.size).mean()),
                segment_error=None,
                segment_attempt=points,
            )


def _cut_out(source: SourceImage, display: Image.Image) -> None:
    """Ask /matte for the cut-out of the current mask and draw its soft edge; an error says why."""
    state = st.session_state
    with st.spinner("Cutting out the subject…"):
        try:
            cutout = get_client(state.service_url).cutout(source.photo, state.segmentation.mask_png)
        except ServiceError as exc:
            state.update(cutout=None, cutout_error=exc)
        else:
            state.update(
                cutout=cutout,
                cutout_error=None,
                mask_overlay=overlay_soft_edge(display, Image.open(io.BytesIO(cutout.png))),
            )


def render(source: SourceImage) -> None:
    """The canvas (click = point), the point-type toggle, undo/clear and the mask's status line."""
    state = st.session_state
    geometry = fit_canvas(source.width, source.height, CANVAS_MAX_WIDTH, CANVAS_MAX_HEIGHT)
    display = _display_image(source, geometry)

    label = LABEL_CHOICES[
        st.radio(
            "Each click marks",
            list(LABEL_CHOICES),
            format_func=lambda choice: {
                "subject": ":green[:material/add_circle:] Subject",
                "background": ":red[:material/do_not_disturb_on:] Not subject",
            }[choice],
            key="point_label",
            horizontal=True,
        )
    ]
    key = canvas_key()
    if key not in state:  # first draw of this canvas: show the session's points on it
        state.canvas_initial = points_to_drawing(state.points, geometry)
    result = st_canvas(
        drawing_mode="point",
        background_image=state.mask_overlay if state.mask_overlay is not None else display,
        background_image_fit="contain",
        width=geometry.display_width,
        height=geometry.display_height,
        point_display_radius=POINT_RADIUS,
        stroke_width=POINT_STROKE,
        stroke_color=POINT_OUTLINE,
        fill_color=LABEL_COLORS[label],
        initial_drawing=state.canvas_initial,
        key=key,
    )
    points = drawing_to_points(result.json_data, geometry, result.background_fit)
    state.points = points

    with st.container(horizontal=True, vertical_alignment="center"):
        st.button("Undo", key="undo", icon=":material/undo:", on_click=_undo, disabled=not points)
        st.button(
            "Start over from the automatic mask",
            key="start_over",
            icon=":material/restart_alt:",
            on_click=_start_over,
            disabled=not points,
        )
        cutout_slot = st.empty()
        status = st.empty()

    if points != state.segment_attempt:
        _segment(source, points, display)
        st.rerun()  # draw the canvas again with the new mask as its background

    with status.container():
        _status_line(points)
    if state.segment_error is not None:
        show_service_error("Finding the subject", state.segment_error)
        st.button("Try again", key="retry_segment", on_click=_retry, icon=":material/refresh:")
    if state.segmentation is not None:
        with cutout_slot.container():
            _cutout_controls(source, display)
    if state.cutout_error is not None:
        show_service_error("Cutting out the subject", state.cutout_error)


def _cutout_controls(source: SourceImage, display: Image.Image) -> None:
    """The "Cut out" button while the current mask has no cut-out; then the cut-out's download."""
    state = st.session_state
    if state.cutout is None:
        if st.button(
            "Cut out",
            key="make_cutout",
            icon=":material/content_cut:",
            help="The subject as a PNG with transparency: a soft edge with the subject's own colours (shown in amber).",
        ):
            _cut_out(source, display)
            st.rerun()  # draw the canvas again with the soft edge on it
        return
    st.download_button(
        "Download cut-out (PNG with transparency)",
        data=state.cutout.png,
        file_name=f"{Path(source.name).stem}-cutout.png",
        mime="image/png",
        icon=":material/download:",
        key="download_cutout",
    )


def _status_line(points: list[Point]) -> None:
    state = st.session_state
    segmentation = state.segmentation
    if segmentation is None:  # still to come, or failed (the error shows below)
        return
    timing = f"{segmentation.elapsed_s * 1000:.0f} ms" + (" · no model rerun" if segmentation.cached else "")
    made_by = f"made by {segmentation.engine or 'the service'}"
    if not points:
        if state.mask_coverage == 0:
            st.caption(f"No subject found automatically ({made_by}): click on it.")
        else:
            st.caption(
                f"Automatic subject · mask covers {state.mask_coverage:.0%} · {made_by} · {timing} · click to refine "
                "it (*Not subject* cuts parts away)"
            )
        return
    positives = sum(point.label == POSITIVE for point in points)
    negatives = len(points) - positives
    counts = f"{positives} subject · {negatives} not-subject point{'s' if negatives != 1 else ''}"
    st.caption(
        f"{counts} · mask covers {state.mask_coverage:.0%} · {made_by} · score {segmentation.score:.2f} · {timing}"
    )
