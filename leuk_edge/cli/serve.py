"""`leuk-edge serve --model M.onnx [--source SRC]`: the microscope station in the browser. Edge-only: no TensorFlow."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..edge.detect import CNMC_CANVAS_UM, DetectorConfig
from .classify import DEVICE_HELP
from .common import UsageError, console, user_errors

MAX_REQUEST = 256 << 20  # one upload request (streamed to temporary files): never more than this, whatever the
                         # per-file limits


def serve(
    model: Path = typer.Option(..., "--model", "-m", help="Exported leuk-edge ONNX model (metadata inside)."),
    source: Optional[str] = typer.Option(None, "--source", "-s",
                                         help="Camera index, video file, still image, folder of frames or URL. "
                                              "Without it the station classifies uploads only."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (a non-loopback one needs --token)."),
    port: int = typer.Option(8000, "--port", min=0, max=65535, help="Port (0: any free port)."),
    token: Optional[str] = typer.Option(None, "--token", help="Access token for /api/*, 8+ characters (default "
                                                              "or 'auto': a fresh one, printed in the URL)."),
    no_token: bool = typer.Option(False, "--no-token", help="No access token (a loopback --host only)."),
    allowed_host: Optional[list[str]] = typer.Option(None, "--allowed-host",
                                                     help="Another Host name the station answers to (a name in "
                                                          "the lab's DNS, a proxy's); repeatable."),
    data_root: Optional[Path] = typer.Option(None, "--data-root",
                                             help="A folder on the station whose subfolders the page may classify."),
    folder: Path = typer.Option(Path("station"), "--folder",
                                help="Where crops, reviews.jsonl, signed slides and recordings are kept."),
    loop: bool = typer.Option(False, "--loop", help="Replay a video, folder or still source without end."),
    pace: Optional[float] = typer.Option(None, "--pace", min=0.0,
                                         help="Frames/s for file sources (default: the video's own rate, 2 for "
                                              "stills and folders; 0: as fast as possible)."),
    slide: Optional[str] = typer.Option(None, "--slide", help="Name prefix of the slides reviewed here."),
    band: float = typer.Option(0.1, "--band", min=0.0, max=0.49,
                               help="P(all) this close to the threshold goes to the 'uncertain' gallery."),
    max_files: int = typer.Option(200, "--max-files", min=1, help="Files per upload request."),
    max_upload_mb: float = typer.Option(25.0, "--max-upload-mb", min=0.01, help="Size limit per uploaded file."),
    max_pixels: int = typer.Option(40_000_000, "--max-pixels", min=1,
                                   help="Largest declared width x height accepted (checked before decoding)."),
    max_decode_mb: float = typer.Option(256.0, "--max-decode-mb", min=1.0,
                                        help="Decode budget per image: declared width x height x channels x bytes "
                                             "per sample (checked before decoding)."),
    um_per_px: Optional[float] = typer.Option(None, "--um-per-px", help="Frame scale in micrometres per pixel."),
    magnification: Optional[float] = typer.Option(None, "--magnification", help="Total magnification."),
    camera_pixel_um: float = typer.Option(DetectorConfig.camera_pixel_um, "--camera-pixel-um",
                                          help="Camera pixel pitch (with --magnification)."),
    crop_um: float = typer.Option(CNMC_CANVAS_UM, "--crop-um", min=0.0, help="Crop side in micrometres."),
    keep_edge: bool = typer.Option(False, "--keep-edge-cells", help="Also report cells cut by the frame edge."),
    stride: int = typer.Option(1, "--stride", min=1, help="Process every Nth frame of the source."),
    device: str = typer.Option("auto", "--device", "-d", help=DEVICE_HELP),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="onnxruntime intra-op threads."),
    backend: Optional[str] = typer.Option(None, "--backend", help="Force OpenCV's capture backend."),
    reconnect_s: float = typer.Option(10.0, "--reconnect-s", min=0.0, help="Retry a lost camera/stream this long."),
    timeout_s: float = typer.Option(5.0, "--timeout-s", min=0.1, help="Open/read timeout of a camera/stream."),
):
    """Serve the station page: live view with counts, cell review and signing, classify by upload, model facts.

    Prints the URL with its access token (as Jupyter does; --no-token on loopback only); Ctrl-C (or SIGTERM) stops
    it and prints the stream summary.
    """
    import os
    import signal

    from ..edge.signals import Terminated, graceful_stop
    from ..edge.stream import StreamOptions, render_summary
    from ..station.app import build_station, create_app
    from ..station.server import StationServer, bind, resolve_token, url_for
    from ..station.uploads import Limits

    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    with user_errors(), graceful_stop():
        if um_per_px is not None and magnification is not None:
            raise UsageError("give --um-per-px or --magnification, not both")
        tok = resolve_token(host, token, no_token)
        options = StreamOptions(detector=DetectorConfig(um_per_px=um_per_px, magnification=magnification,
                                                        camera_pixel_um=camera_pixel_um, drop_edge=not keep_edge),
                                stride=stride, crop_um=crop_um or None)
        limits = Limits(max_files=max_files, max_file_bytes=int(max_upload_mb * 2**20),
                        max_request_bytes=min(int(max_upload_mb * 2**20) * max_files, MAX_REQUEST) + (1 << 20),
                        max_pixels=max_pixels, max_decode_bytes=int(max_decode_mb * 2**20))
        station = build_station(model, folder, source=source, options=options, loop=loop, pace=pace, device=device,
                                threads=threads, token=tok, host=host, allowed_hosts=tuple(allowed_host or ()), data_root=data_root, limits=limits, band=band,
                                slide=slide, backend=backend, reconnect_s=reconnect_s, timeout_s=timeout_s)
        sock = bind(host, port)
        url = url_for(sock, host, tok)
        src = station.hub.source.describe() if station.hub else "no live source (uploads only)"
        console.print(f"station on {url}  model {model.name} ({', '.join(station.clf.providers)}), {src}; "
                      "Ctrl-C stops", highlight=False, soft_wrap=True)
        if tok is not None:
            console.print(f"token: {tok}  (the URL carries it; scripts send 'Authorization: Bearer TOKEN')",
                          highlight=False, soft_wrap=True)
        typer.echo(url)  # stdout: for scripts that open the page
        server = StationServer(create_app(station), station)
        if station.hub:
            station.hub.start()
        stopped: KeyboardInterrupt | None = None
        try:
            server.run(sockets=[sock])
        except KeyboardInterrupt as exc:  # uvicorn re-raises the signal after its graceful shutdown
            stopped = exc
        finally:
            summary = station.close()
            sock.close()
        if stopped is None and server.stop_signal is not None:  # re-raised into SIG_IGN (e.g. a background job)
            stopped = Terminated() if server.stop_signal == signal.SIGTERM else KeyboardInterrupt()
        if summary is not None:
            if stopped is not None:
                summary["ended"] = "terminated" if isinstance(stopped, Terminated) else "interrupted"
            render_summary(summary, console)
        if stopped is not None:
            raise stopped


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
