"""`python -m serving bench serve`: requests/s and latency of the HTTP service, batching on vs off; `--split`, the
stage services on their own servers; `--folder`, photos/s of `edit PHOTO... --server` at several concurrencies."""

import json
from pathlib import Path
from typing import Annotated

import typer

from serving.cli.app import bench_app, fail


def _client_counts(text: str, option: str = "--clients") -> list[int]:
    try:
        counts = [int(part) for part in text.split(",")]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1 or max(counts) > 64:
        fail(f"{option} {text!r} is not a list of counts from 1 to 64 such as 1,4,8")
    return counts


@bench_app.command("serve")
def bench_serve(
    url: Annotated[
        str | None, typer.Option(help="A running service to measure (then only its batching setting is measured).")
    ] = None,
    clients: Annotated[str, typer.Option(metavar="N,N,...", help="Concurrent client counts.")] = "1,4,8",
    per_client: Annotated[int, typer.Option(min=1, max=100, help="/segment requests per client.")] = 5,
    size: Annotated[int, typer.Option(min=64, max=4096, help="Width of the synthetic photos (height = 3/4).")] = 640,
    edit_steps: Annotated[int, typer.Option(min=1, max=50, help="Denoising steps of each /edit.")] = 2,
    split: Annotated[
        bool,
        typer.Option(
            "--split",
            help="Instead: a repeat click and an edit through stage services on their own servers (gateway pointed "
            "at them by URL) vs the single-process service, alternating; --per-client sets the repeats.",
        ),
    ] = False,
    http_clients: Annotated[
        bool,
        typer.Option(
            "--http-clients",
            help="Instead: what clients pay — a repeat click by image id over HTTP vs in-process, a 12 MP JPEG as a "
            "multipart upload vs base64 JSON, an edit with previews on vs off; --per-client sets the repeats.",
        ),
    ] = False,
    folder: Annotated[
        bool,
        typer.Option(
            "--folder",
            help="Instead: photos/s of a folder edit (`edit PHOTO... --server`, zero-click) at each --concurrency, "
            "on --url or on a local service with batching on; --photos photos of --size width.",
        ),
    ] = False,
    concurrency: Annotated[
        str, typer.Option(metavar="N,N,...", help="With --folder: edits in flight at once, per run.")
    ] = "1,4",
    photos: Annotated[int, typer.Option(min=1, max=200, help="With --folder: photos in the folder.")] = 8,
    json_path: Annotated[Path | None, typer.Option("--json", help="Also write the numbers to this JSON file.")] = None,
) -> None:
    """Load the service over HTTP: /segment (new image, repeat click) and /edit; batching on vs off; HTTP overhead.

    Without --url it starts two local services with the current settings (profile defaults to tiny here): one with
    adaptive batching as configured and one with batch size 1, and stops them afterwards.
    """
    import os
    import tempfile

    import numpy as np

    from serving.bench.serve import bench_server, format_table, in_process_repeat_click_ms
    from serving.processes import running_service
    from serving.settings import get_settings

    photo_size = (size, size * 3 // 4)
    if split:
        _bench_split(photo_size, per_client, edit_steps, json_path)
        return
    if http_clients:
        _bench_http_clients(url, photo_size, per_client, json_path)
        return
    if folder:
        _bench_folder(url, _client_counts(concurrency, "--concurrency"), photos, photo_size, edit_steps, json_path)
        return
    counts = _client_counts(clients, "--clients")
    results = []
    if url:
        results += bench_server(url.rstrip("/"), "as-is", counts, per_client, photo_size, edit_steps)
    else:
        os.environ.setdefault("MOODSHIFT_PROFILE", "tiny")
        log_dir = Path(tempfile.mkdtemp(prefix="moodshift-bench-"))
        for batching, env in (
            ("on", {}),
            ("off", {"MOODSHIFT_SEGMENT_MAX_BATCH_SIZE": "1", "MOODSHIFT_DIFFUSION_MAX_BATCH_SIZE": "1"}),
        ):
            typer.echo(f"starting a service with batching {batching} (log: {log_dir / f'batching-{batching}.log'})")
            with running_service(env, log_dir / f"batching-{batching}.log") as started:
                results += bench_server(started, batching, counts, per_client, photo_size, edit_steps)
    get_settings.cache_clear()
    single = {r.scenario: r for r in results if r.clients == 1 and r.batching != "off"}  # the default setup
    overhead = {}
    if "segment, repeat click" in single:
        local = in_process_repeat_click_ms(photo_size, max(10, per_client), get_settings())
        for scenario, latencies in local.items():
            http_p50, local_p50 = single[scenario].percentile(50), float(np.median(latencies))
            overhead[scenario] = {
                "http_p50_ms": http_p50,
                "in_process_p50_ms": local_p50,
                "overhead_p50_ms": http_p50 - local_p50,
            }
    typer.echo(format_table(results, overhead))
    if json_path:
        json_path.write_text(json.dumps({"results": [r.row() for r in results], "overhead": overhead}, indent=2))
        typer.echo(f"wrote {json_path}")


def _bench_split(photo_size: tuple[int, int], repeats: int, edit_steps: int, json_path: Path | None) -> None:
    """The single service and the split deployment side by side (profile defaults to tiny here)."""
    import os
    import tempfile

    from serving.bench.split import compare_split, format_split_table
    from serving.processes import running_service, running_split_service

    os.environ.setdefault("MOODSHIFT_PROFILE", "tiny")
    log_dir = Path(tempfile.mkdtemp(prefix="moodshift-bench-split-"))
    typer.echo(f"starting one service and a split deployment (logs: {log_dir})")
    with running_service({}, log_dir / "single.log") as single, running_split_service({}, log_dir) as urls:
        result = compare_split(single, urls["gateway"], photo_size, max(repeats, 5), max(repeats // 3, 3), edit_steps)
    typer.echo(format_split_table(result))
    if json_path:
        json_path.write_text(json.dumps(result.to_dict(), indent=2))
        typer.echo(f"wrote {json_path}")


def _bench_http_clients(url: str | None, photo_size: tuple[int, int], repeats: int, json_path: Path | None) -> None:
    """The three client-side comparisons on one service (started here, tiny and without Ollama, unless --url)."""
    import contextlib
    import os
    import tempfile

    from serving.bench.clients import format_pairs, jpeg_photo, previews, repeat_click, uploads
    from serving.processes import running_service
    from serving.settings import get_settings

    os.environ.setdefault("MOODSHIFT_PROFILE", "tiny")
    env = {"MOODSHIFT_OLLAMA_ENABLED": "false", "MOODSHIFT_SEGMENT_MAX_BATCH_SIZE": "1"}
    log = Path(tempfile.mkdtemp(prefix="moodshift-bench-clients-")) / "service.log"
    with contextlib.ExitStack() as stack:
        base = url.rstrip("/") if url else stack.enter_context(running_service(env, log))
        get_settings.cache_clear()
        pairs = [
            repeat_click(base, photo_size, max(10, repeats), get_settings(), auto=True),  # the studio's click
            repeat_click(base, photo_size, max(10, repeats), get_settings(), auto=False),
            uploads(base, jpeg_photo(4000, 3000), max(3, repeats // 3)),
            previews(base, photo_size, max(3, repeats // 3), steps=20),
        ]
    typer.echo(format_pairs(pairs))
    if json_path:
        json_path.write_text(json.dumps([pair.row() for pair in pairs], indent=2))
        typer.echo(f"wrote {json_path}")


def _bench_folder(
    url: str | None, concurrencies: list[int], count: int, size: tuple[int, int], steps: int, json_path: Path | None
) -> None:
    """A folder edit at each concurrency, on `url` or on a local service (profile defaults to tiny here)."""
    import os
    import tempfile
    from contextlib import nullcontext

    from serving.bench.folder import folder_throughput, format_folder_table
    from serving.processes import running_service

    if url is None:
        os.environ.setdefault("MOODSHIFT_PROFILE", "tiny")
        log = Path(tempfile.mkdtemp(prefix="moodshift-bench-folder-")) / "service.log"
        typer.echo(f"starting a service with batching on (log: {log})")
    with nullcontext(url.rstrip("/")) if url else running_service({}, log) as service:
        results = folder_throughput(service, concurrencies, count, size, steps)
    typer.echo(format_folder_table(results))
    if json_path:
        json_path.write_text(json.dumps([r.row() for r in results], indent=2))
        typer.echo(f"wrote {json_path}")
