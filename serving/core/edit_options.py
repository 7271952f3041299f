"""The edit options in one table: the name, type, default, bounds and help of every option an edit takes.

Everything else is built from `EDIT_OPTIONS`: the settings' `MOODSHIFT_DEFAULT_*` fields and their bounds, the HTTP
body fields, the CLI's options, the `options` table of `GET /info` (from which the studio draws its controls), and
`check_edit_options`, the one validation of an edit's options, run where a request enters.
"""

from __future__ import annotations

import math
import numbers
import random
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from serving.core.errors import InputError

MAX_STEPS = 150  # steps of an edit; shrink_steps stays below the steps the edit makes, so below this too
MAX_VARIANTS = 8
# Variants take the seeds seed, seed+1, ...: the last must still fit the int64 a torch generator takes.
MAX_SEED = 2**63 - 1 - MAX_VARIANTS
MAX_TEXT_CHARS = 2000  # CLIP reads 77 tokens anyway; this only bounds what is stored and echoed back
RANDOM_SEED_BOUND = 2**31  # a seed drawn for the caller stays short enough to read and type again


MODES = ("quality", "fast")


class EditOptionError(InputError):
    """An edit option of the wrong type or out of range; the message names the option and what it allows."""


@dataclass(frozen=True)
class EditOption:
    """One option: `kind` is int, float, bool or str; bounds are inclusive unless `above_minimum` (then
    minimum < value). For text, `maximum` bounds the length, or `choices` lists the values allowed. `default` None
    means drawn per edit (the seed). `from_settings`: the setting `MOODSHIFT_DEFAULT_<NAME>` replaces the default.
    """

    name: str
    kind: type
    default: Any
    help: str
    minimum: float | None = None
    maximum: float | None = None
    above_minimum: bool = False
    from_settings: bool = False
    choices: tuple[str, ...] = ()

    @property
    def allowed(self) -> str:
        """What the option allows, in words: "an integer from 1 to 150"."""
        low, high = _number(self.minimum), _number(self.maximum)
        if self.choices:
            return "one of " + ", ".join(self.choices)
        if self.kind is bool:
            return "true or false"
        if self.kind is str:
            return f"text of at most {high} characters"
        what = "an integer" if self.kind is int else "a number"
        if self.above_minimum:
            return f"{what} greater than {low} and at most {high}"
        return f"{what} from {low} to {high}"

    @property
    def bounds(self) -> dict[str, Any]:
        """The bounds as pydantic's `Field` takes them (`ge`/`gt`, `le`, `max_length`); none for choices and bool,
        which the type itself bounds."""
        if self.choices or self.kind is bool:
            return {}
        if self.kind is str:
            return {"max_length": int(self.maximum)}
        return {"gt" if self.above_minimum else "ge": self.minimum, "le": self.maximum}

    def check(self, value: Any) -> Any:
        """`value` as the option's type, or `EditOptionError` naming the option, the value and what is allowed."""
        if self.choices or self.kind is bool:
            allowed = self.choices or (True, False)
            if type(value) is not self.kind or value not in allowed:
                raise EditOptionError(f"{self.name} {value!r} must be {self.allowed}")
            return value
        if self.kind is str:
            if not isinstance(value, str):
                raise EditOptionError(f"{self.name} {value!r} must be {self.allowed}")
            if len(value) > self.maximum:
                raise EditOptionError(
                    f"{self.name} has {len(value)} characters; at most {_number(self.maximum)} are allowed"
                )
            return value
        ok_type = isinstance(value, numbers.Integral if self.kind is int else numbers.Real)
        if isinstance(value, bool) or not ok_type or not math.isfinite(value):
            raise EditOptionError(f"{self.name} {value!r} must be {self.allowed}")
        low_ok = value > self.minimum if self.above_minimum else value >= self.minimum
        if not (low_ok and value <= self.maximum):
            raise EditOptionError(f"{self.name} {value!r} must be {self.allowed}")
        return self.kind(value)

    def describe(self, default: Any) -> dict[str, Any]:
        """The option's row in `GET /info` (JSON): what a client needs to draw a control for it."""
        row = {
            "name": self.name,
            "type": {int: "integer", float: "number", str: "string", bool: "boolean"}[self.kind],
            "default": default,
            "minimum": self.minimum,
            "maximum": self.maximum,
            "exclusive_minimum": self.above_minimum,
            "help": self.help,
        }
        if self.choices:
            row["choices"] = list(self.choices)
        return row


def _number(value: float | None) -> str:
    """1, 0.5, 9223372036854775799: whole numbers exactly, others as short as they print."""
    if value is None:
        return ""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


EDIT_OPTIONS: dict[str, EditOption] = {
    option.name: option
    for option in (
        EditOption(
            "seed",
            int,
            None,
            "Seed of the first variant (the others take seed+1, ...); random when not given.",
            0,
            MAX_SEED,
        ),
        EditOption(
            "mode",
            str,
            "quality",
            "quality = the model's own scheduler and step count; fast = a few-step model (SDXL-Lightning, Hyper-SD, "
            "LCM-LoRA) with its own scheduler, 4-8 steps and little or no guidance: several times faster.",
            choices=MODES,
        ),
        EditOption("steps", int, 30, "Denoising steps: more is slower and finer.", 1, MAX_STEPS, from_settings=True),
        EditOption(
            "guidance",
            float,
            7.0,
            "Classifier-free guidance: how strictly the image follows the prompt.",
            0,
            30,
            from_settings=True,
        ),
        EditOption("variants", int, 1, "Images per edit, each with its own seed.", 1, MAX_VARIANTS),
        EditOption(
            "edge",
            str,
            "matte",
            "The subject's edge: matte = a soft alpha and the subject's own colours in a band around the mask "
            "(no rim of the old background); hard = the mask as it is, softened by feather.",
            choices=("matte", "hard"),
            from_settings=True,
        ),
        EditOption(
            "feather",
            int,
            8,
            "With edge=hard: soft edge of the kept subject, in pixels grown outward from it.",
            0,
            256,
            from_settings=True,
        ),
        EditOption(
            "strength",
            float,
            1.0,
            "1 = a new background from noise; lower keeps more of the old layout.",
            0,
            1,
            above_minimum=True,
        ),
        EditOption(
            "shrink_steps",
            int,
            0,
            "Progressive mask shrinking over the first N denoising steps (fewer than steps × strength: the last "
            "step keeps the exact mask).",
            0,
            MAX_STEPS - 1,
        ),
        EditOption("preview", bool, True, "Small pictures of the background forming while the edit runs."),
        EditOption(
            "negative_prompt",
            str,
            "blurry, low quality, distorted, watermark, text",
            "What the new background should not show.",
            maximum=MAX_TEXT_CHARS,
            from_settings=True,
        ),
    )
}


def denoising_steps(steps: int, strength: float) -> int:
    """Steps an edit of `steps` makes: strength < 1 skips the first ones, as diffusers' SDXL inpaint pipeline does.

    The one rule for every scheduler Moodshift runs: all are first-order (`order` 1: SDXL's Euler, Euler and DDIM
    with trailing spacing, LCM, TCD), so each step is one UNet pass and one timestep. LCM and TCD pick their
    timesteps for the full `steps` and the first ones are cut, exactly as for Euler (the inpaint pipeline does not
    pass `strength` to their `set_timesteps`); `tests/test_fast_mode.py` counts each scheduler's timesteps."""
    return min(int(steps * strength), steps)


@dataclass(frozen=True)
class EditOptions:
    """Every option of one edit, checked and filled in (the seed too): build it with `check_edit_options`."""

    seed: int
    mode: str
    steps: int
    guidance: float
    variants: int
    edge: str
    feather: int
    strength: float
    shrink_steps: int
    preview: bool
    negative_prompt: str

    @property
    def seeds(self) -> list[int]:
        """The seed of each variant."""
        return [self.seed + index for index in range(self.variants)]

    @property
    def denoising_steps(self) -> int:
        """Steps this edit makes (`denoising_steps`)."""
        return denoising_steps(self.steps, self.strength)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ModeRules:
    """What an edit's mode changes where it enters: `defaults` for the options the caller left out (a few-step
    model's steps and guidance) and the most steps its scheduler can make (`max_steps`; `model` names it)."""

    defaults: Mapping[str, Any] = field(default_factory=dict)
    max_steps: int | None = None
    model: str = ""


def mode_rules(mode: str, fast: Callable[[], Mapping[str, Any] | None]) -> ModeRules:
    """What `mode` changes where an edit enters: nothing for quality; for fast, `fast_mode_rules` of the diffusion
    stage's few-step model (`fast()` gives its description, asked only for a fast edit)."""
    return fast_mode_rules(fast()) if mode == "fast" else ModeRules()


def fast_mode_rules(fast: Mapping[str, Any] | None) -> ModeRules:
    """The rules of mode=fast from the diffusion stage's description of its few-step model (`GET /info`'s `fast`):
    its steps and guidance as defaults. `EditOptionError` with the stage's reason (which file to put where) when it
    has none."""
    if not fast or not fast.get("available"):
        reason = (fast or {}).get("reason") or "the diffusion stage has no few-step model"
        raise EditOptionError(f"mode fast is not available: {reason}")
    defaults = {"steps": fast["steps"], "guidance": fast["guidance"]}
    return ModeRules(defaults, fast.get("max_steps"), str(fast.get("family") or "the few-step model"))


def check_edit_options(
    values: Mapping[str, Any],
    defaults: Mapping[str, Any] | None = None,
    mode_rules: Callable[[str], ModeRules] | None = None,
) -> EditOptions:
    """Check the options a caller gave (None or absent = the default) and fill in the rest.

    `defaults` replace the table's defaults (the settings' `MOODSHIFT_DEFAULT_*`); `mode_rules(mode)` says what the
    edit's mode changes (asked once the values given are known to be good, so a typo costs no question to the
    diffusion stage; it may raise `InputError` when the mode cannot run). A missing seed is drawn here, so the edit
    (and whoever records it) knows it. Raises `EditOptionError` naming the first bad option.
    """
    unknown = sorted(set(values) - set(EDIT_OPTIONS))
    if unknown:
        raise EditOptionError(f"unknown edit option {unknown[0]!r}; the options are {', '.join(EDIT_OPTIONS)}")
    given = {name: EDIT_OPTIONS[name].check(value) for name, value in values.items() if value is not None}
    defaults = defaults or {}
    mode = given.get("mode", defaults.get("mode", EDIT_OPTIONS["mode"].default))
    rules = mode_rules(mode) if mode_rules is not None else ModeRules()
    defaults = {**defaults, **rules.defaults}
    checked: dict[str, Any] = {}
    for name, option in EDIT_OPTIONS.items():
        value = given.get(name)
        if value is None:
            value = defaults.get(name, option.default)
        if value is None:  # the seed: drawn for this edit
            value = random.SystemRandom().randrange(RANDOM_SEED_BOUND)
        checked[name] = option.check(value)
    options = EditOptions(**checked)
    if rules.max_steps is not None and options.steps > rules.max_steps:
        raise EditOptionError(
            f"steps {options.steps} must be an integer from 1 to {rules.max_steps} in mode {mode} "
            f"({rules.model}'s scheduler makes at most {rules.max_steps})"
        )
    denoising = options.denoising_steps
    if denoising < 1:
        raise EditOptionError(
            f"strength {options.strength:g} with {options.steps} steps leaves no denoising step; raise either"
        )
    # Shrinking is over by the step after the first `shrink_steps`: the last step must come after it, so the edit
    # ends on the exact mask (`blending.shrink_radii`), whatever strength cut from the steps.
    if options.shrink_steps >= denoising:
        raise EditOptionError(
            f"shrink_steps {options.shrink_steps} must be an integer from 0 to {denoising - 1}: the edit makes "
            f"{denoising} denoising steps (steps {options.steps} × strength {options.strength:g}) and the last one "
            f"uses the exact mask"
        )
    return options


def info_table(defaults: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """The `options` of `GET /info`: one row per option, with the default this service uses."""
    defaults = defaults or {}
    return [option.describe(defaults.get(name, option.default)) for name, option in EDIT_OPTIONS.items()]
