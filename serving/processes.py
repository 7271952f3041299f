"""Child processes of Moodshift's commands: start a server in a session of its own, wait until it answers, and
stop it with every process it started. `demo`, `bench serve` and the tests all use these.

A BentoML server's arbiter starts each worker in a session of its own, so signalling the child's process group
would miss them: `stop_process_tree` collects the whole tree first, then SIGTERMs the child (as Ctrl-C or a
container stop would) and SIGKILLs by pid only what outlives the grace period.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO

import psutil
import requests

POLL_S = 0.5


class ChildProcessFailed(RuntimeError):
    """A child process exited or did not answer in time; the message says which and why."""


def free_port() -> int:
    """A loopback port nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could bind `host:port` now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def port_is_closed(port: int) -> bool:
    """Nothing listens on this loopback port (a stopped server left nothing behind)."""
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


def start_child(command: list[str], env: Mapping[str, str], output: IO | None = None) -> subprocess.Popen:
    """`command` in a session of its own (so a Ctrl-C meant for the parent is not delivered to it twice)."""
    return subprocess.Popen(
        command,
        env=dict(env),
        stdout=output,
        stderr=subprocess.STDOUT if output is not None else None,
        start_new_session=True,
    )


def wait_ready(
    url: str,
    process: subprocess.Popen,
    timeout_s: float,
    *,
    name: str = "server",
    log: Path | None = None,
    report: Callable[[float], None] | None = None,
) -> None:
    """Poll `url` until it answers 200. Raises `ChildProcessFailed` if the process exits or time runs out; the
    message ends with the tail of `log` when given. `report(seconds waited)` is called about every 5 s."""
    started = time.monotonic()
    next_report = started + 5.0
    while True:
        if process.poll() is not None:
            raise ChildProcessFailed(
                f"the {name} exited with code {process.returncode} before it was ready" + _tail(log)
            )
        with contextlib.suppress(requests.RequestException):
            if requests.get(url, timeout=2).status_code == 200:
                return
        now = time.monotonic()
        if now - started > timeout_s:
            raise ChildProcessFailed(f"the {name} was not ready at {url} after {timeout_s:.0f} s" + _tail(log))
        if report is not None and now >= next_report:
            report(now - started)
            next_report = now + 5.0
        time.sleep(POLL_S)


def _tail(log: Path | None) -> str:
    return f":\n{log.read_text(errors='replace')[-4000:]}" if log is not None and log.exists() else ""


def stop_process_tree(process: subprocess.Popen, grace_s: float = 30) -> list[psutil.Process]:
    """SIGTERM `process`; SIGKILL by pid whatever of its tree outlives `grace_s`. Returns the processes that had to
    be killed (a clean stop returns none)."""
    try:
        root = psutil.Process(process.pid)
        tree = [root, *root.children(recursive=True)]
        root.send_signal(signal.SIGTERM)
    except psutil.NoSuchProcess:
        tree = []
    _, alive = psutil.wait_procs(tree, timeout=grace_s)
    for survivor in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            survivor.kill()
    psutil.wait_procs(alive, timeout=10)
    process.wait(timeout=10)
    return alive


def serve_command(port: int, target: str | None = None) -> list[str]:
    """`python -m serving serve` on `port`, or `bentoml serve TARGET` for one service (`serving.service:Name`)."""
    if target is None:
        return [sys.executable, "-m", "serving", "serve", "--port", str(port)]
    return [sys.executable, "-m", "bentoml", "serve", target, "--port", str(port), "--host", "127.0.0.1"]


@contextlib.contextmanager
def running_split_service(env: Mapping[str, str], log_dir: Path, timeout_s: float = 180) -> Iterator[dict[str, str]]:
    """The deployment of separate machines on loopback: each stage service on its own server and the gateway pointed
    at them by URL (MOODSHIFT_SEGMENT_SERVICE_URL, MOODSHIFT_DIFFUSION_SERVICE_URL). Yields the three base URLs
    (`gateway`, `segment`, `diffusion`); `env` goes to all three."""
    with (
        running_service(env, log_dir / "segment.log", timeout_s, "serving.service:SegmentationService") as segment,
        running_service(env, log_dir / "diffusion.log", timeout_s, "serving.service:DiffusionService") as diffusion,
    ):
        urls = {"MOODSHIFT_SEGMENT_SERVICE_URL": segment, "MOODSHIFT_DIFFUSION_SERVICE_URL": diffusion}
        with running_service({**env, **urls}, log_dir / "gateway.log", timeout_s) as gateway:
            yield {"gateway": gateway, "segment": segment, "diffusion": diffusion}


@contextlib.contextmanager
def running_service(
    env: Mapping[str, str], log: Path, timeout_s: float = 180, target: str | None = None
) -> Iterator[str]:
    """A real service (see `serve_command`) with `env` added to this process's environment on a free loopback port;
    yields its base URL and stops it afterwards."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    child_env = {**os.environ, **env, "BENTOML_DO_NOT_TRACK": "true", "PYTHONUNBUFFERED": "1"}
    with log.open("w") as out:
        process = start_child(serve_command(port, target), child_env, out)
    try:
        wait_ready(f"{url}/readyz", process, timeout_s, log=log)
        yield url
    finally:
        stop_process_tree(process)
