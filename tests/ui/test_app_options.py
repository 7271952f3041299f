"""The sidebar's generation controls are built from the service's edit options table and upload limits (/info):
its defaults, its bounds, options the studio does not know, a changed table, and a service that does not answer."""

from __future__ import annotations

import pytest

from serving.core.edit_options import info_table
from tests.ui.fake_service import FakeService
from tests.ui.studio_driver import assert_no_exception, generate_edit, slider_state, start_studio, texts, upload
from ui import service_info


@pytest.fixture()
def refetch_info(monkeypatch) -> None:
    """Ask /info at every run instead of every 30 s, so a change of the service shows at the next run."""
    monkeypatch.setattr(service_info, "INFO_REFRESH_S", 0.0)


def test_the_controls_start_at_the_services_defaults_within_its_bounds(monkeypatch):
    """Regression: with MOODSHIFT_DEFAULT_STEPS=120 every page crashed (StreamlitValueAboveMaxError: max 100)."""
    with FakeService(option_defaults={"steps": 120, "guidance": 25.0, "feather": 200}) as service:
        at = start_studio(service.url, monkeypatch)
    assert_no_exception(at)
    assert slider_state(at, "steps") == (120, 1, 150)
    assert slider_state(at, "guidance") == (25.0, 0.0, 30.0)
    assert slider_state(at, "feather") == (200, 0, 256)
    assert slider_state(at, "variants") == (1, 1, 8)
    assert at.slider(key="feather").label == "Feather (px)"  # the studio's own words for the options it knows
    edge = at.radio(key="edge")  # a choice: beside the feather it changes, not in "Advanced"
    assert (edge.label, edge.value, edge.options) == ("Edge", "matte", ["matte", "hard"])
    seed = at.number_input(key="seed")
    assert at.toggle(key="random_seed").value is True and seed.disabled and seed.value == 0
    advanced = at.sidebar.expander[0]
    assert advanced.label == "Advanced"
    assert [slider.key for slider in advanced.slider] == ["strength", "shrink_steps"]
    assert slider_state(at, "strength") == (1.0, 0.05, 1.0)  # strength > 0: zero is not offered
    assert [area.key for area in advanced.text_area] == ["negative_prompt"]
    assert at.text_area(key="negative_prompt").max_chars == 2000


def test_an_option_the_studio_does_not_know_gets_a_generic_control_and_is_sent(monkeypatch, big_photo_png):
    rows = [
        *info_table(),
        {"name": "tile_size", "type": "integer", "default": 64, "minimum": 16, "maximum": 512,
         "exclusive_minimum": False, "help": "Tile edge in pixels."},
        {"name": "style", "type": "string", "default": "film", "minimum": None, "maximum": 40,
         "exclusive_minimum": False, "help": "A look."},
        {"name": "sampler", "type": "enum", "default": "euler", "minimum": None, "maximum": None,
         "exclusive_minimum": False, "help": "A type the studio cannot draw yet."},
        {"name": "prompt_text", "type": "string", "default": "hijacked", "minimum": None, "maximum": 10,
         "exclusive_minimum": False, "help": "Named like the studio's own prompt box."},
    ]  # fmt: skip
    with FakeService(options=rows) as service:
        at = start_studio(service.url, monkeypatch)
        assert_no_exception(at)
        tile = at.slider(key="tile_size")
        assert (tile.label, tile.help, tile.value, tile.min, tile.max) == (
            "Tile size",
            "Tile edge in pixels.",
            64,
            16,
            512,
        )
        assert at.text_area(key="style").value == "film"
        kinds = ("slider", "number_input", "text_area", "text_input", "selectbox", "toggle")
        labels = [widget.label for kind in kinds for widget in at.sidebar.get(kind)]
        assert "Sampler" not in labels and "sampler" not in at.session_state  # a type it cannot draw is skipped
        assert "Prompt text" not in labels and at.session_state.prompt_text == ""  # the studio's own state is kept
        advanced = at.sidebar.expander[0]
        assert "tile_size" in [slider.key for slider in advanced.slider]

        tile.set_value(128)
        at = generate_edit(at.run(), big_photo_png)
        assert_no_exception(at)
        body = service.calls("/edit_submit")[-1]
    assert body["tile_size"] == 128 and body["style"] == "film" and "sampler" not in body
    assert body["prompt"] != "hijacked"
    assert {row["name"] for row in info_table()} <= set(body)


def test_a_value_outside_the_services_new_bounds_is_clamped(fake_service, monkeypatch, refetch_info):
    at = start_studio(fake_service.url, monkeypatch)
    at.slider(key="steps").set_value(140)
    at.slider(key="guidance").set_value(28.0)
    at = at.run()
    assert at.session_state.steps == 140
    narrower = {"steps": {"maximum": 100}, "guidance": {"maximum": 20}}
    fake_service.options = [{**row, **narrower.get(row["name"], {})} for row in info_table()]
    at = at.run()  # the service was restarted with smaller maxima
    assert_no_exception(at)
    assert slider_state(at, "steps") == (100, 1, 100)
    assert slider_state(at, "guidance") == (20.0, 0.0, 20.0)


def test_controls_appear_when_the_service_first_answers_and_keep_their_values_through_an_outage(
    monkeypatch, refetch_info
):
    with FakeService(option_defaults={"steps": 120}) as service:
        service.fail["info"] = (503, "starting up")
        at = start_studio(service.url, monkeypatch)
        assert_no_exception(at)
        assert any("Service unreachable" in error for error in texts(at.sidebar.error))
        assert not at.sidebar.slider and not at.sidebar.toggle and not at.sidebar.number_input  # no controls
        assert "steps" not in at.session_state

        del service.fail["info"]
        next(button for button in at.sidebar.button if button.label == "Check again").click()
        at = at.run()
        assert_no_exception(at)
        assert at.slider(key="steps").value == 120  # initialised from the service's default at its first answer

        at.slider(key="steps").set_value(50)
        at.toggle(key="random_seed").set_value(False)
        at = at.run()
        service.fail["info"] = (503, "restarting")
        at = at.run()
        assert not at.sidebar.slider and not at.sidebar.toggle
        at.switch_page("views/history.py")  # Streamlit forgets undrawn widgets' values on a page switch
        at = at.run()
        at.switch_page("views/studio.py")
        del service.fail["info"]
        at = at.run()
        assert_no_exception(at)
    assert at.slider(key="steps").value == 50  # the user's settings survived the outage
    assert at.toggle(key="random_seed").value is False


def test_upload_limits_come_from_the_service(monkeypatch, big_photo_png):
    with FakeService(limits={"max_upload_mb": 2.0, "max_image_pixels": 1_000_000, "max_points": 64}) as service:
        at = start_studio(service.url, monkeypatch)
        # The size limit is the service's, on the request: the file it leaves room for is a quarter smaller.
        assert at.file_uploader(key="upload").help.startswith(
            "PNG, JPEG or WebP, up to 1 MP and a file of about 1.5 MB: the service takes requests of up to 2 MB, and "
            "the photo goes in one base64-encoded"
        )
        at = upload(at, "big.png", big_photo_png)  # 1500×1000
    assert_no_exception(at)
    assert any("1500×1000 = 1.5 MP; the limit is 1 MP" in error for error in texts(at.error))


def test_a_service_without_an_options_table_gets_no_controls_and_no_options_sent(monkeypatch, big_photo_png):
    with FakeService(options=[]) as service:
        at = start_studio(service.url, monkeypatch)
        assert_no_exception(at)
        assert any("Connected" in caption for caption in texts(at.sidebar.caption))
        assert (
            not at.sidebar.slider
            and not at.sidebar.toggle
            and not any("Generation" in text for text in texts(at.sidebar.markdown))
        )
        at = generate_edit(at, big_photo_png)
        assert_no_exception(at)
        body = service.calls("/edit_submit")[-1]
    assert not set(body) & {row["name"] for row in info_table()}  # the service's own defaults apply
    assert "Saved to history" in texts(at.success)


def test_the_fast_switch_sets_the_few_step_models_steps_and_guidance_says_so_and_gives_them_back(
    monkeypatch, big_photo_png
):
    with FakeService(option_defaults={"steps": 30}) as service:
        at = start_studio(service.url, monkeypatch)
        fast = at.toggle(key="fast_toggle")
        assert (fast.label, fast.value, fast.disabled) == ("Fast", False, False)
        assert "SDXL-Lightning" in fast.help and "4 steps" in fast.help
        at.slider(key="steps").set_value(40)
        at = at.run()
        at.toggle(key="fast_toggle").set_value(True)
        at = at.run()
        assert_no_exception(at)
        assert (at.slider(key="steps").value, at.slider(key="guidance").value) == (4, 0.0)
        assert "Fast: steps 40 → 4, guidance 7.0 → 0.0 (SDXL-Lightning's settings)" in texts(at.sidebar.caption)
        at = generate_edit(at, big_photo_png)
        assert_no_exception(at)
        body = service.calls("/edit_submit")[-1]
        assert (body["mode"], body["steps"], body["guidance"]) == ("fast", 4, 0.0)
        assert any(caption.startswith("Fast mode · Seed") for caption in texts(at.caption))

        at.toggle(key="fast_toggle").set_value(False)
        at = at.run()
    assert (at.slider(key="steps").value, at.slider(key="guidance").value) == (40, 7.0)  # the user's, given back
    assert "Quality: steps 4 → 40, guidance 0.0 → 7.0 (as before fast mode)" in texts(at.sidebar.caption)
    assert at.session_state.mode == "quality"


def test_the_fast_switch_is_disabled_with_the_services_reason_without_few_step_weights(monkeypatch, big_photo_png):
    from serving.models.fast_models import unavailable

    reason = "no few-step weights at checkpoints/sdxl_lightning_4step_lora.safetensors: put SDXL-Lightning's LoRA there"
    with FakeService(fast=unavailable(reason)) as service:
        at = start_studio(service.url, monkeypatch)
        assert_no_exception(at)
        fast = at.toggle(key="fast_toggle")
        assert fast.disabled and fast.value is False
        assert f"Fast mode is not available: {reason}" in texts(at.sidebar.caption)
        at = generate_edit(at, big_photo_png)
        body = service.calls("/edit_submit")[-1]
    assert body["mode"] == "quality" and "Saved to history" in texts(at.success)
