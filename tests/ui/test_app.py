"""The studio driven with Streamlit's AppTest against the stand-in service.

Clicks are simulated as the browser reports them (see `tests.ui.studio_driver`); the app's own code then turns
them into points, /segment calls, the overlay and the rest.
"""

from __future__ import annotations

import base64
import io
import os
import time

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from serving.core.edit_options import info_table
from tests.ui.fake_service import FakeService
from tests.ui.studio_driver import (
    APP,
    assert_no_exception,
    canvas_background,
    canvas_props,
    click,
    generate_edit,
    start_studio,
    texts,
    upload,
)
from ui.client import JobStatus, ServiceClient
from ui.history import EditRecord, HistoryStore
from ui.overlay import MASK_TINT, SOFT_EDGE_COLOR
from ui.panels import generate
from ui.settings import get_settings

CUTOUT_LABEL = "Download cut-out (PNG with transparency)"


@pytest.fixture()
def studio(fake_service, monkeypatch) -> AppTest:
    return start_studio(fake_service.url, monkeypatch)


# --- tests ------------------------------------------------------------------------------------------------------


def test_the_photo_is_shown_scaled_on_a_point_canvas(studio, big_photo_png):
    assert "Upload a photo to start." in texts(studio.info)
    at = upload(studio, "big.png", big_photo_png)
    assert_no_exception(at)
    props = canvas_props(at)
    assert props["drawingMode"] == "point"
    assert (props["canvasWidth"], props["canvasHeight"]) == (560, 373)  # 1500×1000 scaled to the 560 px column
    assert canvas_background(at).shape == (373, 560, 3)


def test_clicks_send_image_coordinates_and_the_mask_is_drawn_on_the_canvas(studio, fake_service, big_photo_png):
    at = click(upload(studio, "big.png", big_photo_png), 280, 186)
    assert_no_exception(at)
    # canvas 560×373 -> photo 1500×1000: x 280·1500/560 = 750, y 186·1000/373 = 498.7
    assert fake_service.calls("/segment")[-1]["points"] == [{"x": 750, "y": 498, "label": 1}]
    overlay = canvas_background(at)
    tinted = np.asarray(MASK_TINT)
    # Inside the fake's disc the photo is tinted toward the mask colour; far outside it is untouched.
    plain = np.asarray(Image.open(io.BytesIO(big_photo_png)).resize((560, 373), Image.Resampling.LANCZOS))
    inside = overlay[186, 250].astype(int)
    assert np.abs(inside - (0.55 * plain[186, 250] + 0.45 * tinted)).max() <= 2
    assert np.array_equal(overlay[10, 10], plain[10, 10])
    assert (overlay == 255).all(axis=2).any()  # the white outline
    assert any("mask covers" in caption for caption in texts(at.caption))

    at.radio(key="point_label").set_value("background")
    at = click(at.run(), 100, 100)
    assert canvas_props(at)["fillColor"] == "#ef4444"
    assert fake_service.calls("/segment")[-1]["points"] == [
        {"x": 750, "y": 498, "label": 1},
        {"x": 267, "y": 268, "label": 0},  # 100·1500/560 = 267.9, 100·1000/373 = 268.1
    ]
    assert any("no model rerun" in caption for caption in texts(at.caption))  # repeat clicks reuse the analysis


def _download_labels(at: AppTest) -> list[str]:
    return [button.proto.label for button in at.get("download_button")]


def test_a_cut_out_of_the_mask_shows_its_soft_edge_and_downloads_as_png(studio, fake_service, big_photo_png):
    at = click(upload(studio, "big.png", big_photo_png), 280, 186)
    assert not fake_service.calls("/matte") and CUTOUT_LABEL not in _download_labels(at)
    at.button(key="make_cutout").click()
    at = at.run()
    assert_no_exception(at)
    [call] = fake_service.calls("/matte")
    assert call["mask"] == base64.b64encode(at.session_state.segmentation.mask_png).decode()  # the mask on show
    assert CUTOUT_LABEL in _download_labels(at)
    cutout = Image.open(io.BytesIO(at.session_state.cutout.png))
    assert (cutout.mode, cutout.size) == ("RGBA", (1500, 1000))
    amber = (np.abs(canvas_background(at).astype(int) - SOFT_EDGE_COLOR) < 40).all(axis=2)
    assert 100 < amber.sum() < 5000  # a ring around the fake's disc
    at = click(at, 400, 300)  # a new mask: the cut-out was of the old one
    assert at.session_state.cutout is None and CUTOUT_LABEL not in _download_labels(at)
    assert at.button(key="make_cutout") is not None


def test_a_service_without_cut_outs_says_so_and_the_studio_goes_on(studio, fake_service, big_photo_png):
    fake_service.fail["matte"] = (404, "no such endpoint: POST /matte")
    at = click(upload(studio, "big.png", big_photo_png), 280, 186)
    at.button(key="make_cutout").click()
    at = at.run()
    assert_no_exception(at)
    [error] = [text for text in texts(at.error) if "Cutting out the subject failed" in text]
    assert "no such endpoint" in error and "HTTP 404" in error
    assert CUTOUT_LABEL not in _download_labels(at) and at.session_state.segmentation is not None


def test_the_automatic_subject_shows_on_upload_without_a_click(studio, fake_service, big_photo_png):
    at = upload(studio, "big.png", big_photo_png)
    assert_no_exception(at)
    assert fake_service.calls("/segment") == [{"image": at.session_state.source.photo.b64, "points": [], "auto": True}]
    overlay = canvas_background(at)
    plain = np.asarray(Image.open(io.BytesIO(big_photo_png)).resize((560, 373), Image.Resampling.LANCZOS))
    centre = overlay[186, 280].astype(int)  # inside the fake's automatic subject (a centred ellipse)
    assert np.abs(centre - (0.55 * plain[186, 280] + 0.45 * np.asarray(MASK_TINT))).max() <= 2
    assert np.array_equal(overlay[10, 10], plain[10, 10])
    assert any(
        caption.startswith("Automatic subject · mask covers 20%") and "made by fake-salient ·" in caption
        for caption in texts(at.caption)
    )
    assert at.session_state.points == [] and at.button(key="start_over").proto.disabled  # nothing to undo yet
    # Generate waits only for a word now: the mask is there.
    assert "Type a word (or a prompt) for the new background." in texts(at.caption)


def test_generate_works_straight_away_with_the_automatic_mask(studio, fake_service, big_photo_png):
    at = upload(studio, "big.png", big_photo_png)
    at.text_input(key="user_word").input("forest")
    at = at.run()
    at.button(key="generate").click()
    at = at.run()
    assert_no_exception(at)
    mask = np.asarray(Image.open(io.BytesIO(base64.b64decode(fake_service.calls("/edit_submit")[-1]["mask"]))))
    from tests.ui.fake_service import automatic_subject

    assert np.array_equal(mask == 255, automatic_subject(1500, 1000))  # what the user saw, at full size
    assert "Saved to history" in texts(at.success)


def test_undo_and_start_over(studio, fake_service, big_photo_png):
    at = click(click(upload(studio, "big.png", big_photo_png), 280, 186), 400, 300)
    assert len(fake_service.calls("/segment")[-1]["points"]) == 2

    at.button(key="undo").click()
    at = at.run()
    assert fake_service.calls("/segment")[-1]["points"] == [{"x": 750, "y": 498, "label": 1}]
    # The canvas is remounted showing the remaining point where it was clicked.
    remaining = canvas_props(at)["initialDrawing"]["objects"]
    assert len(remaining) == 1
    assert remaining[0]["left"] + 5 + 1 == pytest.approx(280, abs=0.5) and remaining[0]["top"] == pytest.approx(
        186, abs=0.5
    )

    at.button(key="start_over").click()
    at = at.run()
    assert_no_exception(at)
    assert canvas_props(at)["initialDrawing"]["objects"] == []
    assert fake_service.calls("/segment")[-1]["points"] == []  # back to the automatic subject
    assert at.session_state.segmentation.engine == "fake-salient" and at.session_state.segmentation.cached
    assert any(caption.startswith("Automatic subject") for caption in texts(at.caption))
    assert at.button(key="start_over").proto.disabled


def test_an_answer_is_kept_when_a_new_click_interrupts_the_run(studio, fake_service, big_photo_png, monkeypatch):
    """Regression: a rerun requested during a slow call stops the script at the spinner's exit; the mood and
    mask that had arrived were lost and never asked for again (an empty mood box, no overlay, no error). Here every
    spinner during which an answer came from the service is cut at its exit."""
    import contextlib

    import streamlit
    from streamlit.runtime.scriptrunner_utils.exceptions import StopException

    real_spinner = streamlit.spinner
    interrupted = []

    @contextlib.contextmanager
    def interrupted_spinner(*args, **kwargs):
        asked = len(fake_service.requests)
        with real_spinner(*args, **kwargs):
            yield
        if len(fake_service.requests) > asked:  # an answer arrived from the service during the spinner
            interrupted.append(args[0])
            raise StopException()  # what Streamlit raises at the next st call when a rerun is pending

    monkeypatch.setattr(streamlit, "spinner", interrupted_spinner)
    at = upload(studio, "big.png", big_photo_png)  # the automatic subject's answer arrives, the run is cut
    at = click(at.run(), 280, 186)  # the mood's answer arrives, the run is cut; then the click's
    monkeypatch.setattr(streamlit, "spinner", real_spinner)
    assert interrupted == ["Finding the subject…", "Reading the photo's mood…", "Finding the subject…"]
    at = at.run()
    assert_no_exception(at)
    assert at.text_input(key="keywords_text").value == "calm, warm, soft"
    assert at.session_state.segmentation is not None and at.session_state.mask_overlay is not None
    assert at.session_state.segmentation.engine == "fake-salient+clicks"
    assert len(fake_service.calls("/mood")) == 1 and len(fake_service.calls("/segment")) == 2  # none asked twice


def test_an_answer_cut_before_it_is_recorded_is_not_asked_for_again(studio, fake_service, big_photo_png, monkeypatch):
    """Regression: writing session_state is where Streamlit stops a run once a rerun is asked for (the canvas asks
    for one as it reports its size), so the upload's /segment answer was lost there and every upload sent two."""
    from streamlit.runtime.scriptrunner_utils.exceptions import StopException

    from ui.panels import points

    real_overlay = points.overlay_mask
    cuts = []

    def cut_once(*args, **kwargs):
        if not cuts:
            cuts.append("cut")
            raise StopException()  # as if state.update had found a rerun waiting
        return real_overlay(*args, **kwargs)

    monkeypatch.setattr(points, "overlay_mask", cut_once)
    at = upload(studio, "big.png", big_photo_png)
    at = at.run()
    assert_no_exception(at)
    assert cuts == ["cut"] and at.session_state.mask_overlay is not None
    assert len(fake_service.calls("/segment")) == 1  # the answer waited for the next run
    assert at.session_state["_segment_answers"] == {}  # and was forgotten once recorded


def test_mood_and_prompt_preview(studio, fake_service, big_photo_png):
    at = upload(studio, "big.png", big_photo_png)
    assert at.text_input(key="keywords_text").value == "calm, warm, soft"
    assert any("fallback: estimated from the photo's colours" in caption for caption in texts(at.caption))

    at.text_input(key="keywords_text").input("calm, golden")
    at.text_input(key="user_word").input("forest")
    at = at.run()
    assert fake_service.calls("/prompt")[-1] == {"keywords": ["calm", "golden"], "user_keyword": "forest"}
    prompt = at.text_area(key="prompt_text").value
    assert prompt == "forest, calm, golden, cinematic lighting, highly detailed"
    assert f"{len(prompt.split()) + 2}/77 CLIP tokens · Source: fallback: template — fake" in texts(at.caption)

    at.text_area(key="prompt_text").input("a neon city at night")
    at = at.run()
    assert any(caption.startswith("Edited by you") for caption in texts(at.caption))
    at.text_input(key="user_word").input("galaxy")  # a new word does not overwrite the user's own prompt
    at = at.run()
    assert at.text_area(key="prompt_text").value == "a neon city at night"


def test_the_studio_sends_the_photo_once_and_shows_previews_while_the_edit_runs(studio, fake_service, big_photo_png):
    at = click(generate_edit(studio, big_photo_png), 100, 100)  # and one more click after the edit
    assert_no_exception(at)
    photo_calls = [body for _, path, body in fake_service.requests if path in ("/segment", "/mood", "/edit_submit")]
    assert len(photo_calls) >= 4  # a click, the mood, the edit, the later click
    assert "image" in photo_calls[0] and all("image" not in body for body in photo_calls[1:])
    assert {body.get("image_id") for body in photo_calls[1:]} == {at.session_state.source.photo.image_id}
    preview = at.session_state.last_preview  # the last picture shown while the job ran
    assert preview is not None and Image.open(io.BytesIO(preview)).size == (32, 24)


def test_generate_follows_the_job_and_saves_a_history_entry(studio, fake_service, big_photo_png):
    at = studio
    at.toggle(key="random_seed").set_value(False)
    at = at.run()  # the seed box is enabled once "random" is off
    at.number_input(key="seed").set_value(42)
    at.slider(key="steps").set_value(3)
    at.slider(key="variants").set_value(2)
    at.slider(key="feather").set_value(4)
    at = generate_edit(at.run(), big_photo_png)
    assert_no_exception(at)

    body = fake_service.calls("/edit_submit")[-1]
    assert body["seed"] == 42 and body["steps"] == 3 and body["variants"] == 2 and body["feather"] == 4
    assert {row["name"] for row in info_table()} <= set(body)  # every option the service lists is sent
    assert body["prompt"] == "forest, calm, warm, soft, cinematic lighting, highly detailed"
    mask = np.asarray(Image.open(io.BytesIO(base64.b64decode(body["mask"]))))
    assert mask.shape == (1000, 1500) and mask[498, 750] == 255  # the mask the user saw, at full size
    assert len(fake_service.calls("/edit_status")) == 3  # followed step by step

    entries = HistoryStore(get_settings().history_dir).list()
    assert len(entries) == 1
    entry = entries[0]
    record = entry.record
    assert record.prompt == body["prompt"] and record.seeds == [42, 43]
    # Every option of the service's table is recorded (the negative prompt on its own: `record.negative_prompt`).
    assert record.params == {"seed": 42, "mode": "quality", "steps": 3, "guidance": 7.0, "variants": 2, "edge": "matte",
                             "feather": 4, "strength": 1.0, "shrink_steps": 0, "preview": True}  # fmt: skip
    assert record.timings["total_s"] == 0.02 and record.timings["wall_s"] > 0
    assert record.image_id == at.session_state.segmentation.image_id
    assert record.user_keyword == "forest" and record.keywords == ["calm", "warm", "soft"]
    assert record.points == [{"x": 750, "y": 498, "label": 1}] and record.source_name == "big.png"
    assert (entry.width, entry.height) == (1500, 1000) and len(entry.result_paths) == 2

    assert "Saved to history" in texts(at.success)
    # The default edge is the matte, which the feather does not soften: the caption names the edge, not the feather.
    assert "Seed 42 · 3 steps · guidance 7.0 · edge matte" in texts(at.caption)
    assert not any("feather" in caption for caption in texts(at.caption))
    downloads = at.get("download_button")
    assert [d.proto.label for d in downloads] == ["Download variant 1", "Download variant 2"]


def test_a_failed_generation_says_why_and_saves_nothing(studio, fake_service, big_photo_png):
    fake_service.fail_job = "CUDA out of memory"
    at = generate_edit(studio, big_photo_png)
    assert_no_exception(at)
    assert any("Generation failed." in e and "CUDA out of memory" in e for e in texts(at.error))
    assert HistoryStore(get_settings().history_dir).list() == []
    assert at.session_state.job is None


def test_service_down_shows_the_url_tried_and_keeps_the_users_clicks(fake_service, monkeypatch, big_photo_png):
    down_url = fake_service.url
    fake_service.stop()
    at = start_studio(down_url, monkeypatch)
    assert_no_exception(at)
    assert any(f"`{down_url}/info`" in e for e in texts(at.sidebar.error))

    at = click(upload(at, "big.png", big_photo_png), 280, 186)
    assert_no_exception(at)
    errors = texts(at.error)
    assert any("Reading the mood failed." in e and f"`{down_url}/mood`" in e for e in errors)
    assert any("Finding the subject failed." in e and f"`{down_url}/segment`" in e for e in errors)
    assert any("connection refused" in e for e in errors)
    assert [p.to_json() for p in at.session_state.points] == [{"x": 750, "y": 498, "label": 1}]

    with FakeService() as live:  # the user fixes the URL in the sidebar and tries again
        at.text_input(key="service_url").input(live.url)
        at = at.run()
        at.button(key="retry_segment").click()
        at = at.run()
        assert_no_exception(at)
        assert live.calls("/segment")[-1]["points"] == [{"x": 750, "y": 498, "label": 1}]
        assert not any("Finding the subject failed." in e for e in texts(at.error))


def test_a_file_that_is_not_an_image_gets_a_clear_message(studio):
    at = upload(studio, "notes.png", b"these are my notes, not a photo")
    assert_no_exception(at)
    assert any("notes.png is not a readable image" in e for e in texts(at.error))
    assert "Upload a photo to start." in texts(at.info)


def test_the_demo_banner_follows_the_services_demo_models_flag(fake_service, monkeypatch):
    at = start_studio(fake_service.url, monkeypatch)
    assert any("Demo models." in w and fake_service.notice in w for w in texts(at.warning))
    fake_service.demo_models = False
    at = start_studio(fake_service.url, monkeypatch)
    assert not any("Demo models" in w for w in texts(at.warning))


def _saved_entry(prompt: str = "misty forest, soft light") -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (30, 20), (0, 128, 0)).save(buffer, format="PNG")
    record = EditRecord(
        prompt=prompt, seeds=[1234], params={"seed": 1234, "steps": 12, "guidance": 5.5, "variants": 1,
        "feather": 16, "strength": 0.8}, timings={"total_s": 3.5}, image_id="img1", source_name="cat.png",
        user_keyword="forest", keywords=["calm"], negative_prompt="text",
    )  # fmt: skip
    return HistoryStore(get_settings().history_dir).add(Image.new("RGB", (30, 20)), [buffer.getvalue()], record).id


def test_the_gallery_survives_a_restart_and_reuses_an_entrys_settings(fake_service, monkeypatch):
    entry_id = _saved_entry()  # saved by an earlier session
    at = start_studio(fake_service.url, monkeypatch)
    at.switch_page("views/history.py")
    at = at.run()
    assert_no_exception(at)
    assert "History" in texts(at.title)
    assert any("1 saved edit" in caption for caption in texts(at.caption))
    assert any("misty forest, soft light" in caption for caption in texts(at.caption))

    at.button(key=f"reuse-{entry_id}").click()
    at = at.run()
    assert_no_exception(at)
    assert "Moodshift studio" in texts(at.title)  # back in the studio
    state = at.session_state
    assert state.prompt_text == "misty forest, soft light" and state.user_word == "forest"
    assert (state.random_seed, state.seed, state.steps, state.guidance) == (False, 1234, 12, 5.5)
    assert (state.feather, state.strength, state.negative_prompt) == (16, 0.8, "text")
    assert at.slider(key="steps").value == 12


def test_delete_asks_for_confirmation(fake_service, monkeypatch):
    keep, drop = _saved_entry("keep me"), _saved_entry("drop me")
    at = start_studio(fake_service.url, monkeypatch)
    at.switch_page("views/history.py")
    at = at.run()
    at.button(key=f"delete-{drop}").click()
    at = at.run()
    assert "Delete this edit for good?" in texts(at.warning)
    assert len(HistoryStore(get_settings().history_dir).list()) == 2  # nothing deleted yet
    at.button(key=f"yes-{drop}").click()
    at = at.run()
    assert_no_exception(at)
    assert [entry.id for entry in HistoryStore(get_settings().history_dir).list()] == [keep]
    assert any("1 saved edit" in caption for caption in texts(at.caption))


def _lose_the_status_of_a_new_job(at: AppTest, fake_service: FakeService, big_photo_png: bytes) -> AppTest:
    """Generate while /edit_status fails: the studio keeps the job (and its Cancel button) without progress."""
    at = click(upload(at, "big.png", big_photo_png), 280, 186)
    at.text_input(key="user_word").input("forest")
    at = at.run()
    fake_service.fail["edit_status"] = (503, "service busy")
    at.button(key="generate").click()
    at = at.run()
    assert at.session_state.job is not None
    return at


def test_a_lost_status_keeps_the_job_and_cancel_stops_it(studio, fake_service, big_photo_png):
    at = _lose_the_status_of_a_new_job(studio, fake_service, big_photo_png)
    assert_no_exception(at)
    assert any("Generating failed." in e and "service busy" in e and "/edit_status" in e for e in texts(at.error))
    job_id = at.session_state.job["job_id"]  # still followed: the job may be running

    at.button(key="cancel").click()
    at = at.run()
    assert fake_service.calls("/edit_cancel")[-1] == {"job_id": job_id}
    assert at.session_state.job is None and "Generation cancelled." in texts(at.info)
    assert HistoryStore(get_settings().history_dir).list() == []


def test_a_cancel_after_the_job_finished_keeps_and_saves_its_result(studio, fake_service, big_photo_png):
    at = _lose_the_status_of_a_new_job(studio, fake_service, big_photo_png)
    del fake_service.fail["edit_status"]
    fake_service.steps_per_poll = 100
    job_id = at.session_state.job["job_id"]
    assert ServiceClient(fake_service.url).edit_status(job_id).state == "done"  # finished before the click
    at.button(key="cancel").click()
    at = at.run()
    assert_no_exception(at)
    assert fake_service.calls("/edit_cancel")[-1] == {"job_id": job_id}  # answered "done"
    assert at.session_state.job is None and "Generation cancelled." not in texts(at.info)
    [entry] = HistoryStore(get_settings().history_dir).list()
    assert entry.record.user_keyword == "forest" and "Saved to history" in texts(at.success)


def test_a_failed_cancel_shows_why_and_the_job_is_followed_to_its_end(studio, fake_service, big_photo_png):
    at = _lose_the_status_of_a_new_job(studio, fake_service, big_photo_png)
    fake_service.fail = {"edit_cancel": (503, "cancel queue full")}  # the status answers again, the cancel fails
    at.button(key="cancel").click()
    at = at.run()
    assert_no_exception(at)
    assert any("Cancelling failed." in e and "cancel queue full" in e and "/edit_cancel" in e for e in texts(at.error))
    assert len(HistoryStore(get_settings().history_dir).list()) == 1  # the job went on; its result was saved
    assert at.session_state.job is None and "Saved to history" in texts(at.success)


def test_a_cancel_of_a_job_the_service_no_longer_knows_lets_it_go(studio, fake_service, big_photo_png):
    at = _lose_the_status_of_a_new_job(studio, fake_service, big_photo_png)
    fake_service.fail["edit_cancel"] = (404, "no edit job with that id (unknown or expired)")
    at.button(key="cancel").click()
    at = at.run()
    assert_no_exception(at)
    assert any("Cancelling failed." in e and "unknown or expired" in e for e in texts(at.error))
    assert at.session_state.job is None  # nothing left to follow, so no Cancel or "Check again" either
    assert not {"cancel", "check_job"} & {button.key for button in at.button}


def test_opening_the_history_removes_the_leftovers_of_a_crash(fake_service, monkeypatch):
    history = get_settings().history_dir
    history.mkdir(parents=True, exist_ok=True)
    leftovers = [history / ".tmp-20240101-000000-abcdef", history / ".trash-20240101-000000-abcdef-123456"]
    for folder in leftovers:
        folder.mkdir()
        (folder / "source.png").write_bytes(b"half written")
        two_hours_ago = time.time() - 7200
        os.utime(folder, (two_hours_ago, two_hours_ago))
    fresh = history / ".tmp-a-save-in-progress"
    fresh.mkdir()
    at = start_studio(fake_service.url, monkeypatch)
    at.switch_page("views/history.py")
    at = at.run()
    assert_no_exception(at)
    assert not any(folder.exists() for folder in leftovers) and fresh.is_dir()


@pytest.mark.parametrize(
    ("state", "stage", "step", "text"),
    [
        ("queued", "queued", 0, "Queued · 3 s"),
        ("running", "segment", 0, "Preparing (segment) · 3 s"),
        ("running", "diffusion", 4, "Step 4 of 30 · 3 s"),
        ("running", None, 0, "Step 0 of 30 · 3 s"),
    ],
)
def test_progress_text(state, stage, step, text):
    status = JobStatus(job_id="j", state=state, step=step, total=30, stage=stage)
    assert generate.progress_text(status, 3.2) == text


@pytest.mark.parametrize(
    ("params", "caption"),
    [
        ({"steps": 30, "guidance": 7.0, "edge": "matte", "feather": 8},
         "Seed 5 · 30 steps · guidance 7.0 · edge matte"),
        ({"steps": 30, "guidance": 7.0, "edge": "hard", "feather": 8},
         "Seed 5 · 30 steps · guidance 7.0 · edge hard · feather 8 px"),
        ({"mode": "fast", "steps": 4, "guidance": 1.0, "feather": 8},  # a service without a choice of edge
         "Fast mode · Seed 5 · 4 steps · guidance 1.0 · feather 8 px"),
    ],
)  # fmt: skip
def test_the_result_caption_names_the_edge_and_the_feather_only_where_it_is_used(params, caption):
    assert generate.settings_caption(params, 5) == caption


def test_the_studio_never_imports_torch_or_the_models(tmp_path):
    """The UI talks HTTP only: running every page must not pull in torch or serving.models."""
    import subprocess
    import sys

    script = f"""
import sys
from streamlit.testing.v1 import AppTest
at = AppTest.from_file({str(APP)!r}, default_timeout=30).run()
assert not at.exception, at.exception
at.switch_page("views/history.py")
assert not at.run().exception
heavy = sorted(m for m in sys.modules if m == "torch" or m.startswith(("torch.", "serving.models", "diffusers")))
print("HEAVY", heavy)
"""
    env = {"PYTHONPATH": str(APP.parents[1]), "MOODSHIFT_SERVICE_URL": "http://127.0.0.1:9", "PATH": "/usr/bin:/bin",
           "MOODSHIFT_HISTORY_DIR": str(tmp_path)}  # fmt: skip
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "HEAVY []" in result.stdout
