"""The benchmarks' command lines and counting, without running a benchmark: a JSON file that could not be written is
named before the run, a service that does not answer is a clear error, rates count only what succeeded, and a folder
run's batches are told from earlier ones."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from serving.cli import app

runner = CliRunner()


def _never(*_args, **_kwargs):
    raise AssertionError("the benchmark ran although its --json file could not be written")


@pytest.mark.parametrize(
    ("arguments", "work"),
    [
        (["matte", "--sizes", "0.1"], "serving.bench.matte.run_matte_bench"),
        (["segment", "--device", "cpu"], "serving.models.sam.Segmenter.from_settings"),
        (["diffusion", "--size", "64"], "serving.models.blended_sdxl.BlendedSDXLRunner.from_settings"),
        (["serve", "--clients", "1"], "serving.processes.running_service"),
        (["serve", "--folder"], "serving.processes.running_service"),
    ],
)  # fmt: skip
def test_a_json_file_that_cannot_be_written_is_named_before_the_run(
    tiny_models, tmp_path, monkeypatch, arguments, work
):
    monkeypatch.setattr(work, _never)
    missing = tmp_path / "no-such-folder" / "numbers.json"
    result = runner.invoke(app, ["bench", *arguments, "--json", str(missing)])
    assert result.exit_code == 2, result.output
    assert f"error: --json {missing}: the folder {missing.parent} does not exist" in result.stderr
    folder = runner.invoke(app, ["bench", *arguments, "--json", str(tmp_path)])
    assert folder.exit_code == 2 and f"error: --json {tmp_path} is a folder: name a file" in folder.stderr


@pytest.fixture
def dead_url():
    """A loopback URL where nothing listens."""
    from serving.processes import free_port

    return f"http://127.0.0.1:{free_port()}"


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ([], "error: cannot reach the Moodshift service at {url}: is it running?"),
        (["--http-clients"], "error: cannot reach the Moodshift service at {url}: is it running?"),
        (["--folder", "--photos", "1", "--size", "64"], "error: Cannot reach the Moodshift service at {url}"),
    ],
)
def test_bench_serve_names_a_service_that_does_not_answer(dead_url, tmp_path, mode, message):
    out = tmp_path / "numbers.json"
    result = runner.invoke(app, ["bench", "serve", "--url", dead_url, *mode, "--json", str(out)])
    assert result.exit_code == 2, (result.output, result.exception)
    assert message.format(url=dead_url) in result.stderr
    assert not out.exists()


def test_bench_serve_split_refuses_a_url(dead_url):
    result = runner.invoke(app, ["bench", "serve", "--split", "--url", dead_url])
    assert result.exit_code == 2
    assert "--split starts its own single service and split deployment to compare: it cannot measure --url" in (
        result.stderr
    )


def test_bench_serve_http_clients_on_a_url_keeps_the_settings_and_passes_the_edit_steps(dead_url, monkeypatch):
    import os

    from serving.bench import clients
    from serving.bench.clients import Pair

    calls: dict = {}

    def pair(name):
        def record(*args, **kwargs):
            calls[name] = (args, kwargs)
            return Pair(name, "one", "other", [1.0], [2.0])

        return record

    for name in ("repeat_click", "uploads", "previews"):
        monkeypatch.setattr(clients, name, pair(name))
    monkeypatch.setattr(clients, "jpeg_photo", lambda *_args: b"")
    result = runner.invoke(app, ["bench", "serve", "--http-clients", "--url", dead_url, "--edit-steps", "7"])
    assert result.exit_code == 0, result.output
    assert calls["previews"][1] == {"steps": 7}
    assert "MOODSHIFT_PROFILE" not in os.environ  # the service's models are compared with this machine's, not tiny
    assert "note: the in-process side runs here with this machine's settings (profile auto)" in result.stderr
    default = runner.invoke(app, ["bench", "serve", "--http-clients", "--url", dead_url])
    assert default.exit_code == 0 and calls["previews"][1] == {"steps": 20}


def test_rates_count_only_what_succeeded():
    from serving.bench.folder import FolderResult
    from serving.bench.serve import LoadResult

    load = LoadResult("edit", "on", 2, 10, 4, 2.0, {"500": 4}, [100.0] * 6)
    assert load.requests_per_s == 3.0 and load.row()["requests_per_s"] == 3.0
    assert FolderResult(1, 8, 2, 3.0, [], []).photos_per_s == 2.0


def test_new_batches_by_the_run_counter_or_the_window():
    from serving.bench.folder import STATS_WINDOW, Batches, new_batches

    full = list(range(STATS_WINDOW))
    # A counter: exactly the batches made, even once the window is full.
    assert new_batches(Batches(full, 250), Batches([*full[3:], 7, 8, 9], 253)) == ([7, 8, 9], True)
    assert new_batches(Batches(full, 250), Batches(full, 250)) == ([], True)
    assert new_batches(Batches(full, 100), Batches(full, 100 + STATS_WINDOW + 1)) == (full, False)
    # No counter: the tail while the window is not full, else all of it and not exact.
    assert new_batches(Batches([1, 2], None), Batches([1, 2, 4], None)) == ([4], True)
    assert new_batches(Batches(full, None), Batches([*full[1:], 4], None)) == ([*full[1:], 4], False)


def test_a_folder_run_sends_no_previews_and_says_when_its_batches_are_not_exact(monkeypatch):
    from serving.bench import folder
    from serving.bench.folder import STATS_WINDOW, Batches, folder_throughput, format_folder_table
    from serving.cli import remote
    from serving.cli.edit import Edited, PhotoFailed

    requests_seen = []

    class Editor:
        def __init__(self, _url, request, _subject, _preview=None):
            requests_seen.append(request)
            self.edits = 0

        def edit(self, photo, _progress):
            self.edits += 1
            if self.edits == 3:
                raise PhotoFailed("refused")
            return Edited([np.zeros((8, 8, 3), np.uint8)], [1], "")

    full = [1] * STATS_WINDOW
    looks = iter([(Batches(full, None), Batches([1], 5)), (Batches([*full[1:], 2], None), Batches([1, 2], 6))])
    monkeypatch.setattr(remote, "RemoteEditor", Editor)
    monkeypatch.setattr(folder, "_batches", lambda _url: next(looks))
    [result] = folder_throughput("http://service", [1], count=3, size=(64, 48), steps=2)
    assert requests_seen == [{"prompt": "a misty forest at dawn", "steps": 2, "seed": 1, "preview": False}]
    assert (result.photos, result.failed) == (3, 1)
    assert result.photos_per_s == 2 / result.seconds
    assert result.diffusion_batches == [2] and not result.batches_exact
    assert json.loads(json.dumps(result.row()))["batches_exact"] is False
    assert f"note: /stats lists only the last {STATS_WINDOW} batch sizes of a stage" in format_folder_table([result])


def test_bench_diffusion_steps_default_to_an_edits_and_take_the_tables_bounds(monkeypatch):
    from types import SimpleNamespace

    from serving.bench import diffusion

    calls = []
    runner_stub = SimpleNamespace(model_name="stub", device="cpu")
    monkeypatch.setattr("serving.models.blended_sdxl.BlendedSDXLRunner.from_settings", lambda _settings: runner_stub)
    monkeypatch.setattr(diffusion, "run_diffusion_bench", lambda _runner, **kwargs: calls.append(kwargs))
    monkeypatch.setattr(diffusion, "format_table", lambda _result: "table")
    monkeypatch.setenv("MOODSHIFT_DEFAULT_STEPS", "12")
    result = runner.invoke(app, ["bench", "diffusion", "--size", "64", "--device", "cpu", "--mode", "fast"])
    assert result.exit_code == 0, result.output
    # None: the bench fills in the settings' steps (12) as an edit does, not a fixed 30.
    assert calls[0]["steps"] is None and calls[0]["quality_steps"] is None and calls[0]["defaults"]["steps"] == 12
    one = runner.invoke(app, ["bench", "diffusion", "--size", "64", "--device", "cpu", "--steps", "1"])
    assert one.exit_code == 0, one.output  # an edit may take 1 step: so may the bench
    assert calls[1]["steps"] == 1
