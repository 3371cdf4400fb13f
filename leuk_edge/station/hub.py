"""One shared pipeline for every viewer: `edge.stream.run_stream` in a background thread.

The model runs once per processed frame whatever the number of viewers: viewers only read what the publish stage
(edge.publish: drawing and recording on their own thread, never waited for by the pipeline) published. The annotated
frame is kept as the newest one only (a slow viewer skips to it: no backlog; while not recording, the stage itself
draws only the newest frame) and encoded to JPEG at most once per frame, on the first viewer's request: with no
viewer nothing is encoded, and 1 or 3 viewers cost the same one encode per frame they fetch. Stream events go to a
bounded ring that the SSE endpoint replays from. Hooks into run_stream are its public ones: `window` (the annotated
frame of each result), `recorder` (switchable MP4 recording), `on_result` and `tracker`; the classifier is wrapped
by `CountingClassifier` to count model calls and keep the crops (and explanation maps) of the frame, which the
review gallery shows. Cells are counted by the stream's one `edge.tracking.CellTracker` (`hub.tracker`): the totals
are its counts, the station reads a track's label, mean P(all), mean ood and sightings from it and hears when a
track is over."""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from ..edge.recording import VideoRecorder
from ..edge.model import Inference
from ..edge.stream import StreamOptions, percentiles, run_stream
from ..edge.summary import blast_fraction, blast_interval
from ..edge.tracking import CellTracker, TrackInfo

EVENT_RING = 5000  # stream events kept for SSE replay (?since=N / Last-Event-ID)
JPEG_QUALITY = 80
PUBLISH_SNAPSHOT_EVERY = 10  # frames between snapshots of the publish-latency percentiles
PUBLISH_WINDOW = 1000  # ... over this many recent frames


class CountingClassifier:
    """The Classifier, seen through a proxy that counts model calls and keeps the last batch of crops.

    `run_stream` calls `infer_rgb(crops)` once per frame (one batched call); the crops are in the order of the
    frame's cells, so the hub can file each new track's crop. With a `cam` output the maps are computed in the
    same call."""

    def __init__(self, classifier):
        self._clf = classifier
        self.calls = 0
        self.last_crops: list[np.ndarray] = []
        self.last_cams: np.ndarray | None = None
        self._lock = threading.Lock()

    def __getattr__(self, name):
        return getattr(self._clf, name)

    def infer_rgb(self, images, tta: bool = False, cam: bool = False) -> Inference:
        if len(images):
            with self._lock:
                self.calls += 1
        want_cam = cam or self._clf.has_cam
        out = self._clf.infer_rgb(images, tta=tta, cam=want_cam)
        self.last_crops, self.last_cams = list(images), out.cam
        return out if cam else Inference(out.p_all, out.ood, None)


class _Switch:
    """The `recorder` handed to run_stream: forwards to a VideoRecorder while recording is on."""

    def __init__(self, folder: Path):
        self.folder = folder
        self._rec: VideoRecorder | None = None
        self._lock = threading.Lock()
        self.last: dict | None = None

    def set(self, on: bool, fps: float | None) -> dict:
        with self._lock:
            if on and self._rec is None:
                stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
                self._rec = VideoRecorder(self.folder / f"station-{stamp}.mp4", fps)
            elif not on and self._rec is not None:
                self._rec.close()
                self.last = self._rec.stats()
                self._rec = None
            if self._rec is not None:
                return {"recording": True, **self._rec.stats()}
            return {"recording": False, **(self.last or {"path": None, "frames": 0, "dropped": 0})}

    def stats(self) -> dict | None:
        """The recording in progress, else the last one (run_stream's summary `recording`)."""
        with self._lock:
            return self._rec.stats() if self._rec is not None else self.last

    @property
    def recording(self) -> bool:
        """The publish stage's drop policy asks: while on, every frame is kept (or counted as dropped); while off,
        viewers get the newest frame only."""
        return self._rec is not None

    def write(self, bgr, fps=None) -> None:
        with self._lock:
            if self._rec is not None:
                self._rec.write(bgr, fps=fps)

    def drop(self) -> None:
        with self._lock:
            if self._rec is not None:
                self._rec.drop()

    def close(self) -> None:
        self.set(False, None)


@dataclass
class _Published:
    seq: int
    bgr: np.ndarray
    jpeg: bytes | None = None
    part: bytes | None = None  # the MJPEG multipart part around `jpeg`, built once for every viewer


class Hub:
    """The live pipeline and what viewers read from it. `on_cells(cells, crops, cams, frame)` (the review store)
    is called in the pipeline thread for every processed frame, after the tracker has numbered the cells;
    `on_track_ended(TrackInfo)` when the tracker says a track is over (its final label), also at the end of the run."""

    def __init__(self, source, classifier, options: StreamOptions, record_dir: Path,
                 on_cells: Callable | None = None, on_track_ended: Callable[[TrackInfo], None] | None = None):
        self.source = source
        self.clf = CountingClassifier(classifier)
        self.options = options
        self.on_cells = on_cells
        self.recorder = _Switch(Path(record_dir))
        self.frames_with_cells = 0
        self.stats = None
        self.summary: dict | None = None
        self.error: str | None = None
        self.stopping = threading.Event()
        self._cond = threading.Condition()
        self._frame: _Published | None = None
        self._encode_lock = threading.Lock()
        self.jpeg_encodes = 0  # JPEG encodes so far: at most one per published frame, whatever the viewers
        self.published = 0     # annotated frames published to the viewers
        self._events: deque = deque(maxlen=EVENT_RING)
        self._event_seq = 0
        self.tracker = CellTracker.for_classifier(classifier)  # THE count: each cell once, labelled once
        if on_track_ended is not None:
            self.tracker.on_ended(on_track_ended)
        self._thread: threading.Thread | None = None
        self._frames_before = 0  # frames of the runs before a restart
        self.latency_ms = 0.0
        self.publish_latency_ms = percentiles([])  # snapshot for request threads, refreshed every few frames
        self.fps = 0.0  # read by request threads: a snapshot taken by the pipeline thread, never its live deque

    # --- pipeline thread -------------------------------------------------------------------------------------
    def start(self) -> Hub:
        self._thread = threading.Thread(target=self._run, name="station pipeline", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            self.summary = run_stream(self.source, self.clf, self.options, recorder=self.recorder, window=self,
                                      on_result=self._on_result, tracker=self.tracker)
        except Exception as exc:  # noqa: BLE001 - the page shows it; the station keeps serving uploads
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            with self._cond:
                self._cond.notify_all()

    def show(self, bgr: np.ndarray) -> bool:
        """run_stream's `window` (called on the publish thread): publish the annotated frame; False ends the run."""
        with self._cond:
            self.published += 1
            seq = self._frame.seq + 1 if self._frame else 0
            self._frame = _Published(seq, bgr)
            self._cond.notify_all()
        return not self.stopping.is_set()

    def close(self) -> None:  # run_stream closes its window at the end
        pass

    def _on_result(self, result, stats) -> None:
        self.stats = stats
        self.latency_ms = result.latency_ms
        if stats.frames % PUBLISH_SNAPSHOT_EVERY == 1:  # percentiles are not free: not on every frame
            self.publish_latency_ms = percentiles(list(stats.publish_latencies)[-PUBLISH_WINDOW:])
        self.fps = stats.fps
        crops = self.clf.last_crops if result.cells else []
        cams = self.clf.last_cams if result.cells else None
        if result.cells:
            self.frames_with_cells += 1
            if len(crops) != len(result.cells):  # the batch was not this frame's: no crops rather than wrong ones
                crops, cams = [], None
        event = result.event()  # its cells carry the tracker's `track` and `track_label`
        # Sent as soon as the frame is classified, while the publish stage may still be drawing it: without the
        # publish latency (whether it is known yet is a race); /api/summary has its percentiles.
        event.pop("publish_latency_ms", None)
        with self._cond:
            self._events.append((self._event_seq, event))
            self._event_seq += 1
            self._cond.notify_all()
        if self.on_cells:
            self.on_cells(result.cells, crops, cams, result.frame)

    # --- control ---------------------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout: float = 10.0) -> dict | None:
        """End the run (the source is closed by run_stream) and return its summary."""
        self.stopping.set()
        if hasattr(self.source, "pause"):
            self.source.pause(False)
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():  # blocked in a read: closing the source unblocks it
                self.source.close()
                self._thread.join(timeout)
        with self._cond:
            self._cond.notify_all()
        return self.summary

    def restart(self) -> None:
        """Play a replay source (video, folder, still) again after it ended, as one more --loop pass would: frame
        numbers go on, the same tracker counts the cells that come round again as new tracks; the summary is the
        new run's. ValueError for a live source or a station that is stopping; RuntimeError while it runs."""
        if self.running:
            raise RuntimeError("the source is still running")
        if self.stopping.is_set() or not getattr(self.source, "replayable", False):
            raise ValueError("only a replay (video, folder or still image) can be restarted")
        if self.stats is not None:
            self._frames_before += self.stats.frames
        self.stats, self.error, self.summary = None, None, None
        self.source.rewind()
        self.start()

    def record(self, on: bool) -> dict:
        return self.recorder.set(on, self.source.fps)

    def pause(self, on: bool) -> bool:
        if hasattr(self.source, "pause"):
            self.source.pause(on)
        return self.paused

    @property
    def paused(self) -> bool:
        return bool(getattr(self.source, "paused", False))

    # --- readers (any thread) --------------------------------------------------------------------------------
    def next_jpeg(self, after: int, timeout: float = 1.0) -> tuple[int, bytes] | None:
        """The newest frame newer than `after` as JPEG (waiting up to `timeout`), or None. Each frame is encoded
        once, however many viewers ask."""
        pub = self._next_encoded(after, timeout)
        return None if pub is None else (pub.seq, pub.jpeg)

    def next_part(self, after: int, timeout: float = 1.0) -> tuple[int, bytes] | None:
        """As `next_jpeg`, the frame as its MJPEG multipart part (built once per frame, shared by the viewers)."""
        pub = self._next_encoded(after, timeout)
        return None if pub is None else (pub.seq, pub.part)

    def _next_encoded(self, after: int, timeout: float) -> _Published | None:
        with self._cond:
            self._cond.wait_for(lambda: (self._frame is not None and self._frame.seq > after)
                                or not self.running or self.stopping.is_set(), timeout=timeout)
            pub = self._frame
        if pub is None or pub.seq <= after:
            return None
        with self._encode_lock:
            if pub.jpeg is None:
                ok, buf = cv2.imencode(".jpg", pub.bgr, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
                jpeg = buf.tobytes() if ok else b""
                pub.part = (b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: " + str(len(jpeg)).encode()
                            + b"\r\n\r\n" + jpeg + b"\r\n")
                pub.jpeg = jpeg  # last: a reader that sees the jpeg also sees the part
                self.jpeg_encodes += 1
        return pub

    def newest_event(self) -> int:
        with self._cond:
            return self._event_seq - 1

    def events_after(self, after: int, timeout: float = 1.0) -> list[tuple[int, dict]]:
        with self._cond:
            self._cond.wait_for(lambda: self._event_seq - 1 > after or not self.running or self.stopping.is_set(),
                                timeout=timeout)
            return [(s, e) for s, e in self._events if s > after]

    def live_summary(self) -> dict:
        """`GET /api/summary`: the tracker's totals (each cell once, by its track's label); `other` apart and never
        in the blast fraction."""
        c = self.tracker.counts()
        fraction, (lo, hi) = blast_fraction(c["all"], c["hem"]), blast_interval(c["all"], c["hem"])
        stats = self.stats
        known = fraction is not None
        return {"frames": self._frames_before + (stats.frames if stats else 0), "cells": sum(c.values()),
                "all": c["all"], "hem": c["hem"],
                "other": c["other"], "blast_fraction": round(fraction, 4) if known else None,
                "ci_low": round(lo, 4) if known else None, "ci_high": round(hi, 4) if known else None,
                "fps": round(self.fps, 2), "latency_ms": round(self.latency_ms, 1),
                "publish_latency_ms": self.publish_latency_ms,
                "running": self.running, "paused": self.paused, "error": self.error,
                "ended": self.summary.get("ended") if self.summary and not self.running else None,
                "model_calls": self.clf.calls, "frames_with_cells": self.frames_with_cells}
