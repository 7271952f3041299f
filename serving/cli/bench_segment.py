"""`python -m serving bench segment`: first-click vs later-click latency and SAM encoder throughput."""

import json
from pathlib import Path
from typing import Annotated, Literal

import typer

from serving.cli.app import bench_app, fail


def _integers(text: str, option: str, separator: str, count: int | None = None) -> tuple[int, ...]:
    """Positive integers separated by `separator` (exactly `count` of them when given), or a clear error."""
    try:
        values = tuple(int(part) for part in text.split(separator))
    except ValueError:
        values = ()
    if not values or min(values) < 1 or (count is not None and len(values) != count):
        shape = f"{count} " if count else ""
        fail(f"{option} {text!r} is not {shape}positive integers separated by {separator!r}")
    return values


@bench_app.command("segment")
def bench_segment(
    profile: Annotated[
        Literal["tiny", "random-full", "real"], typer.Option(help="tiny (fast, small), random-full (real size).")
    ] = "tiny",
    model: Annotated[
        Literal["vit_b", "vit_l", "vit_h"], typer.Option(help="SAM variant for random-full and real.")
    ] = "vit_h",
    clicks: Annotated[int, typer.Option(min=1, help="Clicks in the session; all but the first are 'later'.")] = 10,
    repeats: Annotated[int, typer.Option(min=1, help="First clicks and encoder batches timed (median).")] = 2,
    batch_sizes: Annotated[str, typer.Option(metavar="N,N,...", help="Encoder batch sizes to time.")] = "1,4",
    size: Annotated[str, typer.Option(metavar="WIDTHxHEIGHT", help="Size of the synthetic images.")] = "1024x768",
    device: Annotated[Literal["auto", "cpu", "cuda"], typer.Option(help="Torch device.")] = "auto",
    dtype: Annotated[
        Literal["auto", "float32", "float16", "bfloat16"],
        typer.Option(help="Encoder precision (auto: float16 on CUDA, float32 on CPU)."),
    ] = "auto",
    threads: Annotated[
        int | None,
        typer.Option(min=1, help="Torch CPU threads (default: torch's choice; 1 is steadier on a busy host)."),
    ] = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="Also write the numbers to this JSON file.")] = None,
) -> None:
    """Time SAM: first click (encode + decode), later clicks (decode only, p50/p95), encode images/s per batch."""
    import torch

    from serving.bench.segment import format_table, run_segment_bench
    from serving.models.errors import WeightsError
    from serving.models.sam import Segmenter
    from serving.settings import get_settings

    width, height = _integers(size, "--size", "x", count=2)
    sizes = _integers(batch_sizes, "--batch-sizes", ",")
    base = get_settings()
    settings = base.model_copy(
        update={
            "sam_profile": profile,
            "sam_model_type": model,
            "device": device,
            "dtype": dtype,
            "max_points": max(base.max_points, clicks),
        }
    )
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        segmenter = Segmenter.from_settings(settings)
    except (WeightsError, RuntimeError) as exc:
        fail(str(exc))
    typer.echo(f"benchmarking {segmenter.model_name} on {segmenter.device} ...", err=True)
    result = run_segment_bench(segmenter, clicks=clicks, repeats=repeats, batch_sizes=sizes, size=(width, height))
    typer.echo(format_table(result))
    if json_path is not None:
        json_path.write_text(json.dumps(result.to_dict(), indent=2) + "\n")
        typer.echo(f"wrote {json_path}", err=True)
