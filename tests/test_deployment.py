"""How BentoML is told to deploy the services: GPU shares that fit the machine, workers, batching, stage URLs."""

from __future__ import annotations

import pytest

from serving import deployment


@pytest.mark.parametrize(("gpus", "share"), [(0, 0.0), (1, 0.5), (2, 1.0), (8, 1.0)])
def test_each_stage_gets_a_gpu_share_that_exists(gpus, share):
    assert deployment.gpu_share(gpus) == share


def test_one_gpu_is_shared_by_both_stages_and_none_means_no_gpu_resource(monkeypatch):
    monkeypatch.setattr(deployment, "gpu_count", lambda: 1)
    assert deployment.stage_options("segment")["resources"] == {"gpu": 0.5}
    assert deployment.stage_options("diffusion")["resources"] == {"gpu": 0.5}
    monkeypatch.setattr(deployment, "gpu_count", lambda: 0)
    assert "resources" not in deployment.stage_options("diffusion")


def test_settings_set_the_gpus_workers_batching_and_urls(monkeypatch):
    from serving.settings import get_settings

    for name, value in {
        "DIFFUSION_GPU": "2",
        "DIFFUSION_WORKERS": "3",
        "SEGMENT_MAX_BATCH_SIZE": "1",
        "DIFFUSION_MAX_BATCH_SIZE": "6",
        "SEGMENT_SERVICE_URL": "http://sam-host:3001",
    }.items():
        monkeypatch.setenv(f"MOODSHIFT_{name}", value)
    get_settings.cache_clear()
    options = deployment.stage_options("diffusion")
    assert options["resources"] == {"gpu": 2.0} and options["workers"] == 3
    assert deployment.batching("segment") == {}  # a batch of one: batching off
    assert deployment.batching("diffusion") == {"batchable": True, "max_batch_size": 6, "max_latency_ms": 600_000}
    assert deployment.stage_url("segment") == "http://sam-host:3001" and deployment.stage_url("diffusion") is None
