"""The gateway's request bodies. The edit options' fields (type, help, bounds shown in the OpenAPI schema) are built
from the options table; their values are checked where the edit enters the pipeline (`check_edit_options`), the
same check the CLI's options get, so the body checks types and nothing is validated twice. Types are strict, as the
options table's check is: `true` is not a number and "30" is not an integer (an upload's form fields are read as
JSON text first, so `-F steps=30` is the integer 30).
"""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict, Field, StrictFloat, create_model

from serving.core.clicks import Point
from serving.core.edit_options import EDIT_OPTIONS, EditOption

# The options' bounds shown in the OpenAPI schema, not enforced by the body: `check_edit_options` enforces them,
# with messages that name the option and what it allows.
_JSON_SCHEMA_KEYS = {"ge": "minimum", "gt": "exclusiveMinimum", "le": "maximum", "max_length": "maxLength"}


def _schema_bounds(option: EditOption) -> dict[str, Any]:
    if option.choices:
        return {"enum": list(option.choices)}
    return {_JSON_SCHEMA_KEYS[key]: value for key, value in option.bounds.items()}


def _option_field(option: EditOption) -> tuple[Any, Any]:
    description = f"{option.help} {option.allowed[0].upper()}{option.allowed[1:]}; default from the service."
    return option.kind | None, Field(None, description=description, json_schema_extra=_schema_bounds(option))


EditOptionsBody = create_model(
    "EditOptionsBody",
    __config__=ConfigDict(strict=True),
    **{name: _option_field(option) for name, option in EDIT_OPTIONS.items()},
)

Box = list[StrictFloat]  # [x0, y0, x1, y1]; integers are fine, `true` is not a coordinate


class EditBody(EditOptionsBody):  # type: ignore[misc, valid-type]
    """The body of /edit and /edit_submit: the photo, what to keep (mask, clicks, or nothing: the automatic
    subject), what to write, options."""

    image: str | None = Field(None, description="The photo, base64 PNG/JPEG (or a file upload).")
    image_id: str | None = Field(None, description="Instead of the image: the image_id of an earlier answer.")
    mask: str | None = Field(None, description="Subject mask, base64 PNG, image size, white = subject.")
    points: list[Point] | None = Field(None, description="Clicks to segment the subject with (instead of mask).")
    box: Box | None = Field(None, description="Box [x0, y0, x1, y1] around the subject (with/instead of points).")
    auto: bool = Field(
        False,
        description="Start from the automatic subject (a salient-object model) and refine it with the points/box. "
        "Without a mask, points or box the subject is found automatically anyway.",
    )
    prompt: str | None = Field(None, description="The SDXL prompt; or give user_keyword to have one written.")
    user_keyword: str | None = Field(None, description="Your word (forest, galaxy...) for the prompt writer.")
    keywords: list[str] | None = Field(None, description="Mood keywords (default: read from the photo).")

    def options(self) -> dict[str, Any]:
        """The edit options as given (None = the service's default)."""
        return {name: getattr(self, name, None) for name in EDIT_OPTIONS}


def wants_png(ctx: Any) -> bool:
    """Whether the caller asked for the image itself (`Accept: image/png`) rather than JSON."""
    accept = ctx.request.headers.get("accept", "")
    return "image/png" in accept and "application/json" not in accept


__all__ = ["Box", "EditBody", "Point", "wants_png"]
