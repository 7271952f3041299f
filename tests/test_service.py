"""The HTTP contract through BentoML's ASGI app (tiny models, stand-in Ollama): every endpoint, every error."""

from __future__ import annotations

import base64
import io
import struct
import time
import zlib

import numpy as np
import pytest
from PIL import Image

from serving.core.images import encode_png_base64, png_bytes
from serving.core.masks import mask_from_png_bytes, mask_to_png_bytes
from serving.core.matting import estimate_matte
from tests.matting import core_of


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _decode_png(text: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(text))))


def _png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width×height (a decompression bomb: a few hundred bytes on disk)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


@pytest.fixture(scope="module")
def client(gateway):
    """The in-process gateway (tests/conftest.py): tiny models, the Ollama stand-in as `client.ollama`."""
    return gateway


@pytest.fixture(scope="module")
def photo(coffee) -> str:
    return encode_png_base64(coffee)  # 600×400


@pytest.fixture(scope="module")
def subject_mask() -> np.ndarray:
    mask = np.zeros((400, 600), dtype=bool)
    mask[120:300, 200:420] = True
    return mask


def _error(response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert isinstance(body, dict) and isinstance(body.get("error"), str), body
    assert "Traceback" not in response.text
    return body["error"]


# --- success paths ------------------------------------------------------------------------------------------


def test_segment_returns_image_sized_mask_and_caches_the_embedding(client, photo):
    first = client.post("/segment", json={"image": photo, "points": [{"x": 300, "y": 200, "label": 1}]})
    assert first.status_code == 200, first.text
    body = first.json()
    mask = _decode_png(body["mask"])
    assert mask.shape == (400, 600)
    assert set(np.unique(mask)) <= {0, 255}
    assert 0 <= body["score"] <= 1.5 and len(body["image_id"]) == 32
    again = client.post(
        "/segment",
        json={"image": photo, "points": [{"x": 300, "y": 200, "label": 1}, {"x": 20, "y": 20, "label": 0}]},
    ).json()
    assert again["image_id"] == body["image_id"] and again["cached"] is True


def test_segment_accepts_a_box_alone(client, photo):
    response = client.post("/segment", json={"image": photo, "box": [100, 50, 500, 350]})
    assert response.status_code == 200, response.text
    assert _decode_png(response.json()["mask"]).shape == (400, 600)


def test_mood_uses_llava_through_ollama(client, photo):
    body = client.post("/mood", json={"image": photo}).json()
    assert len(body.pop("image_id")) == 32  # the photo's id, for the requests that follow
    assert body == {"keywords": ["calm", "warm", "serene", "nostalgic"], "source": "llava", "reason": None}


def test_prompt_fits_clip_and_keeps_the_word(client):
    body = client.post("/prompt", json={"keywords": ["calm", "warm"], "user_keyword": "galaxy"}).json()
    assert body["source"] == "llm" and body["reason"] is None
    assert body["prompt"].startswith("galaxy, ") and "\n" not in body["prompt"]
    assert 3 <= body["tokens"] <= 77


def test_edit_with_mask_keeps_subject_pixels_and_input_size(client, photo, coffee, subject_mask):
    response = client.post(
        "/edit",
        json={
            "image": photo,
            "mask": _b64(mask_to_png_bytes(subject_mask)),
            "prompt": "a misty forest",
            "seed": 7,
            "steps": 2,
            "variants": 2,
            "feather": 4,
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["seeds"] == [7, 8] and body["prompt"] == "a misty forest" and body["prompt_source"] == "user"
    assert len(body["images"]) == 2
    first, second = (_decode_png(image) for image in body["images"])
    assert first.shape == coffee.shape
    core = core_of(subject_mask)  # edge=matte (the default): exact deeper than the soft edge's band
    np.testing.assert_array_equal(first[core], coffee[core])
    assert np.abs(first[~subject_mask].astype(int) - coffee[~subject_mask]).mean() > 5, "background must change"
    assert not np.array_equal(first, second), "variants differ"
    assert body["timings"]["diffusion_s"] > 0 and body["timings"]["total_s"] >= body["timings"]["diffusion_s"]


def test_edit_with_a_hard_edge_keeps_every_subject_pixel(client, photo, coffee, subject_mask):
    request = {"image": photo, "mask": _b64(mask_to_png_bytes(subject_mask)), "prompt": "dunes", "edge": "hard"}
    response = client.post("/edit", json=request)
    assert response.status_code == 200, response.text
    np.testing.assert_array_equal(_decode_png(response.json()["images"][0])[subject_mask], coffee[subject_mask])
    message = _error(client.post("/edit", json={**request, "edge": "soft"}), 400)
    assert message == "edge 'soft' must be one of matte, hard"


def test_matte_returns_the_rgba_cutout_from_a_mask_or_clicks(client, photo, coffee, subject_mask):
    response = client.post("/matte", json={"image": photo, "mask": _b64(mask_to_png_bytes(subject_mask))})
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"cutout", "image_id"} and len(body["image_id"]) == 32
    cutout = Image.open(io.BytesIO(base64.b64decode(body["cutout"])))
    assert (cutout.mode, cutout.size) == ("RGBA", (600, 400))
    np.testing.assert_array_equal(np.asarray(cutout), estimate_matte(coffee, subject_mask).cutout())
    clicked = client.post("/matte", json={"image": photo, "points": [{"x": 300, "y": 200, "label": 1}]})
    assert clicked.status_code == 200, clicked.text
    assert _decode_png(clicked.json()["cutout"]).shape == (400, 600, 4)


def test_matte_takes_a_grey_mask_as_a_soft_prior(client, photo, coffee, subject_mask):
    levels = subject_mask.astype(np.uint8) * 255
    levels[100:120, 200:420] = 100  # a grey strip: a soft mask, not a mistake
    response = client.post("/matte", json={"image": photo, "mask": _b64(png_bytes(levels))})
    assert response.status_code == 200, response.text
    expected = estimate_matte(coffee, levels.astype(np.float32) / 255).cutout()
    np.testing.assert_array_equal(_decode_png(response.json()["cutout"]), expected)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"mask": "full"}, "covers the whole image"),
        ({"mask": "empty"}, "mask is empty"),
        ({"mask": "small"}, "mask is 10×10 but the image is 600×400"),
        ({"mask": "subject", "points": [{"x": 1, "y": 1, "label": 1}]}, "not both"),
        ({"points": [{"x": 900, "y": 1, "label": 1}]}, "outside"),
        ({"image": "bm90IGFuIGltYWdl"}, "not a readable image"),
    ],
)
def test_matte_mistakes_are_400_naming_the_problem(client, photo, subject_mask, fields, message):
    masks = {
        "full": np.ones((400, 600), bool),
        "empty": np.zeros((400, 600), bool),
        "small": np.ones((10, 10), bool),
        "subject": subject_mask,
    }
    if "mask" in fields:
        fields = {**fields, "mask": _b64(mask_to_png_bytes(masks[fields["mask"]]))}
    assert message in _error(client.post("/matte", json={"image": photo, **fields}), 400)


def test_edit_with_points_and_keyword_runs_every_stage(client, photo):
    body = client.post(
        "/edit",
        json={"image": photo, "points": [{"x": 300, "y": 200, "label": 1}], "user_keyword": "galaxy", "seed": 1},
    ).json()
    assert body["prompt"].startswith("galaxy") and body["prompt_source"] == "llm"
    assert {"segment_s", "prompt_s", "diffusion_s"} <= set(body["timings"])
    assert _decode_png(body["images"][0]).shape == (400, 600, 3)


def test_same_seed_same_image(client, photo, subject_mask):
    request = {"image": photo, "mask": _b64(mask_to_png_bytes(subject_mask)), "prompt": "dunes", "seed": 3}
    first = client.post("/edit", json=request).json()["images"][0]
    assert client.post("/edit", json=request).json()["images"][0] == first


def test_info_reports_profiles_and_demo_notice(client):
    body = client.get("/info").json()
    assert body["stages"]["segment"]["profile"] == "tiny" and body["stages"]["diffusion"]["profile"] == "tiny"
    assert body["stages"]["mood"] == {"model": "llava", "host": client.ollama.url, "reachable": True}
    assert body["demo_models"] is True and "random weights" in body["notice"]
    assert body["device"] == "cpu" and body["versions"]["bentoml"].startswith("1.4")
    assert client.post("/info", json={}).json()["stages"] == body["stages"]


def test_health_and_docs_stay_available(client):
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200
    assert client.get("/livez").status_code == 200
    assert "/edit_submit" in client.get("/docs.json").json()["paths"]


# --- progress -----------------------------------------------------------------------------------------------


def _wait_for(client, job_id: str, seconds: float = 60) -> tuple[dict, list[dict]]:
    seen = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        status = client.post("/edit_status", json={"job_id": job_id}).json()
        seen.append(status)
        if status["state"] in ("done", "failed", "cancelled"):
            return status, seen
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish: {seen[-1]}")


def test_submitted_edit_reports_steps_then_the_result(client, photo, subject_mask):
    submitted = client.post(
        "/edit_submit",
        json={"image": photo, "mask": _b64(mask_to_png_bytes(subject_mask)), "prompt": "snowy peaks", "steps": 6},
    )
    assert submitted.status_code == 200, submitted.text
    job = submitted.json()
    assert job["total_steps"] == 6
    final, seen = _wait_for(client, job["job_id"])
    assert final["state"] == "done" and final["step"] == final["total"] == 6
    steps = [status["step"] for status in seen]
    assert steps == sorted(steps), "progress never goes backwards"
    assert _decode_png(final["result"]["images"][0]).shape == (400, 600, 3)


def test_cancel_stops_a_running_edit(client, photo, subject_mask):
    job = client.post(
        "/edit_submit",
        json={"image": photo, "mask": _b64(mask_to_png_bytes(subject_mask)), "prompt": "long", "steps": 150},
    ).json()
    deadline = time.monotonic() + 30
    while client.post("/edit_status", json={"job_id": job["job_id"]}).json()["step"] < 1:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert client.post("/edit_cancel", json={"job_id": job["job_id"]}).json()["job_id"] == job["job_id"]
    final, _ = _wait_for(client, job["job_id"])
    assert final["state"] == "cancelled" and final["step"] < 150
    assert "result" not in final


def test_unknown_job_is_404(client):
    assert "no edit job with id 'nope'" in _error(client.post("/edit_status", json={"job_id": "nope"}), 404)
    assert "no edit job" in _error(client.post("/edit_cancel", json={"job_id": "nope"}), 404)


# --- caller mistakes ----------------------------------------------------------------------------------------


def test_undecodable_image(client):
    message = _error(client.post("/segment", json={"image": "not base64 at all!", "points": []}), 400)
    assert "base64" in message
    message = _error(client.post("/mood", json={"image": _b64(b"GIF89a but not really")}), 400)
    assert "image" in message


def test_truncated_image(client, coffee):
    buffer = io.BytesIO()
    Image.fromarray(coffee).save(buffer, format="JPEG")
    message = _error(client.post("/mood", json={"image": _b64(buffer.getvalue()[:2000])}), 400)
    assert "truncated" in message


def test_decompression_bomb_is_413(client):
    message = _error(client.post("/segment", json={"image": _b64(_png_claiming(20000, 10000)), "points": []}), 413)
    assert "decompression bomb" in message and "200000000 pixels" in message


def test_image_over_pixel_limit_is_413(client):
    buffer = io.BytesIO()
    Image.new("L", (6500, 6500)).save(buffer, format="PNG")  # 42 MP > the 40 MP default, ~40 KB on the wire
    message = _error(client.post("/mood", json={"image": _b64(buffer.getvalue())}), 413)
    assert "6500×6500" in message and "MOODSHIFT_MAX_IMAGE_PIXELS" in message


def test_body_over_size_limit_is_413(client):
    body = b'{"image": "' + b"A" * 26_000_000 + b'"}'  # default limit: 25 MB
    response = client.post("/mood", content=body, headers={"content-type": "application/json"})
    assert "limit is 25.0 MB" in _error(response, 413)


def test_bad_json(client):
    response = client.post("/segment", content=b'{"image": ', headers={"content-type": "application/json"})
    assert "not valid JSON" in _error(response, 400)


def test_wrong_json_types_name_the_field(client, photo):
    message = _error(client.post("/segment", json={"image": photo, "points": "x=3"}), 400)
    assert message.startswith("invalid request: points")
    message = _error(
        client.post("/edit", json={"image": photo, "prompt": "x", "steps": "ten", "box": [1, 2, 3, 4]}), 400
    )
    assert "steps" in message


@pytest.mark.parametrize(
    ("points", "box", "expected"),
    [
        ([{"x": 700, "y": 10, "label": 1}], None, "outside the 600×400 image"),
        ([{"x": -1, "y": 10, "label": 1}], None, "outside"),
        ([{"x": 10, "y": 10, "label": 2}], None, "label"),
        ([], [500, 10, 100, 300], "box"),
    ],
)
def test_bad_clicks_are_400(client, photo, points, box, expected):
    assert expected in _error(client.post("/segment", json={"image": photo, "points": points, "box": box}), 400)


def test_nan_coordinate_is_400(client, photo):
    body = f'{{"image": "{photo}", "points": [{{"x": NaN, "y": 3, "label": 1}}]}}'
    message = _error(client.post("/segment", content=body, headers={"content-type": "application/json"}), 400)
    assert "finite" in message or "nan" in message.lower()


@pytest.mark.parametrize(
    ("field", "value"),
    [("steps", 0), ("steps", 151), ("guidance", -1), ("guidance", 31), ("variants", 9), ("seed", -5), ("feather", 999)],
)
def test_out_of_range_options_are_400_naming_the_field(client, photo, subject_mask, field, value):
    request = {"image": photo, "mask": _b64(mask_to_png_bytes(subject_mask)), "prompt": "x", field: value}
    for path in ("/edit", "/edit_submit"):
        message = _error(client.post(path, json=request), 400)
        assert message.startswith(f"{field} {value}") and " must be " in message and " from " in message


def test_mask_of_another_size_or_empty(client, photo):
    wrong = _b64(mask_to_png_bytes(np.ones((10, 10), dtype=bool)))
    assert "must match" in _error(client.post("/edit", json={"image": photo, "mask": wrong, "prompt": "x"}), 400)
    empty = _b64(mask_to_png_bytes(np.zeros((400, 600), dtype=bool)))
    assert "no subject" in _error(client.post("/edit", json={"image": photo, "mask": empty, "prompt": "x"}), 400)


def test_edit_needs_a_prompt_and_one_way_to_the_subject(client, photo, subject_mask):
    mask = _b64(mask_to_png_bytes(subject_mask))
    assert "no prompt" in _error(client.post("/edit", json={"image": photo, "mask": mask}), 400)
    both = {"image": photo, "mask": mask, "points": [{"x": 1, "y": 1, "label": 1}], "prompt": "x"}
    assert "not both" in _error(client.post("/edit", json=both), 400)
    assert "not both" in _error(
        client.post("/edit", json={"image": photo, "mask": mask, "auto": True, "prompt": "x"}), 400
    )


# --- the automatic subject ------------------------------------------------------------------------------------


def test_segment_without_clicks_answers_the_automatic_subject(client, u2netp, coffee):
    photo = encode_png_base64(coffee[::-1])  # pixels no other test sends: nothing cached yet
    first = client.post("/segment", json={"image": photo})
    assert first.status_code == 200, first.text
    body = first.json()
    mask = _decode_png(body["mask"]) == 255
    assert body["engine"] == "u2netp" and body["cached"] is False and body["score"] > 0.9
    assert mask[399 - 200, 300] and not mask[5, 5] and 0.05 < mask.mean() < 0.6  # the cup (upside down), not the table
    again = client.post("/segment", json={"image_id": body["image_id"], "auto": True}).json()
    assert again["mask"] == body["mask"] and again["cached"] is True
    refined = client.post(
        "/segment", json={"image_id": body["image_id"], "auto": True, "points": [{"x": 300, "y": 199, "label": 0}]}
    ).json()
    assert refined["engine"] == "u2netp+clicks" and not (_decode_png(refined["mask"]) == 255)[199, 300]
    sam = client.post("/segment", json={"image": photo, "points": [{"x": 300, "y": 199, "label": 1}]}).json()
    assert sam["engine"] == "sam-tiny (random weights)"  # clicks without auto: SAM's prompts


def test_a_matte_without_a_subject_cuts_out_the_automatic_one(client, u2netp, coffee):
    photo = encode_png_base64(coffee)
    subject = _decode_png(client.post("/segment", json={"image": photo}).json()["mask"]) == 255
    response = client.post("/matte", json={"image": photo})
    assert response.status_code == 200, response.text
    np.testing.assert_array_equal(_decode_png(response.json()["cutout"]), estimate_matte(coffee, subject).cutout())


def test_edit_without_a_subject_keeps_the_automatic_one(client, u2netp, coffee):
    photo = encode_png_base64(coffee)
    subject = _decode_png(client.post("/segment", json={"image": photo}).json()["mask"]) == 255
    response = client.post("/edit", json={"image": photo, "prompt": "a misty forest", "steps": 1, "seed": 2})
    assert response.status_code == 200, response.text
    edited = _decode_png(response.json()["images"][0])
    core = core_of(subject)  # edge=matte (the default): exact deeper than the soft edge's band
    np.testing.assert_array_equal(edited[core], coffee[core])
    assert "segment_s" in response.json()["timings"]


def test_info_names_the_salient_model_and_what_refines_clicks(client, u2netp):
    body = client.get("/info").json()
    segment = body["stages"]["segment"]
    assert segment["salient"]["model"] == "u2netp" and segment["salient"]["problem"] is None
    assert segment["salient"]["file"].endswith("u2netp.onnx") and segment["clicks"] == "u2netp+clicks"
    assert "The subject mask is real all the same: u2netp finds the subject" in body["notice"]


def test_empty_keyword_is_400(client, photo):
    assert "empty" in _error(client.post("/prompt", json={"keywords": ["calm"], "user_keyword": " \n\t "}), 400)
    request = {"image": photo, "points": [{"x": 300, "y": 200, "label": 1}], "user_keyword": "\x00\x01"}
    assert "empty" in _error(client.post("/edit_submit", json=request), 400)


def test_mask_round_trip_helper_matches_the_api(client, photo):
    mask = client.post("/segment", json={"image": photo, "points": [{"x": 300, "y": 200}]}).json()["mask"]
    assert mask_from_png_bytes(base64.b64decode(mask), (600, 400)).shape == (400, 600)


# --- failures inside ----------------------------------------------------------------------------------------


def test_runner_exception_is_a_short_500_and_the_service_stays_up(client, photo, subject_mask, monkeypatch):
    from serving.models.blended_sdxl import BlendedSDXLRunner

    def explode(self, edits, size):
        raise RuntimeError("CUDA out of memory (simulated)")

    monkeypatch.setattr(BlendedSDXLRunner, "_run_group", explode)
    request = {"image": photo, "mask": _b64(mask_to_png_bytes(subject_mask)), "prompt": "x", "seed": 1}
    message = _error(client.post("/edit", json=request), 500)
    assert "CUDA out of memory (simulated)" in message and len(message) < 300
    job = client.post("/edit_submit", json=request).json()
    final, _ = _wait_for(client, job["job_id"])
    assert final["state"] == "failed" and "CUDA out of memory" in final["error"]
    monkeypatch.undo()
    assert client.post("/edit", json=request).status_code == 200


def test_ollama_down_falls_back_and_says_so(client, photo):
    client.ollama.stop()
    try:
        mood = client.post("/mood", json={"image": encode_png_base64(np.full((64, 80, 3), 30, np.uint8))}).json()
        assert mood["source"] == "heuristic" and "unreachable" in mood["reason"]
        prompt = client.post("/prompt", json={"keywords": mood["keywords"], "user_keyword": "forest"}).json()
        assert prompt["source"] == "template" and prompt["prompt"].startswith("forest")
        info = client.get("/info").json()
        assert info["stages"]["prompt"]["reachable"] is False
    finally:
        client.ollama.start()


def test_repeat_click_by_image_id_skips_the_upload(client, photo):
    first = client.post("/segment", json={"image": photo, "points": [{"x": 300, "y": 200, "label": 1}]}).json()
    clicks = [{"x": 300, "y": 200, "label": 1}, {"x": 40, "y": 40, "label": 0}]
    by_id = client.post("/segment", json={"image_id": first["image_id"], "points": clicks})
    assert by_id.status_code == 200, by_id.text
    by_image = client.post("/segment", json={"image": photo, "points": clicks}).json()
    assert by_id.json()["cached"] is True and by_id.json()["image_id"] == first["image_id"]
    assert _decode_png(by_id.json()["mask"]).shape == (400, 600)
    outside = client.post("/segment", json={"image_id": first["image_id"], "points": [{"x": 601, "y": 1}]})
    assert "outside the 600×400 image" in _error(outside, 400)
    assert by_image["image_id"] == first["image_id"]


def test_unknown_image_id_asks_for_the_image(client):
    message = _error(client.post("/segment", json={"image_id": "0" * 32, "points": [{"x": 1, "y": 1}]}), 409)
    assert "not cached" in message and "send the image" in message
    assert "no image" in _error(client.post("/segment", json={"points": [{"x": 1, "y": 1}]}), 400)


def test_cancel_before_the_diffusion_stage_stops_the_edit(client, photo):
    client.ollama.delay_s = 1.5  # the prompt stage waits on Ollama: cancel lands there
    try:
        request = {"image": photo, "points": [{"x": 300, "y": 200}], "user_keyword": "galaxy", "keywords": ["calm"]}
        job = client.post("/edit_submit", json=request).json()
        deadline = time.monotonic() + 30
        while client.post("/edit_status", json={"job_id": job["job_id"]}).json()["stage"] != "prompt":
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert client.post("/edit_cancel", json={"job_id": job["job_id"]}).status_code == 200
        final, seen = _wait_for(client, job["job_id"])
    finally:
        client.ollama.delay_s = 0.0
    assert final["state"] == "cancelled" and "result" not in final
    assert all(status["stage"] != "diffusion" for status in seen), "the diffusion stage never started"
