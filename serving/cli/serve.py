"""`python -m serving serve`: the BentoML gateway with its segmentation and diffusion services."""

import os
import sys
from typing import Annotated

import typer

from serving.cli.app import app, fail


def check_weights_or_fail() -> list[str]:
    """Resolve each stage's profile the way the services will; a `real` stage with missing weights stops here."""
    from serving.models.profiles import resolve_profile
    from serving.models.sam_builders import load_sam_checkpoint
    from serving.models.sdxl_builders import load_sdxl, sdxl_weights_present
    from serving.settings import get_settings

    settings = get_settings()
    sam_path, sdxl_path = settings.sam_checkpoint_path, settings.sdxl_model_path
    lines = []
    for stage, requested, present, label in (
        ("segment", settings.stage_profile("sam"), sam_path.is_file(), f"SAM weights {sam_path}"),
        ("diffusion", settings.stage_profile("diffusion"), sdxl_weights_present(sdxl_path), f"SDXL {sdxl_path}"),
    ):
        resolved = resolve_profile(requested, present, label)
        if resolved.profile == "real" and not present:
            from serving.models.errors import WeightsError

            try:  # the loaders word the message: path, download location, setting
                load_sam_checkpoint(settings.sam_model_type, sam_path) if stage == "segment" else load_sdxl(sdxl_path)
            except WeightsError as exc:
                fail(str(exc))
        lines.append(f"{stage}: {resolved.profile}" + (f" ({resolved.reason})" if resolved.reason else ""))
    return lines


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
