"""The HTTP client against the stand-in service: answers decoded, failures as ServiceError with URL and status."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from tests.ui.fake_service import seed_color
from tests.ui.photos import png_bytes
from ui.client import Photo, ServiceClient, ServiceError, encode_image, get_client


@pytest.fixture()
def photo(coffee) -> Photo:
    return Photo(png_bytes(coffee))


def test_segment_sends_points_and_decodes_the_mask(fake_service, photo):
    client = ServiceClient(fake_service.url)
    first = client.segment(photo, [{"x": 300, "y": 200, "label": 1}])
    mask = np.asarray(Image.open(io.BytesIO(first.mask_png)))
    assert mask.shape == (400, 600)
    assert mask[200, 300] == 255 and mask[0, 0] == 0
    assert first.cached is False and first.score == pytest.approx(0.9) and first.elapsed_s > 0
    again = client.segment(photo, [{"x": 300, "y": 200, "label": 1}, {"x": 300, "y": 200, "label": 0}])
    assert again.cached is True and again.image_id == first.image_id
    assert fake_service.calls("/segment")[1]["points"][1] == {"x": 300, "y": 200, "label": 0}


def test_cutout_sends_the_mask_and_decodes_the_rgba_png(fake_service, photo):
    client = ServiceClient(fake_service.url)
    mask_png = client.segment(photo, [{"x": 300, "y": 200, "label": 1}]).mask_png
    cutout = client.cutout(photo, mask_png)
    picture = Image.open(io.BytesIO(cutout.png))
    assert (picture.mode, picture.size) == ("RGBA", (600, 400)) and len(cutout.image_id) == 32
    assert fake_service.calls("/matte")[-1] == {"image_id": photo.image_id, "mask": encode_image(mask_png)}
    fake_service.fail["matte"] = (404, "no such endpoint: POST /matte")
    with pytest.raises(ServiceError, match="no such endpoint") as failure:
        client.cutout(photo, mask_png)
    assert failure.value.status == 404


def test_mood_and_prompt(fake_service, photo):
    client = ServiceClient(fake_service.url + "/")  # a trailing slash is tolerated
    mood = client.mood(photo)
    assert mood.keywords == ["calm", "warm", "soft"] and mood.source == "heuristic"
    draft = client.prompt(mood.keywords, "forest")
    assert draft.prompt.startswith("forest, calm, warm, soft") and draft.source == "template" and draft.tokens > 2


def test_edit_job_progresses_to_a_result(fake_service, photo):
    client = ServiceClient(fake_service.url)
    job = client.submit_edit(photo, {"points": [{"x": 300, "y": 200, "label": 1}], "steps": 3, "seed": 5,
                                     "variants": 2})  # fmt: skip
    assert job.total_steps == 3
    states = [client.edit_status(job.job_id) for _ in range(3)]
    assert [(s.state, s.step, s.total) for s in states] == [("running", 1, 3), ("running", 2, 3), ("done", 3, 3)]
    result = states[-1].result
    assert result.seeds == [5, 6] and len(result.images) == 2
    image = np.asarray(Image.open(io.BytesIO(result.images[1])))
    assert tuple(image[0, 0]) == seed_color(6)


def test_a_failed_job_reports_the_services_message(fake_service, photo):
    fake_service.fail_job = "CUDA out of memory"
    client = ServiceClient(fake_service.url)
    job = client.submit_edit(photo, {"points": [{"x": 1, "y": 1, "label": 1}], "steps": 3})
    status = client.edit_status(job.job_id)
    assert status.state == "failed" and status.finished and status.error == "CUDA out of memory"


def test_cancel(fake_service, photo):
    client = ServiceClient(fake_service.url)
    job = client.submit_edit(photo, {"points": [{"x": 1, "y": 1, "label": 1}], "steps": 9})
    assert client.cancel_edit(job.job_id) == "cancelled"
    assert client.edit_status(job.job_id).state == "cancelled"


def test_a_4xx_answer_names_the_url_the_status_and_the_services_message(fake_service, photo):
    fake_service.fail["segment"] = (400, "points must not be empty")
    with pytest.raises(ServiceError) as caught:
        ServiceClient(fake_service.url).segment(photo, [])
    error = caught.value
    assert error.status == 400 and error.url == f"{fake_service.url}/segment"
    assert error.message == "The service rejected the request: points must not be empty"
    assert str(error) == f"{error.message} (HTTP 400 from {fake_service.url}/segment)"


def test_a_5xx_answer_says_the_service_failed(fake_service):
    fake_service.fail["info"] = (500, "internal error: boom")
    with pytest.raises(ServiceError, match="The service failed: internal error: boom") as caught:
        ServiceClient(fake_service.url).info()
    assert caught.value.status == 500


def test_a_service_that_is_down_gives_a_clear_error_with_the_url(fake_service, photo):
    url = fake_service.url
    fake_service.stop()
    client = ServiceClient(url)
    with pytest.raises(ServiceError) as caught:
        client.mood(photo)
    assert caught.value.status is None and caught.value.url == f"{url}/mood"
    assert "Cannot reach the Moodshift service (connection refused" in caught.value.message
    assert client.ready() is False


def test_ready_and_info(fake_service):
    client = ServiceClient(fake_service.url)
    assert client.ready() is True
    info = client.info()
    assert info["demo_models"] is True and info["stages"]["segment"]["profile"] == "tiny"


def test_the_photo_is_sent_once_and_named_by_its_id_after(fake_service, photo):
    client = ServiceClient(fake_service.url)
    client.segment(photo, [{"x": 300, "y": 200, "label": 1}])
    client.segment(photo, [{"x": 300, "y": 200, "label": 1}, {"x": 10, "y": 10, "label": 0}])
    client.mood(photo)
    client.submit_edit(photo, {"points": [{"x": 300, "y": 200, "label": 1}], "steps": 2})
    bodies = [body for _, path, body in fake_service.requests if path != "/info"]
    assert "image" in bodies[0] and photo.image_id == bodies[1]["image_id"]
    assert all("image" not in body and body["image_id"] == photo.image_id for body in bodies[1:])


def test_a_photo_the_service_no_longer_keeps_is_sent_again_once(fake_service, photo):
    client = ServiceClient(fake_service.url)
    client.mood(photo)
    fake_service.forget_images()  # as after a restart, or an eviction
    mood = client.mood(photo)
    assert mood.keywords
    sent = [body for body in fake_service.calls("/mood")]
    assert ["image" in body for body in sent] == [True, False, True]  # by id (409), then the pixels once


def test_the_studios_clients_share_no_http_session_between_threads(fake_service):
    """requests' Session is not thread-safe, and Streamlit runs every browser session in threads of its own."""
    here = get_client(fake_service.url).session
    assert get_client("http://127.0.0.1:9").session is here  # one thread's calls reuse its connections
    with ThreadPoolExecutor(max_workers=2) as pool:
        elsewhere = list(pool.map(lambda _: get_client(fake_service.url).session, range(2)))
    assert all(session is not here for session in elsewhere)
    assert get_client(fake_service.url).info()["demo_models"] is True  # and it still talks to the service
