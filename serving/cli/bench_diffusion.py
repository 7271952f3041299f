"""`python -m serving bench diffusion`: blended runner vs diffusers' SDXL inpaint pipeline, batching, memory."""

import json
from pathlib import Path
from typing import Annotated, Literal

import typer

from serving.cli.app import bench_app, fail
from serving.core.edit_options import EDIT_OPTIONS

MAX_STEPS = int(EDIT_OPTIONS["steps"].maximum)


@bench_app.command("diffusion")
def bench_diffusion(
    profile: Annotated[
        Literal["tiny", "random-full", "real"],
        typer.Option(help="tiny (fast, small), random-full (SDXL base size, random weights), real (checkpoints)."),
    ] = "tiny",
    size: Annotated[int, typer.Option(min=64, help="Side of the square working size, pixels (multiple of 64).")] = 1024,
    steps: Annotated[int, typer.Option(min=2, max=MAX_STEPS, help="Denoising steps per run.")] = 30,
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
    """Time seconds per step of the runner vs StableDiffusionXLInpaintPipeline, a batch vs single runs, peak memory."""
    from serving.bench.diffusion import format_table, run_diffusion_bench
    from serving.models.blended_sdxl import BlendedSDXLRunner
    from serving.models.errors import WeightsError
    from serving.settings import get_settings

    if size % 64:
        fail(f"--size {size} is not a multiple of 64")
    settings = get_settings().model_copy(
        update={"diffusion_profile": profile, "device": device, "dtype": dtype, "working_pixels": size * size}
    )
    try:
        runner = BlendedSDXLRunner.from_settings(settings)
    except (WeightsError, RuntimeError) as exc:
        fail(str(exc))
    typer.echo(f"benchmarking {runner.model_name} on {runner.device} ...", err=True)
    result = run_diffusion_bench(
        runner,
        steps=steps,
        batch=batch,
        repeats=repeats,
        seam_seeds=seam_seeds,
        shrink_steps=shrink_steps,
        defaults=settings.edit_defaults(),
    )
    typer.echo(format_table(result))
    if json_path is not None:
        json_path.write_text(json.dumps(result.to_dict(), indent=2) + "\n")
        typer.echo(f"wrote {json_path}", err=True)
