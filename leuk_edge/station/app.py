"""The station's web app: the page (`GET /`) and the API of docs/contracts.md "Station API".

`build_station(...)` opens the model (and the source, when given) through the edge API; `create_app(station)` is
the FastAPI app. With a token, every `/api/*` request must carry it (`Authorization: Bearer T` or `?token=T`);
it is compared in constant time. The page itself holds no data and is served without one.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import threading
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from urllib.parse import parse_qs, urlencode

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool

from .. import DISCLAIMER
from . import browse
from .hub import Hub
from ..edge.files import sha256_file
from .modelinfo import model_info
from .review import ReviewStore, SignRefused
from .uploads import Limits, classify_files, classify_folder, safe_name

STATIC = resources.files("leuk_edge.station") / "static"
MAX_STREAMS = 24  # open MJPEG + SSE responses (anyio's default pool has 40 worker threads for all sync handlers)


@dataclass
class Station:
    clf: object
    store: ReviewStore
    folder: Path
    hub: Hub | None = None
    token: str | None = None
    data_root: Path | None = None
    limits: Limits = field(default_factory=Limits)
    info: dict = field(default_factory=dict)
    precision: object = None  # edge.precision.PrecisionChoice: which model file runs and why
    max_streams: int = MAX_STREAMS
    streams: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def check_capacity(self) -> None:
        """Open MJPEG/SSE responses each hold a worker thread while they wait for frames: beyond `max_streams`
        the answer is 503, so viewers cannot starve the API's other requests of threads (a soft cap: the count
        is taken when a stream really starts)."""
        if self.streams >= self.max_streams:
            raise HTTPException(503, f"{self.streams} live streams are open; the station serves at most "
                                     f"{self.max_streams} at once")

    @contextlib.contextmanager
    def stream_slot(self):
        with self._lock:
            self.streams += 1
        try:
            yield
        finally:
            with self._lock:
                self.streams -= 1

    def close(self) -> dict | None:
        return self.hub.stop() if self.hub else None


def build_station(model, folder, source: str | None = None, options=None, loop: bool = False,
                  pace: float | None = None, device: str = "auto", threads: int | None = None,
                  token: str | None = None, data_root=None, limits: Limits = Limits(), band: float = 0.1,
                  slide: str | None = None, backend: str | None = None, reconnect_s: float = 10.0,
                  timeout_s: float = 5.0, precision: str = "auto") -> Station:
    """Open everything (ValueErrors with one-line messages for bad input); the pipeline is started by `start`.
    `precision`: which file of the model's set runs (`edge.precision.choose_precision`, as classify)."""
    from ..edge import Classifier
    from ..edge.precision import choose_precision, overlay_source
    from ..edge.sources import open_source
    from ..edge.stream import StreamOptions
    from .replay import ReplaySource

    # Idle onnxruntime threads sleep, as in `stream`: the same cores detect, crop, draw and encode between calls.
    choice = choose_precision(model, precision, device)
    # A variant whose maps were not gated runs without them: the gallery then shows no overlay (not an ungated one).
    clf = Classifier(choice.path, device=device, threads=threads, spinning=False,
                     cam=overlay_source(choice.path) == choice.path)
    folder = Path(folder)
    sha = sha256_file(choice.path)
    store = ReviewStore(folder, clf.threshold, sha, band=band, slide_prefix=slide)
    if data_root is not None and not Path(data_root).is_dir():
        raise ValueError(f"--data-root is not a folder: {data_root}")
    station = Station(clf, store, folder, token=token, data_root=Path(data_root).resolve() if data_root else None,
                      limits=limits, info=model_info(clf, sha), precision=choice)
    if source is not None:
        options = (options or StreamOptions()).validate()
        opener = lambda: open_source(source, backend=backend, reconnect_s=reconnect_s,  # noqa: E731
                                     open_timeout_s=timeout_s, read_timeout_s=timeout_s)
        station.hub = Hub(ReplaySource(opener, loop=loop, pace=pace), clf, options, folder / "recordings",
                          on_cells=store.on_cells)
    return station


class TokenGate:
    """ASGI middleware: `/api/*` needs the token (header or query), compared with hmac.compare_digest."""

    def __init__(self, app, token: str | None):
        self.app, self.token = app, token

    def _given(self, scope) -> str:
        for k, v in scope.get("headers", []):
            if k == b"authorization":
                text = v.decode("latin-1")
                if text[:7].lower() == "bearer ":
                    return text[7:].strip()
        q = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        return q.get("token", [""])[0]

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and self.token and scope["path"].startswith("/api/"):
            if not hmac.compare_digest(self._given(scope).encode("utf-8"), self.token.encode("utf-8")):
                await JSONResponse({"detail": "missing or wrong token"}, status_code=401,
                                   headers={"WWW-Authenticate": "Bearer"})(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def _threaded(gen):
    """A blocking generator iterated on worker threads, closed as soon as its response ends (a viewer that
    leaves gives its thread and stream slot back at once, not whenever the response is garbage-collected)."""
    try:
        async for chunk in iterate_in_threadpool(gen):
            yield chunk
    finally:
        gen.close()


def _too_large(message: str):
    raise HTTPException(status_code=413, detail=message)


def create_app(st: Station) -> FastAPI:
    app = FastAPI(title="leuk-edge station", description=DISCLAIMER, docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.add_middleware(TokenGate, token=st.token)
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
    no_cache = {"Cache-Control": "no-store"}

    def hub() -> Hub:
        if st.hub is None:
            raise HTTPException(404, "the station runs without --source: no live stream")
        return st.hub

    @app.get("/", include_in_schema=False)
    def page():
        return FileResponse(str(STATIC / "index.html"), headers=no_cache)

    @app.get("/api/health")
    def health():
        h = st.hub
        return {"status": "ok", "model": st.info["file"], "providers": st.info["providers"],
                "source": h.source.describe() if h else None, "running": bool(h and h.running),
                "data_root": st.data_root is not None, "slide": st.store.slide,
                "threshold": st.store.threshold, "band": st.store.band,
                "precision": st.precision.to_dict() if st.precision else None, "disclaimer": DISCLAIMER}

    @app.get("/api/model")
    def model():
        return st.info

    @app.get("/api/stream.mjpg")
    def stream():
        h = hub()

        st.check_capacity()

        def parts():
            with st.stream_slot():
                yield from _frames()

        def _frames():
            last = -1
            while not h.stopping.is_set():
                got = h.next_jpeg(last, timeout=1.0)
                if got is None:
                    if not h.running:
                        return
                    continue
                last, jpeg = got
                yield (b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: " + str(len(jpeg)).encode()
                       + b"\r\n\r\n" + jpeg + b"\r\n")
        return StreamingResponse(_threaded(parts()), media_type="multipart/x-mixed-replace; boundary=frame",
                                 headers=no_cache)

    @app.get("/api/events")
    def events(request: Request, since: int | None = None):
        h = hub()
        last_id = request.headers.get("last-event-id")
        if since is None and last_id and last_id.isdigit():
            since = int(last_id) + 1
        start = since - 1 if since is not None else h.newest_event()  # default: from now on

        st.check_capacity()

        def lines():
            with st.stream_slot():
                yield from _lines()

        def _lines():
            last = start
            idle = 0
            while not h.stopping.is_set():
                evs = h.events_after(last, timeout=1.0)
                if not evs:
                    if not h.running:
                        return
                    idle += 1
                    if idle % 15 == 0:
                        yield b": keep-alive\n\n"
                    continue
                for seq, ev in evs:
                    yield f"id: {seq}\ndata: {json.dumps(ev)}\n\n".encode()
                last = evs[-1][0]
        return StreamingResponse(_threaded(lines()), media_type="text/event-stream", headers=no_cache)

    @app.get("/api/summary")
    def summary():
        if st.hub is None:
            return {"frames": 0, "cells": 0, "all": 0, "hem": 0, "blast_fraction": None, "ci_low": None,
                    "ci_high": None, "fps": 0.0, "running": False}
        return st.hub.live_summary()

    def _query(request: Request) -> str:
        t = request.query_params.get("token")
        return "?" + urlencode({"token": t}) if t else ""  # a token may hold &, + or #

    @app.get("/api/cells")
    def cells(request: Request):
        return st.store.cells(_query(request))

    @app.get("/api/cells/{item}/{kind}.png")
    def cell_image(item: int, kind: str):
        if kind not in ("crop", "cam"):
            raise HTTPException(404, "no such image")
        path = st.store.file_of(item, kind)
        if path is None or not path.is_file():
            raise HTTPException(404, "no image for that cell")
        return FileResponse(str(path), media_type="image/png")

    @app.post("/api/cells/{item}/review")
    def review(item: int, body: dict):
        try:
            return st.store.review(item, str(body.get("label")))
        except KeyError:
            raise HTTPException(404, f"no cell {item} on the current slide") from None
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None

    @app.post("/api/sign")
    def sign():
        try:
            return st.store.sign()
        except SignRefused as exc:
            return JSONResponse({"detail": str(exc)}, status_code=409)

    @app.post("/api/record")
    def record(body: dict):
        return hub().record(bool(body.get("on")))

    @app.post("/api/pause")
    def pause(body: dict):
        return {"paused": hub().pause(bool(body.get("on")))}

    def _root() -> Path:
        if st.data_root is None:
            raise HTTPException(404, "the station runs without --data-root")
        return st.data_root

    @app.get("/api/folders")
    def folders(path: str = ""):
        try:
            return browse.listing(_root(), path)
        except browse.Forbidden as exc:
            raise HTTPException(403, str(exc)) from None
        except FileNotFoundError as exc:
            raise HTTPException(404, str(exc)) from None

    @app.post("/api/classify")
    async def classify(request: Request):
        lim = st.limits
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > lim.max_request_bytes:
            _too_large(f"request of {int(length) / 2**20:.1f} MiB is over the limit of "
                       f"{lim.max_request_bytes / 2**20:.0f} MiB")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > lim.max_request_bytes:
                _too_large(f"request is over the limit of {lim.max_request_bytes / 2**20:.0f} MiB")
        request._body = bytes(body)  # starlette parses the form from the body read (and bounded) above
        form = await request.form(max_files=lim.max_files + 1, max_fields=lim.max_files + 16)
        uploads = [f for f in form.getlist("files") if hasattr(f, "read")]
        folder = form.get("folder")
        if isinstance(folder, str) and not uploads:
            try:
                paths, names = browse.folder_images(_root(), folder, lim.max_files)
            except browse.Forbidden as exc:
                raise HTTPException(403, str(exc)) from None
            except FileNotFoundError as exc:
                raise HTTPException(404, str(exc)) from None
            except OverflowError as exc:
                _too_large(str(exc))
            return await run_in_threadpool(classify_folder, st.clf, paths, names, lim.max_pixels)
        if not uploads:
            raise HTTPException(400, "send one or more image files in the multipart field 'files'")
        if len(uploads) > lim.max_files:
            _too_large(f"{len(uploads)} files in one request; the limit is {lim.max_files}")
        files = []
        for i, f in enumerate(uploads):
            data = await f.read()
            if len(data) > lim.max_file_bytes:
                _too_large(f"{safe_name(f.filename, i)} is {len(data) / 2**20:.1f} MiB; the limit is "
                           f"{lim.max_file_bytes / 2**20:.0f} MiB per file")
            files.append((safe_name(f.filename, i), data))
        on_image = lambda name, rgb, p: st.store.add_upload(name, rgb, p)  # noqa: E731
        return await run_in_threadpool(classify_files, st.clf, files, lim.max_pixels, on_image)

    return app
