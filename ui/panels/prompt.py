"""Mood keywords (/mood), the user's word and the SDXL prompt (/prompt), all editable before generating."""

from __future__ import annotations

import streamlit as st

from ui.answers import answered_once
from ui.client import Mood, ServiceError, get_client
from ui.feedback import show_service_error
from ui.upload import SourceImage

CLIP_MAX_TOKENS = 77  # the service trims longer prompts at descriptor boundaries
SOURCE_LABELS = {
    "llava": "read by LLaVA",
    "heuristic": "fallback: estimated from the photo's colours",
    "llm": "written by Llama 2",
    "template": "fallback: template",
    "history": "from history",
}


def keywords() -> list[str]:
    """The mood keywords as the user left them (comma-separated in the text box)."""
    return [word.strip() for word in st.session_state.keywords_text.split(",") if word.strip()]


def prompt_edited() -> bool:
    """Whether the prompt box holds text the user typed (not the last prompt the service wrote)."""
    meta = st.session_state.prompt_meta
    text = st.session_state.prompt_text.strip()
    return bool(text) and (meta is None or text != meta["prompt"].strip())


def _read_mood(source: SourceImage) -> None:
    state = st.session_state
    request = (state.service_url, source.sha256)

    def ask() -> Mood:
        return get_client(state.service_url).mood(source.photo)

    with answered_once("_mood_answers", request, "Reading the photo's mood…", ask) as mood:
        if isinstance(mood, ServiceError):
            state.update(mood_error=mood, mood_for=source.sha256)
        else:
            state.update(mood=mood, keywords_text=", ".join(mood.keywords), mood_error=None, mood_for=source.sha256)


def _write_prompt() -> None:
    """Callback: ask /prompt for the keywords and the word, and put the answer in the prompt box."""
    state = st.session_state
    state.prompt_error = None
    try:
        draft = get_client(state.service_url).prompt(keywords(), state.user_word.strip())
    except ServiceError as exc:
        state.prompt_error = exc
        return
    state.prompt_text = draft.prompt
    state.prompt_meta = {"prompt": draft.prompt, "tokens": draft.tokens, "source": draft.source, "reason": draft.reason}


def _word_changed() -> None:
    """A new word rewrites the prompt, unless the user has typed their own."""
    if st.session_state.user_word.strip() and not prompt_edited():
        _write_prompt()


def _retry_mood() -> None:
    st.session_state.mood_for = None


def render(source: SourceImage) -> None:
    state = st.session_state
    if state.mood_for != source.sha256:
        _read_mood(source)

    st.text_input("Mood of the photo", key="keywords_text", help="Comma-separated; edit freely.")
    if state.mood_error is not None:
        show_service_error("Reading the mood", state.mood_error)
        st.button("Read the mood again", on_click=_retry_mood, icon=":material/refresh:")
    elif state.mood is not None:
        st.caption(_source_caption(state.mood.source, state.mood.reason))

    st.text_input(
        "Your word",
        key="user_word",
        placeholder="forest, galaxy, neon city…",
        on_change=_word_changed,
        help="What the new background should be about. Press Enter to write the prompt.",
    )
    st.button(
        "Write prompt",
        key="write_prompt",
        icon=":material/edit_note:",
        on_click=_write_prompt,
        disabled=not state.user_word.strip(),
    )
    if state.prompt_error is not None:
        show_service_error("Writing the prompt", state.prompt_error)

    st.text_area(
        "Prompt",
        key="prompt_text",
        height=130,
        placeholder="Written for you from the mood and your word, or type your own.",
    )
    st.caption(_prompt_caption())


def _source_caption(source: str, reason: str | None) -> str:
    text = SOURCE_LABELS.get(source, source)
    return f"Source: {text}" + (f" — {reason}" if reason and source in ("heuristic", "template") else "")


def _prompt_caption() -> str:
    state = st.session_state
    meta = state.prompt_meta
    if not state.prompt_text.strip():
        return "Empty: the service writes the prompt from the mood and your word when you generate."
    if prompt_edited():
        return f"Edited by you · the service trims it to CLIP's {CLIP_MAX_TOKENS} tokens if longer."
    tokens = f"{meta['tokens']}/{CLIP_MAX_TOKENS} CLIP tokens · " if meta.get("tokens") else ""
    return tokens + _source_caption(meta["source"], meta.get("reason"))
