"""`python -m serving serve`: the BentoML gateway with its segmentation and diffusion services."""

import os
import sys
from typing import TYPE_CHECKING, Annotated

import typer

from serving.cli.app import app, fail

if TYPE_CHECKING:
    from serving.settings import Settings


def check_weights_or_fail() -> list[str]:
    """Resolve the profile of each stage served here the way its service will, from the same checks (complete,
    intact, of the configured kind; headers only, so in seconds); a `real` stage whose weights cannot load stops
    here with the loader's message: the file and the fix. A stage at a URL is not checked here. The automatic
    subject's model is named too; without it the service still starts (clicks work), and says so."""
    from serving.models.profiles import resolve_profile
    from serving.models.salient_weights import find_salient
    from serving.models.sam_builders import find_sam
    from serving.models.sdxl_builders import sdxl_weights
    from serving.settings import get_settings

    settings = get_settings()
    lines = []
    for stage, requested, url, find in (
        ("segment", settings.stage_profile("sam"), settings.segment_service_url, find_sam),
        ("diffusion", settings.stage_profile("diffusion"), settings.diffusion_service_url, sdxl_weights),
    ):
        if url:  # served elsewhere: its weights are that machine's
            lines.append(f"{stage}: served at {url}")
            continue
        weights = find(settings)
        resolved = resolve_profile(requested, weights.problem, weights.label)
        if resolved.profile == "real" and weights.problem:
            fail(weights.problem)
        lines.append(f"{stage}: {resolved.profile}" + (f" ({resolved.reason})" if resolved.reason else ""))
        if stage == "diffusion":
            lines.append(fast_mode_line(settings, resolved.profile))
    if not settings.segment_service_url:
        salient = find_salient(settings)
        missing = f"not available, zero-click requests will fail: {salient.problem}"
        lines.append(f"automatic subject: {missing if salient.problem else salient.label}")
    return lines


def fast_mode_line(settings: "Settings", profile: str) -> str:
    """What `mode=fast` will run: the few-step file and its family, a stand-in for random weights, or why it is off
    (a missing or broken few-step file never stops the service: quality edits do not need it)."""
    from serving.models.fast_models import find_fast_model

    if profile != "real":
        return "fast mode: a random few-step stand-in (SDXL-Lightning's settings)"
    found = find_fast_model(settings)
    if found.problem:
        return f"fast mode: off ({found.problem})"
    return f"fast mode: {found.family.name} {found.kind} {found.path}"


def bentoml_serve_command(port: int, host: str, shutdown_timeout_s: int) -> list[str]:
    # Without a graceful-shutdown timeout a /readyz probe that its client gave up on during start-up keeps the
    # gateway worker waiting forever on SIGTERM, orphaned after its arbiter exits.
    return [
        sys.executable,
        "-m",
        "bentoml",
        "serve",
        "serving.service:Moodshift",
        "--port",
        str(port),
        "--host",
        host,
        "--timeout-graceful-shutdown",
        str(shutdown_timeout_s),
    ]


@app.command("serve")
def serve(
    port: Annotated[int, typer.Option(help="HTTP port of the gateway.")] = 3000,
    host: Annotated[str, typer.Option(help="Interface to listen on (0.0.0.0 for all).")] = "127.0.0.1",
) -> None:
    """Start the HTTP service (gateway + SAM + diffusion) with the profiles from the settings."""
    for line in check_weights_or_fail():
        typer.echo(line)
    typer.echo(f"serving on http://{host}:{port} (OpenAPI docs at /, health at /readyz); Ctrl-C stops it")
    from serving.settings import get_settings

    command = bentoml_serve_command(port, host, get_settings().shutdown_timeout_s)
    os.execv(command[0], command)  # bentoml handles signals and its worker processes itself
