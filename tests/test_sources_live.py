"""Live capture shutdown: a read blocked in the backend, counters written under the lock, and the sinks of a
`stream` whose source never opens."""

import threading
import time

import cv2
import numpy as np
from typer.testing import CliRunner

from leuk_edge.cli import app
from leuk_edge.edge.sources import LiveSource


class BlockingCapture:
    """A cv2.VideoCapture stand-in: `n` frames, then read() blocks, like a backend waiting for a network that has
    gone quiet, until `unblock` is set or `block_s` has passed (then it fails)."""

    def __init__(self, n=3, block_s=None):
        self.n, self.i, self.block_s = n, 0, block_s
        self.unblock = threading.Event()
        self.blocked = threading.Event()
        self.released = False
        self.reading = False

    def read(self):
        if self.i < self.n:
            self.i += 1
            return True, np.full((24, 32, 3), self.i, np.uint8)
        self.reading = True
        self.blocked.set()
        self.unblock.wait(self.block_s)
        self.reading = False
        return False, None

    def get(self, prop):
        return 30.0 if prop == cv2.CAP_PROP_FPS else 0.0

    def release(self):
        assert not self.reading, "capture released under a running read"
        self.released = True


def _started(cap, **kw):
    src = LiveSource("fake", lambda: None, cap=cap, reconnect_s=0.2, backoff=0.05, **kw).start()
    assert cap.blocked.wait(5.0)  # the frames are delivered and the next read hangs
    return src


def test_close_waits_for_a_read_blocked_up_to_the_read_timeout():
    cap = BlockingCapture(block_s=2.5)  # the backend gives up after its read timeout (2.5 s here)
    src = _started(cap, read_timeout_s=2.5)
    t0 = time.monotonic()
    src.close()
    assert not src._thread.is_alive() and not src.detached  # waited for the read, did not leave it running
    assert cap.released and time.monotonic() - t0 < 4.5


def test_close_detaches_safely_from_a_read_that_never_returns():
    cap = BlockingCapture(block_s=None)  # hangs beyond any timeout
    src = _started(cap, read_timeout_s=0.3)
    t0 = time.monotonic()
    src.close()
    assert time.monotonic() - t0 < 2.0  # bounded
    assert src.detached and not cap.released  # the capture is not released under the running read ...
    cap.unblock.set()
    src._thread.join(2.0)
    assert not src._thread.is_alive() and cap.released  # ... the thread releases it when the read returns
    src.close()  # idempotent


class LockCheckingSource(LiveSource):
    """Records, for every write of a counter, whether the source's lock was held."""

    def __setattr__(self, name, value):
        if name in ("lost", "reconnects", "dropped") and "_cond" in self.__dict__:
            self.__dict__.setdefault("writes", []).append((name, self._cond._is_owned()))
        super().__setattr__(name, value)


def test_counters_are_written_under_the_lock():
    class Fake(BlockingCapture):
        def read(self):
            if self.i < self.n:
                self.i += 1
                return True, np.zeros((8, 8, 3), np.uint8)
            return False, None

    caps = [Fake(n=3), Fake(n=3)]  # a reconnection, then the source is gone for good
    src = LockCheckingSource("fake", lambda: caps.pop(0) if caps else None, reconnect_s=0.3, backoff=0.05).start()
    for _ in src:
        time.sleep(0.01)
    src.close()
    assert src.reconnects == 1 and src.lost
    written = {name for name, _ in src.writes}
    assert {"lost", "reconnects"} <= written, src.writes
    assert all(locked for _, locked in src.writes), src.writes


def test_window_and_recorder_are_closed_when_the_source_never_opens(tiny_onnx, tmp_path, monkeypatch):
    import leuk_edge.edge.draw as draw
    import leuk_edge.edge.recording as recording

    closed = []

    class FakeWindow:
        def __init__(self, *a, **k):
            pass

        def show(self, bgr):
            return True

        def close(self):
            closed.append("window")

    class SpyRecorder(recording.VideoRecorder):
        def close(self):
            closed.append("recorder")
            super().close()

    monkeypatch.setattr(draw, "Window", FakeWindow)
    monkeypatch.setattr(recording, "VideoRecorder", SpyRecorder)
    monkeypatch.setattr(draw, "display_available", lambda: True)
    res = CliRunner().invoke(app, ["stream", "-s", str(tmp_path / "missing.mp4"), "-m", str(tiny_onnx), "--show",
                                   "--record", str(tmp_path / "r.mp4")])
    assert res.exit_code == 2 and "source not found" in res.output
    assert sorted(closed) == ["recorder", "window"]
