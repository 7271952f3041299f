"""One error convention: each kind of failure has one HTTP status, crosses a stage service's HTTP boundary as a
BentoML exception with that status, and comes back on the gateway's side as the same kind with its message."""

from __future__ import annotations

import json
from http import HTTPStatus

import pytest
from bentoml.exceptions import BentoMLException

from serving.core.errors import (
    InputError,
    InternalError,
    NotCachedError,
    NotFoundError,
    OverloadedError,
    QueueFullError,
    TooLargeError,
)
from serving.http_errors import StageClient, error_from_stage, error_response, raises_over_http, status_and_message
from serving.models.errors import WeightsError


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (InputError("steps 0 must be an integer from 1 to 150"), 400),
        (TooLargeError("image is 50,000,000 pixels"), 413),
        (NotFoundError("no edit job with id 'x'"), 404),
        (NotCachedError("image_id 'y' is not cached"), 409),
        (QueueFullError("too many edits in progress (4)"), 429),
        (OverloadedError("the service is overloaded; try again shortly"), 503),
    ],
)
def test_each_kind_has_one_status_and_survives_a_stage_boundary(error, status):
    assert status_and_message(error) == (status, str(error))
    response = error_response(error)
    assert response.status_code == status and json.loads(response.body) == {"error": str(error)}

    @raises_over_http
    def stage_api():
        raise error

    with pytest.raises(BentoMLException) as crossed:
        stage_api()
    assert crossed.value.error_code == HTTPStatus(status)
    # What BentoML's client raises for that answer: the status and the body BentoML wrote ([{"error": ...}]).
    over_http = BentoMLException(json.dumps([{"error": str(error)}]), error_code=HTTPStatus(status))
    back = error_from_stage(over_http)
    expected_kind = OverloadedError if status == 429 else type(error)
    assert isinstance(back, expected_kind)
    if status not in (429, 503):  # BentoML's own overload answers are reworded the same way for every stage
        assert str(back) == str(error)


def test_an_internal_failure_is_a_short_500_and_a_remote_one_says_where_to_look():
    status, message = status_and_message(RuntimeError("CUDA out of memory (simulated)"))
    assert status == 500 and message == "internal error: RuntimeError: CUDA out of memory (simulated)"
    generic = '{"error":"An unexpected error has occurred, please check the server log."}'
    remote = error_from_stage(BentoMLException(generic, error_code=HTTPStatus.INTERNAL_SERVER_ERROR))
    assert isinstance(remote, InternalError)
    assert status_and_message(remote) == (
        500,
        "internal error: a stage service failed: An unexpected error has occurred, please check the server log.",
    )


def test_missing_weights_are_an_internal_error_whose_whole_message_reaches_the_caller():
    # SAM loads on a first click: its missing file must answer with the fix, not a message cut at 200 characters.
    path = "checkpoints/" + "nested/" * 30 + "sam_vit_h_4b8939.pth"
    error = WeightsError(f"SAM checkpoint not found at {path}. Download the official sam_vit_h_4b8939.pth.")
    assert len(str(error)) > 200 and isinstance(error, InternalError)
    assert status_and_message(error) == (500, f"internal error: {error}")


def test_a_stage_client_raises_the_stages_own_kind():
    class Stage:
        @raises_over_http
        def segment_cached(self, image_id: str) -> dict:
            raise NotCachedError(f"image_id {image_id!r} is not cached")

    with pytest.raises(NotCachedError, match="image_id 'abc' is not cached"):
        StageClient(Stage()).segment_cached("abc")
