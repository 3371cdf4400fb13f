"""`leuk-edge stream --source SRC --model M.onnx` and `leuk-edge data fields OUT`. Edge-only: no TensorFlow."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .common import UsageError, console, user_errors
from .data import data_app

DEVICE_HELP = "auto | cpu | cuda | tensorrt | openvino | coreml | directml (no silent fall-back to CPU)."


def stream(
    source: str = typer.Option(..., "--source", "-s",
                               help="Camera index (0), video file, still image, folder of frames, or a URL "
                                    "(rtsp://, http://, udp://...)."),
    model: Path = typer.Option(..., "--model", "-m", help="Exported leuk-edge ONNX model (metadata inside)."),
    backend: Optional[str] = typer.Option(None, "--backend", help="Force OpenCV's capture backend: ffmpeg | "
                                          "gstreamer | v4l2 (default: ffmpeg for URLs, automatic otherwise)."),
    jsonl: Optional[Path] = typer.Option(None, "--jsonl", help="Write one JSON event per processed frame here."),
    record: Optional[Path] = typer.Option(None, "--record", help="Write the annotated video here (.mp4)."),
    show: bool = typer.Option(False, "--show/--headless", help="Show a window when a display exists."),
    max_frames: Optional[int] = typer.Option(None, "--max-frames", min=1, help="Stop after N processed frames."),
    stride: int = typer.Option(1, "--stride", min=1, help="Process every Nth frame of the source."),
    um_per_px: Optional[float] = typer.Option(None, "--um-per-px", help="Frame scale in micrometres per pixel."),
    magnification: Optional[float] = typer.Option(
        None, "--magnification", help="Total magnification; scale = --camera-pixel-um / magnification."),
    camera_pixel_um: float = typer.Option(15.0, "--camera-pixel-um",
                                          help="Camera pixel pitch as it lands in the frame (with --magnification)."),
    crop_um: float = typer.Option(30.0, "--crop-um", min=0.0,
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
):
    """Find the white cells in every frame, classify each (P(all) = blast probability), live.

    Sizes scale with --um-per-px or --magnification; without them a 100x field ~192 um wide is assumed.
    """
    import json

    import cv2

    from ..edge import Classifier
    from ..edge.detect import DetectorConfig
    from ..edge.draw import VideoRecorder, Window, display_available
    from ..edge.sources import open_source
    from ..edge.stream import StreamOptions, run_stream

    with user_errors():
        if backend is not None and backend not in ("auto", "ffmpeg", "gstreamer", "v4l2"):
            raise UsageError(f"unknown --backend {backend!r}; choose ffmpeg, gstreamer or v4l2")
        if um_per_px is not None and magnification is not None:
            raise UsageError("give --um-per-px or --magnification, not both")
        options = StreamOptions(
            detector=DetectorConfig(um_per_px=um_per_px, magnification=magnification,
                                    camera_pixel_um=camera_pixel_um, drop_edge=not keep_edge),
            stride=stride, max_frames=max_frames, crop_um=crop_um or None).validate()
        clf = Classifier(model, device=device, threads=threads)
        # Detection works on small images: one OpenCV thread leaves the cores to onnxruntime.
        cv2.setNumThreads(1)
        recorder = VideoRecorder(record) if record else None
        window = None
        if show:
            if display_available():
                window = Window()
            else:
                console.print("[yellow]--show: no display or no GUI in this OpenCV; running headless[/]")
        _quiet_video_logs()
        src = open_source(source, backend=backend, reconnect_s=reconnect_s, open_timeout_s=timeout_s,
                          read_timeout_s=timeout_s)
        console.print(f"streaming {src.describe()} through {model.name} ({', '.join(clf.providers)}); "
                      "Ctrl-C stops", highlight=False)
        summary = run_stream(src, clf, options, jsonl=jsonl, recorder=recorder, window=window,
                             on_result=_progress_printer())
        render_summary(summary)
        if summary_json:
            summary_json.parent.mkdir(parents=True, exist_ok=True)
            summary_json.write_text(json.dumps(summary, indent=2))
        if summary["ended"] == "interrupted":
            raise typer.Exit(130)


def _quiet_video_logs() -> None:
    """OpenCV/FFmpeg warn on every stream hiccup (timeouts, broken packets): the summary reports what matters."""
    import os

    import cv2

    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET; read when FFmpeg is first used
    try:
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    except AttributeError:  # pragma: no cover - builds without the logging API
        pass


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


def render_summary(s: dict) -> None:
    from rich.table import Table

    from .. import DISCLAIMER

    t = Table(title="stream summary", show_header=False, title_justify="left")
    t.add_row("source", f"{s['source_kind']} {s['source']}")
    t.add_row("ended", s["ended"] + (f" (reconnects {s['reconnects']})" if s["reconnects"] else ""))
    t.add_row("frames", f"{s['frames']} in {s['seconds']:.1f} s = {s['fps']:.1f} fps"
              + (f", {s['dropped_frames']} dropped (newest frame kept)" if s["dropped_frames"] else ""))
    t.add_row("per frame (ms)", "  ".join(f"{k} {v:.1f}" for k, v in s["stage_ms"].items()))
    t.add_row("latency (ms)", f"p50 {s['latency_ms']['p50']:.1f}  p95 {s['latency_ms']['p95']:.1f}")
    c = s["cells"]
    t.add_row("cells (tracked)", f"{c['total']}: all {c['all']}, hem {c['hem']}")
    if s["blast_fraction"] is not None:
        lo, hi = s["blast_fraction_ci95"]
        t.add_row("blast fraction", f"{100 * s['blast_fraction']:.1f}% (95% CI {100 * lo:.1f}-{100 * hi:.1f}%)")
    t.add_row("cell sightings", f"all {s['observations'].get('all', 0)}, hem {s['observations'].get('hem', 0)}")
    if s["unreadable"]:
        t.add_row("unreadable", f"{len(s['unreadable'])} frame(s), e.g. {s['unreadable'][0]['name']}: "
                                f"{s['unreadable'][0]['error']}")
    for key, name in (("jsonl", "events"), ("record", "recording")):
        if s.get(key):
            t.add_row(name, s[key])
    console.print(t)
    if s["ended"] == "source lost":
        console.print("[yellow]the source was lost and did not come back; the run ended[/]")
    console.print(f"[bold]{DISCLAIMER}[/]")


@data_app.command("fields")
def fields(
    out: Path = typer.Argument(..., help="Folder for frames/, ground_truth.json, drift.mp4 and drift.json."),
    frames: int = typer.Option(6, "--frames", min=0, help="Still fields to write."),
    video_frames: int = typer.Option(60, "--video-frames", min=0, help="Frames of the drifting video (0: none)."),
    fps: float = typer.Option(15.0, "--fps", min=1.0, help="Frame rate of the video."),
    width: int = typer.Option(1280, "--width", min=64),
    height: int = typer.Option(720, "--height", min=64),
    um_per_px: float = typer.Option(0.15, "--um-per-px", help="Scale: micrometres per pixel (0.15 ~ 100x)."),
    leukocytes: int = typer.Option(5, "--leukocytes", min=0, help="White cells per field."),
    blast_fraction: float = typer.Option(0.5, "--blast-fraction", min=0.0, max=1.0,
                                         help="Probability that a white cell is a blast (all)."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
):
    """Write synthetic microscope fields (red cells, platelets, a few white cells) with their ground truth."""
    from rich.progress import Progress

    from ..train.fields import FieldConfig, write_fields

    with user_errors(), Progress(console=console, transient=True) as bar:
        if um_per_px <= 0:
            raise UsageError("--um-per-px must be positive")
        cfg = FieldConfig(width=width, height=height, um_per_px=um_per_px, leukocytes=leukocytes,
                          blast_fraction=blast_fraction)
        task = bar.add_task("rendering fields", total=None)
        summary = write_fields(out, frames=frames, video_frames=video_frames, fps=fps, cfg=cfg, seed=seed,
                               progress=lambda i, n: bar.update(task, completed=i, total=n))
    video = f" and {video_frames}-frame video {summary['video']}" if summary["video"] else ""
    console.print(f"wrote {summary['frames']} fields ({summary['cells']} white cells){video} to {summary['root']} "
                  "(synthetic)", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("stream")(stream)
