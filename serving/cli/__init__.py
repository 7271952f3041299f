"""The `python -m serving` command line: one module per command, each registering on `app`.

Command modules import their heavy dependencies inside the command function, so `--help` stays fast.
"""

from serving.cli.app import app, bench_app

# Importing a command module registers its command(s) on `app` / `bench_app`.
from serving.cli import weights  # noqa: F401  isort: skip
from serving.cli import mood, prompt  # noqa: F401  isort: skip
from serving.cli import bench_segment, segment  # noqa: F401  isort: skip
from serving.cli import bench_diffusion, edit  # noqa: F401  isort: skip
from serving.cli import bench_matte, matte  # noqa: F401  isort: skip
from serving.cli import bench_serve, serve  # noqa: F401  isort: skip
from serving.cli import demo  # noqa: F401  isort: skip

app.add_typer(bench_app, name="bench")

__all__ = ["app", "bench_app"]
