"""Checks on single weight files, fast enough for every start: is it whole, how big, what tensor shapes it holds.

A truncated or overwritten file is caught by reading its header or index only: a `.safetensors` header must cover
the file exactly (the safetensors library checks that on open), a PyTorch zip (`.pth`, `.bin`) must end with its
zip directory. Flipped bytes inside the tensor data are not seen here; a sha256 check sees them for files with a
known hash: SAM's official files (`weights`) and the embedded U²-Netp (`salient_weights`, at every start).
"""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path


def file_problem(path: Path) -> str | None:
    """None when `path` looks whole, else what is wrong with it (for a message that names the file)."""
    path = Path(path)
    if not path.is_file():
        return f"{path} is missing"
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(path, "pt"):
                pass
        except Exception as exc:  # SafetensorError for a cut or foreign file, OSError for an unreadable one
            return f"{path} is truncated or not a safetensors file ({exc})"
        return None
    if path.suffix in (".pth", ".pt", ".bin", ".ckpt") and not zipfile.is_zipfile(path):
        return f"{path} is truncated or not a PyTorch checkpoint (no zip directory at its end)"
    return None


def safetensors_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape, read from the header alone (no tensor is loaded)."""
    from safetensors import safe_open

    with safe_open(path, "pt") as file:
        return {key: tuple(file.get_slice(key).get_shape()) for key in file.keys()}  # noqa: SIM118


def sha256_hex(path: Path, chunk_bytes: int = 1 << 24) -> str:
    """The file's sha256 (about a second per GB)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as file:
        while chunk := file.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def size_of(path: Path) -> int:
    """Bytes of a file, or of every file under a folder (symlinks followed, as a hub-cache snapshot needs)."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return 0
