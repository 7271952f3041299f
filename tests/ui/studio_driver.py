"""Driving the studio with Streamlit's AppTest: start it against a service URL, upload, click on the canvas.

AppTest cannot run the canvas's JavaScript, so a click is simulated the way the browser reports it: the
component's value (`{"drawing": {"raw": fabric JSON}, "backgroundFit": ...}`) is set through session_state,
with each point drawn exactly as the 0.13 point tool draws it from the props the app gave the canvas.
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from ui.panels import generate
from ui.settings import get_settings

APP = Path(__file__).resolve().parents[2] / "ui" / "app.py"


def start_studio(service_url: str, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    monkeypatch.setenv("MOODSHIFT_SERVICE_URL", service_url)
    get_settings.cache_clear()
    monkeypatch.setattr(generate, "POLL_INTERVAL_S", 0.01)
    return AppTest.from_file(str(APP), default_timeout=30).run()


def upload(at: AppTest, name: str, data: bytes) -> AppTest:
    at.file_uploader(key="upload").upload(name, data, "image/png")
    return at.run()


def canvas_props(at: AppTest) -> dict[str, Any]:
    """What the app passed to st_canvas in the last run (the component's JSON props)."""

    def walk(node):
        yield node
        for child in getattr(node, "children", {}).values():
            yield from walk(child)

    for node in walk(at._tree):
        proto = getattr(node, "proto", None)
        if type(proto).__name__ == "BidiComponent" and "drawable_canvas" in proto.component_name:
            return json.loads(proto.json)
    raise AssertionError("no canvas on the page")


def canvas_background(at: AppTest) -> np.ndarray:
    url = canvas_props(at)["backgroundImageURL"]
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB"))


def click(at: AppTest, x: float, y: float) -> AppTest:
    """A click at canvas (x, y) as the browser reports it: all points so far plus a new Circle, and the fit."""
    props = canvas_props(at)
    key = f"canvas-{at.session_state.canvas_gen}"
    current = at.session_state[key]["drawing"]["raw"] if key in at.session_state else props["initialDrawing"]
    radius, stroke = props["displayRadius"], props["strokeWidth"]
    circle = {  # as streamlit_drawable_canvas 0.13's point tool creates it (frontend source)
        "type": "Circle", "left": x - (radius + stroke / 2), "top": y, "originX": "left", "originY": "center",
        "radius": radius, "strokeWidth": stroke, "stroke": props["strokeColor"], "fill": props["fillColor"],
    }  # fmt: skip
    background = canvas_background(at)
    height, width = background.shape[:2]
    # The frontend's "contain" fit of the background into the canvas.
    scale = min(props["canvasWidth"] / width, props["canvasHeight"] / height)
    fit = {
        "naturalWidth": width, "naturalHeight": height, "scaleX": scale, "scaleY": scale,
        "offsetX": (props["canvasWidth"] - width * scale) / 2, "offsetY": (props["canvasHeight"] - height * scale) / 2,
    }  # fmt: skip
    drawing = {**current, "objects": [*current.get("objects", []), circle]}
    at.session_state[key] = {"drawing": {"raw": drawing, "data": None}, "backgroundFit": fit}
    return at.run()


def generate_edit(at: AppTest, photo_png: bytes, word: str = "forest") -> AppTest:
    """Upload the photo, click the subject, type the word and press Generate: the whole happy path, one run each."""
    at = click(upload(at, "big.png", photo_png), 280, 186)
    at.text_input(key="user_word").input(word)
    at = at.run()
    at.button(key="generate").click()
    return at.run()


def slider_state(at: AppTest, key: str) -> tuple[Any, Any, Any]:
    """A slider's (value, minimum, maximum)."""
    slider = at.slider(key=key)
    return slider.value, slider.min, slider.max


def texts(elements) -> list[str]:
    return [element.value for element in elements]


def assert_no_exception(at: AppTest) -> None:
    assert not at.exception, [e.message for e in at.exception]
