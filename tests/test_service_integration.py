"""A real `bentoml serve` (tiny models, stand-in Ollama): the whole flow over HTTP, batching, `bentoml build`."""

from __future__ import annotations

import base64
import io
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

from serving.core.images import encode_png_base64
from serving.ollama_standin import FakeOllama
from serving.processes import running_service
from tests.matting import core_of

pytestmark = pytest.mark.slow
TRUSTED_ORIGIN = "http://studio.example:8501"
REPO = Path(__file__).resolve().parents[1]


def _decode_png(text: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(text))))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with FakeOllama() as ollama:
        env = {
            "MOODSHIFT_PROFILE": "tiny",
            "MOODSHIFT_WORKING_PIXELS": str(128 * 128),
            "MOODSHIFT_OLLAMA_HOST": ollama.url,
            "MOODSHIFT_OLLAMA_TIMEOUT_S": "10",
            "MOODSHIFT_SEGMENT_MAX_LATENCY_MS": "20000",
            "MOODSHIFT_TRUSTED_ORIGINS": TRUSTED_ORIGIN,
        }
        with running_service(env, tmp_path_factory.mktemp("server") / "server.log") as url:
            yield url


def test_segment_mood_prompt_edit_over_http(server, coffee):
    photo = encode_png_base64(coffee)
    segment = requests.post(f"{server}/segment", json={"image": photo, "points": [{"x": 300, "y": 200}]}, timeout=60)
    assert segment.status_code == 200, segment.text
    mask = _decode_png(segment.json()["mask"]) > 127
    assert mask.shape == (400, 600)
    if mask.all() or not mask.any():  # random weights: make sure both regions exist for the pixel check below
        mask[:] = False
        mask[100:300, 200:400] = True
    mood = requests.post(f"{server}/mood", json={"image": photo}, timeout=60).json()
    assert mood["source"] == "llava" and mood["keywords"][0] == "calm"
    prompt = requests.post(
        f"{server}/prompt", json={"keywords": mood["keywords"], "user_keyword": "forest"}, timeout=60
    ).json()
    assert prompt["source"] == "llm" and "forest" in prompt["prompt"] and prompt["tokens"] <= 77
    edit = requests.post(
        f"{server}/edit",
        json={"image": photo, "mask": encode_png_base64(mask), "prompt": prompt["prompt"], "steps": 2, "seed": 5},
        timeout=120,
    )
    assert edit.status_code == 200, edit.text
    result = _decode_png(edit.json()["images"][0])
    assert result.shape == coffee.shape
    np.testing.assert_array_equal(result[core_of(mask)], coffee[core_of(mask)])  # exact inside the soft edge


def test_zero_click_segment_and_edit_over_http(server, coffee, u2netp):
    photo = encode_png_base64(coffee)
    segment = requests.post(f"{server}/segment", json={"image": photo}, timeout=60)
    assert segment.status_code == 200, segment.text
    assert segment.json()["engine"] == "u2netp"
    subject = _decode_png(segment.json()["mask"]) > 127
    assert subject[200, 300] and not subject[5, 5]
    edit = requests.post(
        f"{server}/edit", json={"image": photo, "prompt": "a forest", "steps": 2, "seed": 1}, timeout=120
    )
    assert edit.status_code == 200, edit.text
    core = core_of(subject)  # edge=matte (the default): exact deeper than the soft edge's band
    np.testing.assert_array_equal(_decode_png(edit.json()["images"][0])[core], coffee[core])
    stats = requests.get(f"{server}/stats", timeout=30).json()["segment"]
    assert stats["saliency_runs"] >= 1 and stats["detect_batch_sizes"]


def test_cli_edits_a_folder_through_the_server_with_concurrency(server, coffee, astronaut, tmp_path, u2netp):
    from typer.testing import CliRunner

    from serving.cli import app

    photos = tmp_path / "photos"
    photos.mkdir()
    for name, image in (("cup", coffee), ("astronaut", astronaut), ("cup-mirrored", coffee[:, ::-1])):
        Image.fromarray(image).save(photos / f"{name}.png")
    (photos / "notes.png").write_text("not a photo")
    out = tmp_path / "out"
    arguments = ["edit", *sorted(map(str, photos.iterdir())), "--keyword", "forest", "--steps", "2", "-o", f"{out}/"]
    result = CliRunner().invoke(app, [*arguments, "--server", server, "--concurrency", "3"])
    assert result.exit_code == 1, result.output
    assert sorted(p.name for p in out.iterdir()) == ["astronaut.png", "cup-mirrored.png", "cup.png"]
    assert "notes.png: the service answered 400 on /edit_submit" in result.stderr
    assert "3 edited, 1 failed, 0 skipped (already there) of 4 photos" in result.stdout
    again = CliRunner().invoke(app, [*arguments, "--server", server])
    assert again.exit_code == 1 and "0 edited, 1 failed, 3 skipped" in again.stdout


def test_bench_folder_throughput_edits_fresh_photos_at_each_concurrency(server, u2netp):
    from serving.bench.folder import folder_throughput, format_folder_table

    results = folder_throughput(server, [1, 2], count=2, size=(160, 120), steps=1)
    assert [(r.concurrency, r.photos, r.failed) for r in results] == [(1, 2, 0), (2, 2, 0)]
    assert all(r.photos_per_s > 0 for r in results) and "2: " in format_folder_table(results)


def test_bench_http_clients_pairs_each_way_on_one_service(server, u2netp):
    from serving.bench.clients import format_pairs, jpeg_photo, previews, repeat_click, uploads
    from serving.settings import Settings

    settings = Settings(profile="tiny", working_pixels=128 * 128, ollama_enabled=False)
    pairs = [
        repeat_click(server, (320, 240), 2, settings, auto=True),
        repeat_click(server, (320, 240), 2, settings, auto=False),
        uploads(server, jpeg_photo(400, 300), 1),
        previews(server, (160, 120), 1, steps=2),
    ]
    names = [pair.name for pair in pairs]
    assert names[:2] == [
        "repeat click by image id (u2netp+clicks)",
        "repeat click by image id (sam-tiny (random weights))",
    ]
    assert [(len(pair.first_ms), len(pair.second_ms)) for pair in pairs] == [(2, 2), (2, 2), (1, 1), (1, 1)]
    assert all(ms > 0 for pair in pairs for ms in pair.first_ms + pair.second_ms)
    table = format_pairs(pairs)
    assert "in-process" in table and "multipart upload" in table and "previews on" in table and "≤ +5 %" in table
    assert pairs[0].row()["difference_ms"] == pairs[0].p50("second") - pairs[0].p50("first")


def test_sync_http_client_edit(server, astronaut):
    import bentoml

    mask = np.zeros(astronaut.shape[:2], dtype=bool)
    mask[100:400, 150:350] = True
    with bentoml.SyncHTTPClient(server) as client:  # as the README shows it: the photo once, then its id
        segment = client.segment(image=encode_png_base64(astronaut), points=[{"x": 250, "y": 200, "label": 1}])
        assert _decode_png(segment["mask"]).shape == (512, 512)
        result = client.edit(
            image_id=segment["image_id"], mask=encode_png_base64(mask), prompt="galaxy", steps=2, seed=1
        )
    image = _decode_png(result["images"][0])
    assert image.shape == astronaut.shape
    np.testing.assert_array_equal(image[core_of(mask)], astronaut[core_of(mask)])


def test_concurrent_new_images_share_an_encoder_batch(server):
    rng = np.random.default_rng(0)
    photos = [encode_png_base64(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)) for _ in range(8)]

    def click(photo: str) -> int:
        return requests.post(
            f"{server}/segment", json={"image": photo, "points": [{"x": 80, "y": 60}]}, timeout=120
        ).status_code

    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(click, photos)) == [200] * 8
    stats = requests.get(f"{server}/stats", timeout=30).json()
    assert sum(stats["segment"]["batch_sizes"]) >= 8
    assert max(stats["segment"]["batch_sizes"]) > 1, stats["segment"]


def test_bentoml_build_packs_the_code_and_only_the_embedded_salient_model(tmp_path):
    """No weights go into the bento but the automatic subject's U²-Netp (so the image finds subjects offline)."""
    context = tmp_path / "context"
    ignore = shutil.ignore_patterns("__pycache__", "*.onnx")
    shutil.copytree(REPO / "serving", context / "serving", ignore=ignore)
    shutil.copy(REPO / "bentofile.yaml", context)
    embedded = context / "serving" / "models" / "embedded"
    embedded.mkdir(exist_ok=True)
    (embedded / "u2netp.onnx").write_bytes(b"stand-in for U2-Netp")  # where the set-up installs it
    (context / "checkpoints").mkdir()
    (context / "checkpoints" / "sam_vit_h_4b8939.pth").write_bytes(b"weights" * 1000)
    (context / "checkpoints" / "u2net.onnx").write_bytes(b"a larger salient model")
    (context / "tests").mkdir()
    (context / "tests" / "test_x.py").write_text("x = 1\n")
    home = tmp_path / "bentoml"
    env = {**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true"}
    build = subprocess.run(
        [sys.executable, "-m", "bentoml", "build", "."],
        cwd=context,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    [bento] = [p for p in (home / "bentos" / "moodshift").iterdir() if p.is_dir()]
    files = {str(p.relative_to(bento)) for p in bento.rglob("*") if p.is_file()}
    assert {"bento.yaml", "src/serving/service.py", "src/serving/pipeline.py", "src/serving/models/sam.py"} <= files
    assert "src/serving/models/embedded/u2netp.onnx" in files
    assert (bento / "src/serving/models/embedded/u2netp.onnx").read_bytes() == b"stand-in for U2-Netp"
    weights = [f for f in files if f.endswith((".pth", ".safetensors", ".onnx")) and "/embedded/" not in f]
    assert weights == [] and not [f for f in files if "checkpoints" in f or "tests/" in f]
    assert "onnxruntime" in (bento / "bento.yaml").read_text()
    assert "serving.service:Moodshift" in (bento / "bento.yaml").read_text()


def test_stopping_the_service_leaves_no_process(tmp_path):
    """A readiness probe abandoned during start-up must not keep the gateway worker alive after a stop."""
    import time
    import uuid

    import psutil

    marker = uuid.uuid4().hex

    def ours() -> list[psutil.Process]:
        found = []
        for process in psutil.process_iter():
            try:
                if process.environ().get("MOODSHIFT_TEST_MARKER") == marker and process.status() != "zombie":
                    found.append(process)
            except psutil.Error:
                continue
        return found

    env = {
        "MOODSHIFT_PROFILE": "tiny",
        "MOODSHIFT_OLLAMA_ENABLED": "false",
        "MOODSHIFT_TEST_MARKER": marker,
        "MOODSHIFT_SHUTDOWN_TIMEOUT_S": "3",
    }
    with running_service(env, tmp_path / "server.log"):
        assert len(ours()) >= 4  # arbiter + gateway + segment + diffusion workers
    deadline = time.monotonic() + 30
    while ours() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert ours() == []


def test_cli_edit_through_the_server(server, coffee, tmp_path):
    from typer.testing import CliRunner

    from serving.cli import app

    Image.fromarray(coffee).save(tmp_path / "photo.png")
    mask = np.zeros(coffee.shape[:2], dtype=bool)
    mask[80:320, 150:450] = True
    Image.fromarray(mask).save(tmp_path / "mask.png")
    out = tmp_path / "out.png"
    arguments = ["edit", str(tmp_path / "photo.png"), "--mask", str(tmp_path / "mask.png"), "--prompt", "a galaxy"]
    arguments += ["--steps", "3", "--seed", "4", "--variants", "2", "-o", str(out), "--server", server]
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 0, result.output
    assert "denoising" in result.output and f"via {server}" in result.output
    for path in (tmp_path / "out-1.png", tmp_path / "out-2.png"):
        edited = np.asarray(Image.open(path))
        assert edited.shape == coffee.shape
        np.testing.assert_array_equal(edited[core_of(mask)], coffee[core_of(mask)])
    preview = tmp_path / "preview.png"
    watched = CliRunner().invoke(app, [*arguments, "--steps", "40", "--variants", "1", "--preview", str(preview)])
    assert watched.exit_code == 0, watched.output
    assert Image.open(preview).format == "PNG"  # saved while the service ran the edit
    bad = CliRunner().invoke(app, [*arguments[:-1], "http://127.0.0.1:9"])
    assert bad.exit_code == 2 and "Cannot reach the Moodshift service" in bad.output


@pytest.mark.parametrize(
    ("who", "headers", "upload", "status"),
    [
        ("a page elsewhere, JSON", {"Sec-Fetch-Site": "cross-site", "Origin": "http://evil.example"}, False, 403),
        (
            "a page elsewhere, a form upload",
            {"Sec-Fetch-Site": "cross-site", "Origin": "http://evil.example"},
            True,
            403,
        ),
        ("an older browser elsewhere", {"Origin": "http://evil.example"}, True, 403),
        ("the service's own page", {"Sec-Fetch-Site": "same-origin", "Origin": "SELF"}, True, 200),
        ("a trusted studio", {"Sec-Fetch-Site": "cross-site", "Origin": TRUSTED_ORIGIN}, False, 200),
        ("a script (curl, requests)", {}, True, 200),
    ],
)
def test_cross_site_requests_from_browsers_are_refused_unless_trusted(server, coffee, who, headers, upload, status):
    photo = encode_png_base64(coffee)
    headers = {name: value.replace("SELF", server) for name, value in headers.items()}
    if upload:
        files = {"image": ("photo.png", base64.b64decode(photo), "image/png")}
        response = requests.post(f"{server}/mood", files=files, headers=headers, timeout=60)
    else:
        response = requests.post(f"{server}/mood", json={"image": photo}, headers=headers, timeout=60)
    assert response.status_code == status, (who, response.text[:300])
    if status == 403:
        assert "cross-site request refused" in response.json()["error"] and "MOODSHIFT_TRUSTED_ORIGINS" in response.text
    else:
        assert response.json()["keywords"]


def test_the_openapi_document_shows_uploads_and_json(server):
    document = requests.get(f"{server}/docs.json", timeout=30).json()
    content = document["paths"]["/segment"]["post"]["requestBody"]["content"]
    assert "application/json" in content
    assert content["multipart/form-data"]["schema"]["properties"]["image"]["format"] == "binary"
