"""`python -m serving prompt`: an SDXL background prompt from mood keywords and the user's word (≤ 77 tokens)."""

from __future__ import annotations

from typing import Annotated

import typer

from serving.cli.app import app, fail
from serving.cli.mood import echo_stage_result
from serving.core.prompt_text import MAX_USER_KEYWORD_CHARS


@app.command("prompt")
def prompt(
    keyword: Annotated[
        str,
        typer.Option("--keyword", help=f"The user's word, e.g. 'forest' (at most {MAX_USER_KEYWORD_CHARS} chars)."),
    ],
    keywords: Annotated[str, typer.Option("--keywords", help="Comma-separated mood keywords, e.g. 'calm,warm'.")] = "",
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object: prompt, tokens, source, reason.")
    ] = False,
) -> None:
    """Write a background prompt with Llama 2 (MOODSHIFT_OLLAMA_HOST), or from a template as a fallback."""
    from serving.core.prompt_text import KeywordError
    from serving.models.ollama_stage import PromptStage

    moods = [word.strip() for word in keywords.split(",") if word.strip()]
    try:
        result = PromptStage().write_prompt(moods, keyword)
    except KeywordError as exc:
        fail(str(exc))
    echo_stage_result(result.to_dict(), as_json)
