"""The service's edit options table (`GET /info` -> `options`) as the studio reads it: one `EditOption` per row,
the bounds a control for it can take, and the clamping that keeps a session value inside them; and what the Fast
switch changes (`switch_mode`, from `/info`'s `fast`). No Streamlit.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from numbers import Real
from typing import Any

# A browser holds numbers as doubles: a larger integer cannot be shown exactly, and Streamlit refuses it as a bound.
JS_MAX_SAFE_INTEGER = 2**53 - 1
# An integer range wider than this is typed into a number box: a slider of more positions cannot be aimed.
SLIDER_MAX_POSITIONS = 1000
# A drawn seed stays short enough to read and type again (the service draws its own the same way).
RANDOM_SEED_BOUND = 2**31
KNOWN_TYPES = ("integer", "number", "string", "boolean")
# What the Fast switch sets to the few-step model's values, and gives back when it is switched off.
FAST_SETTINGS = ("steps", "guidance")


@dataclass(frozen=True)
class EditOption:
    """One row of the options table: `type` is "integer", "number", "string" or "boolean"; for a string `maximum`
    is the longest text allowed, or `choices` lists its values. The minimum is exclusive when `exclusive_minimum`
    (strength: greater than 0)."""

    name: str
    type: str
    default: Any
    minimum: float | None
    maximum: float | None
    exclusive_minimum: bool
    help: str
    choices: tuple[str, ...] = ()

    @classmethod
    def from_row(cls, row: Any) -> EditOption | None:
        """The option of one `/info` row; None for a row the studio cannot draw (an unknown type, a bad field)."""
        if not isinstance(row, Mapping) or row.get("type") not in KNOWN_TYPES:
            return None
        name, minimum, maximum = row.get("name"), row.get("minimum"), row.get("maximum")
        if not isinstance(name, str) or not name or not all(_is_bound(bound) for bound in (minimum, maximum)):
            return None
        option = cls(
            name=name,
            type=row["type"],
            default=row.get("default"),
            minimum=minimum,
            maximum=maximum,
            exclusive_minimum=bool(row.get("exclusive_minimum", False)),
            help=str(row.get("help") or ""),
            choices=tuple(str(choice) for choice in row.get("choices") or ()),
        )
        if option.low is not None and option.high is not None and option.low > option.high:
            return None  # no value fits: a control for it could not be drawn
        return option

    @property
    def step(self) -> int | float:
        """The control's step: 1 for integers; for numbers a round step giving 20 to 200 positions (30 -> 0.5)."""
        if self.type != "number":
            return 1
        if self.minimum is None or self.maximum is None or self.maximum <= self.minimum:
            return 0.1
        magnitude = 10 ** math.floor(math.log10(self.maximum - self.minimum))
        return float(f"{magnitude / 20:.12g}")  # 0.05, not 0.05000000000000001

    @property
    def low(self) -> int | float | None:
        """The smallest value a control offers (inclusive); None when unbounded or for text."""
        if self.type == "string" or self.minimum is None:
            return None
        if self.type == "integer":
            low = math.ceil(self.minimum) + (1 if self.exclusive_minimum and self.minimum == int(self.minimum) else 0)
            return max(low, -JS_MAX_SAFE_INTEGER)
        return float(self.minimum) + (self.step if self.exclusive_minimum else 0.0)

    @property
    def high(self) -> int | float | None:
        """The largest value a control offers (inclusive); None when unbounded or for text."""
        if self.type == "string" or self.maximum is None:
            return None
        if self.type == "integer":
            return min(math.floor(self.maximum), JS_MAX_SAFE_INTEGER)
        return float(self.maximum)

    @property
    def slides(self) -> bool:
        """Whether a slider suits it: a bounded number, or a bounded integer range of few enough positions."""
        if self.type == "string" or self.low is None or self.high is None:
            return False
        return self.type == "number" or self.high - self.low <= SLIDER_MAX_POSITIONS

    @property
    def initial(self) -> Any:
        """The value a control starts at: the default, or the lowest value when the default is None (the seed)."""
        return self.clamp(self.default)

    def clamp(self, value: Any) -> Any:
        """`value` as this option's type, inside its bounds; anything that is not a value of it gives the default."""
        if self.choices:
            return (
                value if value in self.choices else (self.default if self.default in self.choices else self.choices[0])
            )
        if self.type == "boolean":
            return value if isinstance(value, bool) else bool(self.default)
        if self.type == "string":
            text = "" if value is None else str(value)
            return text if self.maximum is None else text[: int(self.maximum)]
        kind = int if self.type == "integer" else float
        number = _as_number(value, kind)
        if number is None:
            number = _as_number(self.default, kind)
        if number is None:
            number = self.low if self.low is not None else kind(0)
        if self.low is not None:
            number = max(self.low, number)
        if self.high is not None:
            number = min(self.high, number)
        return kind(number)


def edit_options(info: Mapping[str, Any] | None) -> list[EditOption] | None:
    """The options of an `/info` answer, in the service's order; None when there is no answer (unknown yet)."""
    if info is None:
        return None
    rows = info.get("options")
    options = [EditOption.from_row(row) for row in rows] if isinstance(rows, list) else []
    return [option for option in options if option is not None]


def request_fields(options: Sequence[EditOption], values: Mapping[str, Any], random_seed: bool) -> dict[str, Any]:
    """The edit body's options: one field per option of the table, from `values` (the session), clamped.

    With `random_seed` the seed is drawn here, so the request (and the history entry) records the seed used.
    """
    fields = {option.name: option.clamp(values.get(option.name)) for option in options}
    seed = next((option for option in options if option.name == "seed"), None)
    if random_seed and seed is not None:
        low = seed.low or 0
        fields["seed"] = low + secrets.randbelow(min(RANDOM_SEED_BOUND, (seed.high or RANDOM_SEED_BOUND) - low + 1))
    return fields


def fast_model(info: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """`/info`'s `fast`: the service's few-step model for mode=fast (`available`, `family`, `steps`, `guidance`, or
    `reason` when there is none); None when the service does not say."""
    fast = (info or {}).get("fast")
    return fast if isinstance(fast, Mapping) else None


def switch_mode(
    options: Sequence[EditOption],
    values: Mapping[str, Any],
    mode: str,
    fast: Mapping[str, Any] | None,
    kept: Mapping[str, Any] | None = None,
) -> tuple[dict[str, Any], str]:
    """The settings a switch to `mode` changes, and a sentence saying what changed ("Fast: steps 30 → 4, guidance
    7.0 → 0.0 (SDXL-Lightning's settings)"). To fast: the few-step model's steps and guidance; back to quality:
    `kept` (the values before the switch to fast) or each option's default. Values are clamped to the bounds."""
    table = {option.name: option for option in options}
    defaults = {name: option.default for name, option in table.items()}
    source = (fast or {}) if mode == "fast" else (kept or defaults)
    changes: dict[str, Any] = {"mode": mode}
    changed = []
    for name in FAST_SETTINGS:
        if name in table and source.get(name) is not None:
            changes[name] = table[name].clamp(source[name])
            if changes[name] != values.get(name):
                changed.append(f"{name} {values.get(name)} → {changes[name]}")
    whose = f"{fast.get('family')}'s settings" if mode == "fast" and fast else "as before fast mode"
    what = f"{', '.join(changed)} ({whose})" if changed else "steps and guidance unchanged"
    return changes, f"{mode.capitalize()}: {what}"


def _is_bound(value: Any) -> bool:
    return value is None or (isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value))


def _as_number(value: Any, kind: type) -> int | float | None:
    """`value` as an int or float, or None when it is not a finite number (text, None, NaN, a bool)."""
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
        return None
    return round(value) if kind is int else float(value)
