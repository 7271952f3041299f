"""`python -m serving demo`: the service (`python -m serving serve`) and the Streamlit studio as child processes,
optionally a fake Ollama in this process; waits until both answer, prints their URLs, and stops everything it
started on Ctrl-C or SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from serving.cli.app import app, fail

REPO_ROOT = Path(__file__).resolve().parents[1]
POLL_S = 0.5
PROGRESS_EVERY_S = 5.0
STOP_GRACE_S = 10.0
UI_READY_TIMEOUT_S = 60.0


class DemoError(RuntimeError):
    """The demo cannot start or one of its processes died; the message says which and why."""


class _Stop(Exception):
    """Raised by the SIGTERM handler to leave the wait loop the way Ctrl-C does."""


def service_command(port: int) -> list[str]:
    return [sys.executable, "-m", "serving", "serve", "--port", str(port)]


def ui_command(ui_port: int) -> list[str]:
    from ui.launch import streamlit_command

    return streamlit_command(ui_port)


def run_demo(port: int, ui_port: int, fake_ollama: bool = False, ready_timeout_s: float = 900.0) -> None:
    """Start both, print their URLs, block until asked to stop, then stop both."""
    if port == ui_port:
        raise DemoError(f"--port and --ui-port must differ, both are {port}")
    for name, number in (("--port", port), ("--ui-port", ui_port)):
        if not port_is_free(number):
            raise DemoError(f"port {number} ({name}) is already in use; pick another with {name}")

    service_url = f"http://127.0.0.1:{port}"
    ui_url = f"http://127.0.0.1:{ui_port}"
    env = child_environment(service_url)
    previous = signal.signal(signal.SIGTERM, _raise_stop)
    try:
        with ExitStack() as stack:
            if fake_ollama:
                env["MOODSHIFT_OLLAMA_HOST"] = stack.enter_context(_fake_ollama())
            service = stack.enter_context(_child("service", service_command(port), env))
            ui = stack.enter_context(_child("studio", ui_command(ui_port), env))
            _wait_ready("service", f"{service_url}/readyz", service, ready_timeout_s)
            _wait_ready("studio", f"{ui_url}/_stcore/health", ui, UI_READY_TIMEOUT_S)
            _banner(service_url, ui_url)
            _wait_until_stopped({"service": service, "studio": ui})
    except (KeyboardInterrupt, _Stop):
        typer.echo("\nstopping the studio and the service…")
    finally:
        signal.signal(signal.SIGTERM, previous)
    typer.echo("demo stopped")


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def child_environment(service_url: str) -> dict[str, str]:
    """The children's environment: ours, plus the service URL for the UI and the repo on PYTHONPATH."""
    env = dict(os.environ)
    env["MOODSHIFT_SERVICE_URL"] = service_url
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def _raise_stop(signum: int, frame: Any) -> None:
    raise _Stop()


@contextmanager
def _fake_ollama() -> Iterator[str]:
    # tests/ is not part of an installed package: only a source checkout has the fake.
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    try:
        from tests.fake_ollama import start_fake_ollama
    except ImportError as exc:
        raise DemoError(f"--fake-ollama needs tests/fake_ollama.py from a source checkout ({exc})") from None
    fake = start_fake_ollama(port=0)
    line = "=" * 78
    typer.secho(
        f"{line}\n  --fake-ollama: the mood and the prompt come from a FAKE Ollama with canned replies\n"
        f"  at {fake.url} (MOODSHIFT_OLLAMA_HOST), not from LLaVA or Llama 2.\n{line}",
        fg=typer.colors.YELLOW,
        bold=True,
    )
    try:
        yield fake.url
    finally:
        fake.stop()


@contextmanager
def _child(name: str, command: list[str], env: dict[str, str]) -> Iterator[subprocess.Popen]:
    """A child process in its own process group (so stopping it also stops its workers); stopped on exit."""
    typer.echo(f"starting the {name}: {' '.join(command)}")
    try:
        process = subprocess.Popen(command, env=env, start_new_session=True)
    except OSError as exc:
        raise DemoError(f"could not start the {name} ({command[0]}): {exc}") from None
    try:
        yield process
    finally:
        stop_process_group(process)


def stop_process_group(process: subprocess.Popen, grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM the child's process group, then SIGKILL whatever is left after `grace_s`."""
    if process.poll() is not None:
        return
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, grace_s)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def _wait_ready(name: str, url: str, process: subprocess.Popen, timeout_s: float) -> None:
    """Poll `url` until it answers 200, saying how long it has waited; fail if the process dies or time runs out."""
    import requests

    started = time.monotonic()
    next_report = started + PROGRESS_EVERY_S
    typer.echo(f"waiting for the {name} at {url} …")
    while True:
        code = process.poll()
        if code is not None:
            raise DemoError(f"the {name} exited with code {code} before it was ready (its output is above)")
        try:
            if requests.get(url, timeout=2).status_code == 200:
                typer.echo(f"the {name} is ready ({time.monotonic() - started:.0f} s)")
                return
        except requests.RequestException:
            pass
        now = time.monotonic()
        if now - started > timeout_s:
            raise DemoError(f"the {name} was not ready at {url} after {timeout_s:.0f} s")
        if now >= next_report:
            typer.echo(f"  … still waiting for the {name} ({now - started:.0f} s; loading models can take a while)")
            next_report = now + PROGRESS_EVERY_S
        time.sleep(POLL_S)


def _banner(service_url: str, ui_url: str) -> None:
    typer.echo("")
    typer.secho("Moodshift demo is running", fg=typer.colors.GREEN, bold=True)
    typer.echo(f"  studio (open this):  {ui_url}")
    typer.echo(f"  service API:         {service_url}   (OpenAPI docs at {service_url}/)")
    typer.echo("Press Ctrl-C to stop both.")


def _wait_until_stopped(processes: dict[str, subprocess.Popen]) -> None:
    while True:
        for name, process in processes.items():
            code = process.poll()
            if code is not None:
                raise DemoError(f"the {name} stopped unexpectedly with code {code}; stopping the rest")
        time.sleep(POLL_S)


@app.command("demo")
def demo(
    port: Annotated[int, typer.Option("--port", help="Port of the service (HTTP API).")] = 3000,
    ui_port: Annotated[int, typer.Option("--ui-port", help="Port of the Streamlit studio.")] = 8501,
    fake_ollama: Annotated[
        bool,
        typer.Option("--fake-ollama", help="Start a fake Ollama with canned replies and point the service at it."),
    ] = False,
    ready_timeout: Annotated[
        float, typer.Option("--ready-timeout", help="Seconds to wait for the service to load its models.")
    ] = 900.0,
) -> None:
    """Start the service and the studio UI, print both URLs, and stop both on Ctrl-C (or SIGTERM)."""
    try:
        run_demo(port=port, ui_port=ui_port, fake_ollama=fake_ollama, ready_timeout_s=ready_timeout)
    except DemoError as exc:
        fail(str(exc))
