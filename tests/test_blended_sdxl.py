"""The blended SDXL runner on tiny SDXL (CPU): diffusers oracle, pixel-exact subject, sizes, batching, cancel."""

import threading

import numpy as np
import pytest
import torch
from PIL import Image

from serving.core.blending import dilate
from serving.core.edit_options import check_edit_options
from serving.core.errors import CancelledError
from serving.core.masks import check_subject_mask
from serving.core.sizing import resize_image
from serving.models.blended_sdxl import BlendedSDXLRunner, DiffusionRequest
from serving.models.sdxl_builders import build_tiny_sdxl
from serving.settings import get_settings
from tests.inpaint_oracle import inpaint_pipeline_edit

PROMPT = "a misty pine forest at dawn, soft light"


def diffusion_request(image, subject_mask, prompt, *, composite=True, progress=None, cancel=None, **options):
    """A runner request as the entrance makes one: options checked and filled in by the options table."""
    options = check_edit_options(options)
    return DiffusionRequest(image, subject_mask, prompt, options, composite=composite, progress=progress, cancel=cancel)


@pytest.fixture(scope="module")
def tiny_pipe():
    return build_tiny_sdxl(seed=0)


@pytest.fixture(scope="module")
def runner(tiny_pipe):
    return BlendedSDXLRunner(tiny_pipe, "cpu", torch.float32, working_pixels=128 * 128)  # fast on a shared CPU


def _ellipse(height: int, width: int, cx: float = 0.5, cy: float = 0.55) -> np.ndarray:
    """A subject whose edge does not follow latent cells."""
    ys, xs = np.mgrid[0:height, 0:width]
    return ((xs - cx * width) / (0.28 * width)) ** 2 + ((ys - cy * height) / (0.38 * height)) ** 2 < 1


def _max_pixel_gap(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max())


# --- the oracle: diffusers' SDXL inpaint pipeline with a 4-channel UNet ---------------------------------------


@pytest.mark.parametrize("strength", [1.0, 0.6])
def test_matches_diffusers_inpaint_pipeline(tiny_pipe, astronaut, strength):
    width, height = 320, 256  # non-square; the runner's working size is the image's own size
    image = resize_image(astronaut, (width, height))
    # Subject aligned to 8-px cells: the pipeline's nearest mask resize and our "fully subject" cells agree.
    subject = np.zeros((height, width), dtype=bool)
    subject[64:232, 104:208] = True
    runner = BlendedSDXLRunner(tiny_pipe, "cpu", torch.float32, working_pixels=width * height)
    result = runner.run(
        diffusion_request(
            image,
            subject,
            PROMPT,
            negative_prompt="blurry",
            seed=11,
            steps=4,
            guidance=5.0,
            strength=strength,
            shrink_steps=0,
            composite=False,
        )
    )
    assert result.working_size == (width, height)

    latents, pixels = inpaint_pipeline_edit(
        tiny_pipe.components,
        image,
        subject,
        PROMPT,
        seed=11,
        strength=strength,
        num_inference_steps=4,
        guidance_scale=5.0,
        negative_prompt="blurry",
    )
    assert (result.latents - latents).abs().max().item() <= 1e-3
    assert _max_pixel_gap(result.images[0], pixels) <= 1


# --- pixels and sizes --------------------------------------------------------------------------------------------


def test_subject_is_bit_identical_and_background_changes(runner, coffee):
    subject = _ellipse(*coffee.shape[:2])
    result = runner.run(diffusion_request(coffee, subject, PROMPT, seed=3, steps=3, feather=6))
    [output] = result.images
    assert output.shape == coffee.shape and output.dtype == np.uint8
    assert np.array_equal(output[subject], coffee[subject])  # the whole subject, not only its eroded core
    far_background = ~dilate(subject, 8)  # beyond the feather
    changed = np.abs(output.astype(int) - coffee).sum(axis=2) > 10
    assert changed[far_background].mean() > 0.9


def test_progressive_shrinking_changes_the_edge_not_the_subject(runner, astronaut):
    subject = _ellipse(512, 512)

    def run(shrink_steps):
        request = diffusion_request(astronaut, subject, PROMPT, seed=8, steps=4, shrink_steps=shrink_steps)
        return runner.run(request).images[0]

    plain, shrunk = run(0), run(3)
    assert np.array_equal(shrunk[subject], astronaut[subject])
    assert _max_pixel_gap(plain, shrunk) > 5


@pytest.mark.parametrize(("width", "height"), [(512, 512), (640, 427), (427, 640), (300, 200), (1500, 1000)])
def test_output_has_the_input_size(runner, width, height):
    image = np.random.default_rng(width).integers(0, 256, (height, width, 3), dtype=np.uint8)
    subject = _ellipse(height, width)
    result = runner.run(diffusion_request(image, subject, PROMPT, seed=0, steps=1, feather=4))
    [output] = result.images
    assert output.shape == (height, width, 3)
    assert np.array_equal(output[subject], image[subject])
    assert result.working_size == runner.working_size_for(width, height)


def test_pil_input_and_integer_mask_work(runner, astronaut):
    mask = _ellipse(512, 512).astype(np.uint8) * 255
    subject = check_subject_mask(mask, astronaut.shape)  # the entrance's reading of an 8-bit mask
    result = runner.run(diffusion_request(Image.fromarray(astronaut), subject, PROMPT, seed=1, steps=1))
    assert np.array_equal(result.images[0][mask > 0], astronaut[mask > 0])


# --- seeds, variants, batching ----------------------------------------------------------------------------------


def test_same_seed_same_output_different_seed_different_output(runner, astronaut):
    subject = _ellipse(512, 512)

    def run(seed):
        return runner.run(diffusion_request(astronaut, subject, PROMPT, seed=seed, steps=2)).images[0]

    first = run(5)
    assert np.array_equal(first, run(5))
    assert _max_pixel_gap(first, run(6)) > 10


def test_variants_use_consecutive_seeds_and_equal_single_runs(runner, astronaut):
    subject = _ellipse(512, 512)
    result = runner.run(diffusion_request(astronaut, subject, PROMPT, seed=20, variants=2, steps=2))
    assert result.seeds == [20, 21] and len(result.images) == 2
    alone = runner.run(diffusion_request(astronaut, subject, PROMPT, seed=21, steps=2))
    assert _max_pixel_gap(result.images[1], alone.images[0]) <= 1
    assert _max_pixel_gap(result.images[0], result.images[1]) > 10


def test_random_seeds_are_reported_and_reproduce(runner, astronaut):
    subject = _ellipse(512, 512)
    result = runner.run(diffusion_request(astronaut, subject, PROMPT, variants=2, steps=1))
    assert result.seeds[1] == result.seeds[0] + 1
    again = runner.run(diffusion_request(astronaut, subject, PROMPT, seed=result.seeds[0], variants=2, steps=1))
    assert all(np.array_equal(a, b) for a, b in zip(result.images, again.images, strict=True))


def test_batch_of_three_equals_single_runs(runner, astronaut, coffee):
    # Three different requests of one working size (512², 250² and 256² are all square).
    square_coffee = resize_image(coffee, (250, 250))
    requests = [
        diffusion_request(astronaut, _ellipse(512, 512), "a galaxy", seed=1, steps=3, guidance=6.0),
        diffusion_request(
            square_coffee, _ellipse(250, 250, 0.4, 0.5), PROMPT, seed=7, variants=2, steps=3, guidance=6.0
        ),
        diffusion_request(
            astronaut[::2, ::2].copy(),
            _ellipse(256, 256, 0.6),
            "a beach",
            seed=4,
            steps=3,
            guidance=6.0,
            shrink_steps=2,
        ),
    ]
    singles = [runner.run(request) for request in requests]
    batch = runner.run_batch(requests)
    assert [result.timings["batch_images"] for result in batch] == [4.0] * 3  # one UNet batch of 4 images
    for single, batched in zip(singles, batch, strict=True):
        assert batched.seeds == single.seeds
        assert (batched.latents - single.latents).abs().max().item() <= 1e-3
        for a, b in zip(single.images, batched.images, strict=True):
            assert _max_pixel_gap(a, b) <= 1


def test_batch_keeps_order_across_working_sizes_and_reports_cancelled_requests(runner, astronaut):
    tall = astronaut[:, :200].copy()  # 200×512: another working size than the square astronaut
    cancel = threading.Event()
    cancel.set()
    requests = [
        diffusion_request(tall, _ellipse(512, 200), PROMPT, seed=2, steps=1),
        diffusion_request(astronaut, _ellipse(512, 512), PROMPT, seed=2, steps=2, cancel=cancel),
        diffusion_request(astronaut, _ellipse(512, 512), PROMPT, seed=2, steps=1),
    ]
    results = runner.run_batch(requests, return_exceptions=True)
    assert results[0].images[0].shape == tall.shape and results[0].working_size == (64, 192)
    assert isinstance(results[1], CancelledError)
    assert results[2].images[0].shape == astronaut.shape and results[2].working_size == (128, 128)
    with pytest.raises(CancelledError):
        runner.run_batch(requests)


# --- progress and cancel ----------------------------------------------------------------------------------------


def test_progress_reports_every_step(runner, astronaut):
    calls = []
    request = diffusion_request(
        astronaut, _ellipse(512, 512), PROMPT, seed=0, steps=4, strength=0.5, progress=lambda *a: calls.append(a)
    )
    runner.run(request)
    assert calls == [(1, 2), (2, 2)]
    assert request.options.denoising_steps == 2  # what a job announces as its total before it runs


def test_cancel_stops_the_run(runner, astronaut):
    cancel, calls = threading.Event(), []

    def progress(step, total):
        calls.append(step)
        cancel.set()

    request = diffusion_request(
        astronaut, _ellipse(512, 512), PROMPT, seed=0, steps=5, progress=progress, cancel=cancel
    )
    with pytest.raises(CancelledError):
        runner.run(request)
    assert calls == [1]  # no step ran after the cancel


def test_cancelling_one_request_of_a_batch_leaves_the_others_intact(runner, astronaut):
    cancel = threading.Event()
    cancel.set()
    keep = diffusion_request(astronaut, _ellipse(512, 512), PROMPT, seed=3, steps=2)
    drop = diffusion_request(astronaut, _ellipse(512, 512, 0.3), PROMPT, seed=4, steps=2, cancel=cancel)
    kept, dropped = runner.run_batch([keep, drop], return_exceptions=True)
    assert isinstance(dropped, CancelledError)
    assert _max_pixel_gap(kept.images[0], runner.run(keep).images[0]) <= 1


# --- precision --------------------------------------------------------------------------------------------------


def test_float16_keeps_an_upcast_vae():
    pipe = build_tiny_sdxl(seed=1)
    half = BlendedSDXLRunner(pipe, "cpu", torch.float16, working_pixels=64 * 64)
    assert pipe.unet.dtype == torch.float16 and pipe.text_encoder_2.dtype == torch.float16
    assert half.vae_dtype == torch.float32 and pipe.vae.dtype == torch.float32  # SDXL's VAE overflows in fp16


def test_from_settings_builds_the_tiny_profile_with_the_settings_defaults(monkeypatch):
    monkeypatch.setenv("MOODSHIFT_PROFILE", "tiny")
    monkeypatch.setenv("MOODSHIFT_DEVICE", "cpu")
    monkeypatch.setenv("MOODSHIFT_DEFAULT_STEPS", "12")
    monkeypatch.setenv("MOODSHIFT_DEFAULT_FEATHER", "3")
    built = BlendedSDXLRunner.from_settings()
    assert built.profile.profile == "tiny" and "tiny" in built.model_name
    assert built.working_size_for(800, 800) == (512, 512)  # the tiny UNet's native size
    defaults = get_settings().edit_defaults()  # what the entrance fills in for this runner's requests
    assert (defaults["steps"], defaults["feather"]) == (12, 3)
    assert built.dtype == torch.float32 and built.device.type == "cpu"
