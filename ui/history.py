"""The history gallery's store: one folder per finished edit under `get_settings().history_dir`.

Layout of an entry folder `<id>/`: `entry.json` (prompt, seeds, parameters, timings, source image id...),
`source.png`, `result_<i>.png`, `thumb.png`. An entry is written into a hidden temp folder and moved into
place with one `os.replace`, so a crash mid-write leaves the previous state; deleting first moves the folder
out of sight. The loader skips anything incomplete or corrupt instead of failing the gallery, and the studio opens
the store through `open_store`, which clears such leftovers once per process.
"""

from __future__ import annotations

import io
import json
import logging
import os
import secrets
import shutil
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from PIL import Image

from ui.overlay import thumbnail

log = logging.getLogger(__name__)

ENTRY_FILE = "entry.json"
SOURCE_FILE = "source.png"
THUMB_FILE = "thumb.png"
FORMAT_VERSION = 1
_TEMP_PREFIX = ".tmp-"
_TRASH_PREFIX = ".trash-"
_STALE_AFTER_S = 3600.0

_cleaned_roots: set[Path] = set()  # the folders `open_store` has cleared of leftovers in this process
_cleaning = threading.Lock()


@dataclass(frozen=True)
class EditRecord:
    """What the studio knows about a finished edit (everything in `entry.json` but the bookkeeping)."""

    prompt: str
    seeds: list[int]
    params: dict[str, Any]
    timings: dict[str, Any]
    image_id: str | None
    source_name: str = ""
    user_keyword: str = ""
    keywords: list[str] = field(default_factory=list)
    negative_prompt: str | None = None
    points: list[dict[str, int]] = field(default_factory=list)


@dataclass(frozen=True)
class HistoryEntry:
    """One saved edit on disk."""

    id: str
    created_at: str
    record: EditRecord
    width: int
    height: int
    result_files: list[str]
    folder: Path

    @property
    def thumb_path(self) -> Path:
        return self.folder / THUMB_FILE

    @property
    def source_path(self) -> Path:
        return self.folder / SOURCE_FILE

    @property
    def result_paths(self) -> list[Path]:
        return [self.folder / name for name in self.result_files]

    @property
    def created(self) -> datetime:
        return datetime.fromisoformat(self.created_at)


class HistoryStore:
    """Saved edits in `root`, newest first."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def add(self, source: Image.Image, result_pngs: list[bytes], record: EditRecord) -> HistoryEntry:
        """Save a finished edit atomically and return it; `result_pngs` are the service's PNG bytes."""
        if not result_pngs:
            raise ValueError("an edit needs at least one result image, got none")
        results = [Image.open(io.BytesIO(data)) for data in result_pngs]
        for image in results:
            image.load()  # fail here, before anything is written, if the service sent a broken PNG
        created = datetime.now(timezone.utc)
        entry_id = f"{created:%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"
        result_files = [f"result_{i}.png" for i in range(len(result_pngs))]
        document = {
            "version": FORMAT_VERSION,
            "id": entry_id,
            "created_at": created.isoformat(timespec="microseconds"),
            "width": results[0].width,
            "height": results[0].height,
            "results": result_files,
            **asdict(record),
        }

        self.root.mkdir(parents=True, exist_ok=True)
        temp = self.root / f"{_TEMP_PREFIX}{entry_id}"
        temp.mkdir()
        try:
            _write_file(temp / SOURCE_FILE, _png_bytes(source))
            for name, data in zip(result_files, result_pngs, strict=True):
                _write_file(temp / name, data)
            _write_file(temp / THUMB_FILE, _png_bytes(thumbnail(results[0])))
            # entry.json last: a folder without it is incomplete by definition.
            _write_file(temp / ENTRY_FILE, json.dumps(document, indent=2).encode())
            _fsync_dir(temp)
            os.replace(temp, self.root / entry_id)
            _fsync_dir(self.root)
        except BaseException:
            shutil.rmtree(temp, ignore_errors=True)
            raise
        entry = self.get(entry_id)
        if entry is None:  # pragma: no cover - only if the disk changed under us
            raise OSError(f"history entry {entry_id} could not be read back from {self.root}")
        return entry

    def list(self) -> list[HistoryEntry]:
        """Every complete entry, newest first; incomplete or corrupt folders are skipped (and logged)."""
        if not self.root.is_dir():
            return []
        entries = [entry for folder in self.root.iterdir() if (entry := self._load(folder)) is not None]
        return sorted(entries, key=lambda entry: (entry.created_at, entry.id), reverse=True)

    def get(self, entry_id: str) -> HistoryEntry | None:
        """The entry with this id, or None when it does not exist or is incomplete."""
        if not _is_entry_name(entry_id):
            return None
        return self._load(self.root / entry_id)

    def delete(self, entry_id: str) -> bool:
        """Remove an entry; False when there was none. The folder vanishes from the gallery in one rename."""
        if not _is_entry_name(entry_id) or not (self.root / entry_id).is_dir():
            return False
        trash = self.root / f"{_TRASH_PREFIX}{entry_id}-{secrets.token_hex(3)}"
        os.replace(self.root / entry_id, trash)
        shutil.rmtree(trash, ignore_errors=True)
        return True

    def clean_stale(self, older_than_s: float = _STALE_AFTER_S) -> int:
        """Remove temp/trash folders left by a crash (older than `older_than_s`); returns how many."""
        if not self.root.is_dir():
            return 0
        removed = 0
        for folder in self.root.iterdir():
            leftover = folder.name.startswith((_TEMP_PREFIX, _TRASH_PREFIX)) and folder.is_dir()
            if leftover and time.time() - folder.stat().st_mtime > older_than_s:
                shutil.rmtree(folder, ignore_errors=True)
                removed += 1
        return removed

    def _load(self, folder: Path) -> HistoryEntry | None:
        if not _is_entry_name(folder.name) or not folder.is_dir():
            return None
        try:
            document = json.loads((folder / ENTRY_FILE).read_text())
            entry = HistoryEntry(
                id=document["id"],
                created_at=document["created_at"],
                record=EditRecord(
                    prompt=document["prompt"],
                    seeds=[int(seed) for seed in document["seeds"]],
                    params=dict(document["params"]),
                    timings=dict(document["timings"]),
                    image_id=document["image_id"],
                    source_name=document.get("source_name", ""),
                    user_keyword=document.get("user_keyword", ""),
                    keywords=list(document.get("keywords", [])),
                    negative_prompt=document.get("negative_prompt"),
                    points=list(document.get("points", [])),
                ),
                width=int(document["width"]),
                height=int(document["height"]),
                result_files=[str(name) for name in document["results"]],
                folder=folder,
            )
            datetime.fromisoformat(entry.created_at)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("skipping history folder %s: %s", folder, exc)
            return None
        needed = [entry.thumb_path, entry.source_path, *entry.result_paths]
        if entry.id != folder.name or not entry.result_files or not all(_nonempty(path) for path in needed):
            log.warning("skipping incomplete history folder %s", folder)
            return None
        return entry


def open_store(root: Path | str) -> HistoryStore:
    """The store at `root`; the first time this process opens it, leftovers of a crash are removed (one listing of
    the folder, not one per rerun: every browser session of the studio opens it on each page and save)."""
    store = HistoryStore(root)
    key = store.root.resolve()
    with _cleaning:
        if key not in _cleaned_roots:
            _cleaned_roots.add(key)
            removed = store.clean_stale()
            if removed:
                log.info("removed %d leftover folder(s) of an interrupted save or delete in %s", removed, store.root)
    return store


def _is_entry_name(name: str) -> bool:
    return bool(name) and not name.startswith(".") and "/" not in name and "\\" not in name


def _nonempty(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 0


def _png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _write_file(path: Path, data: bytes) -> None:
    """Write and fsync, so the rename that publishes the entry never exposes unflushed files."""
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # some platforms cannot open directories; the rename is still atomic there
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
