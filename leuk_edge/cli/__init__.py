"""The `leuk-edge` command. Thin: each sub-module parses options and calls the Python API.

Training and export import TensorFlow lazily inside their commands, so `classify`, `stream` and `bench` start
fast and work with the edge-only install.
"""

from __future__ import annotations

import typer

from .. import DISCLAIMER, __version__

app = typer.Typer(
    name="leuk-edge",
    help=f"Screening aid for acute lymphoblastic leukemia in white-blood-cell images. {DISCLAIMER}",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool):
    if value:
        typer.echo(f"leuk-edge {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Show the version and exit.")):
    pass


def _quiet_opencv() -> None:
    """Unreadable images become one error row each; OpenCV's own stderr log about them is only noise here."""
    import cv2

    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)


def _register() -> None:
    import importlib

    for name in ("data", "train", "export", "classify", "stream", "demo"):
        try:
            module = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"{__name__}.{name}":  # that part of the CLI is not written (yet)
                continue
            raise
        module.register(app)


_quiet_opencv()
_register()


def main() -> None:
    app()
