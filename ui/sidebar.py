"""The sidebar: service URL and status, and the generation settings (seed, steps, guidance, variants...)."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any

import streamlit as st

from ui.client import ServiceError, get_client

INFO_REFRESH_S = 30.0
MAX_SEED = 2**31 - 1


@dataclass(frozen=True)
class GenerationParams:
    """What the sidebar asks of an edit; `seed` None means a fresh random seed per generation."""

    seed: int | None
    steps: int
    guidance: float
    variants: int
    feather: int
    negative_prompt: str
    strength: float

    def request_fields(self) -> dict[str, Any]:
        """The /edit body fields; a random seed is drawn here so the request (and history) records it."""
        return {
            "seed": self.seed if self.seed is not None else secrets.randbelow(MAX_SEED),
            "steps": self.steps,
            "guidance": self.guidance,
            "variants": self.variants,
            "feather": self.feather,
            "strength": self.strength,
            "negative_prompt": self.negative_prompt,
        }


def current_params() -> GenerationParams:
    """The generation settings from the session (the sidebar's widgets write them)."""
    state = st.session_state
    return GenerationParams(
        seed=None if state.random_seed else int(state.seed),
        steps=int(state.steps),
        guidance=float(state.guidance),
        variants=int(state.variants),
        feather=int(state.feather),
        negative_prompt=str(state.negative_prompt),
        strength=float(state.strength),
    )


def service_info(force: bool = False) -> tuple[dict[str, Any] | None, ServiceError | None]:
    """GET /info, remembered for a while per URL so every rerun does not ask again."""
    url = st.session_state.service_url
    cached = st.session_state.get("_info")
    if not force and cached and cached["url"] == url and time.time() - cached["at"] < INFO_REFRESH_S:
        return cached["info"], cached["error"]
    info, error = None, None
    try:
        info = get_client(url).info()
    except ServiceError as exc:
        error = exc
    st.session_state["_info"] = {"url": url, "at": time.time(), "info": info, "error": error}
    return info, error


def _recheck() -> None:
    st.session_state.pop("_info", None)


def render_sidebar() -> dict[str, Any] | None:
    """Draw the sidebar; returns the service's /info (None when it is unreachable)."""
    with st.sidebar:
        st.markdown("### :material/tune: Settings")
        st.text_input("Service URL", key="service_url", on_change=_recheck, help="Where the Moodshift service runs.")
        info, error = service_info()
        if error is not None:
            st.error(f"Service unreachable: {error.message}.\n\nURL tried: `{error.url}`", icon=":material/cloud_off:")
            st.button("Check again", on_click=_recheck, icon=":material/refresh:")
        elif info is not None:
            st.caption(f":green[●] Connected · {_describe(info)}")

        st.markdown("#### Generation")
        st.toggle("Random seed", key="random_seed", help="A new seed every time; the one used is saved in history.")
        random_seed = st.session_state.random_seed
        st.number_input("Seed", min_value=0, max_value=MAX_SEED, step=1, key="seed", disabled=random_seed)
        st.slider("Steps", 1, 100, key="steps", help="Denoising steps: more is slower and finer.")
        st.slider("Guidance", 0.0, 20.0, step=0.5, key="guidance", help="How strictly the image follows the prompt.")
        st.slider("Variants", 1, 4, key="variants", help="Images per generation, each with its own seed.")
        st.slider("Feather (px)", 0, 64, key="feather", help="Softness of the seam around the kept subject.")
        with st.expander("Advanced"):
            st.text_area("Negative prompt", key="negative_prompt", height=80)
            st.slider("Strength", 0.1, 1.0, step=0.05, key="strength", help="1 = new background from noise.")
    return info


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
