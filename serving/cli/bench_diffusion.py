"""`python -m serving bench diffusion`: blended runner vs diffusers' SDXL inpaint pipeline, batching, memory; with
`--mode fast`, fast vs quality mode on the same components."""

from pathlib import Path
from typing import Annotated, Literal

import typer

from serving.cli.app import bench_app, check_writable, fail, write_json
from serving.core.edit_options import EDIT_OPTIONS

MIN_STEPS, MAX_STEPS = int(EDIT_OPTIONS["steps"].minimum), int(EDIT_OPTIONS["steps"].maximum)


@bench_app.command("diffusion")
def bench_diffusion(
    profile: Annotated[
        Literal["tiny", "random-full", "real"],
        typer.Option(help="tiny (fast, small), random-full (SDXL base size, random weights), real (checkpoints)."),
    ] = "tiny",
    size: Annotated[int, typer.Option(min=64, help="Side of the square working size, pixels (multiple of 64).")] = 1024,
    mode: Annotated[
        Literal["quality", "fast"],
        typer.Option(help="quality, or fast: the few-step model (its scheduler, steps, guidance) vs quality mode."),
    ] = "quality",
    steps: Annotated[
        int | None,
        typer.Option(
            min=MIN_STEPS,
            max=MAX_STEPS,
            help="Denoising steps per run (default: an edit's, MOODSHIFT_DEFAULT_STEPS; fast: the few-step model's).",
        ),
    ] = None,
    quality_steps: Annotated[
        int | None,
        typer.Option(
            min=MIN_STEPS,
            max=MAX_STEPS,
            help="With --mode fast: the steps of the quality edit it is timed against (default: an edit's).",
        ),
    ] = None,
    batch: Annotated[int, typer.Option(min=1, max=8, help="Requests in the batch compared with single runs.")] = 4,
    repeats: Annotated[int, typer.Option(min=1, help="Timed repeats of each measurement (best is kept).")] = 1,
    seam_seeds: Annotated[
        int, typer.Option(min=0, help="Also score the seam with shrinking off vs --shrink-steps over N seeds.")
    ] = 0,
    shrink_steps: Annotated[int, typer.Option(min=1, help="Shrink steps for the seam comparison.")] = 3,
    device: Annotated[Literal["auto", "cpu", "cuda"], typer.Option(help="Torch device.")] = "auto",
    dtype: Annotated[
        Literal["auto", "float32", "float16", "bfloat16"],
        typer.Option(help="Model precision (auto: float16 on CUDA, float32 on CPU)."),
    ] = "auto",
    json_path: Annotated[Path | None, typer.Option("--json", help="Also write the numbers to this JSON file.")] = None,
) -> None:
    """Time seconds per step of the runner vs StableDiffusionXLInpaintPipeline, a batch vs single runs, peak memory;
    with --mode fast, in fast mode, and seconds per edit in fast vs quality mode."""
    import torch

    from serving.bench.diffusion import format_table, run_diffusion_bench
    from serving.core.errors import InputError
    from serving.models.blended_sdxl import BlendedSDXLRunner
    from serving.models.errors import WeightsError
    from serving.models.profiles import resolve_device
    from serving.settings import get_settings

    if size % 64:
        fail(f"--size {size} is not a multiple of 64")
    if json_path is not None:
        check_writable(json_path)
    settings = get_settings().model_copy(
        update={"diffusion_profile": profile, "device": device, "dtype": dtype, "working_pixels": size * size}
    )
    try:
        if resolve_device(settings).type == "cpu":
            # Random weights drive some activations to subnormal floats, which CPUs compute many times slower (GPUs
            # do not): without this one scheduler's timesteps ran 10x slower than another's on the tiny UNet. Set
            # before torch starts its thread pool, whose threads inherit it.
            torch.set_flush_denormal(True)
        runner = BlendedSDXLRunner.from_settings(settings)
    except (WeightsError, RuntimeError) as exc:
        fail(str(exc))
    typer.echo(f"benchmarking {runner.model_name} on {runner.device} in {mode} mode ...", err=True)
    try:
        result = run_diffusion_bench(
            runner,
            mode=mode,
            steps=steps,
            quality_steps=quality_steps,
            batch=batch,
            repeats=repeats,
            seam_seeds=seam_seeds,
            shrink_steps=shrink_steps,
            defaults=settings.edit_defaults(),
        )
    except InputError as exc:  # --mode fast without few-step weights: which file to put where
        fail(str(exc))
    typer.echo(format_table(result))
    if json_path is not None:
        write_json(json_path, result.to_dict())
