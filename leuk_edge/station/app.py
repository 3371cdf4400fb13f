"""The station's web app: the page (`GET /`) and the API of docs/contracts.md "Station API".

`build_station(...)` opens the model (and the source, when given) through the edge API; `create_app(station)` is
the FastAPI app, its API in one router per concern (`routers/`), behind `guard.Guard` (Host, Origin, anti-CSRF and
access-token checks). The page itself holds no data and is served without the access token; it carries the
anti-CSRF token its POSTs send back.
"""

from __future__ import annotations

import html
import threading
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from fastapi import FastAPI, HTTPException
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from .. import DISCLAIMER
from ..edge.files import sha256_file
from .guard import Access, Guard
from .hub import Hub
from .modelinfo import model_info
from .review import ReviewStore
from .routers import classify, live, model, slides
from .routers.deps import NO_CACHE
from .uploads import Limits

STATIC = resources.files("leuk_edge.station") / "static"
MAX_STREAMS = 24  # open MJPEG + SSE responses (anyio's default pool has 40 worker threads for all sync handlers)


@dataclass
class Station:
    clf: object
    store: ReviewStore
    folder: Path
    hub: Hub | None = None
    access: Access = field(default_factory=Access)
    data_root: Path | None = None
    limits: Limits = field(default_factory=Limits)
    info: dict = field(default_factory=dict)
    precision: object = None  # edge.precision.PrecisionChoice: which model file runs and why
    max_streams: int = MAX_STREAMS
    streams: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    decode_slots: threading.Semaphore | None = None  # made from limits.decodes

    def __post_init__(self):
        if self.decode_slots is None:
            self.decode_slots = threading.BoundedSemaphore(self.limits.decodes)

    def take_stream_slot(self):
        """One of the `max_streams` open MJPEG/SSE responses (each holds a worker thread while it waits for
        frames), taken atomically BEFORE the response starts, so a burst cannot pass the cap; beyond it the
        answer is 503 and viewers cannot starve the API's other requests of threads. Returns the release
        function (idempotent), which the response calls when it ends however it ends."""
        with self._lock:
            if self.streams >= self.max_streams:
                raise HTTPException(503, f"{self.streams} live streams are open; the station serves at most "
                                         f"{self.max_streams} at once")
            self.streams += 1
        released = threading.Event()

        def release() -> None:
            with self._lock:
                if not released.is_set():
                    released.set()
                    self.streams -= 1
        return release

    def close(self) -> dict | None:
        """Stop the live source (the tracker's last tracks reach the store), then close the database."""
        summary = self.hub.stop() if self.hub else None
        self.store.close()
        return summary


def build_station(model, folder, source: str | None = None, options=None, loop: bool = False,
                  pace: float | None = None, device: str = "auto", threads: int | None = None,
                  token: str | None = None, data_root=None, limits: Limits = Limits(), band: float = 0.1,
                  slide: str | None = None, backend: str | None = None, reconnect_s: float = 10.0,
                  timeout_s: float = 5.0, host: str = "127.0.0.1", allowed_hosts: tuple[str, ...] = (),
                  precision: str = "auto", users=None, scope: bool = True) -> Station:
    """Open everything (ValueErrors with one-line messages for bad input); the pipeline is started by `start`.
    `token` None: no access token (the CLI makes one unless --no-token); `host`/`allowed_hosts`: the Host names
    served; `precision`: which file of the model's set runs (`edge.precision.choose_precision`, as classify);
    `users` (users.Users): each person's token, which names the reviewer; `scope`: False (--no-scope) ignores the model's scope gate (no `other`)."""
    from ..edge import Classifier
    from ..edge.precision import choose_precision, overlay_source
    from ..edge.sources import open_source
    from ..edge.stream import StreamOptions
    from .replay import ReplaySource

    # Idle onnxruntime threads sleep, as in `stream`: the same cores detect, crop, draw and encode between calls.
    choice = choose_precision(model, precision, device)
    # A variant whose maps were not gated runs without them: the gallery then shows no overlay (not an ungated one).
    clf = Classifier(choice.path, device=device, threads=threads, spinning=False,
                     cam=overlay_source(choice.path) == choice.path, scope=scope)
    folder = Path(folder)
    sha = sha256_file(choice.path)
    if data_root is not None and not Path(data_root).is_dir():
        raise ValueError(f"--data-root is not a folder: {data_root}")
    described = {"file": Path(choice.path).name, "architecture": clf.info.architecture,
                 "version": clf.info.extra.get("leuk_edge_version")}
    replay = None
    if source is not None:  # opened (and checked) before the station's folder is touched: bad input writes nothing
        options = (options or StreamOptions()).validate()
        opener = lambda: open_source(source, backend=backend, reconnect_s=reconnect_s,  # noqa: E731
                                     open_timeout_s=timeout_s, read_timeout_s=timeout_s)
        replay = ReplaySource(opener, loop=loop, pace=pace)
    try:
        store = ReviewStore(folder, clf.threshold, sha, band=band, slide_prefix=slide,
                            ood_threshold=clf.ood_threshold, model=described)
    except BaseException:
        if replay is not None:
            replay.close()
        raise
    station = Station(clf, store, folder, access=Access.for_bind(host, token, tuple(allowed_hosts), users),
                      data_root=Path(data_root).resolve() if data_root else None, limits=limits,
                      info=model_info(clf, sha), precision=choice)
    if replay is not None:
        station.hub = Hub(replay, clf, options, folder / "recordings", on_cells=store.on_cells,
                          on_track_ended=store.on_track_ended)
        store.tracker = station.hub.tracker  # a live cell's label and means are the tracker's
    return station


# The page may talk only to its own station; no frame may embed it (a hidden frame would take its key presses).
PAGE_HEADERS = {**NO_CACHE, "X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "no-referrer",
                "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; frame-ancestors 'none'; "
                                           "form-action 'none'; base-uri 'none'"}


def page_html(csrf: str) -> str:
    """index.html with this process's anti-CSRF token in `<meta name="csrf-token">`."""
    text = (STATIC / "index.html").read_text(encoding="utf-8")
    return text.replace("__CSRF_TOKEN__", html.escape(csrf, quote=True))


def create_app(st: Station) -> FastAPI:
    """The page, its static files and the API routers; each router reaches `st` through `app.state.station`."""
    app = FastAPI(title="leuk-edge station", description=DISCLAIMER, docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.state.station = st
    app.add_middleware(Guard, access=st.access)
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
    for router in (live.router, slides.router, classify.router, model.router):
        app.include_router(router)

    page_text = page_html(st.access.csrf)

    @app.get("/", include_in_schema=False)
    def page():
        return HTMLResponse(page_text, headers=PAGE_HEADERS)

    return app
