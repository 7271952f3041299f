"""A real Moodshift service for the reliability suite: `bentoml serve` on a free loopback port, in its own process
group, stopped with every worker and restarted on the same port on demand.

BentoML's arbiter starts each worker (gateway, SAM, diffusion) in a session of its own, so signalling the
arbiter's process group does not reach them: `stop()` collects the whole process tree first, asks the arbiter to
shut down (SIGTERM, as Ctrl-C or a container stop would), and SIGKILLs by pid only what is still there after the
grace period, recording it in `killed` so a test can assert that a shutdown was clean.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import httpx
import psutil

from serving.processes import free_port, stop_process_tree

REPO = Path(__file__).resolve().parents[2]
# The real service classes, imported through a module that adds one marker-triggered fault (see fault_service.py).
SERVICE = "tests.reliability.fault_service:Moodshift"

# The limits the suite runs the service with: low enough that every limit is reached by small, cheap requests.
MAX_IMAGE_PIXELS = 4_000_000
MAX_UPLOAD_MB = 8
SAM_CACHE_SIZE = 4
MAX_CONCURRENCY = 16
MAX_QUEUED_EDITS = 4
OLLAMA_TIMEOUT_S = 2.0
SUITE_ENV = {
    "MOODSHIFT_PROFILE": "tiny",
    "MOODSHIFT_WORKING_PIXELS": str(128 * 128),  # tiny diffusion at 128² keeps an edit around a second on CPU
    "MOODSHIFT_DEFAULT_STEPS": "2",
    "MOODSHIFT_MAX_IMAGE_PIXELS": str(MAX_IMAGE_PIXELS),
    "MOODSHIFT_MAX_UPLOAD_MB": str(MAX_UPLOAD_MB),
    "MOODSHIFT_SAM_CACHE_SIZE": str(SAM_CACHE_SIZE),
    "MOODSHIFT_MAX_CONCURRENCY": str(MAX_CONCURRENCY),
    "MOODSHIFT_MAX_QUEUED_EDITS": str(MAX_QUEUED_EDITS),
    "MOODSHIFT_OLLAMA_TIMEOUT_S": str(OLLAMA_TIMEOUT_S),
    "MOODSHIFT_TRAFFIC_TIMEOUT_S": "120",
    # glibc keeps freed blocks below its (growing) mmap threshold for reuse, so RSS follows the peak, not what is
    # live. A fixed 128 KiB threshold returns every large block (images, tensors, embeddings) when freed, so the
    # load test's RSS readings measure what the workers keep.
    "MALLOC_MMAP_THRESHOLD_": str(128 * 1024),
}


class LiveService:
    """`bentoml serve SERVICE` with `env` on 127.0.0.1:`port`; its log goes to `workdir/server.log`."""

    def __init__(self, env: Mapping[str, str], workdir: Path, port: int | None = None) -> None:
        self.env = dict(env)
        self.workdir = workdir
        self.port = port or free_port()
        self.log = workdir / "server.log"
        self.process: subprocess.Popen | None = None
        self.killed: list[str] = []  # workers that ignored SIGTERM during the last stop()
        self.unanswered_probes = 0  # GET /readyz calls of the last start() that got no answer within 30 s
        self.startup_s: list[float] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 240) -> None:
        """Start and wait until GET /readyz answers 200; fail with the log's tail if it dies or is too slow."""
        assert self.process is None, "already running"
        # A clean environment: no MOODSHIFT_* from the caller's shell, and no .env (cwd is a scratch folder).
        env = {name: value for name, value in os.environ.items() if not name.startswith("MOODSHIFT_")}
        env.update(self.env, BENTOML_DO_NOT_TRACK="true", PYTHONUNBUFFERED="1")
        command = [sys.executable, "-m", "bentoml", "serve", SERVICE, "--host", "127.0.0.1", "--port", str(self.port)]
        command += ["--working-dir", str(REPO)]
        began = time.monotonic()
        self.unanswered_probes = 0
        with self.log.open("a") as log:
            log.write(f"\n===== start {time.strftime('%H:%M:%S')}: {' '.join(command)}\n")
            log.flush()
            self.process = subprocess.Popen(
                command, cwd=self.workdir, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        while time.monotonic() - began < timeout_s:
            if self.process.poll() is not None:
                self.process = None
                raise RuntimeError(f"service exited while starting:\n{self.log_tail()}")
            # A starting service answers a probe within seconds (503 until every stage is up); one that does not
            # answer within 30 s has left it hanging.
            if self.ready(timeout_s=30):
                self.startup_s.append(time.monotonic() - began)
                return
            time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"service not ready after {timeout_s:.0f} s:\n{self.log_tail()}")

    def ready(self, timeout_s: float = 10) -> bool:
        """Whether GET /readyz answers 200 now (a bounded wait: never hangs on a starting or dead service)."""
        try:
            return httpx.get(f"{self.url}/readyz", timeout=timeout_s).status_code == 200
        except httpx.TimeoutException:
            self.unanswered_probes += 1
            return False
        except httpx.HTTPError:
            return False

    def stop(self, grace_s: float = 30) -> None:
        """SIGTERM the arbiter; SIGKILL (by pid) whatever of its process tree outlives `grace_s`."""
        if self.process is None:
            return
        self.killed = [_describe(process) for process in stop_process_tree(self.process, grace_s)]
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def worker(self, service_name: str) -> psutil.Process:
        """The worker process of one BentoML service (`moodshift-segment`, `moodshift-diffusion`, `moodshift`)."""
        assert self.process is not None, "not running"
        for child in psutil.Process(self.process.pid).children(recursive=True):
            cmdline = child.cmdline()
            if "--service-name" in cmdline and cmdline[cmdline.index("--service-name") + 1] == service_name:
                return child
        raise LookupError(f"no worker for {service_name!r} under pid {self.process.pid}")

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else "(no log)"


def _describe(process: psutil.Process) -> str:
    try:
        cmdline = process.cmdline()
    except psutil.Error:
        return f"pid {process.pid}"
    name = cmdline[cmdline.index("--service-name") + 1] if "--service-name" in cmdline else "arbiter"
    return f"{name} (pid {process.pid})"
