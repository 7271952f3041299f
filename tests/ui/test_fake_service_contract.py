"""The UI's stand-in service answers like the real one: the same requests go to both, and the answers must have
the same keys, value types, id formats, options table and limits, and the same statuses for a caller's mistakes.

The real service is BentoML's ASGI app in-process (tiny models, the Ollama stand-in), as in `tests/test_service.py`.
Where they differ, the fake is what gets fixed: the studio's tests are only as good as its likeness.
"""

from __future__ import annotations

import base64
import io
import re
import time
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.conftest import GATEWAY_DEFAULT_STEPS
from tests.reliability.files import png_claiming
from tests.ui.fake_service import FakeService
from tests.ui.photos import png_bytes

HEX_ID = re.compile(r"^[0-9a-f]{32}$")  # image_id: sha256 of the pixels; job_id: uuid4 hex
DEFAULT_STEPS = GATEWAY_DEFAULT_STEPS  # the real service's MOODSHIFT_DEFAULT_STEPS; the fake's option_defaults too
CLICK = {"x": 300, "y": 200, "label": 1}
NOT_AN_IMAGE = base64.b64encode(b"these are my notes, not a photo").decode()
TOO_MANY_PIXELS = base64.b64encode(png_claiming(10_000, 10_000)).decode()  # 100 MP claimed; the limit is 40 MP
SMALL_MASK = base64.b64encode(png_bytes(Image.new("L", (60, 40), 255))).decode()
Answer = tuple[int, Any]  # (HTTP status, JSON body)


@pytest.fixture(scope="module")
def real_service(gateway):
    """The real gateway with local stage instances (tests/conftest.py)."""
    return gateway


@pytest.fixture(scope="module")
def fake_service_client():
    with (
        FakeService(option_defaults={"steps": DEFAULT_STEPS}) as service,
        httpx.Client(base_url=service.url, timeout=60) as client,
    ):
        yield client


def _call(client: httpx.Client, path: str, body: dict[str, Any] | None = None) -> Answer:
    response = client.get(path) if body is None else client.post(path, json=body)
    return response.status_code, response.json()


def _session(client: httpx.Client, photo: str) -> dict[str, Answer]:
    """One studio session's calls, in order, then the caller's mistakes; every answer by name."""
    answers: dict[str, Answer] = {"info": _call(client, "/info")}
    answers["segment"] = _call(client, "/segment", {"image": photo, "points": [CLICK]})
    segment = answers["segment"][1]
    answers["segment by image_id"] = _call(client, "/segment", {"image_id": segment["image_id"], "points": [CLICK]})
    answers["matte"] = _call(client, "/matte", {"image": photo, "mask": segment["mask"]})
    answers["segment: automatic"] = _call(client, "/segment", {"image": photo})
    refine = {"image_id": segment["image_id"], "points": [CLICK], "auto": True}
    answers["segment: automatic, refined"] = _call(client, "/segment", refine)
    answers["matte: automatic"] = _call(client, "/matte", {"image_id": segment["image_id"]})
    answers["mood"] = _call(client, "/mood", {"image": photo})
    answers["prompt"] = _call(client, "/prompt", {"keywords": ["calm", "warm"], "user_keyword": "forest"})
    # What the studio sends: every option of the table (at its default), the seed drawn.
    options = {row["name"]: row["default"] for row in answers["info"][1]["options"]}
    edit = {"image": photo, "mask": segment["mask"], "prompt": "misty forest", **options, "seed": 3}
    answers["edit_submit"] = _call(client, "/edit_submit", edit)
    job_id = answers["edit_submit"][1]["job_id"]
    deadline = time.monotonic() + 120
    while True:
        answers["edit_status"] = _call(client, "/edit_status", {"job_id": job_id})
        if answers["edit_status"][1].get("state") in ("done", "failed", "cancelled") or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    answers["edit_cancel"] = _call(client, "/edit_cancel", {"job_id": job_id})
    automatic = {key: value for key, value in edit.items() if key != "mask"}
    answers["edit_submit: automatic"] = _call(client, "/edit_submit", automatic)

    answers["segment: not an image"] = _call(client, "/segment", {"image": NOT_AN_IMAGE, "points": [CLICK]})
    answers["mood: not an image"] = _call(client, "/mood", {"image": NOT_AN_IMAGE})
    answers["mood: too many pixels"] = _call(client, "/mood", {"image": TOO_MANY_PIXELS})
    answers["edit_submit: not an image"] = _call(client, "/edit_submit", {**edit, "image": NOT_AN_IMAGE})
    answers["edit_submit: steps out of range"] = _call(client, "/edit_submit", {**edit, "steps": 500})
    answers["edit_submit: no such mode"] = _call(client, "/edit_submit", {**edit, "mode": "turbo"})
    answers["edit_submit: fast"] = _call(client, "/edit_submit", {**edit, "mode": "fast", "steps": None})
    answers["edit_status: unknown job"] = _call(client, "/edit_status", {"job_id": "0" * 32})
    answers["edit_cancel: unknown job"] = _call(client, "/edit_cancel", {"job_id": "0" * 32})
    answers["segment: unknown image_id"] = _call(client, "/segment", {"image_id": "0" * 32, "points": [CLICK]})
    outside = {"image": photo, "points": [{"x": 3000, "y": 200, "label": 1}]}
    answers["segment: point outside the image"] = _call(client, "/segment", outside)
    answers["matte: mask of another size"] = _call(client, "/matte", {"image": photo, "mask": SMALL_MASK})
    answers["matte: not an image"] = _call(client, "/matte", {"image": NOT_AN_IMAGE, "mask": segment["mask"]})
    return answers


@pytest.fixture(scope="module")
def answers(real_service, fake_service_client, coffee) -> dict[str, dict[str, dict[str, Answer]]]:
    # 600×400, pixels no other test sends: the session-wide real service has not seen (cached) them yet.
    photo = base64.b64encode(png_bytes(coffee[:, ::-1])).decode()
    return {"real": _session(real_service, photo), "fake": _session(fake_service_client, photo)}


def _kind(value: Any) -> str:
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "array", dict: "object"}.get(
        type(value), "null"
    )


def assert_same_shape(real: dict[str, Any], fake: dict[str, Any], where: str) -> None:
    """Same keys, and the same JSON type for each (null stands for any type: the field is optional there)."""
    assert set(fake) == set(real), f"{where}: keys only real {set(real) - set(fake)}, only fake {set(fake) - set(real)}"
    for key, value in real.items():
        kinds = {_kind(value), _kind(fake[key])} - {"null"}
        assert len(kinds) <= 1, f"{where}.{key}: real {_kind(value)} ({value!r:.60}), fake {_kind(fake[key])}"


ENDPOINTS = [
    "info",
    "segment",
    "segment by image_id",
    "matte",
    "matte: automatic",
    "segment: automatic",
    "segment: automatic, refined",
    "mood",
    "prompt",
    "edit_submit",
    "edit_submit: automatic",
    "edit_status",
    "edit_cancel",
]
MISTAKES = [
    ("segment: not an image", 400),
    ("mood: not an image", 400),
    ("mood: too many pixels", 413),
    ("edit_submit: not an image", 400),
    ("edit_submit: steps out of range", 400),
    ("edit_submit: no such mode", 400),
    ("edit_status: unknown job", 404),
    ("edit_cancel: unknown job", 404),
    ("segment: unknown image_id", 409),
    ("segment: point outside the image", 400),
    ("matte: mask of another size", 400),
    ("matte: not an image", 400),
]


@pytest.mark.parametrize("name", ENDPOINTS)
def test_the_same_request_gets_an_answer_of_the_same_shape(answers, name):
    (real_status, real), (fake_status, fake) = answers["real"][name], answers["fake"][name]
    assert real_status == fake_status == 200, (real, fake)
    assert_same_shape(real, fake, name)


def test_info_has_the_same_options_table_limits_and_stages(answers):
    real, fake = answers["real"]["info"][1], answers["fake"]["info"][1]
    assert [set(row) for row in fake["options"]] == [set(row) for row in real["options"]]
    assert fake["options"] == real["options"]  # the same defaults (steps 2 on both) and bounds
    assert fake["limits"] == real["limits"]
    assert set(fake["stages"]) == set(real["stages"])
    assert fake["fast"] == real["fast"]  # the tiny service's few-step stand-in, described alike
    real_segment, fake_segment = real["stages"]["segment"], fake["stages"]["segment"]
    assert {"salient", "clicks"} <= set(real_segment) & set(fake_segment)
    assert set(fake_segment["salient"]) == set(real_segment["salient"])


def test_the_automatic_subject_and_its_refinement_name_their_engines(answers):
    engines = {side: [answers[side][name][1]["engine"] for name in ENGINE_ANSWERS] for side in ("real", "fake")}
    assert engines["real"] == ["sam-tiny (random weights)", "u2netp", "u2netp+clicks"]
    assert engines["fake"] == ["fake-sam", "fake-salient", "fake-salient+clicks"]
    for side in ("real", "fake"):
        automatic, refined = (answers[side][name][1] for name in ENGINE_ANSWERS[1:])
        assert _png(automatic["mask"]).size == (600, 400)
        assert automatic["cached"] is False  # SAM had seen the photo, the automatic subject had not: a model ran
        assert refined["cached"] is True and refined["image_id"] == automatic["image_id"]


def test_images_get_the_same_id_and_jobs_ids_of_the_same_format(answers):
    for side in ("real", "fake"):
        segment, again = answers[side]["segment"][1], answers[side]["segment by image_id"][1]
        assert HEX_ID.match(segment["image_id"]), (side, segment["image_id"])
        assert (segment["cached"], again["cached"], again["image_id"]) == (False, True, segment["image_id"])
        assert HEX_ID.match(answers[side]["edit_submit"][1]["job_id"]), side
    assert answers["fake"]["segment"][1]["image_id"] == answers["real"]["segment"][1]["image_id"]


ENGINE_ANSWERS = ["segment", "segment: automatic", "segment: automatic, refined"]


def _png(text: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(text)))


def test_masks_and_results_are_pngs_of_the_photos_size(answers):
    for side in ("real", "fake"):
        mask = _png(answers[side]["segment"][1]["mask"])
        assert (mask.size, mask.mode) == ((600, 400), "L"), side
        assert set(np.unique(np.asarray(mask))) <= {0, 255}, side
        cutout = _png(answers[side]["matte"][1]["cutout"])
        assert (cutout.size, cutout.mode) == ((600, 400), "RGBA"), side
        levels = np.unique(np.asarray(cutout)[..., 3])
        assert levels[0] == 0 and levels[-1] == 255 and len(levels) > 2, side  # a soft edge
        assert answers[side]["matte"][1]["image_id"] == answers[side]["segment"][1]["image_id"], side
        status = answers[side]["edit_status"][1]
        assert (status["state"], status["stage"], status["step"]) == ("done", "done", status["total"]), side
        assert answers[side]["edit_submit"][1]["total_steps"] == DEFAULT_STEPS, side
        result = status["result"]
        assert [_png(image).size for image in result["images"]] == [(600, 400)], side
        assert result["seeds"] == [3] and result["image_id"] == answers[side]["segment"][1]["image_id"], side
        assert answers[side]["edit_cancel"][1]["state"] == "done", side


def test_a_fast_edit_takes_the_few_step_models_steps_on_both(answers):
    for side in ("real", "fake"):
        status, body = answers[side]["edit_submit: fast"]
        assert status == 200 and body["total_steps"] == 4, (side, body)


def test_a_finished_jobs_result_has_the_same_shape(answers):
    real, fake = answers["real"]["edit_status"][1]["result"], answers["fake"]["edit_status"][1]["result"]
    assert_same_shape(real, fake, "edit_status.result")
    for timings in (real["timings"], fake["timings"]):  # which stages are timed differs; the studio reads total_s
        assert "total_s" in timings and all(_kind(value) in ("integer", "number") for value in timings.values())


@pytest.mark.parametrize(("name", "status"), MISTAKES)
def test_a_callers_mistake_gets_the_same_status_and_an_error_message(answers, name, status):
    for side in ("real", "fake"):
        answer_status, body = answers[side][name]
        assert answer_status == status, (side, body)
        assert set(body) == {"error"} and isinstance(body["error"], str) and body["error"], (side, body)
