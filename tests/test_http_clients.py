"""What ordinary HTTP clients get from the gateway (in-process, tiny models): file uploads give the same answers as
base64 JSON, `Accept: image/png` gives the image itself, and a photo sent once is named by its image id after."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from serving.core.images import png_bytes


@pytest.fixture(scope="module")
def photo(coffee) -> bytes:
    return png_bytes(coffee[::-1])  # 600×400, pixels no other module sends (the gateway is one per session)


@pytest.fixture(scope="module")
def mask_png(coffee) -> bytes:
    mask = np.zeros(coffee.shape[:2], dtype=bool)
    mask[100:300, 200:420] = True
    return png_bytes(mask)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def test_segment_as_upload_and_as_json_answer_alike(gateway, photo):
    upload = gateway.post(
        "/segment", files={"image": ("p.png", photo, "image/png")}, data={"points": '[{"x": 300, "y": 200}]'}
    )
    as_json = gateway.post("/segment", json={"image": b64(photo), "points": [{"x": 300, "y": 200}]})
    assert upload.status_code == as_json.status_code == 200, upload.text
    first, second = upload.json(), as_json.json()
    assert first["mask"] == second["mask"] and first["image_id"] == second["image_id"]


def test_mood_and_edit_as_upload_and_as_json_answer_alike(gateway, photo, mask_png):
    upload = gateway.post("/mood", files={"image": ("p.png", photo, "image/png")})
    assert upload.status_code == 200 and upload.json() == gateway.post("/mood", json={"image": b64(photo)}).json()
    fields = {"prompt": "a calm lake", "seed": "5", "steps": "2", "variants": "2"}
    files = {"image": ("p.png", photo, "image/png"), "mask": ("m.png", mask_png, "image/png")}
    upload = gateway.post("/edit", files=files, data=fields)
    as_json = gateway.post(
        "/edit",
        json={
            "image": b64(photo),
            "mask": b64(mask_png),
            "prompt": "a calm lake",
            "seed": 5,
            "steps": 2,
            "variants": 2,
        },
    )
    assert upload.status_code == as_json.status_code == 200, upload.text
    assert upload.json()["images"] == as_json.json()["images"] and upload.json()["seeds"] == [5, 6]


def test_an_upload_is_checked_like_json(gateway, photo):
    bad_step = gateway.post(
        "/edit",
        files={"image": ("p.png", photo, "image/png")},
        data={"prompt": "x", "steps": "0", "points": '[{"x": 1, "y": 1}]'},
    )
    assert bad_step.status_code == 400 and "steps 0 must be an integer from 1 to 150" in bad_step.json()["error"]
    not_an_image = gateway.post("/mood", files={"image": ("notes.txt", b"my notes", "text/plain")})
    assert not_an_image.status_code == 400 and "not a readable image" in not_an_image.json()["error"]


def test_accept_png_gives_the_mask_and_the_edit_themselves(gateway, photo, mask_png, coffee):
    mask = gateway.post(
        "/segment", json={"image": b64(photo), "points": [{"x": 300, "y": 200}]}, headers={"accept": "image/png"}
    )
    assert mask.status_code == 200 and mask.headers["content-type"] == "image/png"
    assert pixels(mask.content).shape == (400, 600) and len(mask.headers["x-moodshift-image-id"]) == 32
    body = {"image": b64(photo), "mask": b64(mask_png), "prompt": "a calm lake", "seed": 9, "steps": 2}
    edit = gateway.post("/edit", json=body, headers={"accept": "image/png"})
    assert (
        edit.status_code == 200
        and edit.headers["content-type"] == "image/png"
        and edit.headers["x-moodshift-seed"] == "9"
    )
    as_json = gateway.post("/edit", json=body).json()
    assert edit.content == base64.b64decode(as_json["images"][0])
    several = gateway.post("/edit", json={**body, "variants": 2}, headers={"accept": "image/png"})
    assert several.status_code == 400 and "ask for JSON, or for one variant" in several.json()["error"]


def test_a_photo_sent_once_is_named_by_its_id_for_mood_clicks_and_edits(gateway, photo, mask_png):
    first = gateway.post("/segment", json={"image": b64(photo), "points": [{"x": 300, "y": 200}]}).json()
    image_id = first["image_id"]
    before = gateway.get("/stats").json()["images"]
    again = gateway.post("/segment", json={"image_id": image_id, "points": [{"x": 300, "y": 200}]})
    assert again.status_code == 200 and again.json()["mask"] == first["mask"]
    assert gateway.post("/mood", json={"image_id": image_id}).status_code == 200
    edit = gateway.post(
        "/edit", json={"image_id": image_id, "mask": b64(mask_png), "prompt": "x", "steps": 1, "seed": 1}
    )
    assert edit.status_code == 200 and edit.json()["image_id"] == image_id
    after = gateway.get("/stats").json()["images"]
    assert after["hits"] >= before["hits"] + 2 and after["bytes"] <= after["max_bytes"]
    for path, body in (
        ("/mood", {}),
        ("/edit", {"mask": b64(mask_png), "prompt": "x"}),
        ("/segment", {"points": [{"x": 1, "y": 1}]}),
    ):
        unknown = gateway.post(path, json={"image_id": "f" * 32, **body})
        assert unknown.status_code == 409 and "send the image itself again" in unknown.json()["error"], path


def _statuses_until_done(gateway, job_id: str) -> list[dict]:
    import time

    seen, deadline = [], time.monotonic() + 120
    while True:
        status = gateway.post("/edit_status", json={"job_id": job_id}).json()
        seen.append(status)
        if status["state"] in ("done", "failed", "cancelled") or time.monotonic() > deadline:
            return seen
        time.sleep(0.05)


def test_a_running_edit_shows_previews_unless_turned_off(gateway, photo, mask_png):
    body = {"image": b64(photo), "mask": b64(mask_png), "prompt": "a galaxy", "steps": 40, "seed": 2}
    seen = _statuses_until_done(gateway, gateway.post("/edit_submit", json=body).json()["job_id"])
    assert seen[-1]["state"] == "done" and "preview" not in seen[-1]
    previews = [pixels(base64.b64decode(status["preview"])) for status in seen if "preview" in status]
    assert previews and all(p.ndim == 3 and max(p.shape[:2]) <= 256 for p in previews)
    quiet = _statuses_until_done(
        gateway, gateway.post("/edit_submit", json={**body, "preview": False}).json()["job_id"]
    )
    assert quiet[-1]["state"] == "done" and not any("preview" in status for status in quiet)
