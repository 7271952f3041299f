"""CLI options built from the edit options table: `--steps`, `--guidance`, ... with the table's help and bounds,
checked by the same `check_edit_options` as the service's requests (so a typo is named the same way everywhere)."""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable
from typing import Annotated, Any

import typer

from serving.core.edit_options import EDIT_OPTIONS, EditOption


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _parameter(option: EditOption) -> inspect.Parameter:
    default = "random" if option.default is None else repr(option.default)
    source = f", or MOODSHIFT_DEFAULT_{option.name.upper()}" if option.from_settings else ""
    help_text = f"{option.help} {option.allowed[0].upper()}{option.allowed[1:]} (default {default}{source})."
    flag = _flag(option.name)
    if option.kind is bool:
        flag = f"{flag}/--no-{flag[2:]}"
    annotation = Annotated[option.kind | None, typer.Option(flag, help=help_text, show_default=False)]
    return inspect.Parameter(option.name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotation)


# Edit options a command line sets otherwise: `preview` is `--preview PATH`, a file to watch, not a switch.
NOT_FLAGS = frozenset({"preview"})


def takes_edit_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Give a command one option per edit option (but `NOT_FLAGS`); it receives them as `edit_options`
    ({name: value or None})."""
    hints = typing.get_type_hints(command, include_extras=True)
    own = [
        parameter.replace(annotation=hints.get(parameter.name, parameter.annotation))
        for parameter in inspect.signature(command).parameters.values()
        if parameter.name != "edit_options"
    ]
    flags = [name for name in EDIT_OPTIONS if name not in NOT_FLAGS]
    parameters = own + [_parameter(EDIT_OPTIONS[name]) for name in flags]

    @functools.wraps(command)
    def wrapper(**kwargs: Any) -> Any:
        edit_options = {name: kwargs.pop(name) for name in flags}
        return command(**kwargs, edit_options=edit_options)

    wrapper.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {parameter.name: parameter.annotation for parameter in parameters}
    return wrapper
