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


def after_classify(classifier, cam_classifier, rows: list, cam: Path | None, cam_all: bool,
                   report_path: Path | None, table: str, interrupted: bool) -> None:
    """`classify --cam DIR [--cam-all]` and `--report FILE`: post-passes over the finished rows (the classify loop
    only keeps them). An interrupted run still gets its report (of the rows it finished); its CAM pass is skipped.
    `cam_classifier` draws the maps: the model that ran, or its FP32 model when the variant's maps were not gated."""
    from ..edge.explain import write_cam_overlays
    from ..report import ReportOptions, write_report
    from ..report.inputs import inputs_from_rows

    written = {}
    if cam is not None and interrupted:
        console.print("[yellow]--cam: skipped, the run was interrupted[/]")
    elif cam is not None:
        written = write_cam_overlays(cam_classifier, rows, cam, all_rows=cam_all)
        console.print(f"CAM overlays: {len(written)} written to {cam}", highlight=False)
    if report_path is not None:
        path = write_report(None, report_path, ReportOptions(model=classifier.path, overlays=written),
                            classifier=classifier, cam_classifier=cam_classifier,
                            inputs=inputs_from_rows(rows, table))
        console.print(f"report: {path}", highlight=False)


def stream_collector(report_path: Path | None, inner):
    """(on_result callback, events or None): with --report, each tracked cell's P(all) sum, sightings and label
    are kept (a few bytes per cell, so a long live run stays small) for the report's histogram; `inner` still
    runs."""
    from ..report.inputs import StreamEvents

    if report_path is None:
        return inner, None
    events = StreamEvents("stream run")

    def on_result(result, stats):
        events.frames += 1
        for cell in result.cells:
            events.add(cell.track, cell.probability, cell.track_label)
        if inner is not None:
            inner(result, stats)
    return on_result, events


def after_stream(classifier, summary: dict, events, report_path: Path | None) -> None:
    if report_path is None:
        return
    from ..report import ReportOptions, write_report
    from ..report.inputs import inputs_from_stream

    path = write_report(None, report_path, ReportOptions(model=classifier.path), classifier=classifier,
                        inputs=inputs_from_stream(summary, events, f"stream of {summary.get('source')}"))
    console.print(f"report: {path}", highlight=False)
