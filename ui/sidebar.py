"""The sidebar: service URL and status, and the generation settings, one control per row of the service's edit
options table (its defaults and bounds; an option the studio does not know gets a generic control). The `mode`
choice is the Fast switch: on, it also sets steps and guidance to the few-step model's and says what it changed;
it is disabled, with the service's reason, when the service has no few-step model."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import streamlit as st

from ui.client import ServiceError
from ui.edit_options import FAST_SETTINGS, EditOption, fast_model, request_fields, switch_mode
from ui.service_info import forget_info

# The studio's own words for the options it knows; any other option shows its name and the service's help.
LABELS = {
    "seed": "Seed",
    "mode": "Fast",
    "steps": "Steps",
    "guidance": "Guidance",
    "variants": "Variants",
    "edge": "Edge",
    "feather": "Feather (px)",
    "strength": "Strength",
    "shrink_steps": "Shrink steps",
    "negative_prompt": "Negative prompt",
}
HELP = {
    "guidance": "How strictly the image follows the prompt.",
    "variants": "Images per generation, each with its own seed.",
    "edge": "Matte: a soft edge with the subject's own colours, no rim of the old background. Hard: the mask as "
    "it is, softened by the feather.",
    "feather": "With a hard edge: softness of the seam around the kept subject.",
    "strength": "1 = new background from noise.",
}
# Shown at once; every other option (and any the service adds later) goes in the "Advanced" expander.
MAIN_OPTIONS = ("seed", "mode", "steps", "guidance", "variants", "edge", "feather")
TEXT_AREA_HEIGHT = 80


def edit_request_fields() -> dict[str, Any]:
    """The edit body's options from the sidebar's settings; a random seed is drawn here (see `request_fields`)."""
    state = st.session_state
    return request_fields(state.edit_options, state, bool(state.get("random_seed", True)))


def render_sidebar(info: dict[str, Any] | None, error: ServiceError | None) -> None:
    """Draw the sidebar for the service's /info answer (`info`), or its `error` when it is unreachable."""
    with st.sidebar:
        st.markdown("### :material/tune: Settings")
        st.text_input("Service URL", key="service_url", on_change=forget_info, help="Where the Moodshift service runs.")
        if error is not None:
            st.error(f"Service unreachable: {error.message}.\n\nURL tried: `{error.url}`", icon=":material/cloud_off:")
            st.button("Check again", on_click=forget_info, icon=":material/refresh:")
        if info is None:  # the controls' defaults and bounds are the service's: none to draw without it
            return
        st.caption(f":green[●] Connected · {_describe(info)}")
        options: list[EditOption] = st.session_state.edit_options
        if not options:  # a service without an options table: it uses its own defaults
            return
        st.markdown("#### Generation")
        for option in options:
            if option.name in MAIN_OPTIONS:
                _draw(option, info)
        advanced = [option for option in options if option.name not in MAIN_OPTIONS]
        if advanced:
            with st.expander("Advanced"):
                for option in advanced:
                    _draw(option, info)


def _draw(option: EditOption, info: dict[str, Any]) -> None:
    label = LABELS.get(option.name, option.name.replace("_", " ").capitalize())
    help_text = HELP.get(option.name, option.help) or None
    if option.name == "seed":
        _seed_control(option, label)
    elif option.name == "mode" and "fast" in option.choices:
        _fast_switch(label, info)
    else:
        CONTROLS[option.type](option, label, help_text)


def _seed_control(option: EditOption, label: str) -> None:
    st.toggle("Random seed", key="random_seed", help="A new seed every time; the one used is saved in history.")
    disabled = st.session_state.random_seed
    st.number_input(label, min_value=option.low, max_value=option.high, step=1, key="seed", disabled=disabled)


def _fast_switch(label: str, info: dict[str, Any]) -> None:
    """The `mode` option as a Fast switch, drawn before steps and guidance (the table's order), which it sets."""
    state, fast = st.session_state, fast_model(info)
    if not (fast and fast.get("available")):
        if state.mode == "fast":  # the service has lost its few-step model: back to quality, steps as they were
            _switch_mode("quality", fast)
        state.fast_toggle = False
        st.toggle(label, key="fast_toggle", disabled=True)
        reason = (fast or {}).get("reason") or "the service does not say it has a few-step model"
        st.caption(f"Fast mode is not available: {reason}")
        return
    state.fast_toggle = state.mode == "fast"  # the mode may come from elsewhere (history's "reuse")
    help_text = (
        f"A few-step model ({fast.get('family')}: {fast.get('model')}): {fast.get('steps')} steps, guidance "
        f"{fast.get('guidance')}, several times faster. Off: the model's own scheduler (quality)."
    )
    st.toggle(label, key="fast_toggle", on_change=_on_fast_switch, args=(fast,), help=help_text)
    if state.get("mode_note"):
        st.caption(state.mode_note)


def _on_fast_switch(fast: dict[str, Any]) -> None:
    _switch_mode("fast" if st.session_state.fast_toggle else "quality", fast)


def _switch_mode(mode: str, fast: dict[str, Any] | None) -> None:
    """Set the mode, and steps and guidance with it: the few-step model's, or back to those before fast mode."""
    state = st.session_state
    if mode == "fast":
        state.quality_settings = {name: state.get(name) for name in FAST_SETTINGS}
    changes, note = switch_mode(state.edit_options, state, mode, fast, state.quality_settings)
    for name, value in changes.items():
        state[name] = value
    if mode == "quality":
        state.quality_settings = None
    state.mode_note = note


def _integer_control(option: EditOption, label: str, help_text: str | None) -> None:
    if option.slides:
        st.slider(label, option.low, option.high, step=1, key=option.name, help=help_text)
    else:
        st.number_input(label, min_value=option.low, max_value=option.high, step=1, key=option.name, help=help_text)


def _number_control(option: EditOption, label: str, help_text: str | None) -> None:
    if option.slides:
        st.slider(label, option.low, option.high, step=option.step, key=option.name, help=help_text)
    else:
        st.number_input(
            label, min_value=option.low, max_value=option.high, step=option.step, key=option.name, help=help_text
        )


def _text_control(option: EditOption, label: str, help_text: str | None) -> None:
    if option.choices:
        st.radio(label, option.choices, key=option.name, help=help_text, horizontal=True)
        return
    max_chars = int(option.maximum) if option.maximum is not None else None
    st.text_area(label, key=option.name, height=TEXT_AREA_HEIGHT, max_chars=max_chars, help=help_text)


def _boolean_control(option: EditOption, label: str, help_text: str | None) -> None:
    st.toggle(label, key=option.name, help=help_text)


CONTROLS: dict[str, Callable[[EditOption, str, str | None], None]] = {
    "integer": _integer_control,
    "number": _number_control,
    "string": _text_control,
    "boolean": _boolean_control,
}


def _describe(info: dict[str, Any]) -> str:
    stages = info.get("stages") or {}
    profiles = sorted({str(stage.get("profile")) for stage in stages.values() if stage.get("profile")})
    device = info.get("device", "?")
    return f"{'/'.join(profiles) or 'unknown'} models on {device}"


def demo_banner(info: dict[str, Any] | None) -> None:
    """The warning shown on every page while the service runs demo (random-weight) models."""
    if not info or not info.get("demo_models"):
        return
    # The service's notice names the stages and the fix; this text stands in when it sends none.
    notice = info.get("notice") or (
        "The service runs models with random weights: results are noise that only shows the pipeline works. "
        "For real results run `python -m serving weights --download` (or see `checkpoints/README.md`) and "
        "restart the service with `MOODSHIFT_PROFILE=real`."
    )
    st.warning(f"**Demo models.** {notice}", icon=":material/science:")
