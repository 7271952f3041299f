"""`python -m serving bench serve`: requests/s and latency of the HTTP service, batching on vs off; `--split`, the
stage services on their own servers; `--folder`, photos/s of `edit PHOTO... --server` at several concurrencies."""

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

from serving.cli.app import bench_app, check_writable, fail, parse_list, write_json
from serving.cli.edit import MAX_CONCURRENCY

MAX_CLIENTS = 64  # concurrent HTTP clients of the load test
EDIT_STEPS = 2  # an edit's steps here: the load, not the picture, is measured
PREVIEW_EDIT_STEPS = 20  # --http-clients' edits: enough steps for previews to cost what they cost


def _counts(text: str, option: str, most: int) -> list[int]:
    counts = parse_list(text, int) or []
    if not counts or min(counts) < 1 or max(counts) > most:
        fail(f"{option} {text!r} is not a list of counts from 1 to {most} such as 1,4,8")
    return counts


@contextlib.contextmanager
def _clear_errors(url: str | None) -> Iterator[None]:
    """A service that does not answer, or answers what a Moodshift service would not, is a clear error, not a
    traceback (the service's own log says more when it was started here)."""
    import requests

    from serving.cli.edit import EditorUnavailable, PhotoFailed
    from serving.models.errors import WeightsError

    where = f"the Moodshift service at {url}" if url else "the service started here"
    try:
        yield
    except typer.Exit:  # click's Exit is a RuntimeError: a clear error already given
        raise
    except requests.ConnectionError:
        fail(f"cannot reach {where}: is it running?")
    except requests.RequestException as exc:
        fail(f"{where} did not answer ({type(exc).__name__}: {exc})")
    except (EditorUnavailable, PhotoFailed) as exc:
        fail(str(exc))
    except WeightsError as exc:
        fail(f"the in-process side of the comparison needs this machine's models: {exc}")
    except (KeyError, ValueError, RuntimeError) as exc:  # a missing field, a body that is not JSON, a non-200
        detail = f"no {exc} in its answer" if isinstance(exc, KeyError) else str(exc)
        fail(f"{where} did not answer as expected: {detail}")


def _note_in_process_side(url: str) -> None:
    """With --url the in-process side of a comparison runs here, on this machine's MOODSHIFT_* settings: say so."""
    from serving.settings import get_settings

    typer.echo(
        f"note: the in-process side runs here with this machine's settings (profile {get_settings().profile}), not "
        f"those of {url}: compare like with like by giving this command the service's MOODSHIFT_* settings",
        err=True,
    )


@bench_app.command("serve")
def bench_serve(
    url: Annotated[
        str | None, typer.Option(help="A running service to measure (then only its batching setting is measured).")
    ] = None,
    clients: Annotated[str, typer.Option(metavar="N,N,...", help="Concurrent client counts.")] = "1,4,8",
    per_client: Annotated[int, typer.Option(min=1, max=100, help="/segment requests per client.")] = 5,
    size: Annotated[int, typer.Option(min=64, max=4096, help="Width of the synthetic photos (height = 3/4).")] = 640,
    edit_steps: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=50,
            help=f"Denoising steps of each edit (default {EDIT_STEPS}; with --http-clients {PREVIEW_EDIT_STEPS}, "
            "so that previews have steps to show).",
        ),
    ] = None,
    split: Annotated[
        bool,
        typer.Option(
            "--split",
            help="Instead: a repeat click and an edit through stage services on their own servers (gateway pointed "
            "at them by URL) vs the single-process service, alternating; --per-client sets the repeats. Starts "
            "both here: not with --url.",
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
        str,
        typer.Option(
            metavar="N,N,...", help=f"With --folder: edits in flight at once, per run (1 to {MAX_CONCURRENCY})."
        ),
    ] = "1,4",
    photos: Annotated[int, typer.Option(min=1, max=200, help="With --folder: photos in the folder.")] = 8,
    json_path: Annotated[Path | None, typer.Option("--json", help="Also write the numbers to this JSON file.")] = None,
) -> None:
    """Load the service over HTTP: /segment (new image, repeat click) and /edit; batching on vs off; HTTP overhead.

    Without --url it starts local services with the current settings (profile defaults to tiny here): for the load
    test one with adaptive batching as configured and one with batch size 1, and stops them afterwards. With --url
    the in-process side of a comparison runs here, with this machine's settings.
    """
    if split and url:
        fail("--split starts its own single service and split deployment to compare: it cannot measure --url")
    if json_path is not None:
        check_writable(json_path)
    url = url.rstrip("/") if url else None
    photo_size = (size, size * 3 // 4)
    with _clear_errors(url):
        if split:
            result = _bench_split(photo_size, per_client, edit_steps or EDIT_STEPS)
        elif http_clients:
            result = _bench_http_clients(url, photo_size, per_client, edit_steps or PREVIEW_EDIT_STEPS)
        elif folder:
            counts = _counts(concurrency, "--concurrency", MAX_CONCURRENCY)
            result = _bench_folder(url, counts, photos, photo_size, edit_steps or EDIT_STEPS)
        else:
            counts = _counts(clients, "--clients", MAX_CLIENTS)
            result = _bench_load(url, counts, per_client, photo_size, edit_steps or EDIT_STEPS)
    if json_path is not None:
        write_json(json_path, result)


def _use_tiny_models_here() -> None:
    """Services started here (and the in-process side) run the tiny profile unless the settings say otherwise."""
    import os

    os.environ.setdefault("MOODSHIFT_PROFILE", "tiny")


def _bench_load(
    url: str | None, counts: list[int], per_client: int, photo_size: tuple[int, int], edit_steps: int
) -> dict:
    """The load test, batching on vs off on two services started here (or --url as it is), and the HTTP overhead of
    a repeat click; prints the table and returns the numbers."""
    import tempfile

    import numpy as np

    from serving.bench.serve import bench_server, format_table, in_process_repeat_click_ms
    from serving.processes import running_service
    from serving.settings import get_settings

    results = []
    if url:
        results += bench_server(url, "as-is", counts, per_client, photo_size, edit_steps)
        _note_in_process_side(url)
    else:
        _use_tiny_models_here()
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
    return {"results": [r.row() for r in results], "overhead": overhead}


def _bench_split(photo_size: tuple[int, int], repeats: int, edit_steps: int) -> dict:
    """The single service and the split deployment side by side, both started here."""
    import tempfile

    from serving.bench.split import compare_split, format_split_table
    from serving.processes import running_service, running_split_service

    _use_tiny_models_here()
    log_dir = Path(tempfile.mkdtemp(prefix="moodshift-bench-split-"))
    typer.echo(f"starting one service and a split deployment (logs: {log_dir})")
    with running_service({}, log_dir / "single.log") as single, running_split_service({}, log_dir) as urls:
        result = compare_split(single, urls["gateway"], photo_size, max(repeats, 5), max(repeats // 3, 3), edit_steps)
    typer.echo(format_split_table(result))
    return result.to_dict()


def _bench_http_clients(url: str | None, photo_size: tuple[int, int], repeats: int, edit_steps: int) -> list:
    """The three client-side comparisons on one service (started here, tiny and without Ollama, unless --url)."""
    import tempfile

    from serving.bench.clients import format_pairs, jpeg_photo, previews, repeat_click, uploads
    from serving.processes import running_service
    from serving.settings import get_settings

    env = {"MOODSHIFT_OLLAMA_ENABLED": "false", "MOODSHIFT_SEGMENT_MAX_BATCH_SIZE": "1"}
    with contextlib.ExitStack() as stack:
        if url:
            base = url
            _note_in_process_side(url)
        else:
            _use_tiny_models_here()
            log = Path(tempfile.mkdtemp(prefix="moodshift-bench-clients-")) / "service.log"
            base = stack.enter_context(running_service(env, log))
        get_settings.cache_clear()
        pairs = [
            repeat_click(base, photo_size, max(10, repeats), get_settings(), auto=True),  # the studio's click
            repeat_click(base, photo_size, max(10, repeats), get_settings(), auto=False),
            uploads(base, jpeg_photo(4000, 3000), max(3, repeats // 3)),
            previews(base, photo_size, max(3, repeats // 3), steps=edit_steps),
        ]
    typer.echo(format_pairs(pairs))
    return [pair.row() for pair in pairs]


def _bench_folder(url: str | None, concurrencies: list[int], count: int, size: tuple[int, int], steps: int) -> list:
    """A folder edit at each concurrency, on `url` or on a local service (profile defaults to tiny here)."""
    import tempfile

    from serving.bench.folder import folder_throughput, format_folder_table
    from serving.processes import running_service

    with contextlib.ExitStack() as stack:
        if url:
            service = url
        else:
            _use_tiny_models_here()
            log = Path(tempfile.mkdtemp(prefix="moodshift-bench-folder-")) / "service.log"
            typer.echo(f"starting a service with batching on (log: {log})")
            service = stack.enter_context(running_service({}, log))
        results = folder_throughput(service, concurrencies, count, size, steps)
    typer.echo(format_folder_table(results))
    return [r.row() for r in results]
