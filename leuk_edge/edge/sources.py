"""Where frames come from: one abstraction over a still image, a folder of frames, a video file, a camera index
and a network URL (rtsp://, http://, udp://, ... through OpenCV's FFmpeg backend).

`open_source(spec)` returns a Source; `read()` (or iterating it) gives Frames (RGB uint8) and `skip()` passes over
one frame cheaply (no decode for a folder, `grab()` without the colour conversion for a video file). Files are read
frame by frame and never dropped. Live sources (camera, URL) run a capture thread that keeps only the newest frame,
so a slow consumer sees the present rather than a stale backlog (the frames it skipped are counted in `dropped`); a
lost live source is reopened with bounded exponential back-off and, when that fails for `reconnect_s` seconds, the
iteration simply ends with `lost = True`. No call blocks without a time bound.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np

from .preprocess import ImageReadError, decode_image, is_image_file, to_rgb

BACKENDS = {"ffmpeg": cv2.CAP_FFMPEG, "gstreamer": cv2.CAP_GSTREAMER, "v4l2": cv2.CAP_V4L2}
URL_RE = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


class SourceError(ValueError):
    """A source that cannot be opened; the message is one user-facing line."""


@dataclass
class Frame:
    index: int          # frame number in the source (live sources: capture counter, so drops leave gaps)
    time: float         # seconds: position in a video file; since opening for other sources
    image: np.ndarray = field(repr=False)  # RGB uint8 (H, W, 3)
    captured: float = 0.0  # time.perf_counter() when the frame was taken (latency is measured from here)


def _fps(cap) -> float | None:
    """A capture's frame rate when it reports a plausible one."""
    fps = cap.get(cv2.CAP_PROP_FPS)
    return float(fps) if fps and 0 < fps < 1000 else None


class Source:
    """Base class: `read()` the next Frame (None at the end), `skip()` one, or iterate for Frames; `close()` (or
    `with`) to release. Counters are read after the run."""
    kind = "source"

    def __init__(self, spec: str):
        self.spec = spec
        self.fps: float | None = None
        self.dropped = 0          # live only: frames replaced by a newer one before being consumed
        self.reconnects = 0       # live only: successful reopenings after a loss
        self.lost = False         # live only: ended because the source vanished and did not come back
        self.errors: list[tuple[str, str]] = []  # (name, reason) of frames that could not be read

    def read(self) -> Frame | None:
        """The next frame, or None when the source has ended."""
        raise NotImplementedError

    def skip(self) -> bool:
        """Pass over the next frame without delivering it (cheaper than read() where the source allows it);
        False when the source has ended."""
        return self.read() is not None

    def __iter__(self) -> Iterator[Frame]:
        while (frame := self.read()) is not None:
            yield frame

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def describe(self) -> str:
        return f"{self.kind} {self.spec}"


class ImageSource(Source):
    """A still image (one frame) or the image files of a folder in natural order (unreadable files skipped)."""

    def __init__(self, spec: str, paths: list[Path], kind: str = "folder"):
        super().__init__(spec)
        self.kind = kind
        self.paths = paths
        self._pos = 0
        self._t0: float | None = None

    def read(self) -> Frame | None:
        if self._t0 is None:
            self._t0 = time.perf_counter()
        while self._pos < len(self.paths):
            i, path = self._pos, self.paths[self._pos]
            self._pos += 1
            try:
                rgb = decode_image(path)
            except ImageReadError as exc:
                self.errors.append((path.name, str(exc)))
                continue
            now = time.perf_counter()
            return Frame(i, now - self._t0, rgb, now)
        return None

    def skip(self) -> bool:
        """The next file is passed over undecoded (so an unreadable one there is not reported)."""
        if self._t0 is None:
            self._t0 = time.perf_counter()
        if self._pos >= len(self.paths):
            return False
        self._pos += 1
        return True


class VideoSource(Source):
    """A video file, every frame in order; time = position in the video."""
    kind = "video"

    def __init__(self, spec: str, cap: cv2.VideoCapture):
        super().__init__(spec)
        self.cap = cap
        self.fps = _fps(cap)
        self._i = 0  # index of the next frame

    def read(self) -> Frame | None:
        if self.cap is None:
            return None
        ok, bgr = self.cap.read()
        now = time.perf_counter()
        if not ok or bgr is None:
            return None
        i = self._i
        self._i += 1
        t = i / self.fps if self.fps else self.cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
        return Frame(i, t, to_rgb(bgr), now)

    def skip(self) -> bool:
        """grab(): the frame is decoded (later frames may depend on it) but never converted or copied out."""
        if self.cap is None or not self.cap.grab():
            return False
        self._i += 1
        return True

    def close(self) -> None:
        if self.cap is not None:
            self.cap.release()
            self.cap = None


Opener = Callable[[], "cv2.VideoCapture | None"]


class LiveSource(Source):
    """A camera or network stream read by a capture thread that keeps only the newest frame.

    `opener()` returns an opened capture or None. When reading fails, the capture is reopened with exponential
    back-off (`backoff` s doubling up to `max_backoff`) for at most `reconnect_s` seconds; after that the
    iteration ends and `lost` is True. If no frame arrives for `stall_s` seconds at all (e.g. a read that hangs
    beyond its own timeout), the iteration ends the same way. The first opening (in `start()`, unless a capture is
    given) gets the same bounded patience as a reconnection, so a server that is still starting is waited for.

    `close()` waits for the capture thread as long as one read may block (`read_timeout_s`, the backend's own
    bound, plus a second): a read cannot be cancelled from outside, and releasing a capture under a read that is
    still running crashes some backends. A thread stuck beyond that is left to finish on its own ("detached":
    it releases its capture itself when the read returns and touches nothing else); `detached` says so.
    The counters (`dropped`, `reconnects`, `lost`) are written under the source's lock.
    """

    def __init__(self, spec: str, opener: Opener, kind: str = "stream", reconnect_s: float = 10.0,
                 backoff: float = 0.25, max_backoff: float = 4.0, stall_s: float | None = None,
                 cap: "cv2.VideoCapture | None" = None, read_timeout_s: float = 5.0):
        super().__init__(spec)
        self.kind = kind
        self.opener = opener
        self.reconnect_s = float(reconnect_s)
        self.backoff = float(backoff)
        self.max_backoff = float(max_backoff)
        self.stall_s = float(stall_s) if stall_s else self.reconnect_s + 15.0
        self.read_timeout_s = float(read_timeout_s)
        self.detached = False  # close() returned while the capture thread was still blocked in a read
        self._cap = cap
        self._cond = threading.Condition()
        self._pending = None  # (index, time, bgr, perf_counter) of the newest unconsumed frame
        self._ended = False
        self._stop = threading.Event()
        self._t0 = time.perf_counter()
        self._thread: threading.Thread | None = None

    def start(self) -> LiveSource:
        if self._cap is None:
            self._cap = self._reopen()
            if self._cap is None:
                raise SourceError(f"cannot open {self.kind} {self.spec} (no answer within {self.reconnect_s:g} s)")
        self.fps = _fps(self._cap)
        self._t0 = time.perf_counter()
        self._thread = threading.Thread(target=self._run, name=f"capture {self.spec}", daemon=True)
        self._thread.start()
        return self

    def _reopen(self):
        """Reopen with bounded exponential back-off; None when the budget is spent or the source is closed."""
        deadline = time.monotonic() + self.reconnect_s
        delay = self.backoff
        while not self._stop.is_set():
            try:
                cap = self.opener()
            except Exception:  # noqa: BLE001 - a broken backend must not kill the capture thread silently
                cap = None
            if cap is not None:
                return cap
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self._stop.wait(min(delay, left))
            delay = min(delay * 2, self.max_backoff)
        return None

    def _run(self) -> None:
        cap, count = self._cap, 0
        try:
            while not self._stop.is_set():
                ok, bgr = (cap.read() if cap is not None else (False, None))
                if self._stop.is_set():
                    break
                if ok and bgr is not None:
                    now = time.perf_counter()
                    with self._cond:
                        if self._pending is not None:
                            self.dropped += 1
                        self._pending = (count, now - self._t0, bgr, now)
                        self._cond.notify_all()
                    count += 1
                    continue
                if cap is not None:
                    cap.release()
                cap = self._reopen()
                if cap is None:
                    with self._cond:
                        self.lost = not self._stop.is_set()
                    break
                with self._cond:
                    self.reconnects += 1
        finally:
            if cap is not None:
                cap.release()
            with self._cond:
                self._ended = True
                self._cond.notify_all()

    def _take(self):
        """The newest unconsumed capture (waiting for one), or None when the source has ended or stalled."""
        if self._thread is None:
            self.start()
        with self._cond:
            self._cond.wait_for(lambda: self._pending is not None or self._ended, timeout=self.stall_s)
            item, self._pending = self._pending, None
            if item is None and not self._ended:  # nothing for stall_s seconds and the thread is stuck in a read
                self.lost = True
            return item

    def read(self) -> Frame | None:
        item = self._take()
        if item is None:
            return None
        index, t, bgr, captured = item
        return Frame(index, t, to_rgb(bgr), captured)

    def skip(self) -> bool:
        """The newest frame is consumed without the colour conversion. The capture thread has decoded it already:
        with newest-frame-wins it cannot know ahead which capture the consumer will take or pass over."""
        return self._take() is not None

    def close(self, timeout: float | None = None) -> None:
        """Stop the capture thread and wait for it (at most `timeout` s, default read_timeout_s + 1): it releases
        the capture itself once its read returns. Idempotent."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=self.read_timeout_s + 1.0 if timeout is None else timeout)
            self.detached = thread.is_alive()


def _natural_key(path: Path):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", path.name)]


def _api(backend: str | None, default: int) -> int:
    if backend is None or backend == "auto":
        return default
    if backend not in BACKENDS:
        raise SourceError(f"unknown backend {backend!r}; choose one of auto, {', '.join(BACKENDS)}")
    api = BACKENDS[backend]
    try:
        from cv2 import videoio_registry as reg
        if not reg.hasBackend(api):
            raise SourceError(f"this OpenCV build has no {backend} backend")
    except ImportError:  # pragma: no cover - very old OpenCV
        pass
    return api


def _capture_opener(target, api: int, open_timeout_s: float, read_timeout_s: float) -> Opener:
    def open_capture():
        params = []
        if api in (cv2.CAP_FFMPEG, cv2.CAP_ANY) and hasattr(cv2, "CAP_PROP_OPEN_TIMEOUT_MSEC"):
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(open_timeout_s * 1000),
                      cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(read_timeout_s * 1000)]
        try:
            cap = cv2.VideoCapture(target, api, params) if params else cv2.VideoCapture(target, api)
        except cv2.error:
            return None
        if not cap.isOpened():
            cap.release()
            return None
        return cap
    return open_capture


def open_source(spec: str, backend: str | None = None, reconnect_s: float = 10.0, open_timeout_s: float = 5.0,
                read_timeout_s: float = 5.0) -> Source:
    """A camera index ("0"), a network URL, a still image, a folder of frames or a video file -> Source.

    `backend` forces OpenCV's capture backend (ffmpeg, gstreamer, v4l2) for cameras, URLs and video files; with
    gstreamer, SPEC may also be a pipeline ending in appsink. Raises SourceError when it cannot be opened.
    """
    spec = str(spec).strip()
    if not spec:
        raise SourceError("empty --source")
    if spec.isdigit():  # camera index
        api = _api(backend, cv2.CAP_ANY)
        return LiveSource(spec, _capture_opener(int(spec), api, open_timeout_s, read_timeout_s), kind="camera",
                          reconnect_s=reconnect_s, read_timeout_s=read_timeout_s).start()
    if URL_RE.match(spec) and not spec.lower().startswith("file://"):
        api = _api(backend, cv2.CAP_FFMPEG)
        opener = _capture_opener(spec, api, open_timeout_s, read_timeout_s)
        return LiveSource(spec, opener, kind="stream", reconnect_s=reconnect_s, read_timeout_s=read_timeout_s,
                          stall_s=read_timeout_s + open_timeout_s + reconnect_s + 5.0).start()
    path = Path(spec[7:] if spec.lower().startswith("file://") else spec).expanduser()
    if path.is_dir():
        frames = sorted((p for p in path.iterdir() if p.is_file() and is_image_file(p)), key=_natural_key)
        if not frames:
            raise SourceError(f"no image files in folder {path}")
        return ImageSource(spec, frames, kind="folder")
    if path.is_file():
        if is_image_file(path) and backend in (None, "auto"):
            return ImageSource(spec, [path], kind="image")
        api = _api(backend, cv2.CAP_ANY)
        cap = cv2.VideoCapture(str(path), api)
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"cannot open video {path} (not a video OpenCV can decode)")
        return VideoSource(spec, cap)
    if backend == "gstreamer" and "!" in spec:  # a GStreamer pipeline
        return LiveSource(spec, _capture_opener(spec, cv2.CAP_GSTREAMER, open_timeout_s, read_timeout_s),
                          kind="pipeline", reconnect_s=reconnect_s, read_timeout_s=read_timeout_s).start()
    raise SourceError(f"source not found: {spec} (expected a camera index, URL, image, folder or video file)")
