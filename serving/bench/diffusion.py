"""Diffusion benchmark: the blended runner vs diffusers' SDXL inpaint pipeline, batching, peak memory, seams, and
fast mode vs quality mode.

Both run on the same components, image, mask, size, steps, scheduler and guidance (in fast mode: the few-step
model's). Seconds per step are end to end (prompt, VAE encode, denoising, decode; the runner also composites) divided
by the steps, so the ratio is what a user waits. With `mode="fast"` it also times one edit in each mode on the same
components (quality: the model's scheduler, `quality_steps`, the settings' guidance) and the switch between them.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from serving.bench.segment import bench_image
from serving.core.blending import seam_score

if TYPE_CHECKING:
    import torch

    from serving.models.blended_sdxl import BlendedSDXLRunner

PROMPTS = ("a misty pine forest at dawn", "a neon city street at night", "a calm beach at sunset", "a galaxy")


@dataclass
class DiffusionBenchResult:
    """The numbers `bench diffusion` prints and writes as JSON (seconds, images per second, MiB)."""

    model: str
    profile: str
    device: str
    dtype: str
    torch_threads: int
    size: tuple[int, int]  # working size (width, height)
    mode: str
    steps: int
    runner_s_per_step: float
    pipeline_s_per_step: float
    batch: int
    single_images_per_s: float  # `batch` single runs
    batch_images_per_s: float  # one run_batch of `batch` requests
    repeats: int
    peak_mib: dict[str, float] = field(default_factory=dict)  # phase -> peak memory
    memory_kind: str = "cuda allocated"
    seam: dict[str, list[float]] = field(default_factory=dict)  # "shrink N" -> seam score per seed
    # mode="fast": seconds per edit in each mode ("quality", "fast"), per switch ("to fast", "to quality"), and how
    # each mode ran ("quality": "30 steps, guidance 7", ...)
    edit_s: dict[str, float] = field(default_factory=dict)
    switch_s: dict[str, float] = field(default_factory=dict)
    mode_settings: dict[str, str] = field(default_factory=dict)

    @property
    def speedup(self) -> float | None:
        """Quality over fast, seconds per edit (mode="fast" only)."""
        return self.edit_s["quality"] / self.edit_s["fast"] if self.edit_s else None

    @property
    def ratio(self) -> float:
        """Runner over pipeline, seconds per step (goal: at most 1.00)."""
        return self.runner_s_per_step / self.pipeline_s_per_step

    @property
    def batch_speedup(self) -> float:
        return self.batch_images_per_s / self.single_images_per_s

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"ratio": self.ratio, "batch_speedup": self.batch_speedup, "speedup": self.speedup}


def subject_ellipse(size: tuple[int, int]) -> np.ndarray:
    """A centred elliptic subject covering about a quarter of the image (edges not on latent cells)."""
    width, height = size
    ys, xs = np.mgrid[0:height, 0:width]
    return ((xs - width / 2) / (0.3 * width)) ** 2 + ((ys - height / 2) / (0.42 * height)) ** 2 < 1


@contextlib.contextmanager
def peak_memory(device: torch.device, into: dict[str, float], phase: str) -> Iterator[None]:
    """Record the phase's peak (the largest over repeats): CUDA allocated bytes, or the process RSS sampled
    every 5 ms on CPU (which includes the weights and everything else the process holds)."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        yield
        torch.cuda.synchronize(device)
        into[phase] = max(into.get(phase, 0.0), torch.cuda.max_memory_allocated(device) / 2**20)
        return
    import psutil

    process, peak, done = psutil.Process(), [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], process.memory_info().rss)
            done.wait(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield
    finally:
        done.set()
        sampler.join()
        into[phase] = max(into.get(phase, 0.0), peak[0] / 2**20, process.memory_info().rss / 2**20)


def _timed(device: torch.device, action: Callable[[], Any]) -> float:
    import torch

    start = time.perf_counter()
    action()
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # kernels run asynchronously
    return time.perf_counter() - start


@contextlib.contextmanager
def _pipeline_vae(runner: BlendedSDXLRunner) -> Iterator[None]:
    """The VAE in the model dtype while the pipeline runs: it does its own fp16 upcast and fails on a fp32 VAE."""
    vae = runner.pipe.vae
    vae.to(dtype=runner.dtype)
    try:
        yield
    finally:
        vae.to(dtype=runner.vae_dtype)


def run_diffusion_bench(
    runner: BlendedSDXLRunner,
    *,
    mode: str = "quality",
    steps: int | None = None,
    quality_steps: int | None = None,
    batch: int = 4,
    repeats: int = 1,
    seam_seeds: int = 0,
    shrink_steps: int = 3,
    defaults: Mapping[str, Any] | None = None,
) -> DiffusionBenchResult:
    """Time a runner edit vs an inpaint-pipeline call and `batch` single runs vs one batch in `mode` (best of
    `repeats`: on a shared CPU the minimum is the least disturbed estimate, as `timeit` advises), and optionally
    score the seam with shrinking off vs `shrink_steps` over `seam_seeds` seeds. Warm-up first. `steps`: default the
    mode's (the settings' for quality, the few-step model's for fast). In fast mode, also one edit per mode and the
    switches between them (`quality_steps`: the quality edit's, default the settings'). `defaults`: the edit options'
    defaults (the settings'), for the runner and the pipeline."""
    import torch
    from diffusers import StableDiffusionXLInpaintPipeline

    from serving.core.edit_options import ModeRules, check_edit_options, mode_rules
    from serving.models.blended_sdxl import DiffusionRequest

    device = runner.device
    size = runner.working_size_for(1, 1)  # square, about the runner's working pixels
    image, subject = bench_image(0, size), subject_ellipse(size)

    def rules(edit_mode: str) -> ModeRules:
        return mode_rules(edit_mode, runner.describe_fast)

    base = check_edit_options({"mode": mode, "steps": steps}, defaults, rules)
    steps = base.steps

    def request(index: int = 0, **options: Any) -> DiffusionRequest:
        values = {"seed": index, "mode": mode, "steps": steps, "shrink_steps": 0} | options
        return DiffusionRequest(
            image, subject, PROMPTS[index % len(PROMPTS)], check_edit_options(values, defaults, rules)
        )

    inpaint = StableDiffusionXLInpaintPipeline(**runner.pipe.components)
    inpaint.scheduler = runner.new_scheduler(mode)
    inpaint.set_progress_bar_config(disable=True)
    mask_image = (~subject).astype(np.uint8) * 255  # white = repaint

    def pipeline_call(call_steps: int) -> None:
        runner.use_mode(mode)  # the pipeline shares the runner's UNet: its weights in this mode
        with _pipeline_vae(runner):
            inpaint(
                PROMPTS[0],
                image=image,
                mask_image=mask_image,
                width=size[0],
                height=size[1],
                strength=1.0,
                num_inference_steps=call_steps,
                guidance_scale=base.guidance,
                negative_prompt=base.negative_prompt,
                generator=torch.Generator("cpu").manual_seed(0),
            )

    runner.run(request(steps=2))  # warm-up: lazy kernels, allocator, thread pools
    pipeline_call(2)
    peaks: dict[str, float] = {}
    runner_s, pipeline_s = [], []
    for _ in range(repeats):  # interleaved, so a busy neighbour slows both alike
        with peak_memory(device, peaks, "runner"):
            runner_s.append(_timed(device, lambda: runner.run(request())))
        with peak_memory(device, peaks, "pipeline"):
            pipeline_s.append(_timed(device, lambda: pipeline_call(steps)))
    requests = [request(index) for index in range(batch)]
    singles_s, batch_s = [], []
    for _ in range(repeats):
        singles_s.append(sum(_timed(device, lambda r=r: runner.run(r)) for r in requests))
        with peak_memory(device, peaks, f"runner batch {batch}"):
            batch_s.append(_timed(device, lambda: runner.run_batch(requests)))

    seam: dict[str, list[float]] = {}
    for shrink in (0, shrink_steps) if seam_seeds else ():
        images = [runner.run(request(seed, shrink_steps=shrink)).images[0] for seed in range(seam_seeds)]
        seam[f"shrink {shrink}"] = [seam_score(output, subject) for output in images]

    edit_s, switch_s, mode_settings = (
        _time_modes(runner, request, quality_steps, repeats) if mode == "fast" else ({}, {}, {})
    )
    profile = runner.profile.profile if runner.profile else "custom"
    return DiffusionBenchResult(
        model=runner.model_name,
        profile=profile,
        device=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        dtype=str(runner.dtype).removeprefix("torch."),
        torch_threads=torch.get_num_threads(),
        size=size,
        mode=mode,
        steps=steps,
        runner_s_per_step=min(runner_s) / steps,
        pipeline_s_per_step=min(pipeline_s) / steps,
        batch=batch,
        single_images_per_s=batch / min(singles_s),
        batch_images_per_s=batch / min(batch_s),
        repeats=repeats,
        peak_mib=peaks,
        memory_kind="cuda allocated" if device.type == "cuda" else "process RSS",
        seam=seam,
        edit_s=edit_s,
        switch_s=switch_s,
        mode_settings=mode_settings,
    )


def _time_modes(
    runner: BlendedSDXLRunner, request: Callable[..., Any], quality_steps: int | None, repeats: int
) -> tuple[dict[str, float], dict[str, float], dict[str, str]]:
    """Seconds of one edit in each mode, weights already in that mode, and of each switch; best of `repeats`."""
    device = runner.device
    edits = {
        "quality": request(mode="quality", steps=quality_steps, guidance=None),
        "fast": request(mode="fast", steps=None, guidance=None),
    }
    times: dict[str, list[float]] = {name: [] for name in ("quality", "fast", "to fast", "to quality")}
    runner.use_mode("fast")  # so that the first "to quality" is a switch too
    for _ in range(repeats):
        for edit_mode in ("quality", "fast"):
            times[f"to {edit_mode}"].append(_timed(device, lambda m=edit_mode: runner.use_mode(m)))
            times[edit_mode].append(_timed(device, lambda m=edit_mode: runner.run(edits[m])))
    settings = {name: f"{edit.options.steps} steps, guidance {edit.options.guidance:g}" for name, edit in edits.items()}
    best = {name: min(values) for name, values in times.items()}
    return {name: best[name] for name in edits}, {name: best[name] for name in ("to fast", "to quality")}, settings


def format_table(result: DiffusionBenchResult) -> str:
    """A plain-text report of one benchmark run."""
    width, height = result.size
    lines = [
        f"{result.model} ({result.profile}) on {result.device}, {result.dtype}, {result.torch_threads} threads, "
        f"{width}×{height}, {result.mode} mode, {result.steps} steps, best of {result.repeats}",
        f"  runner            {result.runner_s_per_step:8.4f} s/step  "
        f"({result.runner_s_per_step * result.steps:.2f} s)",
        f"  inpaint pipeline  {result.pipeline_s_per_step:8.4f} s/step  "
        f"({result.pipeline_s_per_step * result.steps:.2f} s)",
        f"  ratio             {result.ratio:8.2f}  (goal <= 1.00)",
        f"  {result.batch} single runs     {result.single_images_per_s:8.3f} images/s",
        f"  batch of {result.batch}        {result.batch_images_per_s:8.3f} images/s  ({result.batch_speedup:.2f}x)",
    ]
    lines += [f"  peak {result.memory_kind}, {phase}: {mib:.0f} MiB" for phase, mib in result.peak_mib.items()]
    for name, seconds in result.edit_s.items():
        lines.append(f"  {name} edit{'':<{8 - len(name)}}  {seconds:8.3f} s  ({result.mode_settings[name]})")
    if result.speedup is not None:
        lines.append(f"  fast vs quality   {result.speedup:8.2f}x faster per edit")
        lines += [f"  switch {name:<10} {seconds:8.3f} s" for name, seconds in result.switch_s.items()]
    for name, scores in result.seam.items():
        lines.append(f"  seam score, {name}: mean {np.mean(scores):.2f} over {len(scores)} seeds (lower = smoother)")
    return "\n".join(lines)
