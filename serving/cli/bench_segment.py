"""`python -m serving bench segment`: first-click vs later-click latency and SAM encoder throughput; with `--auto`,
the automatic subject's time per photo and IoU on composites with a known subject."""

from pathlib import Path
from typing import Annotated, Literal

import typer

from serving.cli.app import bench_app, check_writable, fail, parse_list, write_json


def _integers(text: str, option: str, separator: str, count: int | None = None) -> tuple[int, ...]:
    """Positive integers separated by `separator` (exactly `count` of them when given), or a clear error."""
    values = tuple(parse_list(text, int, separator) or ())
    if not values or min(values) < 1 or (count is not None and len(values) != count):
        shape = f"{count} " if count else ""
        fail(f"{option} {text!r} is not {shape}positive integers separated by {separator!r}")
    return values


@bench_app.command("segment")
def bench_segment(
    profile: Annotated[
        Literal["tiny", "random-full", "real"],
        typer.Option(help="tiny (fast, small), random-full (real size, random weights), real (checkpoints)."),
    ] = "tiny",
    model: Annotated[
        Literal["vit_b", "vit_l", "vit_h"], typer.Option(help="SAM variant for random-full and real.")
    ] = "vit_h",
    clicks: Annotated[int, typer.Option(min=1, help="Clicks in the session; all but the first are 'later'.")] = 10,
    repeats: Annotated[int, typer.Option(min=1, help="First clicks and encoder batches timed (median).")] = 2,
    batch_sizes: Annotated[str, typer.Option(metavar="N,N,...", help="Encoder batch sizes to time.")] = "1,4",
    size: Annotated[
        str | None,
        typer.Option(metavar="WIDTHxHEIGHT", help="Size of the images (default 1024x768; with --auto 1152x864, 1 MP)."),
    ] = None,
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
    auto: Annotated[
        bool,
        typer.Option(
            "--auto",
            help="Instead: the automatic subject (the salient model of the settings) on scikit-image's sample photos "
            "and on composites with a known subject: seconds per photo and IoU. Uses --size and --repeats.",
        ),
    ] = False,
) -> None:
    """Time SAM: first click (encode + decode), later clicks (decode only, p50/p95), encode images/s per batch; or,
    with --auto, the automatic subject: seconds per photo and IoU with a known subject."""
    import torch

    from serving.bench.segment import format_table, run_segment_bench
    from serving.models.errors import WeightsError
    from serving.models.sam import Segmenter
    from serving.settings import get_settings

    width, height = _integers(size or ("1152x864" if auto else "1024x768"), "--size", "x", count=2)
    if json_path is not None:
        check_writable(json_path)
    if threads is not None:
        torch.set_num_threads(threads)
    if auto:
        _bench_auto((width, height), repeats, json_path)
        return
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
    try:
        segmenter = Segmenter.from_settings(settings)
    except (WeightsError, RuntimeError) as exc:
        fail(str(exc))
    typer.echo(f"benchmarking {segmenter.model_name} on {segmenter.device} ...", err=True)
    result = run_segment_bench(segmenter, clicks=clicks, repeats=repeats, batch_sizes=sizes, size=(width, height))
    typer.echo(format_table(result))
    if json_path is not None:
        write_json(json_path, result.to_dict())


def _bench_auto(size: tuple[int, int], repeats: int, json_path: Path | None) -> None:
    from serving.bench.salient import format_auto_table, run_auto_bench
    from serving.models.subject import SubjectFinder

    finder = SubjectFinder.from_settings()
    if finder.detector is None:
        fail(f"the automatic subject is not available: {finder.detector_problem}")
    typer.echo(f"benchmarking the automatic subject ({finder.detector.name}) ...", err=True)
    result = run_auto_bench(finder, size, repeats)
    typer.echo(format_auto_table(result))
    if json_path is not None:
        write_json(json_path, result.to_dict())
