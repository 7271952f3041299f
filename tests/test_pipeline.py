"""The pipeline in-process on tiny models: the one way through for an edit, with stages, steps and cancel reported,
the subject's edge as a matte (or hard, as before, bit for bit), the cut-out, and nothing loaded or run for a request
that is bad from the start."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from serving.core.blending import compose
from serving.core.errors import CancelledError, InputError
from serving.core.matting import compose_matte, estimate_matte
from serving.pipeline import LazyStage, Pipeline
from tests.matting import core_of


@pytest.fixture(scope="module")
def pipeline():
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MOODSHIFT_PROFILE", "tiny")
        patch.setenv("MOODSHIFT_DEVICE", "cpu")
        patch.setenv("MOODSHIFT_WORKING_PIXELS", str(128 * 128))
        patch.setenv("MOODSHIFT_OLLAMA_ENABLED", "false")
        from serving.settings import get_settings

        get_settings.cache_clear()
        yield Pipeline.in_process(get_settings())
        get_settings.cache_clear()


@pytest.fixture(scope="module")
def subject(coffee) -> np.ndarray:
    mask = np.zeros(coffee.shape[:2], dtype=bool)
    mask[90:310, 190:430] = True
    return mask


def test_an_edit_reports_its_stages_and_every_step_and_keeps_the_subject(pipeline, coffee, subject):
    prepared = pipeline.prepare_edit(coffee, subject_mask=subject, user_keyword="forest", options={"steps": 12})
    stages, steps = [], []
    outcome = pipeline.run_edit(prepared, job_id="steps", on_stage=stages.append, on_step=lambda *s: steps.append(s))
    assert stages == ["prompt", "matte", "diffusion"]  # a mask was given: no segmentation
    assert steps == sorted(steps) and all(total == 12 for _, total in steps) and steps[-1] == (12, 12)
    assert outcome.prompt_source == "template" and "forest" in outcome.prompt and outcome.tokens <= 77
    [edited] = outcome.images
    core = core_of(subject)  # edge=matte (the default): pixels deeper than the soft edge's band are exact
    assert edited.shape == coffee.shape and np.array_equal(edited[core], coffee[core])
    assert outcome.timings["matte_s"] > 0


def test_a_cancel_during_the_diffusion_stops_it(pipeline, coffee, subject):
    prepared = pipeline.prepare_edit(coffee, subject_mask=subject, prompt="a galaxy", options={"steps": 40})
    first_step = threading.Event()

    def on_step(step: int, total: int) -> None:
        first_step.set()

    with pytest.raises(CancelledError):
        pipeline.run_edit(prepared, job_id="cancel", on_step=on_step, cancelled=first_step.is_set)
    assert first_step.is_set()


def test_a_cancel_before_a_stage_stops_the_edit_there(pipeline, coffee):
    prepared = pipeline.prepare_edit(coffee, points=[(300, 200)], prompt="a beach")
    stages = []
    with pytest.raises(CancelledError):
        pipeline.run_edit(prepared, job_id="early", on_stage=stages.append, cancelled=lambda: True)
    assert stages == []


def test_clicks_are_segmented_inside_the_edit(pipeline, coffee):
    prepared = pipeline.prepare_edit(coffee, points=[(300, 200)], prompt="a beach", options={"steps": 1})
    stages = []
    outcome = pipeline.run_edit(prepared, job_id="clicks", on_stage=stages.append)
    assert stages == ["segment", "matte", "diffusion"]
    subject = pipeline.segment(coffee, [(300, 200)], None).mask  # the same clicks, the same (cached) mask
    core = core_of(subject)
    assert np.array_equal(outcome.images[0][core], coffee[core])


def _diffusion_answers(pipeline, monkeypatch) -> list:
    """Record what the diffusion stage is sent and answers: [(job, outcome)]."""
    calls = []
    run = pipeline._diffuse

    def recording(job, *callbacks):
        outcome = run(job, *callbacks)
        calls.append((job, outcome))
        return outcome

    monkeypatch.setattr(pipeline, "_diffuse", recording)
    return calls


def test_edge_hard_keeps_the_feathered_composite_bit_for_bit(pipeline, coffee, subject, monkeypatch):
    calls = _diffusion_answers(pipeline, monkeypatch)
    options = {"steps": 2, "seed": 5, "variants": 2, "edge": "hard", "feather": 6}
    outcome = pipeline.run_edit(pipeline.prepare_edit(coffee, subject_mask=subject, prompt="dunes", options=options),
                                job_id="hard")  # fmt: skip
    [(job, answer)] = calls
    assert np.array_equal(job.subject_mask.to_numpy(), subject)  # the diffusion keeps the whole mask, as before
    expected = [compose(coffee, background.to_numpy(), subject, 6) for background in answer.backgrounds]
    assert all(np.array_equal(got, want) for got, want in zip(outcome.images, expected, strict=True))
    assert "matte_s" not in outcome.timings


def test_edge_matte_regenerates_the_band_and_blends_the_soft_edge_into_it(pipeline, coffee, subject, monkeypatch):
    calls = _diffusion_answers(pipeline, monkeypatch)
    options = {"steps": 2, "seed": 5}
    outcome = pipeline.run_edit(pipeline.prepare_edit(coffee, subject_mask=subject, prompt="dunes", options=options),
                                job_id="matte")  # fmt: skip
    [(job, answer)] = calls
    matte = estimate_matte(coffee, subject)
    assert np.array_equal(job.subject_mask.to_numpy(), matte.core)  # the band is in the edit region
    [edited] = outcome.images
    assert np.array_equal(edited, compose_matte(answer.backgrounds[0].to_numpy(), matte))
    assert np.array_equal(edited[matte.core], coffee[matte.core])


def test_an_uploaded_soft_mask_is_the_mattes_prior(pipeline, coffee, subject, monkeypatch):
    calls = _diffusion_answers(pipeline, monkeypatch)
    levels = subject.astype(np.float32)
    levels[80:90, 190:430] = 0.4  # a grey strip above the subject: partly subject, beyond the band
    prepared = pipeline.prepare_edit(coffee, subject_mask=levels, prompt="dunes", options={"steps": 1})
    assert np.array_equal(prepared.subject_mask, subject) and np.array_equal(prepared.subject_prior, levels)
    pipeline.run_edit(prepared, job_id="soft")
    [(job, _)] = calls
    assert np.array_equal(job.subject_mask.to_numpy(), estimate_matte(coffee, levels).core)
    assert not job.subject_mask.to_numpy()[80:90].any()


def test_a_cutout_is_the_subject_with_its_soft_edge_from_a_mask_or_clicks(pipeline, coffee, subject):
    cutout = pipeline.cutout(coffee, subject_mask=subject)
    assert cutout.rgba.shape == (400, 600, 4) and len(cutout.image_id) == 32
    np.testing.assert_array_equal(cutout.rgba, estimate_matte(coffee, subject).cutout())
    clicked = pipeline.cutout(coffee, points=[(300, 200)])
    segmented = pipeline.segment(coffee, [(300, 200)], None).mask
    np.testing.assert_array_equal(clicked.rgba, estimate_matte(coffee, segmented).cutout())
    for fields, message in [
        ({"subject_mask": subject, "points": [(1, 1)]}, "not both"),
        ({"subject_mask": subject, "auto": True}, "not both"),
        ({"subject_mask": np.zeros((400, 600), bool)}, "empty"),
        ({"subject_mask": np.ones((400, 600), bool)}, "whole image"),
        ({"subject_mask": np.ones((40, 60), bool)}, "60×40 but the image is 600×400"),
        ({"points": [(900, 10)]}, "outside"),
    ]:
        with pytest.raises(InputError, match=message):
            pipeline.cutout(coffee, **fields)


def test_an_edit_that_names_no_subject_keeps_the_automatic_subject(pipeline, coffee, u2netp):
    prepared = pipeline.prepare_edit(coffee, prompt="a forest", options={"steps": 1})
    assert prepared.auto and prepared.clicks.is_empty
    stages = []
    outcome = pipeline.run_edit(prepared, job_id="zero-click", on_stage=stages.append)
    assert stages == ["segment", "matte", "diffusion"]
    found = pipeline.segment(coffee, None, None)  # the same automatic subject, from the cache now
    assert found.engine == "u2netp" and found.cached
    assert 0.05 < found.mask.mean() < 0.6  # the cup and saucer, not the table
    core = core_of(found.mask)  # edge=matte (the default): exact deeper than the soft edge's band
    assert np.array_equal(outcome.images[0][core], coffee[core])


def test_clicks_with_auto_edit_the_automatic_subject(pipeline, coffee, u2netp):
    automatic = pipeline.segment(coffee, None, None).mask
    refined = pipeline.segment(coffee, [(300, 200, 0)], None, auto=True)  # "not this": the cup's inside
    assert refined.engine == "u2netp+clicks"  # tiny SAM has random weights: the map's regions, not SAM
    assert automatic[200, 300] and not refined.mask[200, 300]
    assert 0 < (automatic & ~refined.mask).sum() < automatic.sum() / 2  # a region under the click, not the subject


def test_an_empty_automatic_subject_is_a_clear_input_error(pipeline, u2netp):
    flat = np.full((64, 96, 3), 128, dtype=np.uint8)  # nothing stands out: the map is flat
    prepared = pipeline.prepare_edit(flat, prompt="a forest", options={"steps": 1})
    with pytest.raises(InputError, match=r"subject mask is empty.*\(mask by u2netp\): give points, a box or a mask"):
        pipeline.run_edit(prepared, job_id="flat")


@pytest.mark.parametrize(
    ("request_fields", "message"),
    [
        ({"prompt": "x", "options": {"steps": 0}}, "steps 0 must be an integer from 1 to 150"),
        ({"prompt": "x", "points": [(1, 1)]}, "either a mask or points/box"),
        ({"prompt": "x", "auto": True}, "either a mask or points/box"),
        ({"options": {"steps": 2}}, "no prompt"),
        ({"prompt": "x", "subject_mask": None, "points": [(700, 1)]}, "outside the 600×400 image"),
        # Checked before the few-step model is asked about (which would load SDXL in-process):
        ({"prompt": "x", "subject_mask": None, "points": [(700, 1)], "options": {"mode": "fast"}}, "outside"),
        # Over CLIP's budget on its own: refused here, not after segmentation and the mood have run.
        ({"user_keyword": "a," * 50}, r"user keyword 'a,a,.*' is \d+ CLIP tokens; the whole prompt allows 77"),
    ],
)
def test_a_bad_request_is_refused_before_any_model_loads(coffee, subject, request_fields, message):
    def no_model():
        raise AssertionError("a model was built for a request that was bad from the start")

    from serving.models.ollama_stage import PromptStage
    from serving.settings import get_settings

    settings = get_settings()
    pipeline = Pipeline(LazyStage(no_model), LazyStage(no_model), PromptStage(settings), settings)
    fields = {"subject_mask": subject, **request_fields}
    with pytest.raises(InputError, match=message):
        pipeline.prepare_edit(coffee, **fields)


def test_previews_arrive_while_the_edit_runs_unless_turned_off(pipeline, coffee, subject):
    previews = []
    prepared = pipeline.prepare_edit(coffee, subject_mask=subject, prompt="a galaxy", options={"steps": 30})
    pipeline.run_edit(prepared, job_id="previews", on_step=lambda *_: None, on_preview=previews.append)
    assert previews, "at least one preview during 30 steps"
    assert all(p.dtype == np.uint8 and p.ndim == 3 and p.shape[2] == 3 and max(p.shape[:2]) <= 256 for p in previews)
    quiet = []
    prepared = pipeline.prepare_edit(
        coffee, subject_mask=subject, prompt="a galaxy", options={"steps": 30, "preview": False}
    )
    pipeline.run_edit(prepared, job_id="quiet", on_step=lambda *_: None, on_preview=quiet.append)
    assert quiet == []


def test_with_sam_weights_only_a_click_makes_the_pipeline_encode_the_image_for_sam(coffee, u2netp):
    from serving.backends import SegmentationBackend
    from serving.models.ollama_stage import PromptStage
    from serving.settings import get_settings
    from tests.stand_ins import finder_with_real_sam

    settings = get_settings()
    finder, sam = finder_with_real_sam()
    pipeline = Pipeline(SegmentationBackend(finder), None, PromptStage(settings), settings)
    automatic = pipeline.segment(coffee, None, None)
    assert (automatic.engine, automatic.cached, sam.encoder_passes) == ("u2netp", False, 0)  # no click: no SAM
    refined = pipeline.segment(coffee, [(300, 200)], None, auto=True)
    assert (refined.engine, refined.cached, sam.encoder_passes) == ("sam-vit_b", False, 1)
    again = pipeline.segment(coffee, [(300, 200), (20, 20, 0)], None, auto=True)  # by image id: nothing encoded
    assert (again.engine, again.cached, sam.encoder_passes) == ("sam-vit_b", True, 1)
