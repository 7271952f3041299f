"""The SAM segmenter on the tiny random-weight model: encode once per image, refine clicks, batch, stay thread-safe.

The tiny model's masks are arbitrary but deterministic, so the tests count encoder passes (a forward hook on the
real image encoder), check what reaches the prompt encoder, and compare masks between equivalent calls.
"""

import io
import threading

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage
from segment_anything import SamPredictor

from serving.core.clicks import ClickError
from serving.core.errors import InputError, NotCachedError
from serving.core.images import image_id_of, load_image
from serving.core.masks import clean_mask, fill_holes
from serving.models.sam import Segmenter
from serving.models.sam_builders import build_tiny_sam

CLICK = (450, 80)  # on the coffee photo; the tiny model gives a non-empty mask here


@pytest.fixture(scope="module")
def tiny_sam():
    return build_tiny_sam(seed=0)


@pytest.fixture(scope="module")
def encoder_batches(tiny_sam):
    """Batch size of every real forward pass of the image encoder, whichever segmenter ran it."""
    batches = []
    handle = tiny_sam.image_encoder.register_forward_hook(lambda module, args, out: batches.append(args[0].shape[0]))
    yield batches
    handle.remove()


@pytest.fixture(scope="module")
def segmenter(tiny_sam, encoder_batches):
    return Segmenter(tiny_sam, cache_size=8)


@pytest.fixture
def decoder_io(tiny_sam):
    """What each decode passed as `mask_input` and what the mask decoder returned (low-res logits, scores)."""
    seen = {"mask_inputs": [], "outputs": []}

    def before_prompt_encoder(module, args, kwargs):
        seen["mask_inputs"].append(kwargs.get("masks"))

    def after_decoder(module, args, output):
        seen["outputs"].append((output[0].detach().clone(), output[1].detach().clone()))

    handles = [
        tiny_sam.prompt_encoder.register_forward_pre_hook(before_prompt_encoder, with_kwargs=True),
        tiny_sam.mask_decoder.register_forward_hook(after_decoder),
    ]
    yield seen
    for handle in handles:
        handle.remove()


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


# --- encode once, decode per click ---------------------------------------------------------------


def test_later_clicks_on_the_same_image_do_not_run_the_encoder(segmenter, encoder_batches, coffee, astronaut):
    photo, other_photo = coffee[:, ::-1].copy(), astronaut[::-1].copy()  # pixels no other test uses
    passes, decodes = len(encoder_batches), segmenter.decoder_calls
    first = segmenter.segment(photo, [CLICK])
    assert len(encoder_batches) == passes + 1 and not first.cached

    second = segmenter.segment(photo, [CLICK, (150, 300, 0)])
    third = segmenter.segment(photo, [CLICK, (150, 300, 0), (300, 200, 1)])
    assert len(encoder_batches) == passes + 1  # clicks two and three ran only the prompt encoder and decoder
    assert second.cached and third.cached
    assert first.image_id == second.image_id == third.image_id
    assert segmenter.decoder_calls == decodes + 3

    other = segmenter.segment(other_photo, [(256, 200)])
    assert len(encoder_batches) == passes + 2 and not other.cached
    assert other.image_id != first.image_id


def test_two_different_images_never_share_an_entry(segmenter, encoder_batches, coffee):
    nudged = coffee.copy()
    nudged[0, 0, 0] ^= 1  # one pixel, one bit
    passes = len(encoder_batches)
    original, changed = segmenter.segment(coffee, [CLICK]), segmenter.segment(nudged, [CLICK])
    assert original.image_id != changed.image_id and not changed.cached
    assert len(encoder_batches) == passes + (0 if original.cached else 1) + 1
    assert {original.image_id, changed.image_id} <= set(segmenter.cached_image_ids())
    assert segmenter.embedding(original.image_id) is not segmenter.embedding(changed.image_id)
    assert not torch.equal(
        segmenter.embedding(original.image_id).features, segmenter.embedding(changed.image_id).features
    )


def test_least_recently_used_embedding_is_evicted(tiny_sam, encoder_batches, coffee, astronaut):
    small = Segmenter(tiny_sam, cache_size=2)
    chelsea = astronaut[::2, ::2].copy()
    a, _ = small.encode_batch([coffee, astronaut])
    assert small.segment(coffee, [CLICK]).cached  # coffee is now the most recently used
    (c,) = small.encode_batch([chelsea])
    assert small.cached_image_ids() == [a.image_id, c.image_id]  # astronaut went
    passes = len(encoder_batches)
    assert not small.segment(astronaut, [(10, 10)]).cached
    assert len(encoder_batches) == passes + 1


# --- masks -----------------------------------------------------------------------------------------


def test_mask_has_the_image_size_for_non_square_and_odd_sizes(segmenter, encoder_batches, coffee, astronaut):
    tall, wide = astronaut[:301, 7:180].copy(), coffee[3:400, 1:600].copy()  # 173×301 and 599×397
    passes = len(encoder_batches)
    segmenter.encode_batch([tall, wide])
    assert encoder_batches[passes:] == [2]  # both images in one encoder pass
    results = [segmenter.segment(tall, [(172.5, 300.9)]), segmenter.segment(wide, [(5, 5), (598, 396, 0)])]
    assert results[0].mask.shape == (301, 173) and results[0].mask.dtype == bool
    assert results[1].mask.shape == (397, 599) and results[1].mask.dtype == bool
    box_only = segmenter.segment(tall, None, box=[0, 0, 173, 301])  # the full-image box, edges included
    assert box_only.mask.shape == (301, 173) and box_only.cached


def test_one_pixel_strips_segment_to_masks_of_their_size(segmenter):
    """segment-anything alone resizes a 1×4000 strip to 0×1024 px (PIL refuses); the segmenter keeps one pixel."""
    column = np.linspace(0, 255, 4000, dtype=np.uint8)
    tall = np.dstack([column[:, None]] * 3)  # 1 wide, 4000 high
    wide = tall.transpose(1, 0, 2).copy()  # 4000 wide, 1 high
    for strip, point in ((tall, (0.5, 3000)), (wide, (3000, 0.5))):
        result = segmenter.segment(strip, [point], None)
        assert result.mask.shape == strip.shape[:2] and result.mask.dtype == bool
        assert segmenter.segment(strip, None, box=[0, 0, strip.shape[1], strip.shape[0]]).cached


def test_exif_rotated_jpeg_points_land_where_the_user_clicked(segmenter, coffee):
    # Stored sideways with Orientation 6, the file shows upright `coffee` in a viewer.
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    Image.fromarray(np.rot90(coffee).copy()).save(buffer, "JPEG", quality=100, subsampling=0, exif=exif)
    shown = load_image(buffer.getvalue(), 10**8)
    assert shown.size == (600, 400)

    from_jpeg = segmenter.segment(shown, [CLICK]).mask
    upright = segmenter.segment(coffee, [CLICK]).mask
    elsewhere = segmenter.segment(coffee, [(150, 300)]).mask
    assert upright.any() and from_jpeg.shape == upright.shape
    assert _iou(from_jpeg, upright) > 0.9  # JPEG noise aside, the same click gives the same mask
    assert _iou(upright, elsewhere) < 0.6  # and the test would notice a click landing elsewhere


def test_single_point_picks_the_best_of_three_masks(segmenter, decoder_io, coffee):
    result = segmenter.segment(coffee, [CLICK])
    logits, scores = decoder_io["outputs"][-1]
    assert logits.shape[1] == 3  # multimask_output for an ambiguous single click
    assert result.score == pytest.approx(float(scores.max()))
    segmenter.segment(coffee, [CLICK, (100, 100, 1)])
    assert decoder_io["outputs"][-1][0].shape[1] == 1


def test_mask_is_cleaned_with_the_configured_areas(tiny_sam, segmenter, coffee):
    raw = Segmenter(tiny_sam, max_hole_area=0, max_island_area=0).segment(coffee, [CLICK]).mask
    cleaned = segmenter.segment(coffee, [CLICK]).mask
    assert not np.array_equal(raw, cleaned)  # random weights give speckle; cleaning removed some
    assert np.array_equal(cleaned, clean_mask(raw, segmenter.max_hole_area, segmenter.max_island_area))
    labels, count = ndimage.label(cleaned, structure=np.ones((3, 3)))
    areas = np.bincount(labels.ravel())[1:]
    assert count >= 1 and (np.sort(areas)[:-1] > segmenter.max_island_area).all()
    assert np.array_equal(fill_holes(cleaned, segmenter.max_hole_area), cleaned)


# --- refining with the previous call's logits -------------------------------------------------------


def test_a_negative_point_inside_the_previous_mask_changes_the_mask(segmenter, coffee):
    before = segmenter.segment(coffee, [CLICK])
    ys, xs = np.nonzero(before.mask)
    inside = (int(xs[len(xs) // 2]), int(ys[len(ys) // 2]))
    assert before.mask[inside[1], inside[0]]
    after = segmenter.segment(coffee, [CLICK, (*inside, 0)])
    assert after.used_mask_input
    assert (before.mask != after.mask).sum() > 1000
    assert not after.mask[inside[1], inside[0]]  # the clicked pixel is no longer subject


def test_one_more_point_reuses_the_previous_calls_logits(segmenter, decoder_io, coffee):
    segmenter.segment(coffee, [CLICK, (100, 100, 0)])
    previous_logits, previous_scores = decoder_io["outputs"][-1]
    chosen = previous_logits[:, int(previous_scores.argmax()) :][:, :1]

    result = segmenter.segment(coffee, [CLICK, (100, 100, 0), (500, 300, 1)])
    assert result.used_mask_input
    assert torch.equal(decoder_io["mask_inputs"][-1], chosen)  # exactly the previous call's best logits


def test_a_call_whose_earlier_points_differ_gets_no_mask_input(segmenter, decoder_io, coffee):
    segmenter.segment(coffee, [CLICK, (120, 110, 0)])  # the earlier call; no test makes the variants below
    for clicks, box in [
        ([(451, 80), (120, 110, 0), (510, 310, 1)], None),  # first point moved by one pixel
        ([CLICK, (120, 110, 1), (510, 310, 1)], None),  # a label flipped
        ([(120, 110, 0), CLICK, (510, 310, 1)], None),  # same points, other order
        ([CLICK, (120, 110, 0), (510, 310, 1)], [0, 0, 600, 400]),  # a box the earlier call did not have
    ]:
        result = segmenter.segment(coffee, clicks, box)
        assert not result.used_mask_input
        assert decoder_io["mask_inputs"][-1] is None
    assert segmenter.segment(coffee, [CLICK, (120, 110, 0), (510, 310, 1)]).used_mask_input  # the control


# --- batching --------------------------------------------------------------------------------------


def test_batched_encode_matches_single_encodes_and_fills_the_cache(tiny_sam, encoder_batches, segmenter, coffee):
    from skimage import data

    images = [coffee, data.chelsea(), data.rocket()]
    singles = []
    for image in images:  # one image per pass (cached already if an earlier test encoded it)
        (encoded,) = segmenter.encode_batch([image])
        singles.append(segmenter.embedding(encoded.image_id))

    batched = Segmenter(tiny_sam)
    passes = len(encoder_batches)
    outcomes = batched.encode_batch(images)
    assert encoder_batches[passes:] == [3] and list(batched.batch_sizes) == [3] and batched.encoder_passes == 1
    assert [o.cached for o in outcomes] == [False, False, False]
    assert batched.cached_image_ids() == [o.image_id for o in outcomes]
    for outcome, single in zip(outcomes, singles, strict=True):
        embedding = batched.embedding(outcome.image_id)
        assert embedding.original_size == single.original_size and embedding.input_size == single.input_size
        torch.testing.assert_close(embedding.features, single.features, atol=1e-4, rtol=0)

    reference = SamPredictor(tiny_sam)  # segment-anything's own single-image path
    reference.set_image(images[2])
    torch.testing.assert_close(batched.embedding(outcomes[2].image_id).features, reference.features, atol=1e-4, rtol=0)

    passes = len(encoder_batches)
    clicked = batched.segment(images[1], [(100, 100)])
    assert clicked.cached and len(encoder_batches) == passes  # batched, then clicked: no second encode
    assert all(o.cached for o in batched.encode_batch(images)) and len(encoder_batches) == passes


def test_duplicate_images_in_a_batch_are_encoded_once(tiny_sam, encoder_batches, astronaut):
    fresh = Segmenter(tiny_sam)
    image = astronaut[100:300, 50:450].copy()
    passes = len(encoder_batches)
    outcomes = fresh.encode_batch([image, image.copy()])
    assert encoder_batches[passes:] == [1]
    assert outcomes[0].image_id == outcomes[1].image_id


# --- concurrency and precision ---------------------------------------------------------------------


def test_concurrent_clicks_encode_each_image_once_and_never_mix_states(tiny_sam, encoder_batches, astronaut):
    shared = Segmenter(tiny_sam)
    images = [astronaut[:256, :384].copy(), astronaut[256:, 128:].copy()]
    jobs = [(images[i % 2], [(20 + 30 * i, 40 + 10 * i)]) for i in range(8)]
    results: list = [None] * len(jobs)
    start = threading.Barrier(len(jobs))

    def run(index: int) -> None:
        start.wait()
        results[index] = shared.segment(*jobs[index])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert shared.encoded_images == 2  # eight requests, two images, two encodes
    assert sum(not r.cached for r in results) == 2
    for (image, points), result in zip(jobs, results, strict=True):
        again = shared.segment(image, points)  # sequential, cached: the reference answer
        assert again.cached and again.image_id == result.image_id
        assert np.array_equal(again.mask, result.mask) and again.score == result.score


def test_bfloat16_autocast_path_runs_and_keeps_float32_features(tiny_sam, segmenter, coffee):
    half = Segmenter(tiny_sam, dtype=torch.bfloat16)
    (encoded,) = half.encode_batch([coffee])
    (full,) = segmenter.encode_batch([coffee])
    low, exact = half.embedding(encoded.image_id).features, segmenter.embedding(full.image_id).features
    assert low.dtype == torch.float32
    assert torch.corrcoef(torch.stack([low.flatten(), exact.flatten()]))[0, 1] > 0.99
    assert half.segment(coffee, [CLICK]).mask.shape == (400, 600)


# --- clicks ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("points", "box", "message"),
    [
        (None, None, "no clicks: give at least one point or a box"),
        ([], None, "no clicks"),
        ([(600.5, 10)], None, r"point 0 \(600.5, 10\) is outside the 600×399 image"),
        ([(10, 10), (-1, 10)], None, r"point 1 \(-1, 10\) is outside"),
        ([(10, 10, 2)], None, "point 0 has label 2; a label is 1 .subject. or 0"),
        ([{"x": 10, "y": 10, "label": -1}], None, "label -1"),
        ([(float("nan"), 10)], None, "point 0 x is nan; a coordinate must be finite"),
        ([{"x": 10, "y": float("inf")}], None, "point 0 y is inf"),
        ([("10", 10)], None, "point 0 x is '10'; a coordinate must be a number"),
        ([(10,)], None, r"point 0 \(10,\) is not \(x, y\[, label\]\)"),
        ([{"x": 3}], None, "lacks y"),
        (None, [50, 10, 20, 30], r"box \[50, 10, 20, 30\] needs x0 < x1 and y0 < y1"),
        (None, [10, 10, 700, 30], r"box \[10, 10, 700, 30\] reaches outside the 600×399 image"),
        (None, [0, 0, float("nan"), 30], "box x1 is nan"),
        (None, [0, 0, 30], r"box \[0, 0, 30\] is not \[x0, y0, x1, y1\]"),
        ([(1, 1)] * 65, None, "65 points given, at most 64"),
    ],
)
def test_bad_clicks_raise_click_errors_naming_the_value(segmenter, encoder_batches, coffee, points, box, message):
    passes = len(encoder_batches)
    with pytest.raises(ClickError, match=message) as caught:
        segmenter.segment(coffee[1:], points, box)  # a new image: an encode would show
    assert isinstance(caught.value, InputError) and isinstance(caught.value, ValueError)
    assert len(encoder_batches) == passes


def test_from_settings_reads_profile_cache_and_limits(monkeypatch, encoder_batches):
    from serving.settings import get_settings

    for name, value in {
        "PROFILE": "tiny",
        "DEVICE": "cpu",
        "SAM_CACHE_SIZE": "3",
        "MASK_MIN_HOLE_AREA": "5",
        "MASK_MIN_ISLAND_AREA": "7",
        "MAX_POINTS": "2",
    }.items():
        monkeypatch.setenv(f"MOODSHIFT_{name}", value)
    get_settings.cache_clear()
    built = Segmenter.from_settings()
    assert (built.cache_size, built.max_hole_area, built.max_island_area, built.max_points) == (3, 5, 7, 2)
    assert built.profile.profile == "tiny" and built.model_name.startswith("sam-tiny")
    assert built.device.type == "cpu" and built.dtype == torch.float32
    with pytest.raises(ClickError, match="3 points given, at most 2"):
        built.segment(np.zeros((8, 8, 3), np.uint8), [(1, 1), (2, 2), (3, 3)])


def test_points_as_models_dicts_tuples_or_numpy_rows_mean_the_same_clicks():
    from serving.core.clicks import Point, validate_clicks

    expected = validate_clicks(
        [Point(x=10.0, y=20.0, label=1), Point(x=30.5, y=40.0, label=0)], (1, 2, 50, 60), (64, 64), 8
    )
    as_dicts = [{"x": 10, "y": 20}, {"x": 30.5, "y": 40, "label": 0}]
    assert validate_clicks(as_dicts, [1, 2, 50, 60], (64, 64), 8) == expected
    assert validate_clicks([(10, 20), (30.5, 40, 0)], (1, 2, 50, 60), (64, 64), 8) == expected
    assert validate_clicks(np.array([[10, 20, 1], [30.5, 40, 0]]), np.array([1, 2, 50, 60]), (64, 64), 8) == expected
    assert expected.without_last_point().points == (Point(x=10.0, y=20.0, label=1),)


def test_a_cached_image_is_segmented_by_id_alone(segmenter, encoder_batches, coffee):
    photo = coffee[::-1, ::-1].copy()  # pixels no other test uses
    with pytest.raises(NotCachedError, match="not cached"):  # not cached yet: the caller must send pixels
        segmenter.segment_cached(image_id_of(photo), [CLICK])
    first = segmenter.segment(photo, [CLICK])
    passes = len(encoder_batches)
    by_id = segmenter.segment_cached(first.image_id, [CLICK, (150, 300, 0)])
    by_pixels = segmenter.segment(photo, [CLICK, (150, 300, 0)])
    assert len(encoder_batches) == passes, "no encoder pass for a click by id"
    assert by_id.cached and by_id.used_mask_input and by_id.mask.shape == (400, 600)
    np.testing.assert_array_equal(by_id.mask, by_pixels.mask)
    with pytest.raises(ClickError, match="outside the 600×400 image"):
        segmenter.segment_cached(first.image_id, [(700, 10)])
