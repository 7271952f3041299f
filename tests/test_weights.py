"""`python -m serving weights`: honest listing, downloads that fail fast and clearly, nothing half-written."""

import http.server
import threading
import time
from functools import partial

import pytest
from typer.testing import CliRunner

from serving.cli import app
from serving.models.errors import WeightsError
from serving.models.weights import download_file, list_weights
from serving.settings import Settings


@pytest.fixture
def file_server(tmp_path):
    """A local HTTP server over a folder, so a download can succeed without a network."""
    root = tmp_path / "served"
    root.mkdir()
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _closed_port_url() -> str:
    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    port = server.server_address[1]
    server.server_close()
    return f"http://127.0.0.1:{port}"


def test_listing_reports_present_and_missing_with_sizes(tmp_path):
    (tmp_path / "sam_vit_b_01ec64.pth").write_bytes(b"x" * 1234)
    entries = {e.name: e for e in list_weights(Settings(checkpoints_dir=tmp_path, sam_model_type="vit_b"))}
    assert entries["SAM vit_b"].present and entries["SAM vit_b"].size_bytes == 1234 and entries["SAM vit_b"].selected
    assert not entries["SAM vit_h"].present and not entries["SAM vit_h"].selected
    assert not entries["SDXL base 1.0"].present
    assert entries["SDXL base 1.0"].path == tmp_path / "sdxl-base"


def test_cli_lists_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("MOODSHIFT_CHECKPOINTS_DIR", str(tmp_path))
    result = CliRunner().invoke(app, ["weights"])
    assert result.exit_code == 0, result.output
    assert "SAM vit_h      missing" in result.output
    assert f"*{tmp_path / 'sam_vit_h_4b8939.pth'}" in result.output
    assert "tiny demo models" in result.output


def test_download_writes_through_part_file(file_server, tmp_path):
    root, url = file_server
    (root / "weights.pth").write_bytes(b"w" * 5000)
    seen = []
    destination = download_file(
        f"{url}/weights.pth", tmp_path / "out" / "weights.pth", progress=lambda d, t: seen.append((d, t))
    )
    assert destination.read_bytes() == b"w" * 5000
    assert not (tmp_path / "out" / "weights.pth.part").exists()
    assert seen[-1] == (5000, 5000)


def test_download_failure_is_fast_clear_and_leaves_nothing(tmp_path):
    start = time.monotonic()
    with pytest.raises(WeightsError, match=r"could not download .*copy it to"):
        download_file(f"{_closed_port_url()}/sam.pth", tmp_path / "sam.pth", timeout_s=5)
    assert time.monotonic() - start < 5
    assert list(tmp_path.iterdir()) == []


def test_cli_download_without_network_fails_with_message_not_traceback(tmp_path, monkeypatch):
    monkeypatch.setenv("MOODSHIFT_CHECKPOINTS_DIR", str(tmp_path))
    monkeypatch.setenv("MOODSHIFT_SAM_DOWNLOAD_URL", _closed_port_url() + "/{name}")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the hub client then fails at once, as it does with no network
    start = time.monotonic()
    result = CliRunner().invoke(app, ["weights", "--download"])
    assert time.monotonic() - start < 30
    assert result.exit_code == 2
    assert "error: could not download" in result.output
    assert "sam_vit_h_4b8939.pth" in result.output and "stabilityai/stable-diffusion-xl-base-1.0" in result.output
    assert "Traceback" not in result.output
