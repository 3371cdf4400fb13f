"""`leuk-edge stream --source SRC --model M.onnx`. Edge-only: no TensorFlow."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..edge.detect import CNMC_CANVAS_UM, DetectorConfig
from ..edge.sources import BACKENDS
from .classify import DEVICE_HELP
from .common import UsageError, console, user_errors


def stream(
    source: str = typer.Option(..., "--source", "-s",
                               help="Camera index (0), video file, still image, folder of frames, or a URL "
                                    "(rtsp://, http://, udp://...)."),
    model: Path = typer.Option(..., "--model", "-m", help="Exported leuk-edge ONNX model (metadata inside)."),
    backend: Optional[str] = typer.Option(None, "--backend", help=f"Force OpenCV's capture backend: "
                                          f"{' | '.join(BACKENDS)} (default: ffmpeg for URLs, automatic otherwise)."),
    jsonl: Optional[Path] = typer.Option(None, "--jsonl", help="Write one JSON event per processed frame here."),
    record: Optional[Path] = typer.Option(None, "--record", help="Write the annotated video here (.mp4)."),
    show: bool = typer.Option(False, "--show/--headless", help="Show a window when a display exists."),
    max_frames: Optional[int] = typer.Option(None, "--max-frames", min=1, help="Stop after N processed frames."),
    stride: int = typer.Option(1, "--stride", min=1, help="Process every Nth frame of the source."),
    um_per_px: Optional[float] = typer.Option(None, "--um-per-px", help="Frame scale in micrometres per pixel."),
    magnification: Optional[float] = typer.Option(
        None, "--magnification", help="Total magnification; scale = --camera-pixel-um / magnification."),
    camera_pixel_um: float = typer.Option(DetectorConfig.camera_pixel_um, "--camera-pixel-um",
                                          help="Camera pixel pitch as it lands in the frame (with --magnification)."),
    crop_um: float = typer.Option(CNMC_CANVAS_UM, "--crop-um", min=0.0,
                                  help="Side of each cell's square crop in micrometres, a fixed field like C-NMC's "
                                       "450 px canvas (0: 2.15 x the cell's own size)."),
    keep_edge: bool = typer.Option(False, "--keep-edge-cells", help="Also report cells cut by the frame edge."),
    device: str = typer.Option("auto", "--device", "-d", help=DEVICE_HELP),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="onnxruntime intra-op threads."),
    reconnect_s: float = typer.Option(10.0, "--reconnect-s", min=0.0,
                                      help="How long a lost camera/stream is retried (with back-off) before the "
                                           "run ends."),
    timeout_s: float = typer.Option(5.0, "--timeout-s", min=0.1,
                                    help="Seconds a camera/stream may take to open or to deliver a frame before "
                                         "it counts as lost."),
    summary_json: Optional[Path] = typer.Option(None, "--summary", help="Also write the summary as JSON here."),
    report: Optional[Path] = typer.Option(None, "--report", help="Also write the HTML report of the run here."),
):
    """Find the white cells in every frame, classify each (P(all) = blast probability), live.

    Sizes scale with --um-per-px or --magnification; without them the scale is measured on the red cells in the
    frame (~7.5 um each), and only a frame with too few of them is taken as a 100x field ~192 um wide.
    """
    import contextlib
    import json
    import os

    from ..edge import Classifier
    from ..edge.draw import VideoRecorder, Window, display_available
    from ..edge.signals import EXIT_SIGINT, EXIT_SIGTERM, graceful_stop
    from ..edge.sources import open_source
    from ..edge.stream import StreamOptions, render_summary, run_stream

    # FFmpeg warns on every stream hiccup (timeouts, broken packets); the summary reports what matters. Read when
    # FFmpeg is first used, so set before any capture opens. (OpenCV's own log: silenced by the CLI's root callback.)
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET
    # SIGTERM (docker stop, systemd, Kubernetes) stops like Ctrl-C, from the first moment: exit 143.
    with user_errors(), graceful_stop(), contextlib.ExitStack() as opened:
        if backend is not None and backend not in ("auto", *BACKENDS):
            raise UsageError(f"unknown --backend {backend!r}; choose {', '.join(BACKENDS)}")
        if um_per_px is not None and magnification is not None:
            raise UsageError("give --um-per-px or --magnification, not both")
        options = StreamOptions(
            detector=DetectorConfig(um_per_px=um_per_px, magnification=magnification,
                                    camera_pixel_um=camera_pixel_um, drop_edge=not keep_edge),
            stride=stride, max_frames=max_frames, crop_um=crop_um or None)  # checked by run_stream
        # Idle onnxruntime threads sleep rather than spin: between the model calls the same cores detect, crop and
        # draw (spinning costs more CPU per frame on 2 shared cores: benchmarks/bench_stream.py, its "spinning" row).
        clf = Classifier(model, device=device, threads=threads, spinning=False)
        # Whatever was opened is closed on every way out, a source that never opens included (close() is
        # idempotent: run_stream closes them too).
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
        src = open_source(source, backend=backend, reconnect_s=reconnect_s, open_timeout_s=timeout_s,
                          read_timeout_s=timeout_s)
        opened.callback(src.close)
        console.print(f"streaming {src.describe()} through {model.name} ({', '.join(clf.providers)}); "
                      "Ctrl-C stops", highlight=False)
        from .report import after_stream, stream_collector

        on_result, events = stream_collector(report, _progress_printer())
        summary = run_stream(src, clf, options, jsonl=jsonl, recorder=recorder, window=window,
                             on_result=on_result,
                             on_warning=lambda text: console.print(f"[yellow]warning:[/] {text}", highlight=False))
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
