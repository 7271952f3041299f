"""`python -m serving edit` with the tiny profile: variant files at the input's size, exact subject (deeper than the
soft edge's band; all of it with --edge hard), clear errors."""

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from serving.cli import app
from serving.models.blended_sdxl import BlendedSDXLRunner
from serving.settings import get_settings
from tests.matting import core_of

runner = CliRunner()


@pytest.fixture
def tiny_profile(tiny_models, monkeypatch):
    monkeypatch.setenv("MOODSHIFT_WORKING_PIXELS", str(128 * 128))  # seconds on a shared CPU


@pytest.fixture
def subject(coffee):
    mask = np.zeros(coffee.shape[:2], dtype=bool)
    mask[90:310, 190:430] = True
    return mask


@pytest.fixture
def mask_file(tmp_path, subject):
    path = tmp_path / "mask.png"
    Image.fromarray(subject.astype(np.uint8) * 255).save(path)
    return path


def test_edit_with_a_mask_writes_one_file_per_variant(tiny_profile, coffee_file, mask_file, subject, coffee, tmp_path):
    out = tmp_path / "out" / "forest.png"
    arguments = ["edit", str(coffee_file), "--mask", str(mask_file), "--prompt", "a misty forest", "-o", str(out)]
    result = runner.invoke(app, [*arguments, "--steps", "2", "--variants", "2", "--seed", "4", "--feather", "5"])
    assert result.exit_code == 0, result.output
    assert "denoising" in result.output  # the progress bar's label
    assert "seed 4" in result.stdout and "seed 5" in result.stdout and "random weights" in result.stdout
    assert not out.exists()
    first, second = (np.asarray(Image.open(tmp_path / "out" / name)) for name in ("forest-1.png", "forest-2.png"))
    core = core_of(subject)
    for image in (first, second):
        assert image.shape == coffee.shape
        assert np.array_equal(image[core], coffee[core])
        assert (np.abs(image.astype(int) - coffee)[~subject] > 10).mean() > 0.5  # background regenerated
    assert not np.array_equal(first, second)


def test_edit_with_a_keyword_writes_the_prompt_as_the_service_does(
    tiny_profile, coffee_file, mask_file, subject, coffee, tmp_path
):
    out = tmp_path / "keyword.png"
    arguments = [
        "edit",
        str(coffee_file),
        "--mask",
        str(mask_file),
        "--keyword",
        "galaxy",
        "--steps",
        "1",
        "-o",
        str(out),
    ]
    arguments += ["--keywords", "calm,warm", "--edge", "hard"]
    result = runner.invoke(app, arguments, env={"MOODSHIFT_OLLAMA_ENABLED": "false"})
    assert result.exit_code == 0, result.output
    assert "prompt (template): galaxy" in result.stdout and "calm" in result.stdout
    edited = np.asarray(Image.open(out))
    assert np.array_equal(edited[subject], coffee[subject])


def test_edit_saves_previews_when_asked(tiny_profile, coffee_file, mask_file, tmp_path):
    out, preview = tmp_path / "out.png", tmp_path / "preview.png"
    arguments = ["edit", str(coffee_file), "--mask", str(mask_file), "--prompt", "a galaxy", "--steps", "40"]
    result = runner.invoke(app, [*arguments, "-o", str(out), "--preview", str(preview)])
    assert result.exit_code == 0, result.output
    picture = Image.open(preview)
    assert picture.format == "PNG" and max(picture.size) <= 256 and not preview.with_name("preview.png.part").exists()


def test_edit_with_a_click_uses_the_segmenter_mask(tiny_profile, coffee_file, coffee, tmp_path):
    from serving.models.sam import Segmenter

    out = tmp_path / "clicked.png"
    result = runner.invoke(
        app, ["edit", str(coffee_file), "--point", "300,200", "--prompt", "a beach", "--steps", "1", "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    edited = np.asarray(Image.open(out))
    subject = Segmenter.from_settings().segment(coffee, [(300, 200)]).mask  # tiny SAM is seeded
    assert subject.any() and not subject.all()
    assert np.array_equal(edited[core_of(subject)], coffee[core_of(subject)])


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--point", "1,2"], "not both"),
        (["--keyword", "forest"], "either as --prompt TEXT or as --keyword WORD"),
        (["--auto"], "not both"),
        (["--concurrency", "2"], "--concurrency needs --server"),
        (["--steps", "0"], "steps 0 must be an integer from 1 to 150"),
        (["--variants", "9"], "variants 9"),
        (["--strength", "0"], "strength 0.0"),
        (["--edge", "soft"], "edge 'soft' must be one of matte, hard"),
        (["-o", "out.unknown"], "cannot tell the image format of out.unknown"),
    ],
)
def test_bad_options_fail_before_any_model_loads(tiny_profile, coffee_file, mask_file, monkeypatch, arguments, message):
    def no_model(*_args, **_kwargs):
        raise AssertionError("a model was built for a request that was bad from the start")

    monkeypatch.setattr(BlendedSDXLRunner, "from_settings", no_model)
    result = runner.invoke(
        app, ["edit", str(coffee_file), "--mask", str(mask_file), "--prompt", "x", "-o", "o.png", *arguments]
    )
    assert result.exit_code == 2, result.output
    assert message in result.output


@pytest.fixture
def recorded(monkeypatch):
    """Both editors replaced by one that records the request it was built with and writes a small black image:
    what the command line checks and sends, without a model or a service."""
    from serving.cli import edit as edit_module
    from serving.cli import remote

    seen: dict = {}

    class Recorder:
        def __init__(self, *args, **_kwargs):
            seen.update(args[1] if isinstance(args[0], str) else args[0])  # RemoteEditor takes the URL first

        def edit(self, _photo, _progress):
            return edit_module.Edited([np.zeros((8, 8, 3), np.uint8)], [3], "recorded")

    monkeypatch.setattr(edit_module, "InProcessEditor", Recorder)
    monkeypatch.setattr(remote, "RemoteEditor", Recorder)
    return seen


def test_the_early_check_uses_the_settings_defaults_and_leaves_the_service_its_own(
    coffee_file, tmp_path, monkeypatch, recorded
):
    arguments = ["edit", str(coffee_file), "--prompt", "x", "--shrink-steps", "40", "-o", str(tmp_path / "o.png")]
    refused = runner.invoke(app, arguments)  # the table's 30 steps: 40 shrink steps cannot run
    assert refused.exit_code == 2 and "shrink_steps 40 must be an integer from 0 to 29" in refused.stderr
    assert not recorded
    monkeypatch.setenv("MOODSHIFT_DEFAULT_STEPS", "50")  # the edit would make 50 steps: 40 of them shrinking is fine
    get_settings.cache_clear()
    result = runner.invoke(app, arguments)
    assert result.exit_code == 0, result.output
    assert recorded["shrink_steps"] == 40 and "steps" not in recorded  # the pipeline fills in the settings' 50
    assert (tmp_path / "o.png").exists()

    recorded.clear()
    monkeypatch.delenv("MOODSHIFT_DEFAULT_STEPS")
    get_settings.cache_clear()
    remote = runner.invoke(app, [*arguments, "--server", "http://127.0.0.1:9"])  # the service has its own settings
    assert remote.exit_code == 0, remote.output
    assert recorded["shrink_steps"] == 40 and recorded["preview"] is False
    typo = runner.invoke(app, [*arguments, "--server", "http://127.0.0.1:9", "--steps", "0"])
    assert typo.exit_code == 2 and "steps 0 must be an integer from 1 to 150" in typo.stderr


def test_the_early_check_leaves_fast_modes_steps_to_its_model(coffee_file, tmp_path, monkeypatch, recorded):
    monkeypatch.setenv("MOODSHIFT_DEFAULT_STEPS", "2")  # quality's default; fast edits take the few-step model's
    out = str(tmp_path / "o.png")
    result = runner.invoke(app, ["edit", str(coffee_file), "--prompt", "x", "--mode", "fast", "--shrink-steps", "3",
                                 "-o", out])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert recorded["mode"] == "fast" and recorded["shrink_steps"] == 3
    quality = runner.invoke(app, ["edit", str(coffee_file), "--prompt", "x", "--shrink-steps", "3", "-o", out])
    assert quality.exit_code == 2 and "shrink_steps 3 must be an integer from 0 to 1" in quality.stderr


def test_neither_a_prompt_nor_a_keyword_is_named_as_such(coffee_file, recorded):
    result = runner.invoke(app, ["edit", str(coffee_file), "-o", "o.png"])
    assert result.exit_code == 2
    assert "error: give the new background as --prompt TEXT or as --keyword WORD\n" in result.stderr
    assert "not both" not in result.stderr and not recorded


def test_mask_of_another_size_and_bad_click_are_named(tiny_profile, coffee_file, tmp_path, monkeypatch):
    monkeypatch.setattr(BlendedSDXLRunner, "from_settings", None)  # never reached
    small = tmp_path / "small.png"
    Image.fromarray(np.full((10, 20), 255, dtype=np.uint8)).save(small)
    result = runner.invoke(app, ["edit", str(coffee_file), "--mask", str(small), "--prompt", "x", "-o", "o.png"])
    assert result.exit_code == 2 and "mask is 20×10 but the image is 600×400" in result.output
    result = runner.invoke(app, ["edit", str(coffee_file), "--point", "7,a", "--prompt", "x", "-o", "o.png"])
    assert result.exit_code == 2 and "--point '7,a'" in result.output
    result = runner.invoke(app, ["edit", str(tmp_path / "gone.png"), "-p", "1,1", "--prompt", "x", "-o", "o.png"])
    assert result.exit_code == 2 and "cannot read" in result.output


def test_edit_with_only_a_keyword_keeps_the_automatic_subject(tiny_profile, coffee_file, coffee, tmp_path, u2netp):
    from serving.models.subject import SubjectFinder
    from serving.settings import Settings

    out = tmp_path / "zero-click.png"
    result = runner.invoke(
        app,
        ["edit", str(coffee_file), "--keyword", "forest", "--steps", "1", "-o", str(out)],
        env={"MOODSHIFT_OLLAMA_ENABLED": "false"},
    )
    assert result.exit_code == 0, result.output
    assert "prompt (template): forest" in result.stdout
    subject = SubjectFinder.from_settings(Settings(profile="tiny")).segment(coffee, auto=True).mask
    edited = np.asarray(Image.open(out))
    core = core_of(subject)
    assert 0.05 < subject.mean() < 0.6 and np.array_equal(edited[core], coffee[core])
    assert (np.abs(edited.astype(int) - coffee)[~subject] > 10).mean() > 0.5  # the rest is a new background


@pytest.fixture
def folder(tmp_path, coffee, astronaut):
    """Three photos and a file that is not one."""
    photos = tmp_path / "photos"
    photos.mkdir()
    for name, image in (("cup", coffee), ("astronaut", astronaut), ("cup-mirrored", coffee[:, ::-1])):
        Image.fromarray(image).save(photos / f"{name}.png")
    (photos / "broken.jpg").write_bytes(b"\xff\xd8 not really a JPEG")
    return photos


def test_a_folder_of_photos_writes_one_output_each_and_reports_the_broken_one(tiny_profile, folder, tmp_path, u2netp):
    photos = sorted(folder.iterdir())
    out = tmp_path / "out"
    arguments = ["edit", *map(str, photos), "--prompt", "a forest", "--steps", "1", "--seed", "3", "-o", f"{out}/"]
    result = runner.invoke(app, arguments)
    assert result.exit_code == 1, result.output  # some failed
    assert sorted(path.name for path in out.iterdir()) == ["astronaut.png", "cup-mirrored.png", "cup.png"]
    assert Image.open(out / "astronaut.png").size == (512, 512) and Image.open(out / "cup.png").size == (600, 400)
    assert result.output.count("denoising") == 1  # one progress bar over all of them
    assert "failed: " in result.stderr and "broken.jpg: not a readable image" in result.stderr
    assert "3 edited, 1 failed, 0 skipped (already there) of 4 photos" in result.stdout

    def no_model(*_args, **_kwargs):
        raise AssertionError("a rerun loaded a model")

    from serving.models.blended_sdxl import BlendedSDXLRunner

    before = {path.name: path.stat().st_mtime_ns for path in out.iterdir()}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(BlendedSDXLRunner, "from_settings", no_model)
        again = runner.invoke(app, arguments)
    assert again.exit_code == 1 and "0 edited, 1 failed, 3 skipped (already there) of 4 photos" in again.stdout
    skipped = [line for line in again.stdout.splitlines() if line.startswith("skipped ")]
    assert len(skipped) == 3 and all(line.endswith("is already there (--overwrite edits it again)") for line in skipped)
    assert {path.name: path.stat().st_mtime_ns for path in out.iterdir()} == before  # no work, nothing rewritten
    two = [str(folder / "cup.png"), str(folder / "astronaut.png")]  # -o names an existing folder: no slash needed
    redone = runner.invoke(app, ["edit", *two, "--prompt", "a forest", "--steps", "1", "-o", str(out), "--overwrite"])
    assert redone.exit_code == 0 and "2 edited, 0 failed, 0 skipped (already there) of 2 photos" in redone.stdout
    assert (out / "cup.png").stat().st_mtime_ns > before["cup.png"]


def test_a_folder_refuses_one_photos_pixels_and_clashing_names(tiny_profile, folder, mask_file, tmp_path):
    photos = [str(folder / "cup.png"), str(folder / "astronaut.png")]
    result = runner.invoke(app, ["edit", *photos, "--mask", str(mask_file), "--prompt", "x", "-o", str(tmp_path)])
    assert result.exit_code == 2 and "for several photos the subject is found automatically" in result.stderr
    other = tmp_path / "other"
    other.mkdir()
    Image.open(folder / "cup.png").save(other / "cup.png")
    result = runner.invoke(app, ["edit", photos[0], str(other / "cup.png"), "--prompt", "x", "-o", str(tmp_path / "o")])
    assert result.exit_code == 2 and "would both write" in result.stderr


def test_help_names_the_variant_files():
    result = runner.invoke(app, ["edit", "--help"])
    assert result.exit_code == 0
    assert "OUT-1.png" in result.output and "--mask" in result.output and "--point" in result.output


def test_bench_diffusion_compares_with_the_pipeline_and_writes_json(tmp_path):
    import json

    out = tmp_path / "bench.json"
    arguments = ["bench", "diffusion", "--size", "64", "--steps", "2", "--batch", "2", "--device", "cpu"]
    result = runner.invoke(app, [*arguments, "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "inpaint pipeline" in result.stdout and "ratio" in result.stdout and "batch of 2" in result.stdout
    numbers = json.loads(out.read_text())
    assert numbers["size"] == [64, 64] and numbers["steps"] == 2 and numbers["profile"] == "tiny"
    assert numbers["runner_s_per_step"] > 0 and numbers["pipeline_s_per_step"] > 0
    assert numbers["ratio"] == numbers["runner_s_per_step"] / numbers["pipeline_s_per_step"]
    assert set(numbers["peak_mib"]) == {"runner", "pipeline", "runner batch 2"}


def test_bench_diffusion_in_fast_mode_times_both_modes_on_the_same_components(tmp_path):
    import json

    out = tmp_path / "fast.json"
    arguments = ["bench", "diffusion", "--size", "64", "--mode", "fast", "--quality-steps", "3", "--batch", "1"]
    result = runner.invoke(app, [*arguments, "--device", "cpu", "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "fast mode, 4 steps" in result.stdout and "faster per edit" in result.stdout
    assert "quality edit" in result.stdout and "(3 steps, guidance 7)" in result.stdout
    numbers = json.loads(out.read_text())
    assert numbers["mode"] == "fast" and numbers["steps"] == 4 and set(numbers["edit_s"]) == {"quality", "fast"}
    assert numbers["speedup"] == numbers["edit_s"]["quality"] / numbers["edit_s"]["fast"]
    assert numbers["mode_settings"]["fast"] == "4 steps, guidance 0" and set(numbers["switch_s"]) == {
        "to fast",
        "to quality",
    }
