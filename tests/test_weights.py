"""`python -m serving weights`: an honest report, downloads that fail fast and clearly, nothing half-written."""

import http.server
import threading
import time
from functools import partial

import pytest
from typer.testing import CliRunner

from serving.cli import app
from serving.models.errors import WeightsError
from serving.models.weights import Download, download_file, missing_downloads, report_weights, run_download
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


def test_report_says_what_runs_and_why_when_nothing_is_there(tmp_path):
    segment, diffusion, fast, _ = report_weights(Settings(checkpoints_dir=tmp_path), check_sha256=False)
    assert segment.stage == "segment" and segment.profile.profile == "tiny" and not segment.broken
    facts = dict(segment.facts)
    assert f"SAM checkpoint not found at {tmp_path / 'sam_vit_h_4b8939.pth'}" in facts["weights"]
    assert "profile tiny" in facts["runs"] and "cpu, float32" in facts["runs"]
    assert "sam_vit_b_01ec64.pth (missing)" in facts["others"]
    facts = dict(diffusion.facts)
    assert f"SDXL model not found at {tmp_path / 'sdxl-base'}" in facts["weights"]
    assert "offload none (runs on cpu" in facts["runs"]
    assert fast.stage == "fast" and fast.problem is None and not fast.broken  # tiny: a stand-in, nothing to fetch
    assert dict(fast.facts)["weights"].startswith("none needed: the tiny profile builds a random few-step stand-in")
    assert "EulerDiscreteScheduler (timestep_spacing=trailing), 4 steps, guidance 0" in dict(fast.facts)["runs"]


def test_cli_reports_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("MOODSHIFT_CHECKPOINTS_DIR", str(tmp_path))
    result = CliRunner().invoke(app, ["weights"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("segment\n  weights  SAM checkpoint not found at")
    assert "\ndiffusion\n  weights  SDXL model not found at" in result.output
    assert "tiny demo models" in result.output


def test_missing_downloads_are_what_the_loaders_need(tmp_path):
    downloads = {d.name: d for d in missing_downloads(Settings(checkpoints_dir=tmp_path, sam_model_type="vit_b"))}
    sam = downloads["SAM vit_b"]
    assert sam.source.endswith("/sam_vit_b_01ec64.pth") and sam.destination == tmp_path / "sam_vit_b_01ec64.pth"
    assert sam.sha256_prefix == "01ec64"
    sdxl = downloads["SDXL base 1.0"]
    assert (
        sdxl.destination == tmp_path / "sdxl-base" and "unet/diffusion_pytorch_model.fp16.safetensors" in sdxl.patterns
    )
    assert downloads["SDXL VAE fp16-fix"].destination == tmp_path / "sdxl-vae-fp16-fix"
    lightning = downloads["SDXL-Lightning 4-step LoRA"]
    assert lightning.destination == tmp_path / "sdxl_lightning_4step_lora.safetensors"
    assert (
        lightning.source == "https://huggingface.co/ByteDance/SDXL-Lightning/resolve/main/" + lightning.destination.name
    )
    chosen = Settings(checkpoints_dir=tmp_path, fast_model=tmp_path / "Hyper-SDXL-4steps-lora.safetensors")
    assert not [d for d in missing_downloads(chosen) if "Lightning" in d.name]  # a file the user named is theirs
    # A repo id goes to the Hugging Face cache, as `from_pretrained` would put it.
    repo = missing_downloads(Settings(checkpoints_dir=tmp_path, sdxl_model="stabilityai/stable-diffusion-xl-base-1.0"))
    assert [d.destination for d in repo if d.name.startswith("SDXL stabilityai")] == [None]


def test_sam_download_that_is_not_the_official_file_is_refused(file_server, tmp_path):
    root, url = file_server
    (root / "sam_vit_b_01ec64.pth").write_bytes(b"not the official file")
    download = Download("SAM vit_b", f"{url}/sam_vit_b_01ec64.pth", tmp_path / "sam.pth", sha256_prefix="01ec64")
    with pytest.raises(WeightsError, match=r"did not give the official file .*01ec64"):
        run_download(download)
    assert not (tmp_path / "sam.pth").exists()


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
