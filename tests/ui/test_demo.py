"""`python -m serving demo`: refuses busy ports clearly; starts both processes, prints both URLs, stops both.

The process test swaps the service for the stand-in service (the real one is exercised by the browser test)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from serving.cli import app
from serving.processes import free_port, port_is_closed

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_demo_is_listed_with_its_options():
    result = CliRunner().invoke(app, ["demo", "--help"])
    assert result.exit_code == 0
    for option in ("--port", "--ui-port", "--fake-ollama"):
        assert option in result.output


def test_a_busy_port_is_refused_with_a_clear_message():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = CliRunner().invoke(app, ["demo", "--port", str(port), "--ui-port", str(free_port())])
    assert result.exit_code == 2
    assert f"port {port} (--port) is already in use; pick another with --port" in result.output


def test_the_same_port_twice_is_refused():
    result = CliRunner().invoke(app, ["demo", "--port", "3999", "--ui-port", "3999"])
    assert result.exit_code == 2 and "--port and --ui-port must differ" in result.output


@pytest.mark.slow
def test_demo_starts_both_prints_both_urls_and_sigterm_stops_both(tmp_path):
    port, ui_port = free_port(), free_port()
    bootstrap = textwrap.dedent(
        """
        import sys
        import serving.cli.demo as demo
        demo.service_command = lambda port: [sys.executable, "-m", "tests.ui.fake_service", "--port", str(port)]
        from serving.__main__ import main
        main()
        """
    )
    env = {key: value for key, value in os.environ.items() if not key.startswith("MOODSHIFT_")}
    env["PYTHONPATH"] = str(REPO_ROOT)
    log = tmp_path / "demo.log"
    command = [sys.executable, "-c", bootstrap, "demo", "--port", str(port), "--ui-port", str(ui_port)]
    with open(log, "wb") as out:
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while "Press Ctrl-C to stop both." not in log.read_text(errors="replace"):
            assert process.poll() is None and time.monotonic() < deadline, log.read_text(errors="replace")
            time.sleep(0.2)
        output = log.read_text(errors="replace")
        assert f"studio (open this):  http://127.0.0.1:{ui_port}" in output
        assert f"service API:         http://127.0.0.1:{port}" in output
        assert not port_is_closed(port) and not port_is_closed(ui_port)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
    assert "demo stopped" in log.read_text(errors="replace")
    assert port_is_closed(port) and port_is_closed(ui_port)
