"""The publish stage of a stream: drawing, recording, showing and the event line, on a thread of their own.

The pipeline thread (capture -> detect -> classify -> track) hands each processed frame to `PublishStage.submit`,
which never blocks and never waits for an encoder or a viewer. The stage thread takes the frames in order, draws
the annotation, hands the picture to the recorder (whose encoder has its own thread: edge.recording) and to the
window (`leuk-edge stream --show`, or the station's hub, which serves it to the viewers), then writes the frame's
JSONL event with `publish_latency_ms`: frame taken -> annotated frame handed over.

Drop policy (every processed frame still gets its event line; only pictures are ever dropped):
  - recording on: every frame is drawn and recorded. At most `capacity` pictures wait; a frame that finds them
    all waiting keeps its event but not its picture, and the recording counts it (`recorder.drop()`, in its
    `dropped`), so `recorded + dropped == processed` and a recording never loses a frame silently;
  - recording off (viewers or a window only): only the newest picture matters. A frame that is still waiting when
    a newer one arrives is not drawn (`skipped`): a slow viewer skips to the newest frame, no backlog builds up.
  - neither: nothing is drawn; the stage writes the events (publish = the event handed over).
`processed == published + dropped + skipped` (`stats()`). `close()` drains the stage: every submitted frame is
drawn/recorded and its event written before the recorder and the event file are closed (FrameGuard's promise).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, replace
from typing import Callable

RECORD_QUEUE = 16  # pictures waiting to be drawn while recording (the encoder has its own 64-frame queue behind)


@dataclass
class _Item:
    result: object      # edge.stream.FrameResult
    hud: dict | None    # what the annotation shows (counts, fps, dropped); None: no picture for this frame


def recording(recorder) -> bool:
    """Whether a recorder is taking frames now (the station's switch is attached even while it is off)."""
    return recorder is not None and bool(getattr(recorder, "recording", True))


class PublishStage:
    """`submit(result, hud)` from the pipeline thread; `stop_requested` when the window asked to end the run;
    `close()` drains and joins; `stats()` the counts. `done(result)` runs on the stage thread for every frame, in
    order, after its picture was handed over (the event line, the publish totals)."""

    def __init__(self, recorder=None, window=None, done: Callable | None = None, fps: float | None = None,
                 capacity: int = RECORD_QUEUE):
        self.recorder, self.window, self.done, self.fps = recorder, window, done, fps
        self.capacity = max(1, int(capacity))
        self.pictures = recorder is not None or window is not None
        self.processed = self.published = self.dropped = self.skipped = 0
        self.stop_requested = False
        self.error: BaseException | None = None  # the first failure of the stage, raised at the next submit
        self._done_failed = False
        self._items: deque[_Item] = deque()
        self._waiting = 0  # items with a picture still to draw
        self._closing = False
        # An OpenCV HighGUI window (draw.Window) must be driven by the thread that made it (macOS: the main
        # thread): the stage draws, `pump()` on the pipeline thread shows the newest picture (imshow + waitKey(1)).
        self._gui_window = bool(getattr(window, "gui_thread_only", False))
        self._for_gui = None
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="publish", daemon=True)
        self._thread.start()

    # --- pipeline thread -----------------------------------------------------------------------------------
    def submit(self, result, hud: dict | None = None) -> None:
        """Queue a processed frame; never blocks. Raises what the stage failed with (a full disk, a broken window)."""
        if self.error is not None:
            raise self.error
        keep = recording(self.recorder)
        with self._cond:
            self.processed += 1
            if self.pictures and not keep:
                self._skip_waiting()
            if not self.pictures:
                hud = None
            elif keep and self._waiting >= self.capacity:
                hud = None
                self.dropped += 1
                if hasattr(self.recorder, "drop"):
                    self.recorder.drop()
            else:
                hud = hud or {}
            if hud is None:  # the event needs no pixels: do not hold on to the frame's image
                result = replace(result, frame=replace(result.frame, image=None))
            else:
                self._waiting += 1
            self._items.append(_Item(result, hud))
            self._cond.notify()

    def _skip_waiting(self) -> None:
        for item in self._items:
            if item.hud is not None:
                item.hud = None
                self._waiting -= 1
                self.skipped += 1

    def pump(self) -> None:
        """Pipeline thread: show the newest drawn picture on a GUI window (see `gui_thread_only`); cheap and
        non-blocking (waitKey(1)), a no-op for other windows."""
        if not self._gui_window or self.stop_requested:
            return
        bgr, self._for_gui = self._for_gui, None
        if bgr is not None and self.window.show(bgr) is False:
            self.stop_requested = True

    # --- stage thread --------------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._items or self._closing)
                if not self._items:
                    return
                item = self._items.popleft()
                if item.hud is not None:
                    self._waiting -= 1
            self._publish(item)

    def _publish(self, item: _Item) -> None:
        result = item.result
        t0 = time.perf_counter()
        if item.hud is not None:
            self._draw_and_hand_over(result, item.hud)
            self.published += 1
        t1 = time.perf_counter()
        if item.hud is not None or not self.pictures:
            result.timings["draw"] = (t1 - t0) * 1000
            result.publish_latency_ms = (t1 - taken(result)) * 1000
        if self.done is not None and not self._done_failed:
            try:
                self.done(result)
            except Exception as exc:  # noqa: BLE001 - raised in the pipeline thread at its next submit
                self._done_failed = True
                self.error = self.error or exc

    def _draw_and_hand_over(self, result, hud: dict) -> None:
        from .draw import annotate

        try:
            bgr = annotate(result, **hud)
            if self.recorder is not None:
                self.recorder.write(bgr, fps=self.fps)  # enqueues only: the encoder has its own thread
            if self.window is None or self.stop_requested:
                return
            if self._gui_window:
                self._for_gui = bgr  # shown by the pipeline thread (pump): the newest picture only
            elif self.window.show(bgr) is False:
                self.stop_requested = True
        except Exception as exc:  # noqa: BLE001 - a broken window must not stop the events
            self.error = self.error or exc

    # --- any thread ----------------------------------------------------------------------------------------
    def close(self) -> None:
        """Publish every frame still queued, write its event, and stop the thread."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join()

    def stats(self) -> dict:
        with self._cond:
            return {"processed": self.processed, "published": self.published, "dropped": self.dropped,
                    "skipped": self.skipped, "waiting": len(self._items)}


def taken(result) -> float:
    """When the frame was taken (perf_counter); without a capture time, when its processing began (as
    latency_ms counts it)."""
    return result.frame.captured or (result.classified_at - result.latency_ms / 1000)
