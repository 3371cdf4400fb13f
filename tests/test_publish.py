"""The publish stage (edge.publish): drawing, recording and viewers on their own thread, behind a bounded queue.

Untimed: a sink that blocks until the pipeline has processed every frame proves the pipeline never waits for it
(if it did, the sink would wait for ever: its wait times out and the test fails)."""

import json
import threading
import time

import numpy as np
import pytest

from leuk_edge.edge.detect import DetectorConfig
from leuk_edge.edge.model import Inference
from leuk_edge.edge.publish import RECORD_QUEUE, PublishStage
from leuk_edge.edge.sources import Frame, Source
from leuk_edge.edge.stream import StreamOptions, run_stream

N = 40
OPTIONS = StreamOptions(detector=DetectorConfig(um_per_px=0.1))


class Frames(Source):
    """`n` small blank frames, as fast as they are asked for."""
    kind = "video"

    def __init__(self, n: int):
        super().__init__("frames")
        self.n, self.i = n, 0

    def read(self):
        if self.i >= self.n:
            return None
        self.i += 1
        return Frame(self.i - 1, self.i / 30, np.full((90, 160, 3), 200, np.uint8), time.perf_counter())


class Model:
    threshold = 0.5
    size = (32, 32)

    def infer_rgb(self, crops):
        return Inference(np.zeros(len(crops), np.float32))

    def labels(self, out):
        return ["hem"] * len(out)

    def scope_note(self):
        return None


class Blocking:
    """A window (show) or recorder (write) whose first call waits until `release` is set; it records whether the
    wait ended by the release (True) or by the timeout (False: the pipeline was waiting for this sink)."""

    def __init__(self, release: threading.Event):
        self.release, self.got, self.released, self.dropped, self.closed = release, [], [], 0, False

    def _take(self, bgr):
        if not self.got:
            self.released.append(self.release.wait(timeout=30))
        self.got.append(bgr.shape)

    def show(self, bgr):
        self._take(bgr)
        return True

    def write(self, bgr, fps=None):
        self._take(bgr)

    def drop(self):
        self.dropped += 1

    def close(self):
        self.closed = True


def _run(tmp_path, **sinks):
    release = threading.Event()
    done = []

    def on_result(result, stats):
        done.append(result.frame.index)
        if len(done) == N:  # the pipeline has processed every frame: the blocked sink may go on
            release.set()

    sink = Blocking(release)
    s = run_stream(Frames(N), Model(), OPTIONS, jsonl=tmp_path / "e.jsonl", on_result=on_result,
                   **{name: sink for name in sinks})
    events = [json.loads(x) for x in (tmp_path / "e.jsonl").read_text().splitlines()]
    return s, sink, events


def test_a_slow_viewer_gets_the_newest_frame_and_never_slows_the_pipeline(tmp_path):
    s, window, events = _run(tmp_path, window=True)
    assert window.released == [True]  # released by the pipeline finishing, not by the timeout
    assert s["frames"] == N and [e["frame"] for e in events] == list(range(N))  # every event, in order
    pub = s["publish"]
    # The window held the first picture it got (frame k: the newest when the stage first woke) until every frame
    # was processed; of those that came meanwhile only the newest, the last, was still worth drawing.
    published = [e["frame"] for e in events if "publish_latency_ms" in e]
    assert published[-1] == N - 1 and len(published) in (1, 2) and len(published) == len(window.got)
    assert pub == {"processed": N, "published": len(published), "dropped": 0, "skipped": N - len(published),
                   "waiting": 0}
    assert all(e["publish_latency_ms"] >= e["latency_ms"] for e in events if "publish_latency_ms" in e)
    assert s["publish_latency_ms"]["frames"] == len(published)
    from rich.console import Console

    from leuk_edge.edge.stream import render_summary

    console = Console(record=True, width=200)
    render_summary(s, console)
    n = len(published)
    expected = f"{n} of {N} frames drawn (0 dropped while recording, {N - n} skipped for a newer one)"
    assert expected in console.export_text()


def test_a_slow_recorder_keeps_what_fits_and_counts_what_it_dropped(tmp_path):
    s, rec, events = _run(tmp_path, recorder=True)
    assert rec.released == [True] and rec.closed
    assert s["frames"] == len(events) == N
    pub = s["publish"]
    # Frame 0 in the encoder's hands, RECORD_QUEUE waiting (the last may be frame 0 itself, not yet taken).
    assert len(rec.got) in (RECORD_QUEUE, RECORD_QUEUE + 1)
    assert pub["published"] == len(rec.got) and pub["skipped"] == 0  # recording: nothing skipped for newer
    assert pub["dropped"] == rec.dropped == N - len(rec.got)  # every missing frame counted by the recording
    assert pub["processed"] == pub["published"] + pub["dropped"] + pub["skipped"] == N
    recorded = [e for e in events if "publish_latency_ms" in e]
    assert len(recorded) == len(rec.got) and all(e["publish_latency_ms"] >= e["latency_ms"] for e in recorded)


class SlowRecorder:
    """Takes every frame, slowly (a busy encoder); never blocks for long."""

    def __init__(self):
        self.frames, self.dropped = 0, 0

    def write(self, bgr, fps=None):
        time.sleep(0.002)
        self.frames += 1

    def drop(self):
        self.dropped += 1

    def close(self):
        pass

    def stats(self):
        return {"frames": self.frames, "dropped": self.dropped}


@pytest.mark.parametrize("stop_at", [5, 12])
def test_ctrl_c_drains_the_stage_events_and_recording_agree(tmp_path, stop_at):
    """Ctrl-C after frame `stop_at`: the frames still queued for drawing are recorded and their events written
    before the sinks close."""
    def on_result(result, stats):
        if stats.frames == stop_at:
            raise KeyboardInterrupt

    rec = SlowRecorder()
    s = run_stream(Frames(N), Model(), OPTIONS, jsonl=tmp_path / "e.jsonl", recorder=rec, on_result=on_result)
    events = (tmp_path / "e.jsonl").read_text().splitlines()
    assert s["ended"] == "interrupted"
    assert s["frames"] == stop_at == len(events)  # the interrupted frame's event included
    assert rec.frames + rec.dropped == stop_at == s["recording"]["frames"] + s["recording"]["dropped"]
    assert s["publish"]["waiting"] == 0


def test_no_sink_draws_nothing_and_still_times_the_publish(tmp_path):
    s = run_stream(Frames(6), Model(), OPTIONS, jsonl=tmp_path / "e.jsonl")
    events = [json.loads(x) for x in (tmp_path / "e.jsonl").read_text().splitlines()]
    assert s["publish"] == {"processed": 6, "published": 0, "dropped": 0, "skipped": 0, "waiting": 0}
    assert len(events) == 6 and all(e["publish_latency_ms"] >= e["latency_ms"] for e in events)
    assert s["publish_latency_ms"]["frames"] == 6


def test_a_failing_event_file_stops_the_pipeline():
    """A broken sink (a full disk) is raised in the pipeline thread, as it was before the stage."""
    def broken(result):
        raise OSError("no space left on device")

    stage = PublishStage(done=broken)
    frame = Frame(0, 0.0, np.zeros((4, 4, 3), np.uint8), time.perf_counter())
    from leuk_edge.edge.stream import FrameResult

    stage.submit(FrameResult(frame, [], {}, 1.0, classified_at=time.perf_counter()))
    stage.close()
    with pytest.raises(OSError, match="no space"):
        stage.submit(FrameResult(frame, [], {}, 1.0, classified_at=time.perf_counter()))


def test_station_encodes_each_published_frame_once_for_three_viewers(tmp_path):
    """Three viewers asking for the same newest frame cost one JPEG encode; a newer frame one more."""
    from concurrent.futures import ThreadPoolExecutor

    import cv2

    from leuk_edge.station.hub import Hub

    hub = Hub(Frames(0), Model(), OPTIONS, tmp_path)
    frame = np.zeros((48, 64, 3), np.uint8)
    frame[:, :32] = 255
    assert hub.show(frame) is True
    with ThreadPoolExecutor(3) as pool:
        got = list(pool.map(lambda _: hub.next_jpeg(-1, timeout=5), range(3)))
    assert [seq for seq, _ in got] == [0, 0, 0] and len({jpeg for _, jpeg in got}) == 1
    assert hub.jpeg_encodes == 1
    decoded = cv2.imdecode(np.frombuffer(got[0][1], np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape == frame.shape and decoded[:, :28].mean() > 240 and decoded[:, 36:].mean() < 15
    hub.show(frame)
    assert hub.next_jpeg(0, timeout=5)[0] == 1 and hub.next_jpeg(0, timeout=5)[0] == 1
    assert hub.jpeg_encodes == 2 and hub.published == 2


def test_station_recording_switch_sets_the_drop_policy(tmp_path):
    """Recording off: viewers want the newest frame (the stage may skip); on: every frame kept or counted."""
    from leuk_edge.edge.publish import recording
    from leuk_edge.station.hub import Hub

    hub = Hub(Frames(0), Model(), OPTIONS, tmp_path)
    assert not recording(hub.recorder) and recording(object())  # a plain recorder always records
    hub.record(True)
    try:
        assert recording(hub.recorder)
        hub.recorder.drop()
        assert hub.recorder.stats()["dropped"] == 1
    finally:
        assert hub.record(False)["dropped"] == 1


def test_mjpeg_part_is_built_once_and_frames_the_jpeg(tmp_path):
    from leuk_edge.station.hub import Hub

    hub = Hub(Frames(0), Model(), OPTIONS, tmp_path)
    hub.show(np.full((32, 48, 3), 128, np.uint8))
    seq, part = hub.next_part(-1, timeout=5)
    _, jpeg = hub.next_jpeg(-1, timeout=5)
    assert seq == 0 and hub.next_part(-1, timeout=5)[1] is part and hub.jpeg_encodes == 1
    head = f"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n".encode()
    assert part == head + jpeg + b"\r\n" and jpeg[:2] == b"\xff\xd8"


def test_a_gui_window_is_shown_from_the_stream_thread_and_can_end_the_run(tmp_path, monkeypatch):
    """HighGUI windows (draw.Window) are driven by the thread that runs the stream; q/Esc (show -> False) ends it."""
    import leuk_edge.edge.draw as draw

    drawn = threading.Event()
    real = draw.annotate
    monkeypatch.setattr(draw, "annotate", lambda *a, **k: (real(*a, **k), drawn.set())[0])

    class AfterFirstDrawn(Frames):
        def read(self):
            if self.i == 1:  # frame 1 comes once frame 0 was drawn: the picture is there to show after it
                assert drawn.wait(timeout=30)
            return super().read()

    class Gui:
        gui_thread_only = True

        def __init__(self):
            self.threads, self.closed = set(), False

        def show(self, bgr):
            self.threads.add(threading.current_thread().name)
            return False  # q pressed at the first picture

        def close(self):
            self.closed = True

    gui = Gui()
    s = run_stream(AfterFirstDrawn(N), Model(), OPTIONS, jsonl=tmp_path / "e.jsonl", window=gui)
    assert gui.threads == {threading.current_thread().name} and gui.closed
    assert s["ended"] == "closed by user" and s["frames"] == 2
    assert len((tmp_path / "e.jsonl").read_text().splitlines()) == 2
