"""`python -m serving mood IMAGE`: the mood keywords of a photo (LLaVA through Ollama, else image statistics)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from serving.cli.app import app, read_image


def echo_stage_result(fields: dict[str, Any], as_json: bool) -> None:
    """Print a mood or prompt result: one JSON object (the HTTP API's fields), or one `name: value` per line."""
    if as_json:
        typer.echo(json.dumps(fields, ensure_ascii=False))
        return
    for name, value in fields.items():
        if name == "reason":
            continue
        shown = ", ".join(value) if isinstance(value, list) else value
        if name == "source" and fields.get("reason"):
            shown = f"{value} (fallback: {fields['reason']})"
        typer.echo(f"{name + ':':<9} {shown}")


@app.command("mood")
def mood(
    image: Annotated[Path, typer.Argument(help="Photo file (PNG, JPEG, WebP, ...).", dir_okay=False)],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object: keywords, source, reason.")] = False,
) -> None:
    """Read a photo's mood keywords with LLaVA (MOODSHIFT_OLLAMA_HOST), or from image statistics as a fallback."""
    from serving.models.ollama_stage import PromptStage
    from serving.settings import get_settings

    settings = get_settings()
    picture = read_image(image, settings.max_image_pixels)
    echo_stage_result(PromptStage(settings).read_mood(picture).to_dict(), as_json)
