"""`python -m serving weights`: for each stage, the weights found, whether they load, what runs and why; `--download`
fetches what is missing."""

from typing import Annotated

import typer

from serving.cli.app import app, fail


@app.command("weights")
def weights(
    download: Annotated[
        bool,
        typer.Option(
            "--download",
            help="Fetch what is missing: SAM, SDXL (fp16 variant), the fp16-safe VAE, the SDXL-Lightning 4-step LoRA.",
        ),
    ] = False,
    sha256: Annotated[
        bool, typer.Option(help="Check the SAM file's sha256 against the official file (about a second per GB).")
    ] = True,
) -> None:
    """Report, offline and in seconds, each stage's weights (complete, intact) and what runs: profile, layout,
    variant, dtype, device, GPU offload mode, and why; and fast mode's few-step weights. Exit status 1 when selected
    weights are there but broken."""
    from serving.models.errors import WeightsError
    from serving.models.weights import human_size, missing_downloads, report_weights, run_download
    from serving.settings import get_settings

    settings = get_settings()
    if download:
        failures = []
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
