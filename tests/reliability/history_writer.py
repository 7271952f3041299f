"""A process that saves history entries in a loop, slowly, for the crash test to SIGKILL in the middle of a write.

    python -m tests.reliability.history_writer HISTORY_DIR

Prints `saved <id>` after each complete entry. Each file write is followed by a pause, so a kill lands mid-entry.
"""

from __future__ import annotations

import io
import sys
import time

from PIL import Image

from ui import history
from ui.history import EditRecord, HistoryStore

PAUSE_S = 0.15


def main(root: str) -> None:
    write_file = history._write_file

    def slow_write(path, data: bytes) -> None:
        write_file(path, data)
        time.sleep(PAUSE_S)

    history._write_file = slow_write
    store = HistoryStore(root)
    for index in range(1000):
        record = EditRecord(prompt=f"edit {index}", seeds=[index], params={"steps": 2}, timings={}, image_id=None)
        colour = (index % 256, 80, 160)
        entry = store.add(Image.new("RGB", (40, 30), colour), [_png(colour)], record)
        print(f"saved {entry.id}", flush=True)


def _png(colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), colour).save(buffer, format="PNG")
    return buffer.getvalue()


if __name__ == "__main__":
    main(sys.argv[1])
