"""`python -m serving segment` and `bench segment` with the tiny profile: real masks out, clear errors in."""

import json
import re

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from serving.cli import app
from serving.models.sam import Segmenter
from serving.models.sam_builders import build_tiny_sam

runner = CliRunner()


def test_segment_writes_the_same_mask_as_the_segmenter(tiny_models, coffee_file, tmp_path, coffee):
    out = tmp_path / "masks" / "subject.png"
    result = runner.invoke(
        app, ["segment", str(coffee_file), "--point", "450,80", "--point", "150,300,0", "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "wrote" in result.stdout and "600×400" in result.stdout and "random weights" in result.stdout

    written = Image.open(out)
    assert written.size == (600, 400) and written.mode == "L"
    pixels = np.asarray(written)
    assert set(np.unique(pixels)) <= {0, 255} and (pixels == 255).any()
    expected = Segmenter(build_tiny_sam(seed=0)).segment(coffee, [(450, 80, 1), (150, 300, 0)]).mask
    assert np.array_equal(pixels == 255, expected)


def test_segment_auto_writes_the_automatic_subject_without_loading_sam(
    monkeypatch, coffee_file, tmp_path, coffee, u2netp
):
    from serving.models.subject import SubjectFinder
    from serving.settings import Settings

    monkeypatch.setenv("MOODSHIFT_PROFILE", "real")  # no SAM weights here: loading SAM would fail
    out = tmp_path / "auto.png"
    result = runner.invoke(app, ["segment", str(coffee_file), "--auto", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "600×400" in result.stdout and "u2netp)" in result.stdout and "random weights" not in result.stdout
    expected = SubjectFinder.from_settings(Settings(profile="tiny")).segment(coffee, auto=True).mask
    assert np.array_equal(np.asarray(Image.open(out)) == 255, expected)
    # No clicks: the automatic subject too.
    same = runner.invoke(app, ["segment", str(coffee_file), "-o", str(tmp_path / "plain.png")])
    assert same.exit_code == 0 and Image.open(tmp_path / "plain.png").tobytes() == Image.open(out).tobytes()


def test_segment_auto_with_clicks_refines_the_automatic_subject(tiny_models, coffee_file, tmp_path, u2netp):
    out = tmp_path / "refined.png"
    result = runner.invoke(app, ["segment", str(coffee_file), "--auto", "--point", "300,200,0", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "u2netp+clicks)" in result.stdout and "random weights" not in result.stdout
    assert not np.asarray(Image.open(out))[200, 300]


def test_segment_with_a_box_on_an_exif_rotated_jpeg_has_the_displayed_size(tiny_models, tmp_path, coffee):
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "sideways.jpg"
    Image.fromarray(np.rot90(coffee).copy()).save(path, quality=95, exif=exif)  # stored 400×600, shown 600×400
    out = tmp_path / "mask.png"
    result = runner.invoke(app, ["segment", str(path), "--box", "100,50,500,350", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert Image.open(out).size == (600, 400)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--point", "7,a"], "--point '7,a' is not X,Y or X,Y,LABEL"),
        (["--point", "1,2,3,4"], "--point '1,2,3,4' is not X,Y or X,Y,LABEL"),
        (["--point", "700,20"], r"point 0 \(700, 20\) is outside the 600×400 image"),
        (["--point", "10,20,2"], "point 0 has label 2"),
        (["--point", "10,20,0.5"], "point 0 has label 0.5"),
        (["--point", "nan,20"], "point 0 x is nan"),
        (["--box", "50,50,10,10"], r"box \[50, 50, 10, 10\] needs x0 < x1"),
        (["--box", "1,2,3"], "--box '1,2,3' is not X0,Y0,X1,Y1"),
    ],
)
def test_bad_prompts_fail_clearly_without_loading_a_model(monkeypatch, coffee_file, tmp_path, arguments, message):
    monkeypatch.setenv("MOODSHIFT_PROFILE", "real")  # no weights here: reaching the model would fail differently
    result = runner.invoke(app, ["segment", str(coffee_file), *arguments, "-o", str(tmp_path / "m.png")])
    assert result.exit_code == 2
    assert "error:" in result.stderr
    assert re.search(message, result.stderr), result.stderr
    assert not (tmp_path / "m.png").exists()


def test_a_mask_is_written_only_under_a_png_name(monkeypatch, coffee_file, tmp_path):
    monkeypatch.setenv("MOODSHIFT_PROFILE", "real")  # no weights here: reaching the model would fail differently
    out = tmp_path / "mask.jpg"
    result = runner.invoke(app, ["segment", str(coffee_file), "--point", "300,200", "-o", str(out)])
    assert result.exit_code == 2
    assert "error: a mask is a PNG: name the output .png, not mask.jpg" in result.stderr
    assert not out.exists()


def test_bad_images_fail_clearly(monkeypatch, coffee_file, tmp_path):
    monkeypatch.setenv("MOODSHIFT_PROFILE", "real")
    monkeypatch.setenv("MOODSHIFT_MAX_IMAGE_PIXELS", "100000")
    mask = str(tmp_path / "m.png")
    result = runner.invoke(app, ["segment", str(coffee_file), "--point", "1,1", "-o", mask])
    assert result.exit_code == 2
    assert "coffee.png: image is 600×400 = 240,000 pixels, more than the limit of 100,000" in result.stderr

    text = tmp_path / "notes.png"
    text.write_text("not an image")
    result = runner.invoke(app, ["segment", str(text), "--point", "1,1", "-o", mask])
    assert result.exit_code == 2 and "notes.png: not a readable image" in result.stderr

    result = runner.invoke(app, ["segment", str(tmp_path / "missing.png"), "--point", "1,1", "-o", mask])
    assert result.exit_code == 2 and "cannot read image" in result.stderr and "missing.png" in result.stderr


def test_missing_real_weights_name_the_file(monkeypatch, coffee_file, tmp_path):
    monkeypatch.setenv("MOODSHIFT_PROFILE", "real")
    result = runner.invoke(app, ["segment", str(coffee_file), "--point", "5,5", "-o", str(tmp_path / "m.png")])
    assert result.exit_code == 2 and "sam_vit_h_4b8939.pth" in result.stderr and "Traceback" not in result.output


def test_bench_segment_reports_every_number(tiny_models, tmp_path):
    out = tmp_path / "bench.json"
    arguments = ["bench", "segment", "--profile", "tiny", "--clicks", "3", "--repeats", "1"]
    arguments += ["--batch-sizes", "1,2", "--size", "96x64", "--device", "cpu", "--json", str(out)]
    result = runner.invoke(app, arguments)
    assert result.exit_code == 0, result.output
    for label in ("first click", "later click p50", "later click p95", "later / first", "encode, batch 2"):
        assert label in result.stdout

    numbers = json.loads(out.read_text())
    assert numbers["profile"] == "tiny" and numbers["device"] == "cpu" and numbers["dtype"] == "float32"
    assert numbers["image_size"] == [96, 64] and numbers["clicks"] == 3
    assert len(numbers["first_click_ms"]) == 1 and len(numbers["later_click_ms"]) == 2
    assert numbers["later_used_mask_input"] == 1.0  # every later click was refined with the previous logits
    assert set(numbers["encode_images_per_s"]) == {"1", "2"} and min(numbers["encode_images_per_s"].values()) > 0
    assert numbers["later_click_p50_ms"] < numbers["first_click_p50_ms"]  # no encode on a later click
    assert numbers["later_over_first"] == pytest.approx(numbers["later_click_p50_ms"] / numbers["first_click_p50_ms"])


def test_bench_segment_auto_times_the_automatic_subject_and_scores_it(tmp_path, u2netp):
    out = tmp_path / "auto.json"
    result = runner.invoke(
        app, ["bench", "segment", "--auto", "--size", "320x240", "--repeats", "1", "--json", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "automatic subject p50" in result.stdout and "IoU: horse of cat fur over the astronaut" in result.stdout
    numbers = json.loads(out.read_text())
    assert numbers["model"] == "u2netp" and numbers["image_size"] == [320, 240] and len(numbers["seconds"]) == 7
    assert 0 < numbers["p50_s"] <= numbers["p95_s"] and min(numbers["iou"].values()) > 0.85


def test_bench_rejects_a_bad_size(tiny_models):
    result = runner.invoke(app, ["bench", "segment", "--size", "96by64"])
    assert result.exit_code == 2 and "--size '96by64' is not 2 positive integers" in result.stderr
