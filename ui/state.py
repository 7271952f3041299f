"""The studio's session state: every default set once, here, and page widgets kept across page switches."""

from __future__ import annotations

from typing import Any

import streamlit as st

from serving.settings import get_settings

# Widgets drawn only on one page. Streamlit forgets a widget's value in a run that does not draw it (while the
# History page is shown, say); assigning the value back marks it as the user's and keeps it.
PAGE_WIDGET_KEYS = ("point_label", "keywords_text", "user_word", "prompt_text", "compare_at", "variant_choice")


def defaults() -> dict[str, Any]:
    """Initial session values: the sidebar's generation settings come from the service settings."""
    settings = get_settings()
    return {
        # sidebar
        "service_url": settings.service_url,
        "random_seed": True,
        "seed": 0,
        "steps": settings.default_steps,
        "guidance": settings.default_guidance,
        "variants": 1,
        "feather": settings.default_feather,
        "negative_prompt": settings.default_negative_prompt,
        "strength": 1.0,
        # photo and points
        "source": None,  # ui.upload.SourceImage
        "upload_error": None,
        "points": [],  # list[ui.canvas.Point], original-image pixels
        "canvas_gen": 0,  # bumped to remount the canvas (new photo, undo, clear)
        "canvas_initial": {"objects": []},
        "segmentation": None,  # ui.client.Segmentation for `segment_attempt`
        "mask_overlay": None,  # display-size PIL image: photo + translucent mask + outline
        "mask_coverage": 0.0,  # fraction of the photo inside the mask
        "segment_attempt": [],  # the points the last /segment call was for (None: ask again)
        "segment_error": None,
        # mood and prompt
        "point_label": "subject",
        "mood": None,  # ui.client.Mood
        "mood_for": None,  # sha256 of the photo the mood was read for
        "mood_error": None,
        "keywords_text": "",
        "user_word": "",
        "prompt_text": "",
        "prompt_meta": None,  # {"prompt", "tokens", "source", "reason"} of the last prompt not typed by the user
        "prompt_error": None,
        # generation
        "job": None,  # the edit job being followed (dict), survives reruns and page switches
        "job_error": None,
        "results": None,  # the last finished edit (dict)
        "compare_at": 50,
        "variant_choice": 0,
        # history page
        "history_selected": None,
        "confirm_delete": None,
        "goto_studio": False,
    }


def init_state() -> None:
    """Fill in missing defaults and keep page widgets' values; call once at the top of every run."""
    for key, value in defaults().items():
        if key not in st.session_state:
            st.session_state[key] = value
    for key in PAGE_WIDGET_KEYS:
        st.session_state[key] = st.session_state[key]
