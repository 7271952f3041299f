"""How BentoML deploys the services: traffic limits, resources, adaptive batching and where the stage services run.

BentoML reads these options when it defines the service classes, so they come from the settings (the environment)
of the process that imports `serving.service`, when it imports it; everything else reads the settings when a
service is constructed. Scale-out is BentoML's own (workers, replicas); these are its knobs.
"""

from __future__ import annotations

from typing import Any, Literal

import bentoml

from serving.settings import get_settings

Stage = Literal["segment", "diffusion"]

# How the gateway's client to a stage service recycles its HTTP session. BentoML 1.4 replaces the session every 100
# requests or 300 s by closing the old one, which cuts every call still in flight on it: with a running edit's
# progress polled every 0.25 s, an edit failed with "Server disconnected" after about 100 polls. So the session is
# never recycled (the stages are reached over a local socket or a fixed URL; nothing is gained by reconnecting).
RUNNER_CONNECTION = {"max_requests": 2**62, "max_age": 1e12}


def _traffic() -> dict[str, Any]:
    settings = get_settings()
    return {"timeout": settings.traffic_timeout_s, "max_concurrency": settings.max_concurrency}


def stage_options(stage: Stage) -> dict[str, Any]:
    """A model service: its share of the GPUs and its workers; 4 threads so progress, info and cancel calls are
    answered during a run."""
    settings = get_settings()
    gpu = settings.segment_gpu if stage == "segment" else settings.diffusion_gpu
    if gpu is None:
        gpu = gpu_share(gpu_count())
    options: dict[str, Any] = {
        "traffic": _traffic(),
        "runner_connection": RUNNER_CONNECTION,
        "workers": settings.segment_workers if stage == "segment" else settings.diffusion_workers,
        "threads": 4,
    }
    if gpu:
        options["resources"] = {"gpu": gpu}
    return options


def gpu_share(gpus: int) -> float:
    """Each stage service's part of the machine's GPUs, for BentoML's allocator: a GPU each with two or more; half
    of the one GPU with one (BentoML puts both halves on GPU 0; a whole GPU each would send the second stage to a
    GPU that does not exist, where it would find none and run on the CPU); none without a GPU."""
    if gpus >= 2:
        return 1.0
    return 0.5 if gpus == 1 else 0.0


def gpu_count() -> int:
    """GPUs on this machine, counted as BentoML's allocator counts them (NVML; CUDA_VISIBLE_DEVICES respected),
    without importing torch."""
    from bentoml._internal.resource import system_resources  # the allocator's own count, so both agree

    return len(system_resources()["nvidia.com/gpu"])


def gateway_options() -> dict[str, Any]:
    """The gateway: no model, threads for concurrent requests and the edit jobs."""
    return {"traffic": _traffic(), "workers": 1, "threads": max(8, get_settings().max_concurrency)}


def batching(stage: Stage) -> dict[str, Any]:
    """Adaptive batching of a stage's model call; a batch size of 1 turns it off (the API still takes a list)."""
    settings = get_settings()
    size, latency_ms = (
        (settings.segment_max_batch_size, settings.segment_max_latency_ms)
        if stage == "segment"
        else (settings.diffusion_max_batch_size, settings.diffusion_max_latency_ms)
    )
    if size <= 1:
        return {}
    return {"batchable": True, "max_batch_size": size, "max_latency_ms": latency_ms}


def stage_url(stage: Stage) -> str | None:
    """URL of a stage service running elsewhere, or None to run it beside the gateway."""
    settings = get_settings()
    return settings.segment_service_url if stage == "segment" else settings.diffusion_service_url


def depends_on_stage(service: Any, stage: Stage) -> Any:
    """The gateway's dependency on a stage service: beside it (pickle over a local socket), or at the stage's URL
    from the settings (JSON: a service served on its own refuses pickle, and should)."""
    return bentoml.depends(service, url=stage_url(stage))
