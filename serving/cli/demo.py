"""`python -m serving demo`: the service (`python -m serving serve`) and the studio (`python -m ui`) as child
processes, optionally the Ollama stand-in in this process; waits until both answer, prints their URLs, and stops
everything it started on Ctrl-C or SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Annotated, Any

import typer

from serving.cli.app import app, fail
from serving.processes import (
    ChildProcessFailed,
    port_is_free,
    serve_command,
    start_child,
    stop_process_tree,
    wait_ready,
)

POLL_S = 0.5
STOP_GRACE_S = 10.0
UI_READY_TIMEOUT_S = 60.0


class DemoError(RuntimeError):
    """The demo cannot start or one of its processes died; the message says which and why."""


class _Stop(Exception):
    """Raised by the SIGTERM handler to leave the wait loop the way Ctrl-C does."""


def service_command(port: int) -> list[str]:
    return serve_command(port)


def ui_command(ui_port: int) -> list[str]:
    # The studio is a separate deployable: started by its command line, never imported from here.
    return [sys.executable, "-m", "ui", "--port", str(ui_port)]


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
                env["MOODSHIFT_OLLAMA_HOST"] = stack.enter_context(_ollama_standin())
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


def child_environment(service_url: str) -> dict[str, str]:
    """The children's environment: ours, plus the service URL for the studio."""
    env = dict(os.environ)
    env["MOODSHIFT_SERVICE_URL"] = service_url
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def _raise_stop(signum: int, frame: Any) -> None:
    raise _Stop()


@contextmanager
def _ollama_standin() -> Iterator[str]:
    from serving.ollama_standin import start_fake_ollama
    from serving.settings import get_settings

    settings = get_settings()  # it answers for the models the service will ask for, whatever they are named
    fake = start_fake_ollama(port=0, mood_model=settings.ollama_mood_model, prompt_model=settings.ollama_prompt_model)
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
    """A child process, stopped with every process it started when the block ends."""
    typer.echo(f"starting the {name}: {' '.join(command)}")
    try:
        process = start_child(command, env)
    except OSError as exc:
        raise DemoError(f"could not start the {name} ({command[0]}): {exc}") from None
    try:
        yield process
    finally:
        if process.poll() is None:
            stop_process_tree(process, grace_s=STOP_GRACE_S)


def _wait_ready(name: str, url: str, process: subprocess.Popen, timeout_s: float) -> None:
    """Wait for `url` to answer, saying how long it has waited; a dead process or a timeout is a `DemoError`."""
    typer.echo(f"waiting for the {name} at {url} …")
    started = time.monotonic()

    def report(waited_s: float) -> None:
        typer.echo(f"  … still waiting for the {name} ({waited_s:.0f} s; loading models can take a while)")

    try:
        wait_ready(url, process, timeout_s, name=name, report=report)
    except ChildProcessFailed as exc:
        raise DemoError(f"{exc} (its output is above)") from None
    typer.echo(f"the {name} is ready ({time.monotonic() - started:.0f} s)")


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
