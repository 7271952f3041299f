"""`python -m serving weights`: an honest report, downloads that fail fast and clearly, nothing half-written."""

import http.server
import threading
import time
from functools import partial

import pytest
from typer.testing import CliRunner

from serving.cli import app
from serving.models.errors import WeightsError
from serving.models.weights import (
    Download,
    download_file,
    human_size,
    missing_downloads,
    report_weights,
    run_download,
)
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


class ShortAnswer(http.server.BaseHTTPRequestHandler):
    """Promises 5000 bytes and sends 100, as a server that drops the connection mid-file does."""

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "5000")
        self.end_headers()
        self.wfile.write(b"w" * 100)
        self.close_connection = True

    def log_message(self, *args):
        pass


def test_a_download_cut_short_says_so_and_leaves_nothing(tmp_path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), ShortAnswer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/sam.pth"
    try:
        with pytest.raises(WeightsError, match=r"download of .*/sam\.pth stopped at 100 of 5000 bytes; run it again"):
            download_file(url, tmp_path / "out" / "sam.pth", timeout_s=5)
    finally:
        server.shutdown()
    assert list((tmp_path / "out").iterdir()) == []  # no .part file left behind


def test_the_report_names_the_setting_that_chose_each_profile(tmp_path):
    segment, diffusion, *_ = report_weights(Settings(checkpoints_dir=tmp_path, sam_profile="tiny"), check_sha256=False)
    assert "profile tiny (set by MOODSHIFT_SAM_PROFILE);" in dict(segment.facts)["runs"]
    assert "profile tiny (auto: no usable weights, see above);" in dict(diffusion.facts)["runs"]
    segment, diffusion, *_ = report_weights(Settings(checkpoints_dir=tmp_path, profile="tiny"), check_sha256=False)
    assert "profile tiny (set by MOODSHIFT_PROFILE);" in dict(segment.facts)["runs"]
    both = Settings(checkpoints_dir=tmp_path, profile="tiny", diffusion_profile="tiny")
    assert "profile tiny (set by MOODSHIFT_DIFFUSION_PROFILE);" in dict(report_weights(both, False)[1].facts)["runs"]


def test_sizes_read_in_the_largest_unit_below_1024():
    assert [human_size(size) for size in (512, 2048, 5 * 1024**2, 3 * 1024**3, 4096 * 1024**3)] == [
        "512 B", "2.0 KB", "5.0 MB", "3.0 GB", "4096.0 GB"
    ]  # fmt: skip


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
