"""`python -m ui [--port 8501] [--address 127.0.0.1]`: start the studio (Streamlit) with its look and quiet defaults.

The studio finds the service at MOODSHIFT_SERVICE_URL; `python -m serving demo` starts both.
"""

from __future__ import annotations

import argparse
import os
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ui", description="Start the Moodshift studio (Streamlit).")
    parser.add_argument("--port", type=int, default=8501, help="port of the studio (default 8501)")
    parser.add_argument("--address", default="127.0.0.1", help="interface to listen on (0.0.0.0 for all)")
    args = parser.parse_args(argv)
    command = streamlit_command(args.port, args.address)
    os.execv(command[0], command)  # streamlit handles its own signals


if __name__ == "__main__":
    main()
