"""`leuk-edge serve --model M.onnx [--source SRC]`: the microscope station in the browser. Edge-only: no TensorFlow.

Named steps: check the options -> open the station (the chosen model, the source) -> bind and print the URL ->
serve until Ctrl-C / SIGTERM -> close and print the stream summary (with the precision that ran)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Optional

import typer

from .common import UsageError, console, user_errors
from .options import LiveOptions, ModelOptions, command, option_group

MAX_REQUEST = 256 << 20  # one upload request (streamed to temporary files): never more than this, whatever the
                         # per-file limits


@option_group
@dataclass
class UploadOptions:
    max_files: Annotated[int, typer.Option("--max-files", min=1, help="Files per upload request.")] = 200
    max_upload_mb: Annotated[float, typer.Option("--max-upload-mb", min=0.01,
                                                 help="Size limit per uploaded file.")] = 25.0
    max_pixels: Annotated[int, typer.Option(
        "--max-pixels", min=1, help="Largest declared width x height accepted (checked before decoding).")] = \
        40_000_000
    max_decode_mb: Annotated[float, typer.Option(
        "--max-decode-mb", min=1.0, help="Decode budget per image: declared width x height x channels x bytes per "
                                         "sample (checked before decoding).")] = 256.0

    def limits(self):
        from ..station.uploads import Limits

        per_file = int(self.max_upload_mb * 2**20)
        return Limits(max_files=self.max_files, max_file_bytes=per_file,
                      max_request_bytes=min(per_file * self.max_files, MAX_REQUEST) + (1 << 20),
                      max_pixels=self.max_pixels, max_decode_bytes=int(self.max_decode_mb * 2**20))


@command
def serve(
    run: ModelOptions,
    uploads: UploadOptions,
    live: LiveOptions,
    source: Annotated[Optional[str], typer.Option(
        "--source", "-s", help="Camera index, video file, still image, folder of frames or URL. Without it the "
                               "station classifies uploads only.")] = None,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port (0: any free port).")] = 8000,
    token: Annotated[Optional[str], typer.Option(
        "--token", help="Access token for /api/*, 8+ characters (default or 'auto': a fresh one, printed in the "
                        "URL).")] = None,
    no_token: Annotated[bool, typer.Option("--no-token", help="No access token (a loopback --host only).")] = False,
    users: Annotated[Optional[Path], typer.Option(
        "--users", help="JSON {TOKEN: NAME, ...} (or 'sha256:HEX' keys): each person's own token, which names them "
                        "on every review and signature; only the tokens' hashes are kept.")] = None,
    allowed_host: Annotated[Optional[list[str]], typer.Option(
        "--allowed-host", help="Another Host name the station answers to (a name in the lab's DNS, a proxy's); "
                               "repeatable.")] = None,
    data_root: Annotated[Optional[Path], typer.Option(
        "--data-root", help="A folder on the station whose subfolders the page may classify.")] = None,
    folder: Annotated[Path, typer.Option(
        "--folder", help="Where crops, reviews.jsonl, signed slides and recordings are kept.")] = Path("station"),
    loop: Annotated[bool, typer.Option("--loop", help="Replay a video, folder or still source without end.")] = False,
    pace: Annotated[Optional[float], typer.Option(
        "--pace", min=0.0, help="Frames/s for file sources (default: the video's own rate, 2 for stills and "
                                "folders; 0: as fast as possible).")] = None,
    slide: Annotated[Optional[str], typer.Option("--slide", help="Name prefix of the slides reviewed here.")] = None,
    band: Annotated[float, typer.Option(
        "--band", min=0.0, max=0.49, help="P(all) this close to the threshold goes to the 'uncertain' "
                                          "gallery.")] = 0.1,
):
    """Serve the station page: live view with counts, cell review and signing, classify by upload, model facts.

    Prints the URL with its access token (as Jupyter does; --no-token on loopback only); Ctrl-C (or SIGTERM) stops
    it and prints the stream summary.
    """
    import os

    from ..edge.signals import graceful_stop
    from ..station.app import build_station

    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    with user_errors(), graceful_stop():
        options = live.check().stream_options()
        people, tok = _people(users, host, token, no_token)
        station = build_station(run.model, folder, source=source, options=options, loop=loop, pace=pace,
                                device=run.device, threads=run.threads, token=tok, host=host,
                                allowed_hosts=tuple(allowed_host or ()), users=people, data_root=data_root,
                                limits=uploads.limits(), band=band, slide=slide, precision=run.precision,
                                scope=run.scope,
                                backend=live.backend, reconnect_s=live.reconnect_s, timeout_s=live.timeout_s)
        _serve(station, host, port, tok)


def _people(users: Path | None, host: str, token: str | None, no_token: bool):
    """(the --users map or None, the station's own access token): with --users each person uses their own token,
    so the station makes none of its own unless --token is given."""
    from ..station.server import resolve_token

    if users is None:
        return None, resolve_token(host, token, no_token)
    from ..station.users import Users

    if no_token:
        raise UsageError("--users gives each person a token: --no-token does not go with it")
    return Users.load(users), resolve_token(host, token) if token is not None else None


def _serve(station, host: str, port: int, tok: str | None) -> None:
    """Bind, print the URL, serve until stopped; then close the station and print its summary. A stop by signal
    is re-raised (user_errors turns it into exit 130 / 143)."""
    import signal

    from ..edge.signals import Terminated
    from ..station.app import create_app
    from ..station.server import StationServer, bind, url_for

    sock = bind(host, port)
    url = url_for(sock, host, tok)
    src = station.hub.source.describe() if station.hub else "no live source (uploads only)"
    prec = station.precision
    console.print(f"station on {url}  model {prec.path.name} ({prec.used.upper()}, "
                  f"{', '.join(station.clf.providers)}), {src}; Ctrl-C stops", highlight=False, soft_wrap=True)
    if station.clf.scope_note():  # once per run: out-of-scope cells will not be set aside
        console.print(f"[yellow]warning:[/] {station.clf.scope_note()}", highlight=False, soft_wrap=True)
    if tok is not None:
        console.print(f"token: {tok}  (the URL carries it; scripts send 'Authorization: Bearer TOKEN')",
                      highlight=False, soft_wrap=True)
    if station.access.users is not None:
        console.print(f"{len(station.access.users)} reviewer token(s) from --users: each person opens the page with "
                      "?token=THEIR_TOKEN", highlight=False, soft_wrap=True)
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
    _print_summary(summary, prec, stopped)
    if stopped is not None:
        raise stopped


def _print_summary(summary: dict | None, precision, stopped: KeyboardInterrupt | None) -> None:
    from ..edge.signals import Terminated
    from ..edge.stream import render_summary

    if summary is None:
        return
    summary["precision"] = precision.to_dict()
    if stopped is not None:
        summary["ended"] = "terminated" if isinstance(stopped, Terminated) else "interrupted"
    render_summary(summary, console)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
