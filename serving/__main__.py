"""Entry point of `python -m serving`."""

from serving.cli import app


def main() -> None:
    app()


if __name__ == "__main__":
    main()
