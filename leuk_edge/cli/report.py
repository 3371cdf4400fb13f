"""`leuk-edge report INPUT… --out report.html`. Edge-only: no TensorFlow here."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from .common import console, user_errors


def report(
    inputs: List[Path] = typer.Argument(..., help="Classify tables (CSV/JSON/JSONL), stream events (JSONL) and/or "
                                                  "stream summaries (JSON), in any mix."),
    out: Path = typer.Option(Path("report.html"), "--out", "-o", help="The HTML file to write."),
    model: Optional[Path] = typer.Option(None, "--model", "-m",
                                         help="The model used: adds its card (MODEL.card.md beside it), metadata, "
                                              "calibration, and CAM overlays when it has a cam output."),
    run: Optional[Path] = typer.Option(None, "--run", help="Training run folder: adds metrics.json and calibration."),
    group_by: str = typer.Option("folder", "--group-by", help="Samples of a classify table: folder | subject "
                                                             "(C-NMC names UID_<subject>_…) | none."),
    threshold: Optional[float] = typer.Option(None, "--threshold",
                                              help="Threshold to draw (default: the model's, else from the labels)."),
    band: float = typer.Option(0.1, "--band", help="Uncertain: |P(all) - threshold| <= band."),
    gallery: int = typer.Option(24, "--gallery", min=0, help="Cells shown per gallery (flagged, uncertain)."),
):
    """One self-contained HTML report (images inside, no network): counts and blast fraction with its 95 %
    Wilson interval per sample, P(all) histogram, flagged and uncertain cells, model card and metrics."""
    from ..report import ReportOptions, write_report

    with user_errors():
        path = write_report(inputs, out, ReportOptions(group_by=group_by, band=band, gallery=gallery,
                                                       threshold=threshold, model=model, run=run))
    console.print(f"report: {path}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("report")(report)
