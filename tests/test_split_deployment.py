"""The stage services on their own servers, as on three machines: `bentoml serve` of the segmentation and the
diffusion service on their own ports, and the gateway (`python -m serving serve`) pointed at them by URL. The same
contract as the single process, with images and masks crossing as compact bytes and arriving as they left."""

from __future__ import annotations

import base64
import io
import time

import numpy as np
import pytest
import requests
from PIL import Image

from serving.core.images import encode_png_base64
from serving.ollama_standin import FakeOllama
from serving.processes import running_split_service
from tests.matting import core_of

pytestmark = pytest.mark.slow

TINY = {"MOODSHIFT_PROFILE": "tiny", "MOODSHIFT_WORKING_PIXELS": str(128 * 128), "MOODSHIFT_DEFAULT_STEPS": "2"}


def _png(text: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(text))))


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    """The gateway's URL and the two stage services' URLs."""
    with FakeOllama() as ollama:
        env = {**TINY, "MOODSHIFT_OLLAMA_HOST": ollama.url, "MOODSHIFT_OLLAMA_TIMEOUT_S": "10"}
        with running_split_service(env, tmp_path_factory.mktemp("split")) as urls:
            yield urls


def post(url: str, path: str, body: dict) -> dict:
    response = requests.post(f"{url}{path}", json=body, timeout=120)
    assert response.status_code == 200, response.text[:400]
    return response.json()


def test_segment_new_image_then_repeat_click_by_id(split, coffee):
    gateway = split["gateway"]
    photo = encode_png_base64(coffee)
    first = post(gateway, "/segment", {"image": photo, "points": [{"x": 300, "y": 200, "label": 1}]})
    mask = _png(first["mask"])
    assert mask.shape == (400, 600) and set(np.unique(mask)) <= {0, 255}
    again = post(gateway, "/segment", {"image_id": first["image_id"], "points": [{"x": 300, "y": 200, "label": 1}]})
    assert again["cached"] and again["image_id"] == first["image_id"]
    np.testing.assert_array_equal(_png(again["mask"]), mask)  # the same mask, the embedding reused remotely
    outside = requests.post(
        f"{gateway}/segment", json={"image_id": first["image_id"], "points": [{"x": 900, "y": 5}]}, timeout=60
    )
    assert outside.status_code == 400 and "outside the 600×400 image" in outside.json()["error"]
    unknown = requests.post(f"{gateway}/segment", json={"image_id": "0" * 32, "points": [{"x": 1, "y": 1}]}, timeout=60)
    assert unknown.status_code == 409 and "not cached" in unknown.json()["error"]


def test_the_automatic_subject_and_a_zero_click_edit_across_servers(split, coffee, u2netp):
    gateway = split["gateway"]
    photo = encode_png_base64(coffee[:, ::-1])
    automatic = post(gateway, "/segment", {"image": photo})
    assert automatic["engine"] == "u2netp" and not automatic["cached"]
    refined = post(gateway, "/segment", {"image_id": automatic["image_id"], "auto": True, "points": [{"x": 5, "y": 5}]})
    assert refined["engine"] == "u2netp+clicks" and refined["cached"]
    subject = _png(automatic["mask"]) == 255
    edited = _png(post(gateway, "/edit", {"image": photo, "prompt": "dunes", "steps": 1, "seed": 4})["images"][0])
    core = core_of(subject)  # edge=matte (the default): exact deeper than the soft edge's band
    np.testing.assert_array_equal(edited[core], coffee[:, ::-1][core])
    assert post(gateway, "/info", {})["stages"]["segment"]["salient"]["model"] == "u2netp"


def test_mood_prompt_and_an_edit_keep_the_subject_exact(split, astronaut):
    gateway = split["gateway"]
    photo = encode_png_base64(astronaut)
    mood = post(gateway, "/mood", {"image": photo})
    assert mood["source"] == "llava" and mood["keywords"]
    prompt = post(gateway, "/prompt", {"keywords": mood["keywords"], "user_keyword": "galaxy"})
    assert prompt["source"] == "llm" and "galaxy" in prompt["prompt"]
    subject = np.zeros(astronaut.shape[:2], dtype=bool)
    subject[60:460, 140:380] = True  # not on latent cells: the exactness is the composite's, at full size
    edit = post(
        gateway,
        "/edit",
        {"image": photo, "mask": encode_png_base64(subject), "prompt": prompt["prompt"], "seed": 3, "variants": 2},
    )
    assert edit["seeds"] == [3, 4]
    for image in edit["images"]:
        edited = _png(image)
        assert edited.shape == astronaut.shape and edited.dtype == np.uint8
        core = core_of(subject)  # exact inside the soft edge: uint8 pixels and bool mask arrived
        np.testing.assert_array_equal(edited[core], astronaut[core])


def test_the_job_api_reports_steps_and_the_result(split, coffee):
    gateway = split["gateway"]
    body = {"image": encode_png_base64(coffee), "points": [{"x": 300, "y": 200}], "prompt": "a beach", "steps": 6}
    job = post(gateway, "/edit_submit", body)
    assert job["total_steps"] == 6
    seen, deadline = [], time.monotonic() + 120
    while (status := post(gateway, "/edit_status", {"job_id": job["job_id"]}))["state"] not in ("done", "failed"):
        seen.append(status["step"])
        assert time.monotonic() < deadline, status
        time.sleep(0.1)
    assert status["state"] == "done", status
    assert seen == sorted(seen) and _png(status["result"]["images"][0]).shape == coffee.shape


def test_info_and_stats_come_from_the_remote_stages(split):
    info = requests.get(f"{split['gateway']}/info", timeout=30).json()
    assert info["stages"]["segment"]["profile"] == "tiny" and info["stages"]["diffusion"]["profile"] == "tiny"
    stats = requests.get(f"{split['gateway']}/stats", timeout=30).json()
    assert stats["segment"]["encoded_images"] >= 1 and stats["diffusion"]["runs"] >= 1
