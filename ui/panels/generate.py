"""Generate: submit an edit job, follow its real progress (step k of n), save the result to history, and show
before/after with a download for each variant."""

from __future__ import annotations

import io
import time
from dataclasses import dataclass
from functools import partial
from typing import Any

import streamlit as st
from PIL import Image

from ui.client import EditResult, JobStatus, ServiceError, encode_image, get_client
from ui.feedback import show_service_error
from ui.history import EditRecord, HistoryEntry, open_store
from ui.overlay import compare_split, fit_within
from ui.panels.prompt import keywords
from ui.settings import get_settings
from ui.sidebar import edit_request_fields
from ui.upload import SourceImage

POLL_INTERVAL_S = 0.4
PREVIEW_WIDTH = 320
COMPARE_MAX = (1100, 760)


@dataclass(frozen=True)
class JobEnded:
    """An edit job that ended without a result: `state` failed or cancelled, and the service's message."""

    state: str
    message: str


def _block_reason() -> str | None:
    state = st.session_state
    if state.segmentation is None:
        return "Waiting for the subject mask: the edit keeps what it covers."
    if state.mask_coverage == 0:
        return "The mask is empty: click on the subject first."
    if not state.prompt_text.strip() and not state.user_word.strip():
        return "Type a word (or a prompt) for the new background."
    return None


def _submit(source: SourceImage) -> None:
    state = st.session_state
    state.job_error = state.cancel_error = None
    request = edit_request_fields()
    body: dict[str, Any] = {"mask": encode_image(state.segmentation.mask_png), **request}
    if state.prompt_text.strip():
        body["prompt"] = state.prompt_text.strip()
    if state.user_word.strip():
        body["user_keyword"] = state.user_word.strip()
    if keywords():
        body["keywords"] = keywords()
    try:
        job = get_client(state.service_url).submit_edit(source.photo, body)
    except ServiceError as exc:
        state.job_error = exc
        return
    state.job = {
        "job_id": job.job_id,
        "total": job.total_steps,
        "started": time.time(),
        "source": source,
        "image_id": state.segmentation.image_id,
        "params": {key: value for key, value in request.items() if key != "negative_prompt"},
        "negative_prompt": request.get("negative_prompt"),
        "prompt": body.get("prompt", ""),
        "user_keyword": body.get("user_keyword", ""),
        "keywords": body.get("keywords", []),
        "points": [point.to_json() for point in state.points],
    }


def _cancel() -> None:
    """Ask the service to stop the job, and let it go only once the service says it is cancelled. It may have
    ended meanwhile (done: followed on, so its result is saved; failed: followed on, so the reason shows), and a
    cancel that failed leaves it running: it is followed on, with the error shown. A job the service no longer
    knows (404) is let go: there is nothing left to follow."""
    state = st.session_state
    job = state.job
    state.cancel_error = None
    if job is None:
        return
    try:
        answer = get_client(state.service_url).cancel_edit(job["job_id"])
    except ServiceError as exc:
        state.cancel_error = exc
        if exc.status == 404:
            state.job = None
        return
    if answer == "cancelled":
        state.job = None
        state.job_error = JobEnded("cancelled", "cancelled by you")


def _follow(job: dict[str, Any]) -> None:
    """Poll the job until it ends, showing its progress; survives reruns because the job is in the session."""
    state = st.session_state
    state.job_error = None
    client = get_client(state.service_url)
    slot, preview_slot = st.empty(), st.empty()
    slot.progress(0.0, text="Waiting for the service…")
    shown = None  # the preview on the page, so an unchanged one is not sent to the browser again
    while True:
        try:
            status = client.edit_status(job["job_id"])
        except ServiceError as exc:
            state.job_error = exc  # the job may still run: "Check again" resumes following it
            slot.empty()
            return
        elapsed = time.time() - job["started"]
        if status.state == "done" and status.result is not None:
            _finish(job, status.result, elapsed)  # before any st call: a pending rerun stops the script there
            slot.empty()
            preview_slot.empty()
            return
        if status.finished:
            state.job = None
            state.job_error = JobEnded(status.state, status.error or "no details from the service")
            slot.empty()
            preview_slot.empty()
            return
        slot.progress(min(status.step / (status.total or job["total"] or 1), 1.0), text=progress_text(status, elapsed))
        if status.preview is not None and status.preview != shown:
            state.last_preview = status.preview
            preview_slot.image(status.preview, caption="The background forming (preview)", width=PREVIEW_WIDTH)
            shown = status.preview
        time.sleep(POLL_INTERVAL_S)


def progress_text(status: JobStatus, elapsed_s: float) -> str:
    """The progress line: step k of n while denoising, the stage (segment, prompt…) before the first step."""
    if status.state == "queued":
        return f"Queued · {elapsed_s:.0f} s"
    if status.step == 0 and status.stage and status.stage != "diffusion":
        return f"Preparing ({status.stage}) · {elapsed_s:.0f} s"
    return f"Step {status.step} of {status.total} · {elapsed_s:.0f} s"


def _finish(job: dict[str, Any], result: EditResult, elapsed_s: float) -> None:
    """Save the finished edit to history at once, then keep it as the page's result."""
    state = st.session_state
    source: SourceImage = job["source"]
    record = EditRecord(
        prompt=result.prompt or job["prompt"],
        seeds=result.seeds,
        params=job["params"],
        timings={**result.timings, "wall_s": round(elapsed_s, 3)},
        image_id=result.image_id or job["image_id"],
        source_name=source.name,
        user_keyword=job["user_keyword"],
        keywords=job["keywords"],
        negative_prompt=job["negative_prompt"],
        points=job["points"],
    )
    entry: HistoryEntry | None = None
    save_error = None
    try:
        entry = open_store(get_settings().history_dir).add(source.image, result.images, record)
    except (OSError, ValueError) as exc:
        save_error = f"The result could not be saved to history: {exc}"
    before = fit_within(source.image, *COMPARE_MAX)
    state.results = {
        "result": result,
        "record": record,
        "entry_id": entry.id if entry else None,
        "save_error": save_error,
        "before": before,  # display-size copies for the before/after wipe
        "afters": [Image.open(io.BytesIO(data)).convert("RGB").resize(before.size) for data in result.images],
    }
    state.variant_choice = 0
    state.job = None


def render(source: SourceImage) -> None:
    """The Generate button, the progress of a running job and the last result."""
    state = st.session_state
    reason = _block_reason()
    clicked = st.button(
        "Generate",
        key="generate",
        type="primary",
        icon=":material/auto_awesome:",
        disabled=reason is not None or state.job is not None,
        width="stretch",
    )
    if clicked:
        _submit(source)
    if isinstance(state.cancel_error, ServiceError):  # shown until the next edit: it says why the job went on
        show_service_error("Cancelling", state.cancel_error)
    if state.job is not None:
        cancel_slot = st.empty()
        cancel_slot.button("Cancel", key="cancel", icon=":material/stop_circle:", on_click=_cancel, type="tertiary")
        _follow(state.job)
        if state.job is None:
            cancel_slot.empty()
    elif reason:
        st.caption(reason)
    error = state.job_error
    if isinstance(error, ServiceError):
        show_service_error("Generating", error)
        if state.job is not None:
            st.button("Check again", key="check_job", icon=":material/refresh:")
    elif isinstance(error, JobEnded) and error.state == "cancelled":
        st.info("Generation cancelled.", icon=":material/stop_circle:")
    elif isinstance(error, JobEnded):
        st.error(f"**Generation {error.state}.** {error.message}", icon=":material/error:")


def settings_caption(params: dict[str, Any], seed: int) -> str:
    """The settings a result was made with, in one line. The feather softens only a hard edge (the matte makes its
    own soft edge), so it is named only then, or when the service has no choice of edge."""
    parts = ["Fast mode"] if params.get("mode") == "fast" else []
    parts += [f"Seed {seed}", f"{params.get('steps', '?')} steps", f"guidance {params.get('guidance', '?')}"]
    edge = params.get("edge")
    if edge is not None:
        parts.append(f"edge {edge}")
    if edge in (None, "hard") and "feather" in params:
        parts.append(f"feather {params['feather']} px")
    return " · ".join(parts)


def render_results() -> None:
    """Before/after of the chosen variant, every variant with its download, and where it was saved."""
    results = st.session_state.results
    if not results:
        return
    result: EditResult = results["result"]
    record: EditRecord = results["record"]
    st.divider()
    st.subheader("Result")
    count = len(result.images)
    choice = 0
    if count > 1:
        choice = st.radio(
            "Variant",
            list(range(count)),
            format_func=lambda i: f"{i + 1} · seed {result.seeds[i]}",
            key="variant_choice",
            horizontal=True,
        )
    compare_col, info_col = st.columns([3, 1])
    with compare_col:
        position = st.slider("Before ◀ ▶ after", 0, 100, key="compare_at", label_visibility="collapsed")
        st.image(
            compare_split(results["before"], results["afters"][choice], position / 100),
            caption="Left of the line: before · right: after (drag the slider to wipe)",
            width="stretch",
        )
    with info_col:
        st.markdown("**Prompt**")
        st.caption(record.prompt)
        st.caption(settings_caption(record.params, result.seeds[choice]))
        total = record.timings.get("total_s") or record.timings.get("wall_s")
        if total is not None:
            st.caption(f"Took {float(total):.1f} s")
        for i, data in enumerate(result.images):
            st.download_button(
                f"Download variant {i + 1}" if count > 1 else "Download PNG",
                data=partial(bytes, data),
                file_name=f"moodshift-{result.seeds[i]}.png",
                mime="image/png",
                icon=":material/download:",
                key=f"download-result-{i}",
                on_click="ignore",
                width="stretch",
            )
        if results["save_error"]:
            st.error(results["save_error"])
        elif results["entry_id"]:
            st.success("Saved to history", icon=":material/history:")
            st.page_link("views/history.py", label="Open history", icon=":material/photo_library:")
    if count > 1:
        columns = st.columns(max(count, 4))  # at least 4 columns: thumbnails, not full-width copies
        for i, column in enumerate(columns[:count]):
            column.image(results["afters"][i], caption=f"Variant {i + 1} · seed {result.seeds[i]}", width="stretch")
