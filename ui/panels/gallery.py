"""The history gallery: thumbnails of every saved edit, details, reuse settings, download, delete."""

from __future__ import annotations

from functools import partial

import streamlit as st

from ui.history import HistoryEntry, HistoryStore, open_store
from ui.settings import get_settings

COLUMNS = 3


def store() -> HistoryStore:
    return open_store(get_settings().history_dir)


def _select(entry_id: str | None) -> None:
    st.session_state.history_selected = entry_id


def _ask_delete(entry_id: str) -> None:
    st.session_state.confirm_delete = entry_id


def _cancel_delete() -> None:
    st.session_state.confirm_delete = None


def _delete(entry_id: str) -> None:
    store().delete(entry_id)
    state = st.session_state
    state.confirm_delete = None
    if state.history_selected == entry_id:
        state.history_selected = None


def reuse(entry_id: str) -> None:
    """Callback: load an entry's prompt, seed and parameters into the studio, then go there."""
    entry = store().get(entry_id)
    if entry is None:
        return
    record, state = entry.record, st.session_state
    params = record.params
    state.prompt_text = record.prompt
    state.prompt_meta = {"prompt": record.prompt, "tokens": None, "source": "history", "reason": None}
    state.user_word = record.user_keyword
    state.keywords_text = ", ".join(record.keywords)
    state.random_seed = False
    state.seed = int(record.seeds[0] if record.seeds else params.get("seed", 0))
    for option in state.edit_options:  # the options this service still has; each kept inside its bounds
        if option.name in params and option.name != "seed":
            state[option.name] = option.clamp(params[option.name])
    if record.negative_prompt is not None:
        state.negative_prompt = record.negative_prompt
    state.mode_note = None  # the Fast switch shows the entry's mode; no note of an earlier switch
    state.goto_studio = True


def _describe(entry: HistoryEntry) -> str:
    params = entry.record.params
    seeds = ", ".join(str(seed) for seed in entry.record.seeds)
    fast = " · fast" if params.get("mode") == "fast" else ""
    return f"{entry.created:%Y-%m-%d %H:%M} · seed {seeds} · {params.get('steps', '?')} steps{fast}"


def _card(entry: HistoryEntry) -> None:
    state = st.session_state
    with st.container(border=True, key=f"card-{entry.id}"):
        st.image(str(entry.thumb_path), width="stretch")
        prompt = entry.record.prompt
        st.markdown(f"**{entry.record.user_keyword or 'Edit'}** · {entry.record.source_name or 'photo'}")
        st.caption(prompt if len(prompt) < 110 else prompt[:107] + "…")
        st.caption(_describe(entry))
        if state.confirm_delete == entry.id:
            st.warning("Delete this edit for good?")
            with st.container(horizontal=True, gap="small"):
                st.button("Delete", key=f"yes-{entry.id}", type="primary", on_click=_delete, args=(entry.id,))
                st.button("Keep", key=f"no-{entry.id}", on_click=_cancel_delete)
            return
        with st.container(horizontal=True, gap="small"):
            st.button("Open", key=f"view-{entry.id}", icon=":material/open_in_full:", on_click=_select,
                      args=(entry.id,))  # fmt: skip
            st.button("Reuse", key=f"reuse-{entry.id}", icon=":material/replay:", help="Load this edit's prompt, "
                      "seed and parameters into the studio", on_click=reuse, args=(entry.id,))  # fmt: skip
            st.download_button(
                "",
                data=partial(entry.result_paths[0].read_bytes),
                file_name=f"moodshift-{entry.id}.png",
                mime="image/png",
                key=f"download-{entry.id}",
                icon=":material/download:",
                help="Download the result",
                on_click="ignore",
                type="tertiary",
            )
            st.button("", key=f"delete-{entry.id}", icon=":material/delete:", help="Delete", on_click=_ask_delete,
                      args=(entry.id,), type="tertiary")  # fmt: skip


def _details(entry: HistoryEntry) -> None:
    record = entry.record
    st.subheader("Details")
    images = st.columns(len(entry.result_paths) + 1)
    images[0].image(str(entry.source_path), caption="Before", width="stretch")
    for i, (column, path) in enumerate(zip(images[1:], entry.result_paths, strict=True)):
        column.image(str(path), caption=f"Variant {i + 1} · seed {record.seeds[i]}", width="stretch")
        column.download_button(
            "Download",
            data=partial(path.read_bytes),
            file_name=f"moodshift-{entry.id}-{i}.png",
            mime="image/png",
            key=f"detail-download-{i}",
            icon=":material/download:",
            on_click="ignore",
        )
    st.markdown(f"**Prompt** — {record.prompt}")
    if record.negative_prompt:
        st.caption(f"Negative prompt: {record.negative_prompt}")
    rows = {
        "word": record.user_keyword,
        "mood": ", ".join(record.keywords),
        **{key: str(value) for key, value in record.params.items()},
        **{f"time · {key}": f"{value}" for key, value in record.timings.items()},
        "source image id": record.image_id or "",
        "size": f"{entry.width}×{entry.height}",
    }
    st.dataframe(
        {"setting": list(rows), "value": list(rows.values())},
        hide_index=True,
        width="stretch",
        height=35 * (len(rows) + 1) + 3,  # every row, no inner scrolling
    )
    with st.container(horizontal=True):
        st.button("Reuse these settings", icon=":material/replay:", on_click=reuse, args=(entry.id,), type="primary")
        st.button("Close", key="close_details", icon=":material/close:", on_click=_select, args=(None,))


def render() -> None:
    state = st.session_state
    if state.goto_studio:
        state.goto_studio = False
        st.switch_page("views/studio.py")
    entries = store().list()
    st.title("History")
    if not entries:
        st.info("Finished edits appear here, saved on disk as soon as they finish.", icon=":material/history:")
        return
    st.caption(f"{len(entries)} saved edit{'s' if len(entries) != 1 else ''} in `{get_settings().history_dir}`")
    selected = next((entry for entry in entries if entry.id == state.history_selected), None)
    if selected is not None:
        with st.container(border=True):
            _details(selected)
    for start in range(0, len(entries), COLUMNS):
        for column, entry in zip(st.columns(COLUMNS), entries[start : start + COLUMNS], strict=False):
            with column:
                _card(entry)
