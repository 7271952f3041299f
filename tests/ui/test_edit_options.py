"""The studio's reading of the service's edit options table: rows, control bounds, clamping, the request fields."""

from __future__ import annotations

import pytest

from serving.core.edit_options import info_table
from ui.edit_options import JS_MAX_SAFE_INTEGER, RANDOM_SEED_BOUND, EditOption, edit_options, request_fields


def row(**fields) -> dict:
    base = {"name": "level", "type": "integer", "default": 3, "minimum": 0, "maximum": 10,
            "exclusive_minimum": False, "help": "How much."}  # fmt: skip
    return {**base, **fields}


def option(**fields) -> EditOption:
    parsed = EditOption.from_row(row(**fields))
    assert parsed is not None
    return parsed


@pytest.fixture()
def service_table() -> dict[str, EditOption]:
    """The real service's table, as its /info sends it (steps 120, as with MOODSHIFT_DEFAULT_STEPS=120)."""
    return {option.name: option for option in edit_options({"options": info_table({"steps": 120})})}


def test_every_row_of_the_services_table_is_read_in_order(service_table):
    assert list(service_table) == [
        "seed", "mode", "steps", "guidance", "variants", "edge", "feather", "strength", "shrink_steps", "preview",
        "negative_prompt",
    ]  # fmt: skip
    edge = service_table["edge"]
    assert (edge.type, edge.choices, edge.initial) == ("string", ("matte", "hard"), "matte")
    mode = service_table["mode"]
    assert (mode.type, mode.choices, mode.initial) == ("string", ("quality", "fast"), "quality")
    steps = service_table["steps"]
    assert (steps.type, steps.default, steps.low, steps.high, steps.step, steps.slides) == (
        "integer",
        120,
        1,
        150,
        1,
        True,
    )
    guidance = service_table["guidance"]
    assert (guidance.low, guidance.high, guidance.step, guidance.slides) == (0.0, 30.0, 0.5, True)
    assert service_table["negative_prompt"].initial == "blurry, low quality, distorted, watermark, text"


def test_rows_of_an_unknown_type_or_with_bad_fields_are_skipped():
    rows = [
        row(name="mode", type="enum", default="fast"),  # a type the studio cannot draw yet
        row(name=""),
        row(name="nan", maximum=float("nan")),
        row(name="backwards", minimum=10, maximum=0),
        "not a row",
        row(name="tile_size"),
    ]
    assert [option.name for option in edit_options({"options": rows})] == ["tile_size"]


def test_no_answer_is_unknown_and_an_answer_without_a_table_has_no_options():
    assert edit_options(None) is None
    assert edit_options({"device": "cpu"}) == []


def test_an_exclusive_minimum_is_not_offered():
    strength = option(type="number", default=1.0, minimum=0, maximum=1, exclusive_minimum=True)
    assert (strength.step, strength.low, strength.high) == (0.05, 0.05, 1.0)
    assert strength.clamp(0) == 0.05
    assert option(minimum=0, exclusive_minimum=True).low == 1


def test_a_wide_integer_range_is_typed_and_kept_within_what_a_browser_holds(service_table):
    seed = service_table["seed"]
    assert (seed.low, seed.high, seed.slides) == (0, JS_MAX_SAFE_INTEGER, False)
    assert seed.initial == 0  # default None: random, drawn per request
    assert not option(maximum=1001).slides and option(maximum=1000).slides


@pytest.mark.parametrize(
    ("value", "clamped"),
    [(5, 5), (11, 10), (-3, 0), (7.6, 8), (None, 3), ("12", 3), (float("nan"), 3), (float("inf"), 3), (True, 3)],
)
def test_an_integer_is_clamped_into_its_bounds_and_anything_else_gives_the_default(value, clamped):
    result = option().clamp(value)
    assert result == clamped and type(result) is int


def test_a_number_and_a_text_are_clamped_to_their_type_and_bounds():
    guidance = option(type="number", default=7.0, minimum=0, maximum=30)
    assert guidance.clamp(25) == 25.0 and type(guidance.clamp(25)) is float
    assert guidance.clamp(31.5) == 30.0
    text = option(type="string", default="x", minimum=None, maximum=4)
    assert (text.clamp("abcdef"), text.clamp(None), text.low, text.high, text.slides) == ("abcd", "", None, None, False)


def test_a_number_without_bounds_still_gets_a_control_value():
    free = option(type="number", default=None, minimum=None, maximum=None)
    assert (free.initial, free.step, free.slides) == (0.0, 0.1, False)


def test_the_request_has_every_option_clamped_with_the_sessions_values(service_table):
    options = list(service_table.values())
    values = {"seed": 42, "steps": 500, "guidance": 7.5, "variants": 2, "negative_prompt": "text"}
    fields = request_fields(options, values, random_seed=False)
    assert fields == {"seed": 42, "mode": "quality", "steps": 150, "guidance": 7.5, "variants": 2, "edge": "matte",
                      "feather": 8, "strength": 1.0, "shrink_steps": 0, "preview": True,
                      "negative_prompt": "text"}  # fmt: skip


def test_a_random_seed_is_drawn_for_each_request_within_the_seeds_bounds(service_table):
    options = list(service_table.values())
    seeds = {request_fields(options, {"seed": 42}, random_seed=True)["seed"] for _ in range(20)}
    assert len(seeds) > 1 and all(0 <= seed < RANDOM_SEED_BOUND for seed in seeds)
    narrow = [option(name="seed", default=None, minimum=5, maximum=6)]
    assert {request_fields(narrow, {}, random_seed=True)["seed"] for _ in range(40)} == {5, 6}


def test_choice_and_boolean_rows_clamp_to_their_values():
    from ui.edit_options import EditOption

    edge = EditOption.from_row(
        {"name": "edge", "type": "string", "default": "matte", "minimum": None, "maximum": None,
         "exclusive_minimum": False, "help": "", "choices": ["matte", "hard"]}
    )  # fmt: skip
    assert edge.choices == ("matte", "hard")
    assert edge.clamp("hard") == "hard" and edge.clamp("soft") == "matte" and edge.clamp(None) == "matte"
    preview = EditOption.from_row(
        {"name": "preview", "type": "boolean", "default": True, "minimum": None, "maximum": None,
         "exclusive_minimum": False, "help": ""}
    )  # fmt: skip
    assert preview.clamp(False) is False and preview.clamp("yes") is True


def test_the_fast_switch_takes_the_few_step_models_settings_and_gives_the_users_back(service_table):
    from ui.edit_options import fast_model, switch_mode

    options = list(service_table.values())
    fast = {"available": True, "family": "LCM-LoRA", "steps": 4, "guidance": 1.0}
    assert fast_model({"fast": fast}) is fast and fast_model({}) is None and fast_model(None) is None
    changes, note = switch_mode(options, {"steps": 40, "guidance": 6.5}, "fast", fast)
    assert changes == {"mode": "fast", "steps": 4, "guidance": 1.0}
    assert note == "Fast: steps 40 → 4, guidance 6.5 → 1.0 (LCM-LoRA's settings)"
    back, note = switch_mode(options, changes, "quality", fast, kept={"steps": 40, "guidance": 6.5})
    assert back == {"mode": "quality", "steps": 40, "guidance": 6.5} and note.startswith("Quality: steps 4 → 40")
    defaults, _ = switch_mode(options, changes, "quality", fast)  # nothing kept: the service's defaults
    assert (defaults["steps"], defaults["guidance"]) == (120, 7.0)
    huge, _ = switch_mode(options, {}, "fast", {**fast, "steps": 500})  # clamped to the table's bounds
    assert huge["steps"] == 150
    _, note = switch_mode(options, {"steps": 4, "guidance": 1.0}, "fast", fast)
    assert note == "Fast: steps and guidance unchanged"
