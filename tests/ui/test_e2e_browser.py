"""End to end in a real browser: `python -m serving demo` on the tiny profile (fake Ollama) driven by headless
Debian chromium through Playwright: upload, see the automatic mask (the real U²-Netp) without a click, click to
refine it, generate, see the result and the history entry.

Needs `/usr/bin/chromium` (apt-get install chromium); Playwright's own browsers are not downloaded.
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from serving.processes import free_port, port_is_closed

REPO_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO_ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
PHOTO_SIZE = (1200, 800)  # larger than the canvas and not square: the canvas shows it scaled
DEMO_START_TIMEOUT_S = 420
GENERATE_TIMEOUT_S = 420
EDIT_STEPS = 12  # a tiny edit of 12 steps lasts a few polls on CPU: long enough to show a preview

pytestmark = [
    pytest.mark.slow,
    # CI installs chromium (scripts/install-browser.sh), so there a missing browser fails instead of skipping.
    pytest.mark.skipif(
        not Path(CHROMIUM).exists() and not os.environ.get("CI"),
        reason="needs Debian's chromium: bash scripts/install-browser.sh",
    ),
]


@dataclass
class Demo:
    ui_url: str
    service_url: str
    history_dir: Path
    process: subprocess.Popen
    log: Path


@pytest.fixture()
def demo(tmp_path) -> Iterator[Demo]:
    """`python -m serving demo --fake-ollama` on free ports with the tiny profile; stopped with Ctrl-C (SIGINT)."""
    import requests

    port, ui_port = free_port(), free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("MOODSHIFT_")}
    env.update(MOODSHIFT_PROFILE="tiny", MOODSHIFT_HISTORY_DIR=str(tmp_path / "history"), PYTHONUNBUFFERED="1")
    log = tmp_path / "demo.log"
    command = [sys.executable, "-m", "serving", "demo", "--port", str(port), "--ui-port", str(ui_port), "--fake-ollama"]
    with open(log, "wb") as out:
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    demo = Demo(f"http://127.0.0.1:{ui_port}", f"http://127.0.0.1:{port}", tmp_path / "history", process, log)
    try:
        deadline = time.monotonic() + DEMO_START_TIMEOUT_S
        while "Moodshift demo is running" not in log.read_text(errors="replace"):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(
                    f"the demo did not start (exit {process.poll()}):\n{log.read_text(errors='replace')[-4000:]}"
                )
            time.sleep(0.5)
        assert requests.get(f"{demo.service_url}/readyz", timeout=5).status_code == 200
        yield demo
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)  # what Ctrl-C sends
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    output = log.read_text(errors="replace")
    assert process.returncode == 0, output[-4000:]
    assert "demo stopped" in output
    assert port_is_closed(port) and port_is_closed(ui_port), "the demo left the service or the studio running"


def canvas_png(locator) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(locator.screenshot())).convert("RGB")).astype(int)


def test_studio_in_a_real_browser(demo, tmp_path, coffee, u2netp):
    from playwright.sync_api import expect, sync_playwright

    photo = tmp_path / "coffee.png"
    Image.fromarray(coffee).resize(PHOTO_SIZE, Image.Resampling.BILINEAR).save(photo)
    # The photo as the studio draws it without a mask: scaled to the 560×373 canvas.
    plain = np.asarray(Image.open(photo).resize((560, 373), Image.Resampling.LANCZOS)).astype(int)
    ARTIFACTS.mkdir(exist_ok=True)

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1600})
            page.goto(demo.ui_url)
            expect(page.get_by_text("Upload a photo to start.")).to_be_visible(timeout=60_000)
            expect(page.get_by_text("Demo models.")).to_be_visible()  # tiny profile: the banner says so

            page.locator('input[type="file"]').set_input_files(str(photo))
            upper = page.locator("canvas.upper-canvas")  # the 0.13 canvas, inside an open shadow root
            background = page.locator("canvas.dc-background-canvas")
            expect(upper).to_be_visible(timeout=60_000)
            box = upper.bounding_box()
            assert (round(box["width"]), round(box["height"])) == (560, 373)
            # Wait for the photo to be drawn (the canvas reports its fit then, which reruns the app once).
            page.wait_for_function(
                "el => { const d = el.getContext('2d').getImageData(280, 186, 1, 1).data; return d[3] > 0; }",
                arg=background.element_handle(),
                timeout=30_000,
            )
            # No click yet: the automatic subject (U²-Netp) is tinted and outlined on the canvas.
            expect(page.get_by_text("Automatic subject · mask covers")).to_be_visible(timeout=120_000)
            expect(page.get_by_text("made by u2netp ·")).to_be_visible()
            page.wait_for_timeout(1500)
            automatic = canvas_png(background)[: plain.shape[0], : plain.shape[1]]  # the element may round up a pixel
            changed = np.abs(automatic - plain).max(axis=2) > 30
            assert changed.sum() > 2000, f"no automatic mask visible ({changed.sum()} pixels differ from the photo)"
            assert changed[190, 280], "the cup is not in the automatic mask"
            page.screenshot(path=str(ARTIFACTS / "e2e-automatic-mask.png"), full_page=True)

            click_x, click_y = 280, 190  # on the cup, in canvas pixels
            upper.click(position={"x": click_x, "y": click_y})
            expect(page.get_by_text("1 subject · 0 not-subject points · mask covers")).to_be_visible(timeout=120_000)
            expect(page.get_by_text("made by u2netp+clicks")).to_be_visible()

            # The mood read on upload (fake Ollama's canned LLaVA answer) fills the keywords box.
            expect(page.get_by_role("textbox", name="Mood of the photo")).to_have_value(
                re.compile(r"calm, warm"), timeout=60_000
            )
            word = page.get_by_role("textbox", name="Your word")
            word.fill("forest")
            word.press("Enter")
            expect(page.get_by_text("CLIP tokens")).to_be_visible(timeout=120_000)

            steps = page.get_by_role("slider", name="Steps")
            steps.focus()
            steps.press("Home")  # 1
            for _ in range(3 * EDIT_STEPS):  # enough steps to see the picture form, few enough for a CPU
                if int(steps.input_value()) >= EDIT_STEPS:  # a key pressed while the app reruns can be lost
                    break
                steps.press("ArrowRight")
                page.wait_for_timeout(100)
            expect(steps).to_have_value(str(EDIT_STEPS))
            page.wait_for_timeout(500)

            page.get_by_role("button", name="Generate").click()
            expect(page.get_by_text("The background forming (preview)")).to_be_visible(timeout=120_000)
            preview = page.locator('[data-testid="stImage"]', has_text="The background forming").locator("img")
            page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=preview.element_handle())
            page.screenshot(path=str(ARTIFACTS / "e2e-preview.png"), full_page=True)
            expect(page.get_by_text("Saved to history")).to_be_visible(timeout=GENERATE_TIMEOUT_S * 1000)
            expect(page.get_by_role("heading", name="Result")).to_be_visible()
            expect(page.get_by_role("button", name="Download PNG")).to_be_visible()
            page.screenshot(path=str(ARTIFACTS / "e2e-studio.png"), full_page=True)

            page.get_by_role("link", name="History").first.click()
            expect(page.get_by_text("1 saved edit")).to_be_visible(timeout=30_000)
            expect(page.get_by_text("forest", exact=False).first).to_be_visible()
            page.screenshot(path=str(ARTIFACTS / "e2e-history.png"), full_page=True)
        finally:
            browser.close()

    entries = [p for p in demo.history_dir.iterdir() if not p.name.startswith(".")]
    assert len(entries) == 1
    entry = json.loads((entries[0] / "entry.json").read_text())
    assert entry["params"]["steps"] == EDIT_STEPS and entry["params"]["variants"] == 1
    assert (entry["width"], entry["height"]) == PHOTO_SIZE
    assert Image.open(entries[0] / "result_0.png").size == PHOTO_SIZE
    # The click, mapped back to the photo's pixels (Chromium floors mouse positions: allow one canvas pixel).
    (point,) = entry["points"]
    per_canvas_pixel = PHOTO_SIZE[0] / 560
    assert abs(point["x"] - click_x * PHOTO_SIZE[0] / 560) <= per_canvas_pixel + 1
    assert abs(point["y"] - click_y * PHOTO_SIZE[1] / 373) <= per_canvas_pixel + 1
    assert point["label"] == 1
