"""`leuk-edge stream --source SRC --model M.onnx`. Edge-only: no TensorFlow.

Named steps: check the options -> open the chosen model, the recording, the window and the source (each closed
on every way out) -> run the stream -> summary (with the precision that ran) -> report -> exit code."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated, Optional

import typer

from .common import console, user_errors
from .options import LiveOptions, ModelOptions, command


@command
def stream(
    source: Annotated[str, typer.Option("--source", "-s", help="Camera index (0), video file, still image, folder "
                                                                "of frames, or a URL (rtsp://, http://, udp://...).")],
    run: ModelOptions,
    live: LiveOptions,
    jsonl: Annotated[Optional[Path], typer.Option("--jsonl", help="Write one JSON event per processed frame "
                                                                  "here.")] = None,
    record: Annotated[Optional[Path], typer.Option("--record", help="Write the annotated video here (.mp4).")] = None,
    show: Annotated[bool, typer.Option("--show/--headless", help="Show a window when a display exists.")] = False,
    max_frames: Annotated[Optional[int], typer.Option("--max-frames", min=1,
                                                      help="Stop after N processed frames.")] = None,
    summary_json: Annotated[Optional[Path], typer.Option("--summary", help="Also write the summary as JSON "
                                                                           "here.")] = None,
    report: Annotated[Optional[Path], typer.Option("--report", help="Also write the HTML report of the run "
                                                                    "here.")] = None,
):
    """Find the white cells in every frame, classify each (P(all) = blast probability), live.

    Sizes scale with --um-per-px or --magnification; without them the scale is measured on the red cells in the
    frame (~7.5 um each), and only a frame with too few of them is taken as a 100x field ~192 um wide.
    """
    import os

    from ..edge.signals import graceful_stop

    # FFmpeg warns on every stream hiccup (timeouts, broken packets); the summary reports what matters. Read when
    # FFmpeg is first used, so set before any capture opens. (OpenCV's own log: silenced by the CLI's root callback.)
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET
    # SIGTERM (docker stop, systemd, Kubernetes) stops like Ctrl-C, from the first moment: exit 143.
    with user_errors(), graceful_stop(), contextlib.ExitStack() as opened:
        options = live.check().stream_options(max_frames)  # the rest is checked by run_stream
        clf, choice = run.open()
        recorder, window, src = _open_outputs_and_source(opened, source, live, record, show)
        console.print(f"streaming {src.describe()} through {choice.path.name} ({choice.used.upper()}, "
                      f"{', '.join(clf.providers)}); Ctrl-C stops", highlight=False)
        summary, events = _run(src, clf, options, jsonl, recorder, window, report)
        summary["precision"] = choice.to_dict()
        _finish(clf, summary, events, report, summary_json)


def _open_outputs_and_source(opened: contextlib.ExitStack, source: str, live: LiveOptions, record, show: bool):
    """Recording, window and source, each closed on every way out, a source that never opens included (close()
    is idempotent: run_stream closes them too)."""
    from ..edge.draw import Window, display_available
    from ..edge.recording import VideoRecorder
    from ..edge.sources import open_source

    recorder = VideoRecorder(record) if record else None
    if recorder is not None:
        opened.callback(recorder.close)
    window = None
    if show:
        if display_available():
            window = Window()
            opened.callback(window.close)
        else:
            console.print("[yellow]--show: no display or no GUI in this OpenCV; running headless[/]")
    src = open_source(source, **live.source_kwargs())
    opened.callback(src.close)
    return recorder, window, src


def _run(src, clf, options, jsonl, recorder, window, report) -> tuple[dict, object]:
    """-> (the run's summary, the sightings kept for --report or None)."""
    from ..edge.stream import run_stream
    from .report import stream_collector

    on_result, events = stream_collector(report, _progress_printer())
    summary = run_stream(src, clf, options, jsonl=jsonl, recorder=recorder, window=window, on_result=on_result,
                         on_warning=lambda text: console.print(f"[yellow]warning:[/] {text}", highlight=False,
                                                               soft_wrap=True))
    return summary, events


def _finish(clf, summary: dict, events, report, summary_json) -> None:
    """Table, report, summary file; 130 / 143 when a signal ended the run."""
    import json

    from ..edge.signals import EXIT_SIGINT, EXIT_SIGTERM
    from ..edge.stream import render_summary
    from .report import after_stream

    render_summary(summary, console)
    after_stream(clf, summary, events, report)
    if summary_json:
        summary_json.parent.mkdir(parents=True, exist_ok=True)
        summary_json.write_text(json.dumps(summary, indent=2))
    if summary["ended"] in ("interrupted", "terminated"):
        raise typer.Exit(EXIT_SIGTERM if summary["ended"] == "terminated" else EXIT_SIGINT)


def _progress_printer():
    """A status line every ~5 s on stderr (cheap; works for endless live sources)."""
    import time

    last = [time.perf_counter()]

    def report(result, stats):
        now = time.perf_counter()
        if now - last[0] >= 5.0:
            last[0] = now
            console.print(f"frame {result.frame.index}: {len(result.cells)} cells in view, "
                          f"{stats.fps:.1f} fps", highlight=False)
    return report


def register(app: typer.Typer) -> None:
    app.command("stream")(stream)
