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
    """Runs before every command. Unreadable images become one error row each, so OpenCV's own stderr log
    about them is only noise; TensorFlow (imported lazily by train/export/demo) reads its C++ log level once,
    at import, so it is set before any command runs."""
    import os

    import cv2

    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _register() -> None:
    import importlib

    for name in ("data", "train", "export", "classify", "stream", "serve", "report", "demo", "audit"):
        importlib.import_module(f"{__name__}.{name}").register(app)


_register()


def main() -> None:
    app()
