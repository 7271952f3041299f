"""Gateway fixes the reliability suite forced (tests/reliability/), checked without a server: overload and stage
errors answered clearly, strict click types, long texts refused before any work, stage connections never cut."""

from __future__ import annotations

import json
from http import HTTPStatus

import numpy as np
import pytest
from bentoml.exceptions import BentoMLException, ServiceUnavailable
from pydantic import ValidationError

from serving.core import prompt_text
from serving.core.edit_options import MAX_TEXT_CHARS
from serving.core.errors import InputError
from serving.http_errors import error_response
from serving.models.ollama_stage import PromptStage
from serving.pipeline import Pipeline
from serving.service import DiffusionService, Point, SegmentationService
from serving.settings import get_settings

STAGE_500 = '{"error":"An unexpected error has occurred, please check the server log."}'


@pytest.mark.parametrize("status", [HTTPStatus.TOO_MANY_REQUESTS, HTTPStatus.SERVICE_UNAVAILABLE])
def test_a_stage_shedding_load_is_a_503_not_a_500(status):
    """The SAM batcher past its latency budget answers 503 "process is overloaded"; past max_concurrency, 429."""
    response = error_response(ServiceUnavailable(STAGE_500, error_code=status))
    assert response.status_code == 503
    assert response.body == b'{"error":"the service is overloaded; try again shortly"}'


def test_a_stage_failure_is_a_short_500_without_nested_json():
    response = error_response(BentoMLException(STAGE_500, error_code=HTTPStatus.INTERNAL_SERVER_ERROR))
    assert response.status_code == 500
    assert response.body == (
        b'{"error":"internal error: a stage service failed: An unexpected error has occurred, please check the '
        b'server log."}'
    )
    assert error_response(RuntimeError("[not, an, object]")).body == (
        b'{"error":"internal error: RuntimeError: [not, an, object]"}'
    )


@pytest.mark.parametrize("bad", [{"x": True, "y": 1}, {"x": "12", "y": 1}, {"x": 1, "y": 1, "label": True}])
def test_a_click_must_have_numbers_not_lookalikes(bad):
    with pytest.raises(ValidationError):
        Point.model_validate_json(json.dumps(bad))
    assert Point.model_validate_json('{"x": 3, "y": 4.5}') == Point(x=3.0, y=4.5, label=1)


def test_stage_connections_are_never_recycled_under_a_running_call():
    """BentoML 1.4 closes its client session to a stage every 100 calls, cutting the calls in flight on it."""
    for service in (SegmentationService, DiffusionService):
        connection = service.config["runner_connection"]
        assert connection["max_requests"] >= 2**62 and connection["max_age"] >= 1e12


@pytest.fixture()
def pipeline(monkeypatch):
    """A pipeline without model stages (prepare_edit checks requests before any model runs), recording every
    text it cleans."""
    cleaned: list[int] = []
    real = prompt_text.strip_unprintable
    monkeypatch.setattr(prompt_text, "strip_unprintable", lambda text: cleaned.append(len(text)) or real(text))
    settings = get_settings()
    stage = Pipeline(None, None, PromptStage(settings), settings)
    stage.cleaned = cleaned
    return stage


@pytest.mark.parametrize(
    ("field", "message"),
    [
        ("prompt", f"prompt has 1050000 characters; at most {MAX_TEXT_CHARS}"),
        ("negative_prompt", f"negative_prompt has 1050000 characters; at most {MAX_TEXT_CHARS}"),
    ],
)
def test_a_megabyte_prompt_is_refused_before_it_is_cleaned_or_tokenized(pipeline, field, message):
    image = np.zeros((8, 8, 3), dtype=np.uint8)
    mask = np.zeros((8, 8), dtype=bool)
    mask[2:6, 2:6] = True
    huge = "misty, " * 150_000
    request = {"prompt": huge} if field == "prompt" else {"prompt": "calm forest", "options": {field: huge}}
    with pytest.raises(InputError, match=message):
        pipeline.prepare_edit(image, subject_mask=mask, **request)
    assert pipeline.cleaned == []
    prepared = pipeline.prepare_edit(
        image, subject_mask=mask, prompt="calm\x00forest", options={"negative_prompt": "x" * 2000}
    )
    assert prepared.prompt == "calm forest" and prepared.options.negative_prompt == "x" * 2000
