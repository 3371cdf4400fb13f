"""The station's view of a source: replays files with --loop, plays them at a human pace, pauses on request.

`ReplaySource` is a `edge.sources.Source`, so `run_stream` drives it like any other source. Frame numbers keep
increasing across replays (the CellTracker bridges gaps by frame number), so a replayed video simply brings its
cells round again as new tracks. Live sources (camera, URL) are passed through: no loop, no pacing.
"""

from __future__ import annotations

import threading
import time
from typing import Callable

from ..edge.sources import Frame, Source

STILL_FPS = 2.0  # a still image or a folder of fields plays at this rate unless --pace says otherwise


class ReplaySource(Source):
    def __init__(self, opener: Callable[[], Source], loop: bool = False, pace: float | None = None):
        """`opener()` opens the underlying source (again, for each replay). `pace`: frames per second for file
        sources (None: a video's own rate, STILL_FPS for stills/folders; 0: as fast as possible)."""
        self._opener = opener
        self.inner = opener()
        super().__init__(self.inner.spec)
        self.kind = self.inner.kind
        self.fps = self.inner.fps
        self.live = self.inner.kind in ("camera", "stream", "pipeline")
        self.loop = loop and not self.live
        if self.live or pace == 0:
            self.pace = 0.0
        else:
            self.pace = float(pace or self.inner.fps or STILL_FPS)
        self.replays = 0
        self._offset = 0     # frame-number offset of the current replay
        self._last = -1      # last frame number handed out
        self._t_offset = 0.0
        self._next_due = 0.0
        self._running = threading.Event()
        self._running.set()
        self._closed = threading.Event()

    # Counters are the inner source's (summarize reads them after the run).
    dropped = property(lambda s: s.inner.dropped, lambda s, v: None)
    reconnects = property(lambda s: s.inner.reconnects, lambda s, v: None)
    lost = property(lambda s: s.inner.lost, lambda s, v: None)
    errors = property(lambda s: s._first_pass_errors if s.replays else s.inner.errors, lambda s, v: None)

    def pause(self, on: bool) -> None:
        (self._running.clear if on else self._running.set)()

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    def _wait_turn(self) -> bool:
        """Block while paused and until the next frame is due; False when closed meanwhile."""
        while not self._running.wait(0.2):
            if self._closed.is_set():
                return False
        if self.pace:
            delay = self._next_due - time.perf_counter()
            if delay > 0 and self._closed.wait(delay):
                return False
            self._next_due = max(self._next_due, time.perf_counter() - 1.0) + 1.0 / self.pace
        return not self._closed.is_set()

    @property
    def replayable(self) -> bool:
        """A file source (video, folder, still) that can be played again; a camera or stream cannot."""
        return not self.live

    def _reopen(self) -> None:
        if not self.replays:  # the first pass saw every file: its unreadable frames are the run's, reported once
            self._first_pass_errors = list(self.inner.errors)
        self.inner.close()
        self.inner = self._opener()
        self._offset = self._last + 1
        self.replays += 1

    def _restart(self) -> bool:
        if not self.loop or self._closed.is_set():
            return False
        self._reopen()
        return True

    def rewind(self) -> None:
        """After the source ended (and was closed): open it again from its start, frame numbers going on, for
        one more pass (the station's restart button)."""
        if not self.replayable:
            raise ValueError("a live source cannot be replayed")
        self._reopen()
        self._next_due = 0.0
        self._closed.clear()

    def read(self) -> Frame | None:
        if not self._wait_turn():
            return None
        frame = self.inner.read()
        if frame is None and self._restart():
            frame = self.inner.read()
            if frame is None:  # an empty replay (every frame unreadable): stop rather than spin
                return None
        if frame is None:
            return None
        if frame.index + self._offset <= self._last:  # a still image read again: keep numbers increasing
            self._offset = self._last + 1 - frame.index
        frame.index += self._offset
        self._last = frame.index
        frame.captured = time.perf_counter()  # latency from when the station took it, not when the file began
        return frame

    def skip(self) -> bool:
        return self.inner.skip() or self._restart()

    def close(self) -> None:
        self._closed.set()
        self._running.set()
        self.inner.close()
