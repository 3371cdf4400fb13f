"""`leuk-edge demo`: the main job on synthetic data."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import console, fail


def demo(
    out: Path = typer.Option(Path("demo_out"), "--out", help="Folder for everything the demo writes."),
    quick: bool = typer.Option(False, "--quick", help="Smallest setting (tiny sizes, 1-2 epochs): a smoke test."),
):
    """Synthetic data -> train both models -> compare -> export (+INT8) -> classify -> stream -> report.md."""
    from .demo_job import DemoError, run_demo

    try:
        report = run_demo(out, quick=quick, log=lambda m: console.print(m, highlight=False))
    except DemoError as exc:
        fail(str(exc), code=1)
    console.print(f"[bold]report:[/] {report}")


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
