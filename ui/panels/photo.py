"""Photo upload: checks the file and resets the per-photo state when a new photo arrives."""

from __future__ import annotations

import math

import streamlit as st

from ui.service_info import last_info
from ui.settings import get_settings
from ui.upload import ACCEPTED_TYPES, SourceImage, UploadError, UploadLimits, read_upload


def upload_limits() -> UploadLimits:
    """The service's limits once its /info has answered; the studio's own settings until then."""
    settings = get_settings()
    return UploadLimits.from_info(last_info(), UploadLimits(settings.max_upload_mb, settings.max_image_pixels))


def upload_help(limits: UploadLimits) -> str:
    """What may be uploaded, saying that the size limit is the service's, on the request the photo travels in."""
    return (
        f"PNG, JPEG or WebP, up to {limits.max_pixels / 1e6:g} MP and a file of about {limits.max_file_mb:.1f} MB: "
        f"the service takes requests of up to {limits.max_mb:g} MB, and the photo goes in one base64-encoded, a "
        "third larger (a WebP goes as PNG, often larger still)."
    )


def set_source(source: SourceImage | None) -> None:
    """Make `source` the photo being edited, forgetting the points, mask and mood of the previous one."""
    state = st.session_state
    if state.source is not None and source is not None and state.source.sha256 == source.sha256:
        return
    state.source = source
    state.points = []
    state.canvas_gen += 1
    state.segmentation = None
    state.mask_overlay = None
    state.segment_attempt = None  # ask at once: the automatic subject needs no click
    state.segment_error = None
    state.cutout = None
    state.cutout_error = None
    state.mood = None
    state.mood_for = None
    state.mood_error = None
    state.results = None


def _on_upload() -> None:
    upload = st.session_state.upload
    st.session_state.upload_error = None
    if upload is None:  # the user removed the file
        set_source(None)
        return
    limits = upload_limits()
    try:
        set_source(read_upload(upload.name, upload.getvalue(), limits.max_mb, limits.max_pixels))
    except UploadError as exc:
        st.session_state.upload_error = str(exc)


def render() -> SourceImage | None:
    """The uploader; returns the photo being edited (kept across reruns and page switches)."""
    limits = upload_limits()
    st.file_uploader(
        "Photo",
        type=list(ACCEPTED_TYPES),
        max_upload_size=max(1, math.ceil(limits.max_mb)),
        key="upload",
        on_change=_on_upload,
        help=upload_help(limits),
    )
    if st.session_state.upload_error:
        st.error(st.session_state.upload_error, icon=":material/broken_image:")
    return st.session_state.source
