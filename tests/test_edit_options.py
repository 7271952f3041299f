"""The edit options table and the one check of an edit's options, mask and text (what the entrance refuses)."""

import numpy as np
import pytest

from serving.core.blending import shrink_radii
from serving.core.edit_options import (
    EDIT_OPTIONS,
    MAX_SEED,
    MAX_TEXT_CHARS,
    EditOptionError,
    check_edit_options,
    denoising_steps,
    info_table,
)
from serving.core.errors import InputError
from serving.core.images import ImageInputError, to_rgb_array
from serving.core.masks import check_subject_mask
from serving.core.prompt_text import clean_user_prompt
from serving.settings import Settings

IMAGE_SHAPE = (48, 64, 3)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"steps": 0}, "steps 0 must be an integer from 1 to 150"),
        ({"steps": 151}, "steps 151"),
        ({"steps": 2.5}, "steps 2.5 must be an integer"),
        ({"steps": True}, "steps True"),
        ({"variants": 9}, "variants 9 must be an integer from 1 to 8"),
        ({"variants": 0}, "variants 0"),
        ({"seed": -1}, "seed -1 must be an integer from 0 to"),
        ({"seed": MAX_SEED + 1}, f"seed {MAX_SEED + 1}"),
        ({"guidance": float("nan")}, "guidance nan"),
        ({"guidance": 31.0}, "guidance 31.0 must be a number from 0 to 30"),
        ({"guidance": "high"}, "guidance 'high'"),
        ({"strength": 0.0}, "strength 0.0 must be a number greater than 0 and at most 1"),
        ({"strength": 1.5}, "strength 1.5"),
        ({"strength": 0.01, "steps": 10}, "leaves no denoising step"),
        ({"feather": -1}, "feather -1"),
        ({"feather": 257}, "feather 257 must be an integer from 0 to 256"),
        ({"shrink_steps": 11, "steps": 10}, "shrink_steps 11"),
        ({"negative_prompt": "x" * (MAX_TEXT_CHARS + 1)}, "negative_prompt has 2001 characters; at most 2000"),
        ({"negative_prompt": 5}, "negative_prompt 5 must be text"),
        ({"colour": "blue"}, "unknown edit option 'colour'"),
    ],
)
def test_bad_options_are_input_errors_naming_the_option_and_its_range(options, message):
    with pytest.raises(EditOptionError, match=message):
        check_edit_options(options)
    assert issubclass(EditOptionError, InputError) and issubclass(EditOptionError, ValueError)


def test_defaults_fill_unset_options_and_settings_replace_the_tables_defaults():
    checked = check_edit_options({"seed": 5, "variants": 3})
    assert checked.seeds == [5, 6, 7]
    assert (checked.steps, checked.guidance, checked.feather, checked.strength) == (30, 7.0, 8, 1.0)
    settings = Settings(default_steps=120, default_guidance=25, default_feather=200)
    checked = check_edit_options({"steps": None}, settings.edit_defaults())
    assert (checked.steps, checked.guidance, checked.feather) == (120, 25.0, 200)
    assert checked.negative_prompt == EDIT_OPTIONS["negative_prompt"].default


def test_a_missing_seed_is_drawn_once_for_the_edit():
    first, second = check_edit_options({"variants": 2}), check_edit_options({"variants": 2})
    assert first.seeds == [first.seed, first.seed + 1] and 0 <= first.seed < 2**31
    assert first.seed != second.seed  # drawn, not fixed (a collision has a chance of 1 in 2**31)


def test_numpy_numbers_are_options_too():
    checked = check_edit_options({"steps": np.int64(4), "guidance": np.float32(2.5)})
    assert (checked.steps, checked.guidance) == (4, 2.5) and type(checked.steps) is int


def test_denoising_steps_follow_strength_as_diffusers_counts_them():
    assert check_edit_options({"steps": 4, "strength": 0.5}).denoising_steps == 2
    assert check_edit_options({"steps": 30}).denoising_steps == 30
    assert check_edit_options({"steps": 10, "strength": 0.15}).denoising_steps == 1
    assert denoising_steps(30, 0.5) == 15 and denoising_steps(7, 1.0) == 7


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"steps": 30, "strength": 0.5, "shrink_steps": 30},
            r"shrink_steps 30 must be an integer from 0 to 14: the edit makes 15 denoising steps "
            r"\(steps 30 × strength 0.5\) and the last one uses the exact mask",
        ),
        ({"steps": 30, "strength": 0.5, "shrink_steps": 15}, "shrink_steps 15 must be an integer from 0 to 14"),
        ({"steps": 10, "shrink_steps": 10}, "shrink_steps 10 must be an integer from 0 to 9"),
        ({"steps": 10, "strength": 0.15, "shrink_steps": 1}, "shrink_steps 1 must be an integer from 0 to 0"),
    ],
)
def test_shrinking_must_end_before_the_last_denoising_step(options, message):
    with pytest.raises(EditOptionError, match=message):
        check_edit_options(options)


@pytest.mark.parametrize(("steps", "strength"), [(30, 0.5), (30, 1.0), (4, 0.75), (150, 1.0)])
def test_the_most_shrink_steps_allowed_still_end_on_the_exact_mask(steps, strength):
    denoising = denoising_steps(steps, strength)
    options = check_edit_options({"steps": steps, "strength": strength, "shrink_steps": denoising - 1})
    radii = shrink_radii(options.shrink_steps, options.denoising_steps)
    assert radii[0] == denoising - 1 and radii[-1] == 0


def test_settings_bounds_come_from_the_table():
    for name in ("steps", "guidance", "feather"):
        option = EDIT_OPTIONS[name]
        Settings(**{f"default_{name}": option.maximum})  # the bound itself is allowed
        with pytest.raises(ValueError, match=f"default_{name}"):
            Settings(**{f"default_{name}": option.maximum + 1})


def test_the_info_table_lists_every_option_with_the_services_defaults():
    rows = {row["name"]: row for row in info_table({"steps": 120})}
    assert list(rows) == list(EDIT_OPTIONS)
    assert rows["steps"] == {
        "name": "steps",
        "type": "integer",
        "default": 120,
        "minimum": 1,
        "maximum": 150,
        "exclusive_minimum": False,
        "help": EDIT_OPTIONS["steps"].help,
    }
    assert rows["strength"]["exclusive_minimum"] and rows["strength"]["type"] == "number"
    assert rows["seed"]["default"] is None and rows["negative_prompt"]["type"] == "string"


@pytest.mark.parametrize(
    ("mask", "message"),
    [
        (np.ones((10, 10), dtype=bool), "10×10 but the image is 64×48"),
        (np.zeros((48, 64), dtype=bool), "empty"),
        (np.ones((48, 64), dtype=bool), "no background"),
        (np.zeros((48, 64, 3), dtype=bool), "HxW array"),
        (np.zeros((48, 64), dtype=complex), "dtype complex"),
    ],
)
def test_unusable_subject_masks_are_named(mask, message):
    with pytest.raises(InputError, match=message):
        check_subject_mask(mask, IMAGE_SHAPE)


def test_subject_masks_of_numbers_are_read_as_subject_where_set():
    mask = np.zeros((48, 64), dtype=np.uint8)
    mask[10:20, 10:20] = 255
    assert check_subject_mask(mask, IMAGE_SHAPE).sum() == 100
    assert check_subject_mask(mask / 255.0 * 0.6, IMAGE_SHAPE).sum() == 100  # floats: >= 0.5 is subject


def test_prompts_are_cleaned_and_bounded():
    assert clean_user_prompt("misty\x00forest\n") == "misty forest"
    with pytest.raises(InputError, match="prompt is empty"):
        clean_user_prompt("  \x01 ")
    with pytest.raises(InputError, match="prompt has 2001 characters"):
        clean_user_prompt("x" * 2001)


def test_an_image_must_be_rgb():
    with pytest.raises(ImageInputError, match="HxWx3"):
        to_rgb_array(np.zeros((48, 64), dtype=np.uint8))


def test_choice_and_boolean_options_check_their_values(monkeypatch):
    from serving.core import edit_options

    table = {**EDIT_OPTIONS, "preview": edit_options.EditOption("preview", bool, True, "Preview while it runs.")}
    monkeypatch.setattr(edit_options, "EDIT_OPTIONS", table)
    assert table["edge"].check("hard") == "hard" and table["preview"].check(False) is False
    with pytest.raises(EditOptionError, match="edge 'soft' must be one of matte, hard"):
        table["edge"].check("soft")
    with pytest.raises(EditOptionError, match="preview 1 must be true or false"):
        table["preview"].check(1)
    rows = {row["name"]: row for row in info_table()}
    assert rows["edge"]["type"] == "string" and rows["edge"]["choices"] == ["matte", "hard"]
    assert rows["preview"]["type"] == "boolean" and "choices" not in rows["preview"]


def test_the_edge_is_a_matte_unless_asked_or_set_otherwise(monkeypatch):
    assert check_edit_options({}).edge == "matte"
    assert check_edit_options({"edge": "hard"}).edge == "hard"
    monkeypatch.setenv("MOODSHIFT_DEFAULT_EDGE", "hard")
    assert check_edit_options({}, Settings().edit_defaults()).edge == "hard"
    with pytest.raises(EditOptionError, match="edge 'Matte' must be one of matte, hard"):
        check_edit_options({"edge": "Matte"})
