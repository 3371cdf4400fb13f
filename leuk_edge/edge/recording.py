"""Annotated frames -> a video people can play: H.264 (libx264, yuv420p) in MP4/MOV/MKV, or VP9 in WebM, written
with PyAV on its own thread.

Why not OpenCV's VideoWriter: it writes MPEG-4 Part 2 (browsers do not play it) at a fixed frame rate, so a stream
processed at 5 fps from a 30 fps camera played 6x too fast. Here each frame's timestamp is the wall clock (ms since
the first frame), so a 6 s recording lasts 6 s. The thread that hands frames over (edge.publish) only enqueues,
never waits for the encoder: the queue is bounded, and a frame that finds it full is dropped and counted
(`dropped`, which also counts the frames the publish stage could not hand over: edge.publish)."""
from __future__ import annotations

import queue
import threading
import time
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

QUEUE_FRAMES = 64          # frames waiting for the encoder before new ones are dropped
SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv", ".webm")
TIME_BASE = Fraction(1, 1000)  # pts in ms


def video_codec(suffix: str) -> str:
    """The encoder for a file suffix: VP9 for WebM, else H.264 (libx264 when this PyAV ships it)."""
    import av

    names = ("libvpx-vp9",) if suffix == ".webm" else ("libx264", "h264")
    for name in names:
        try:
            av.codec.Codec(name, "w")
            return name
        except Exception:  # noqa: BLE001 - not in this build of FFmpeg: try the next
            continue
    raise ValueError(f"no {'VP9' if suffix == '.webm' else 'H.264'} encoder in this PyAV build")


class VideoRecorder:
    """write(bgr) enqueues a frame stamped with time.monotonic(); a worker thread encodes it. Opened on the first
    frame with its size (cropped to even sides for yuv420p); later frames of another size are resized to it.

    `clock="wall"` (default): timestamps from the wall clock; a full queue drops the frame (live: never wait).
    `clock="frames"`: frame i at i / fps, and write() waits for room instead of dropping (synthetic videos rendered
    offline, faster than real time: every frame belongs in the file). close() flushes the queue and the encoder."""

    def __init__(self, path: str | Path, fps: float | None = None, clock: str = "wall",
                 queue_frames: int = QUEUE_FRAMES):
        self.path = Path(path)
        self.fps = fps
        self.clock = clock
        self.frames = 0          # frames encoded
        self.dropped = 0         # frames dropped because the queue was full
        self.error: str | None = None
        suffix = self.path.suffix.lower()
        if suffix not in SUFFIXES:
            raise ValueError(f"--record wants a video file name such as out.mp4 or out.webm, got {self.path.name}")
        self.codec = video_codec(suffix)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._queue: queue.Queue = queue.Queue(maxsize=queue_frames)
        self._thread: threading.Thread | None = None
        self._t0: float | None = None
        self._index = 0
        self._count_lock = threading.Lock()

    def write(self, bgr: np.ndarray, fps: float | None = None) -> None:
        """Hand a frame to the encoder thread; with the wall clock it never blocks (a full queue drops the frame
        and counts it)."""
        now = time.monotonic()
        if self._t0 is None:
            self._t0 = now
            self.fps = self.fps or fps
            self._thread = threading.Thread(target=self._run, name="video-recorder", daemon=True)
            self._thread.start()
        if self.clock == "frames":
            pts = int(round(self._index * 1000 / float(self.fps or 15.0)))
        else:
            pts = int(round((now - self._t0) * 1000))
        self._index += 1
        if self.clock == "frames":
            self._queue.put((pts, bgr))
            return
        try:
            self._queue.put_nowait((pts, bgr))
        except queue.Full:
            self.drop()

    def drop(self) -> None:
        """Count a frame of the stream that never reached the recorder (the publish stage was full): `dropped`
        covers every processed frame missing from the file."""
        with self._count_lock:  # counted from the publish thread and the pipeline thread
            self.dropped += 1

    def close(self) -> None:
        """Encode what is queued, flush the encoder and close the file (playable afterwards)."""
        if self._thread is not None:
            self._queue.put((None, None))  # blocking: the sentinel must get in behind the queued frames
            self._thread.join()
            self._thread = None

    def stats(self) -> dict:
        out = {"path": str(self.path), "codec": self.codec, "frames": self.frames, "dropped": self.dropped}
        return {**out, "error": self.error} if self.error else out

    def _run(self) -> None:
        enc = None
        try:
            while True:
                pts, bgr = self._queue.get()
                if bgr is None:
                    break
                if enc is None:
                    enc = _Encoder(self.path, self.codec, bgr.shape, self.fps)
                enc.encode(bgr, pts)
                self.frames += 1
        except Exception as exc:  # noqa: BLE001 - reported in stats; the stream goes on without its recording
            self.error = f"{type(exc).__name__}: {exc}"
            _drain(self._queue)
        finally:
            if enc is not None:
                enc.close()


def _drain(q: queue.Queue) -> None:
    """After an encoder failure: empty the queue up to the sentinel so close() does not wait for ever."""
    while True:
        _, bgr = q.get()
        if bgr is None:
            return


class _Encoder:
    """One PyAV output container and video stream (yuv420p, even sides, ms timestamps)."""

    def __init__(self, path: Path, codec: str, shape: tuple, fps: float | None):
        import av

        self.size = (shape[1] // 2 * 2, shape[0] // 2 * 2)  # yuv420p wants even sides
        self.container = av.open(str(path), mode="w")
        rate = Fraction(round(float(fps or 30.0) * 1000), 1000)
        self.stream = self.container.add_stream(codec, rate=rate)
        self.stream.width, self.stream.height = self.size
        self.stream.pix_fmt = "yuv420p"
        self.stream.time_base = TIME_BASE
        self.stream.codec_context.time_base = TIME_BASE
        # Live-encoding settings: the encoder shares the cores with detection and the model.
        if codec == "libx264":
            self.stream.options = {"preset": "ultrafast", "crf": "23"}
        elif codec == "libvpx-vp9":
            self.stream.options = {"deadline": "realtime", "cpu-used": "8", "crf": "32", "b": "0", "row-mt": "1"}
        self.last_pts = -1

    def encode(self, bgr: np.ndarray, pts: int) -> None:
        import av

        w, h = self.size
        if (bgr.shape[1], bgr.shape[0]) != (w, h):
            bgr = bgr[:h, :w] if bgr.shape[1] in (w, w + 1) and bgr.shape[0] in (h, h + 1) else \
                cv2.resize(bgr, (w, h), interpolation=cv2.INTER_AREA)
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(bgr), format="bgr24").reformat(format="yuv420p")
        frame.pts = max(pts, self.last_pts + 1)  # strictly increasing, whatever the clock did
        frame.time_base = TIME_BASE
        self.last_pts = frame.pts
        for packet in self.stream.encode(frame):
            self.container.mux(packet)

    def close(self) -> None:
        try:
            for packet in self.stream.encode():
                self.container.mux(packet)
        finally:
            self.container.close()
