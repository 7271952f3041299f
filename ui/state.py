"""The studio's session state: every default set once, here, and widgets kept across page switches.

The generation settings follow the service's edit options table (`GET /info`): they start at its defaults the first
time it answers, and stay inside its bounds when it changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import streamlit as st

from ui.edit_options import EditOption
from ui.settings import get_settings

# Widgets not drawn in every run: the page widgets (only on their page) and the seed toggle (only while the service
# answers). Streamlit forgets a widget's value in a run that does not draw it; assigning the value back marks it as
# the user's and keeps it.
PAGE_WIDGET_KEYS = ("point_label", "keywords_text", "user_word", "prompt_text", "compare_at", "variant_choice")
KEPT_WIDGET_KEYS = (*PAGE_WIDGET_KEYS, "random_seed")


def defaults() -> dict[str, Any]:
    """Initial session values of everything but the generation settings (see `option_defaults`)."""
    return {
        # sidebar
        "service_url": get_settings().service_url,
        "edit_options": [],  # list[ui.edit_options.EditOption]: the service's table, as last seen
        "quality_settings": None,  # steps and guidance before the Fast switch was turned on, given back when off
        "mode_note": None,  # what the last Fast switch changed, in words
        # photo and points
        "source": None,  # ui.upload.SourceImage
        "upload_error": None,
        "points": [],  # list[ui.canvas.Point], original-image pixels
        "canvas_gen": 0,  # bumped to remount the canvas (new photo, undo, clear)
        "canvas_initial": {"objects": []},
        "segmentation": None,  # ui.client.Segmentation for `segment_attempt`
        "mask_overlay": None,  # display-size PIL image: photo + translucent mask + outline
        "mask_coverage": 0.0,  # fraction of the photo inside the mask
        "segment_attempt": None,  # the points the last /segment call was for (None: ask again)
        "segment_error": None,
        "cutout": None,  # ui.client.Cutout of the current mask, once asked for
        "cutout_error": None,
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
        "last_preview": None,  # PNG of the latest preview shown while an edit ran
        "job_error": None,
        "cancel_error": None,  # ui.client.ServiceError of a cancel that failed (the job was followed on)
        "results": None,  # the last finished edit (dict)
        "compare_at": 50,
        "variant_choice": 0,
        # history page
        "history_selected": None,
        "confirm_delete": None,
        "goto_studio": False,
    }


def option_defaults(options: Sequence[EditOption]) -> dict[str, Any]:
    """Initial values of the generation settings: each option's default; a seed of None means "Random seed" on."""
    values = {option.name: option.initial for option in options}
    seed = next((option for option in options if option.name == "seed"), None)
    if seed is not None:
        values["random_seed"] = seed.default is None
    return values


def init_state(options: Sequence[EditOption] | None = None) -> None:
    """Fill in missing defaults, keep widgets' values, and keep the generation settings inside the service's bounds.

    Call it at the top of every run, and again with `options` (the service's table) once /info has answered; None
    means not known in this run, and the last table seen still holds.
    """
    state = st.session_state
    studio_defaults = defaults()
    if options is not None:
        # An option named like one of the studio's own keys would overwrite that state: it is not drawn.
        reserved = {*studio_defaults, *KEPT_WIDGET_KEYS}
        state["edit_options"] = [option for option in options if option.name not in reserved]
    table = state.get("edit_options", [])
    for key, value in {**studio_defaults, **option_defaults(table)}.items():
        if key not in state:
            state[key] = value
    for option in table:  # the bounds may have changed since the value was set: a widget out of bounds crashes
        state[option.name] = option.clamp(state[option.name])
    for key in KEPT_WIDGET_KEYS:
        if key in state:
            state[key] = state[key]
