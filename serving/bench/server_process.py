"""Start and stop a real `python -m serving serve` (BentoML) on a free loopback port: for `bench serve` and tests."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import requests


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def port_is_closed(port: int) -> bool:
    """Nothing listens on this loopback port (a stopped server left nothing behind)."""
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


def wait_ready(url: str, process: subprocess.Popen, timeout_s: float, log: Path) -> None:
    """Poll `/readyz` until it answers 200; fail with the server's log if it dies or takes too long."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{log.read_text()[-4000:]}")
        with contextlib.suppress(requests.RequestException):
            if requests.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        time.sleep(0.5)
    raise TimeoutError(f"server not ready after {timeout_s:.0f} s:\n{log.read_text()[-4000:]}")


def stop_process_tree(process: subprocess.Popen, grace_s: float = 30) -> list[psutil.Process]:
    """SIGTERM the server (as Ctrl-C or a container stop would); SIGKILL by pid what of its tree outlives `grace_s`.

    BentoML starts each worker in a session of its own, so signalling the arbiter's process group would miss them:
    the tree is collected first. Returns the processes that had to be killed (a clean stop returns none).
    """
    try:
        arbiter = psutil.Process(process.pid)
        tree = [arbiter, *arbiter.children(recursive=True)]
        arbiter.send_signal(signal.SIGTERM)
    except psutil.NoSuchProcess:
        tree = []
    _, alive = psutil.wait_procs(tree, timeout=grace_s)
    for survivor in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            survivor.kill()
    psutil.wait_procs(alive, timeout=10)
    process.wait(timeout=10)
    return alive


@contextlib.contextmanager
def running_service(env: dict[str, str], log: Path, timeout_s: float = 180) -> Iterator[str]:
    """A real service with `env` added to this process's environment; yields its base URL and stops it after."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "serving", "serve", "--port", str(port)],
            env={**os.environ, **env, "BENTOML_DO_NOT_TRACK": "true", "PYTHONUNBUFFERED": "1"},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so stop() reaches every worker
        )
    try:
        wait_ready(url, process, timeout_s, log)
        yield url
    finally:
        stop_process_tree(process)
