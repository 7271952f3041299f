"""Nothing lost: a history entry appears by one rename of a complete folder, and a crash at any point of a write
(an exception, Ctrl-C, or a SIGKILL of the writing process) leaves the earlier entries byte for byte as they were."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from PIL import Image

from tests.reliability.server import REPO
from ui import history
from ui.history import EditRecord, HistoryStore
from ui.settings import get_settings

pytestmark = pytest.mark.slow


def _png(colour: tuple[int, int, int], size: tuple[int, int] = (40, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def _record(prompt: str) -> EditRecord:
    return EditRecord(prompt=prompt, seeds=[7, 8], params={"steps": 2}, timings={"total_s": 1.0}, image_id="img")


def files(root: Path) -> dict[str, bytes]:
    """Every file under `root` (hidden leftovers included) with its bytes."""
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


@pytest.fixture()
def store() -> HistoryStore:
    """A history with two earlier entries."""
    store = HistoryStore(get_settings().history_dir)
    store.add(Image.new("RGB", (40, 30), (10, 20, 30)), [_png((1, 2, 3))], _record("earlier one"))
    store.add(Image.new("RGB", (40, 30), (30, 20, 10)), [_png((3, 2, 1))], _record("earlier two"))
    return store


def test_an_entry_is_published_by_one_rename_of_a_complete_folder(store, monkeypatch):
    listed_before = [entry.id for entry in store.list()]
    renames = []
    real_replace = os.replace

    def watching_replace(source, target):
        source, target = Path(source), Path(target)
        # At the moment of publishing: the folder is hidden, complete, and the gallery does not see it yet.
        assert source.parent == store.root and source.name.startswith(".") and not target.exists()
        document = json.loads((source / "entry.json").read_text())
        assert document["id"] == target.name
        assert sorted(p.name for p in source.iterdir()) == ["entry.json", "result_0.png", "result_1.png", "source.png",
                                                            "thumb.png"]  # fmt: skip
        assert [entry.id for entry in store.list()] == listed_before
        renames.append((source.name, target.name))
        real_replace(source, target)

    monkeypatch.setattr(history.os, "replace", watching_replace)
    entry = store.add(Image.new("RGB", (40, 30)), [_png((5, 5, 5)), _png((6, 6, 6))], _record("new"))
    assert renames == [(f".tmp-{entry.id}", entry.id)]
    assert [e.id for e in store.list()] == [entry.id, *listed_before]


CRASH_POINTS = ["source.png", "result_0.png", "result_1.png", "thumb.png", "entry.json", "folder-fsync", "rename"]
INTERRUPTS = [OSError("No space left on device"), KeyboardInterrupt()]


@pytest.mark.parametrize("interrupt", INTERRUPTS, ids=["oserror", "ctrl-c"])
@pytest.mark.parametrize("point", CRASH_POINTS)
def test_a_crash_at_any_point_of_a_write_leaves_the_previous_state(store, monkeypatch, point, interrupt):
    before = files(store.root)
    listed = [entry.id for entry in store.list()]
    real_write, real_fsync, real_replace = history._write_file, history._fsync_dir, os.replace

    def write_file(path: Path, data: bytes) -> None:
        if path.name == point:
            path.write_bytes(data[: len(data) // 2])  # half of it reached the disk
            raise interrupt
        real_write(path, data)

    def fsync_dir(path: Path) -> None:
        if point == "folder-fsync" and path.name.startswith(".tmp-"):
            raise interrupt
        real_fsync(path)

    def replace(source, target) -> None:
        if point == "rename":
            raise interrupt
        real_replace(source, target)

    monkeypatch.setattr(history, "_write_file", write_file)
    monkeypatch.setattr(history, "_fsync_dir", fsync_dir)
    monkeypatch.setattr(history.os, "replace", replace)
    with pytest.raises(type(interrupt)):
        store.add(Image.new("RGB", (40, 30)), [_png((5, 5, 5)), _png((6, 6, 6))], _record("lost"))
    monkeypatch.undo()
    assert files(store.root) == before  # byte for byte, and no half-written folder left behind
    assert [entry.id for entry in store.list()] == listed


def test_a_killed_writer_leaves_every_complete_entry_and_no_visible_half(store, note):
    before = files(store.root)
    writer = subprocess.Popen(
        [sys.executable, "-m", "tests.reliability.history_writer", str(store.root)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    saved: list[str] = []
    try:
        saved.append(writer.stdout.readline().split()[-1])  # one entry complete...
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # ...and the next one half-way: its temp folder holds two files
            temp = [p for p in store.root.glob(".tmp-*") if len(list(p.iterdir())) >= 2]
            if temp:
                break
            time.sleep(0.01)
        assert temp, "the writer never got half-way through an entry"
    finally:
        writer.send_signal(signal.SIGKILL)  # no except/finally of the writer runs: a real crash
        remaining, _ = writer.communicate(timeout=30)
    saved += [line.split()[-1] for line in remaining.splitlines() if line.startswith("saved ")]
    leftovers = [p.name for p in store.root.glob(".tmp-*")]
    note(f"writer SIGKILLed mid-entry after {len(saved)} complete entr{'y' if len(saved) == 1 else 'ies'}")

    entries = store.list()
    assert sorted(e.id for e in entries if e.record.prompt.startswith("edit ")) == sorted(saved)
    for entry in entries:
        for path in (entry.source_path, entry.thumb_path, *entry.result_paths):
            Image.open(path).load()  # every listed entry is whole
    assert {name: data for name, data in files(store.root).items() if name in before} == before
    assert leftovers, "the kill should have left the half-written temp folder"
    assert store.clean_stale(older_than_s=0) == len(leftovers)
    assert [e.id for e in store.list()] == [e.id for e in entries]


def test_a_crash_mid_delete_removes_the_entry_or_nothing(store, monkeypatch):
    doomed, kept = store.list()
    kept_files = {name: data for name, data in files(store.root).items() if name.startswith(kept.id)}

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(history.shutil, "rmtree", crash)
    with pytest.raises(KeyboardInterrupt):
        store.delete(doomed.id)
    monkeypatch.undo()
    assert [e.id for e in store.list()] == [kept.id]  # gone from the gallery at once, in one rename
    assert {name: data for name, data in files(store.root).items() if name.startswith(kept.id)} == kept_files
    assert store.clean_stale(older_than_s=0) == 1 and [e.id for e in store.list()] == [kept.id]


def test_concurrent_saves_all_land_complete(store):
    def save(index: int) -> str:
        colour = (index, 100, 200)
        return store.add(Image.new("RGB", (40, 30), colour), [_png(colour)], _record(f"parallel {index}")).id

    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(save, range(16)))
    assert len(set(ids)) == 16
    listed = {entry.id: entry for entry in store.list()}
    assert set(ids) <= set(listed)
    for index, entry_id in enumerate(ids):
        assert Image.open(listed[entry_id].result_paths[0]).getpixel((0, 0)) == (index, 100, 200)
