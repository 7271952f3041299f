"""How to start the studio: the `streamlit run` command line with the studio's look and quiet defaults."""

from __future__ import annotations

import sys
from pathlib import Path

APP_PATH = Path(__file__).resolve().parent / "app.py"
PRIMARY_COLOR = "#7c3aed"  # violet, like the mask overlay

STREAMLIT_FLAGS = (
    "--server.headless=true",
    "--browser.gatherUsageStats=false",
    "--client.toolbarMode=minimal",
    f"--theme.primaryColor={PRIMARY_COLOR}",
)


def streamlit_command(port: int, address: str = "127.0.0.1") -> list[str]:
    """`python -m streamlit run ui/app.py` on `address:port`, with this interpreter."""
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(APP_PATH),
        f"--server.port={port}",
        f"--server.address={address}",
        *STREAMLIT_FLAGS,
    ]
