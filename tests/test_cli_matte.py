"""`python -m serving matte` and `bench matte`: an RGBA cut-out at the photo's size from a mask, clicks or the automatic
subject, clear errors for a caller's mistakes, and the benchmark's table, JSON and figure."""

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from serving.cli import app
from serving.core.matting import estimate_matte
from serving.models.sam import Segmenter

runner = CliRunner()


@pytest.fixture
def subject(coffee):
    mask = np.zeros(coffee.shape[:2], dtype=bool)
    mask[90:310, 190:430] = True
    return mask


def _save(tmp_path, name: str, levels: np.ndarray):
    path = tmp_path / name
    Image.fromarray(levels).save(path)
    return path


def test_matte_with_a_mask_writes_the_rgba_cutout(coffee_file, subject, coffee, tmp_path):
    mask = _save(tmp_path, "mask.png", subject.astype(np.uint8) * 255)
    out = tmp_path / "out" / "cutout.png"
    result = runner.invoke(app, ["matte", str(coffee_file), "--mask", str(mask), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "wrote" in result.stdout and "600×400 RGBA" in result.stdout and "soft edge" in result.stdout
    written = Image.open(out)
    assert (written.mode, written.size) == ("RGBA", (600, 400))
    np.testing.assert_array_equal(np.asarray(written), estimate_matte(coffee, subject).cutout())


def test_matte_with_clicks_cuts_out_the_segmenters_mask(tiny_models, coffee_file, coffee, tmp_path):
    out = tmp_path / "clicked.png"
    result = runner.invoke(app, ["matte", str(coffee_file), "--point", "300,200", "-o", str(out)])
    assert result.exit_code == 0, result.output
    subject = Segmenter.from_settings().segment(coffee, [(300, 200)]).mask  # tiny SAM is seeded
    np.testing.assert_array_equal(np.asarray(Image.open(out)), estimate_matte(coffee, subject).cutout())


def test_matte_without_a_mask_or_clicks_cuts_out_the_automatic_subject(
    monkeypatch, coffee_file, coffee, tmp_path, u2netp
):
    from serving.models.subject import SubjectFinder
    from serving.settings import Settings

    monkeypatch.setenv("MOODSHIFT_PROFILE", "real")  # no SAM weights here: loading SAM would fail
    out = tmp_path / "auto.png"
    result = runner.invoke(app, ["matte", str(coffee_file), "-o", str(out)])
    assert result.exit_code == 0, result.output
    subject = SubjectFinder.from_settings(Settings(profile="tiny")).segment(coffee, auto=True).mask
    np.testing.assert_array_equal(np.asarray(Image.open(out)), estimate_matte(coffee, subject).cutout())


def test_a_grey_mask_is_a_soft_prior_not_a_mistake(coffee_file, subject, coffee, tmp_path):
    levels = subject.astype(np.uint8) * 255
    levels[80:90] = 90
    out = tmp_path / "soft.png"
    result = runner.invoke(
        app, ["matte", str(coffee_file), "--mask", str(_save(tmp_path, "grey.png", levels)), "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    expected = estimate_matte(coffee, levels.astype(np.float32) / 255).cutout()
    np.testing.assert_array_equal(np.asarray(Image.open(out)), expected)


@pytest.mark.parametrize(
    ("mask", "arguments", "message"),
    [
        ("subject", ["--auto"], "not both"),
        ("subject", ["--point", "1,1"], "not both"),
        ("subject", ["-o", "cut.jpg"], "name the output .png, not cut.jpg"),
        ("small", [], "mask is 20×10 but the image is 600×400"),
        ("empty", [], "subject mask is empty"),
        ("full", [], "covers the whole image"),
        (None, ["--point", "900,10"], "outside"),
        (None, ["--point", "7,a"], "--point '7,a'"),
    ],
)
def test_mistakes_are_named_before_any_model_loads(
    coffee_file, subject, tmp_path, monkeypatch, mask, arguments, message
):
    monkeypatch.setattr(Segmenter, "from_settings", None)  # never reached
    masks = {
        "subject": subject.astype(np.uint8) * 255,
        "small": np.full((10, 20), 255, np.uint8),
        "empty": np.zeros((400, 600), np.uint8),
        "full": np.full((400, 600), 255, np.uint8),
    }
    mask_arguments = [] if mask is None else ["--mask", str(_save(tmp_path, f"{mask}.png", masks[mask]))]
    output = [] if "-o" in arguments else ["-o", str(tmp_path / "cut.png")]
    result = runner.invoke(app, ["matte", str(coffee_file), *mask_arguments, *output, *arguments])
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_bench_matte_prints_the_table_and_writes_json_and_the_figure(tmp_path):
    out, figure = tmp_path / "matte.json", tmp_path / "docs" / "edge.png"
    result = runner.invoke(app, ["bench", "matte", "--sizes", "0.3", "--json", str(out), "--figure", str(figure)])
    assert result.exit_code == 0, result.output
    assert "alpha SAD ÷ hard mask's" in result.stdout and "0.3 MP (632×474, 6 samples)" in result.stdout
    [row] = json.loads(out.read_text())
    assert row["size"] == [632, 474] and row["band_px"] == 3 and row["seconds"] > 0
    assert row["alpha_ratio"] < 0.3 and row["colour_ratio"] < 0.5
    assert Image.open(figure).size == (2 * 96 * 3 + 4, 96 * 3)
