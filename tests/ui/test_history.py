"""The history store: atomic writes, a loader that skips incomplete entries, delete, newest first."""

from __future__ import annotations

import io
import json
import os
import time

import numpy as np
import pytest
from PIL import Image

from ui import history
from ui.history import EditRecord, HistoryStore, open_store


def _png(color: tuple[int, int, int], size: tuple[int, int] = (60, 40)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def _record(prompt: str = "misty forest, soft light") -> EditRecord:
    return EditRecord(
        prompt=prompt,
        seeds=[7, 8],
        params={"seed": 7, "steps": 4, "guidance": 6.5, "variants": 2, "feather": 8, "strength": 1.0},
        timings={"total_s": 1.25},
        image_id="abc123",
        source_name="coffee.png",
        user_keyword="forest",
        keywords=["calm", "warm"],
        negative_prompt="blurry",
        points=[{"x": 10, "y": 20, "label": 1}],
    )


@pytest.fixture()
def source(coffee) -> Image.Image:
    return Image.fromarray(coffee)


@pytest.fixture()
def store(tmp_path) -> HistoryStore:
    return HistoryStore(tmp_path / "history")


def test_add_writes_every_file_and_reads_back_the_same_fields(store, source):
    entry = store.add(source, [_png((255, 0, 0)), _png((0, 0, 255))], _record())
    assert entry.record == _record()
    assert (entry.width, entry.height) == (60, 40)
    assert sorted(p.name for p in entry.folder.iterdir()) == [
        "entry.json", "result_0.png", "result_1.png", "source.png", "thumb.png",
    ]  # fmt: skip
    assert Image.open(entry.result_paths[1]).getpixel((0, 0)) == (0, 0, 255)
    assert np.array_equal(np.asarray(Image.open(entry.source_path)), np.asarray(source))
    assert max(Image.open(entry.thumb_path).size) <= 320
    document = json.loads((entry.folder / "entry.json").read_text())
    assert document["prompt"] == "misty forest, soft light" and document["seeds"] == [7, 8]
    assert document["params"]["steps"] == 4 and document["image_id"] == "abc123"
    assert document["timings"] == {"total_s": 1.25}


def test_entries_survive_a_restart_and_list_newest_first(store, source):
    first = store.add(source, [_png((1, 1, 1))], _record("first"))
    second = store.add(source, [_png((2, 2, 2))], _record("second"))
    reopened = HistoryStore(store.root)  # a new process sees the same folder
    assert [entry.id for entry in reopened.list()] == [second.id, first.id]
    assert reopened.get(first.id).record.prompt == "first"


def test_a_crash_mid_write_leaves_the_previous_state(store, source, monkeypatch):
    kept = store.add(source, [_png((1, 1, 1))], _record("kept"))
    before = sorted(os.listdir(store.root))
    calls = {"n": 0}
    real_write = history._write_file

    def crash_on_third_file(path, data):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("disk full")
        real_write(path, data)

    monkeypatch.setattr(history, "_write_file", crash_on_third_file)
    with pytest.raises(OSError, match="disk full"):
        store.add(source, [_png((2, 2, 2)), _png((3, 3, 3))], _record("lost"))
    assert [entry.id for entry in store.list()] == [kept.id]
    assert sorted(os.listdir(store.root)) == before  # no half-written folder left behind


def test_a_failed_publish_rename_leaves_the_previous_state(store, source, monkeypatch):
    kept = store.add(source, [_png((1, 1, 1))], _record("kept"))

    def no_rename(src, dst):
        raise OSError("rename failed")

    monkeypatch.setattr(history.os, "replace", no_rename)
    with pytest.raises(OSError, match="rename failed"):
        store.add(source, [_png((2, 2, 2))], _record("lost"))
    monkeypatch.undo()
    assert [entry.id for entry in store.list()] == [kept.id]
    assert sorted(os.listdir(store.root)) == [kept.id]


def test_the_loader_skips_half_written_and_corrupt_folders(store, source):
    good = store.add(source, [_png((1, 1, 1))], _record("good"))
    root = store.root
    # A process killed mid-write leaves its hidden temp folder.
    (root / ".tmp-20990101-000000-aaaaaa").mkdir()
    (root / ".tmp-20990101-000000-aaaaaa" / "result_0.png").write_bytes(_png((9, 9, 9)))
    # A folder without entry.json (copied half-way), one with broken JSON, one missing a result file.
    (root / "20990101-000000-bbbbbb").mkdir()
    (root / "20990101-000000-bbbbbb" / "result_0.png").write_bytes(_png((9, 9, 9)))
    broken = root / "20990101-000000-cccccc"
    broken.mkdir()
    (broken / "entry.json").write_text('{"id": "20990101-000000-cccccc", "prompt": ')
    missing = root / "20990101-000000-dddddd"
    missing.mkdir()
    document = json.loads((good.folder / "entry.json").read_text())
    (missing / "entry.json").write_text(json.dumps({**document, "id": missing.name}))
    for name in ("source.png", "thumb.png"):
        (missing / name).write_bytes((good.folder / name).read_bytes())
    (root / "stray.txt").write_text("not an entry")

    assert [entry.id for entry in store.list()] == [good.id]
    assert store.get("20990101-000000-bbbbbb") is None
    assert store.get(".tmp-20990101-000000-aaaaaa") is None


def test_an_entry_whose_id_does_not_match_its_folder_is_skipped(store, source):
    entry = store.add(source, [_png((1, 1, 1))], _record())
    os.rename(entry.folder, store.root / "renamed")
    assert store.list() == []


def test_a_broken_result_png_is_refused_before_anything_is_written(store, source):
    with pytest.raises(OSError):
        store.add(source, [b"\x89PNG\r\n\x1a\nnot really"], _record())
    assert not store.root.exists() or os.listdir(store.root) == []


def test_add_needs_a_result(store, source):
    with pytest.raises(ValueError, match="at least one result"):
        store.add(source, [], _record())


def test_delete_removes_an_entry_and_refuses_unknown_or_outside_names(store, source, tmp_path):
    keep = store.add(source, [_png((1, 1, 1))], _record("keep"))
    drop = store.add(source, [_png((2, 2, 2))], _record("drop"))
    assert store.delete(drop.id) is True
    assert [entry.id for entry in store.list()] == [keep.id]
    assert sorted(os.listdir(store.root)) == [keep.id]
    assert store.delete(drop.id) is False
    (tmp_path / "outside").mkdir()
    assert store.delete("../outside") is False and (tmp_path / "outside").is_dir()


def test_clean_stale_removes_only_old_leftovers(store, source):
    store.add(source, [_png((1, 1, 1))], _record())
    old = store.root / ".tmp-old"
    old.mkdir()
    fresh = store.root / ".trash-fresh"
    fresh.mkdir()
    an_hour_ago = time.time() - 7200
    os.utime(old, (an_hour_ago, an_hour_ago))
    assert store.clean_stale(older_than_s=3600) == 1
    assert not old.exists() and fresh.exists() and len(store.list()) == 1


def test_the_studio_opens_the_store_clearing_old_leftovers_once_per_process(tmp_path, source):
    root = tmp_path / "opened"
    store = HistoryStore(root)
    kept = store.add(source, [_png((1, 1, 1))], _record())
    an_hour_ago = time.time() - 7200

    def leftover(name: str):
        folder = root / name
        folder.mkdir()
        os.utime(folder, (an_hour_ago, an_hour_ago))
        return folder

    crashed = leftover(".tmp-crashed")
    assert [entry.id for entry in open_store(root).list()] == [kept.id]
    assert not crashed.exists()
    later = leftover(".trash-later")
    open_store(root)  # opened again in the same process: not listed again
    assert later.exists()


def test_an_empty_or_missing_folder_has_no_entries(tmp_path):
    assert HistoryStore(tmp_path / "nowhere").list() == []
