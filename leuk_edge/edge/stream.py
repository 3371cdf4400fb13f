"""Stream mode: source -> find the white cells -> C-NMC crops -> one batched model call per frame -> events.

`iter_results(source, classifier, options)` is the generator at the core (one FrameResult per processed frame,
with per-stage timings); `run_stream(...)` adds the sinks (JSONL events, annotated recording, window), counts
cells once per track while the slide moves, and always returns a summary, whether the source ended, was lost,
hit --max-frames or the user pressed Ctrl-C; `render_summary(summary, console)` prints that summary. Drawing,
recording, the window and the event lines run in the publish stage (edge.publish), on a thread of its own behind
a bounded queue: the pipeline thread never waits for them.
"""

from __future__ import annotations

import contextlib
import json
import signal
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np

from .. import DISCLAIMER
from .classify import opencv_threads
from .publish import PublishStage
from .signals import Terminated
from .detect import (CNMC_CANVAS_UM, CNMC_CONTEXT, CNMC_TILE_PX, DetectorConfig, FrameScale, crop_cnmc,
                     detect_leukocytes, frame_scale)
from .sources import Frame, Source
from .summary import blast_fraction, blast_fraction_text, blast_interval, scope_entry
from .tracking import Cell, CellTracker  # the one place cells are counted (edge/tracking.py)

STAGES = ("capture", "detect", "classify", "draw")
LATENCY_WINDOW = 10_000  # p50/p95 latency over the last this many processed frames (bounded memory when live)


@dataclass
class FrameResult:
    frame: Frame
    cells: list[Cell]
    timings: dict = field(default_factory=dict)  # ms per stage (capture, detect, classify, draw)
    latency_ms: float = 0.0                      # frame taken -> cells classified
    scale: FrameScale | None = None              # the um/px the frame was analysed at, and its origin
    publish_latency_ms: float | None = None      # frame taken -> annotated frame handed to recorder/viewers
    classified_at: float = 0.0                   # perf_counter when the cells were classified

    def event(self) -> dict:
        """The docs/contracts.md stream event for this frame (the contract's four fields first, then the scale)."""
        out = {"frame": int(self.frame.index), "time": round(float(self.frame.time), 3),
               "cells": [c.to_event() for c in self.cells], "latency_ms": round(float(self.latency_ms), 1)}
        if self.publish_latency_ms is not None:
            out["publish_latency_ms"] = round(float(self.publish_latency_ms), 1)
        if self.scale is not None:
            out["um_per_px"] = round(float(self.scale.um_per_px), 4)
            out["scale_from"] = self.scale.source
        return out


@dataclass
class StreamOptions:
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    stride: int = 1                 # process every Nth frame from the source
    max_frames: int | None = None   # stop after this many processed frames
    crop_um: float | None = CNMC_CANVAS_UM  # crop side in micrometres (C-NMC's fixed canvas); None: relative
    context: float = CNMC_CONTEXT   # with crop_um None: crop side / cell size
    scale_every: int = 15           # video/live: measure the scale on the red cells every Nth processed frame

    def validate(self) -> StreamOptions:
        if self.stride < 1:
            raise ValueError("--stride must be at least 1")
        if self.max_frames is not None and self.max_frames < 1:
            raise ValueError("--max-frames must be at least 1")
        if self.crop_um is not None and self.crop_um <= 0:
            raise ValueError("--crop-um must be positive")
        if self.scale_every < 1:
            raise ValueError("scale_every must be at least 1")
        self.detector.validate()
        return self


def _input_side(classifier) -> int | None:
    size = getattr(classifier, "size", None)
    return int(min(size)) if size else None


def undersampling_note(um_per_px: float, classifier, crop_um: float | None = CNMC_CANVAS_UM) -> str | None:
    """A one-line warning when a crop of `crop_um` at this scale has fewer pixels than the model's input: the
    training tiles were *down*-sampled (450 px -> input), such crops must be *up*-sampled and hold less detail."""
    side = _input_side(classifier)
    if not side or not crop_um:
        return None
    crop_px = crop_um / um_per_px
    if crop_px >= side:
        return None
    return (f"the camera under-samples the cells: {um_per_px:.3f} um/px gives {crop_px:.0f} px per {crop_um:g} um "
            f"crop, fewer than the model's {side} px input (C-NMC tiles: {CNMC_TILE_PX} px, down-sampled); crops are "
            f"up-sampled and hold less detail than in training. Finer: <= {crop_um / side:.3f} um/px "
            f"(a higher magnification or camera resolution).")


def model_crops(crops: list[np.ndarray], classifier) -> list[np.ndarray]:
    """Crops smaller than the model input are up-sampled to it here, bilinearly: the model's own resize ("area")
    is meant for down-sampling (as from C-NMC's 450 px tiles) and up-samples blockily, like nearest neighbour.
    Crops at least as large as the input are left to the model's resize, exactly as the training tiles are."""
    size = getattr(classifier, "size", None)
    if not size:
        return crops
    h, w = size
    return [cv2.resize(c, (w, h), interpolation=cv2.INTER_LINEAR) if c.shape[0] < h or c.shape[1] < w else c
            for c in crops]


def classify_frame(frame: Frame, classifier, options: StreamOptions, scale: FrameScale | None = None
                   ) -> FrameResult:
    """Detect, crop and classify the cells of one frame (one batched model call). `scale`: the frame's scale when
    already known (else measured or taken from the options: `detect.frame_scale`)."""
    t0 = time.perf_counter()
    scale = scale or frame_scale(frame.image, options.detector)
    dets = detect_leukocytes(frame.image, options.detector, um_per_px=scale.um_per_px)
    side = options.crop_um / scale.um_per_px if options.crop_um else None
    crops = model_crops([crop_cnmc(frame.image, d, options.context, side) for d in dets], classifier)
    t1 = time.perf_counter()
    out = classifier.infer_rgb(crops)  # P(all), and the scope score when the model's gate is in use
    t2 = time.perf_counter()
    oods = out.ood.tolist() if out.ood is not None else [None] * len(out)
    cells = [Cell(d.box, label, float(p), ood)
             for d, p, ood, label in zip(dets, out.p_all.tolist(), oods, classifier.labels(out))]
    latency = (t2 - frame.captured) * 1000 if frame.captured else (t2 - t0) * 1000
    return FrameResult(frame, cells, {"detect": (t1 - t0) * 1000, "classify": (t2 - t1) * 1000}, latency, scale,
                       classified_at=t2)


class ScaleKeeper:
    """The scale of each frame of a stream. Stills (a folder, an image) are measured one by one; the frames of
    a video or live source share one microscope, so its scale is measured every `every`-th frame (and whenever
    the frame size changes), the median of the last `history` measurements is used (steadier crop sizes), and a
    frame with too few red cells keeps the stream's measurement instead of falling back to the assumed field."""

    def __init__(self, cfg: DetectorConfig, every: int = 15, per_frame: bool = False, history: int = 5):
        self.cfg, self.every, self.per_frame = cfg, max(1, int(every)), per_frame
        self._measured: deque = deque(maxlen=max(1, int(history)))  # um/px of the last red-cell measurements
        self._last: FrameScale | None = None  # what the last measured frame was given
        self._shape = None
        self._count = 0

    def __call__(self, rgb: np.ndarray) -> FrameScale:
        if self.per_frame:
            return frame_scale(rgb, self.cfg)
        if rgb.shape != self._shape:  # another camera mode: earlier measurements do not apply
            self._measured.clear()
            self._last, self._shape, self._count = None, rgb.shape, 0
        due = self._count % self.every == 0 or self._last is None
        self._count += 1
        if not due:
            return self._last
        scale = frame_scale(rgb, self.cfg)
        if scale.source == "red cells":
            self._measured.append(scale.um_per_px)
            self._last = FrameScale(float(np.median(self._measured)), "red cells", scale.red_cells)
        elif scale.source != "assumed" or not self._measured:
            self._last = scale  # given, from the magnification, or assumed with nothing measured yet
        return self._last


def iter_results(source: Source, classifier, options: StreamOptions = StreamOptions()) -> Iterator[FrameResult]:
    """The stream as an iterator of FrameResults (the options are checked here, before the first frame);
    `capture` is the time spent getting the frame from the source, the frames skipped by the stride included."""
    options.validate()
    return _results(source, classifier, options)


def _results(source: Source, classifier, options: StreamOptions) -> Iterator[FrameResult]:
    done = 0
    scales = ScaleKeeper(options.detector, options.scale_every, per_frame=source.kind in ("folder", "image"))
    while options.max_frames is None or done < options.max_frames:
        t0 = time.perf_counter()
        if done and not all(source.skip() for _ in range(options.stride - 1)):  # passed over cheaply
            return
        frame = source.read()
        if frame is None:
            return
        capture_ms = (time.perf_counter() - t0) * 1000
        t1 = time.perf_counter()
        scale = scales(frame.image)
        scale_ms = (time.perf_counter() - t1) * 1000
        result = classify_frame(frame, classifier, options, scale)
        result.timings["detect"] += scale_ms  # measuring the scale is part of finding the cells
        result.timings["capture"] = capture_ms
        done += 1
        yield result


@dataclass
class StreamStats:
    """Running totals of a stream; `summary()` at any point (the HUD uses them live)."""
    frames: int = 0
    published: int = 0  # frames whose picture (or, with nothing to draw, event) the publish stage handed over
    observations: dict = field(default_factory=lambda: {"all": 0, "hem": 0, "other": 0})  # sightings by label
    stage_ms: dict = field(default_factory=lambda: {s: 0.0 for s in STAGES})
    latencies: deque = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))  # the last LATENCY_WINDOW
    publish_latencies: deque = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))
    started: float = field(default_factory=time.perf_counter)
    _recent: deque = field(default_factory=deque)
    scales: deque = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))  # um/px of the recent frames
    scale_sources: dict = field(default_factory=dict)  # frames per scale origin ("red cells", "assumed", ...)

    def add(self, result: FrameResult) -> None:
        self.frames += 1
        if result.scale is not None:
            self.scales.append(result.scale.um_per_px)
            self.scale_sources[result.scale.source] = self.scale_sources.get(result.scale.source, 0) + 1
        for c in result.cells:
            self.observations[c.label] = self.observations.get(c.label, 0) + 1
        for s in STAGES[:-1]:  # draw: by the publish thread (add_published)
            self.stage_ms[s] += result.timings.get(s, 0.0)
        self.latencies.append(result.latency_ms)
        now = time.perf_counter()
        while self._recent and now - self._recent[0] >= 2.0:
            self._recent.popleft()
        self._recent.append(now)

    def add_published(self, result: FrameResult) -> None:
        """The publish thread's part: drawing time and publish latency of a frame whose picture was handed over
        (or, with nothing to draw, whose event was)."""
        if result.publish_latency_ms is None:
            return
        self.published += 1
        self.stage_ms["draw"] += result.timings.get("draw", 0.0)
        self.publish_latencies.append(result.publish_latency_ms)

    @property
    def fps(self) -> float:
        """Processed frames per second over the last ~2 s (for the live display)."""
        if len(self._recent) < 2:
            return 0.0
        return (len(self._recent) - 1) / max(self._recent[-1] - self._recent[0], 1e-9)

    def elapsed(self) -> float:
        return time.perf_counter() - self.started


def percentiles(values) -> dict:
    """{p50, p95, frames} in ms over a window of latencies (zeros when empty)."""
    lat = np.array(values) if values else np.zeros(1)
    return {"p50": round(float(np.percentile(lat, 50)), 1), "p95": round(float(np.percentile(lat, 95)), 1),
            "frames": len(values)}


def summarize(stats: StreamStats, tracker: CellTracker, source: Source, ended: str, extra: dict | None = None) -> dict:
    """The run's summary. Cells are the tracker's (each cell once, by its track's label); `other` is counted apart
    and never in the blast fraction (all / (all + hem))."""
    seconds = stats.elapsed()
    unique = tracker.counts()
    fraction, (lo, hi) = blast_fraction(unique["all"], unique["hem"]), blast_interval(unique["all"], unique["hem"])
    return {
        "source": source.spec, "source_kind": source.kind, "ended": ended,
        "frames": stats.frames, "seconds": round(seconds, 3),
        "fps": round(stats.frames / seconds, 2) if seconds > 0 else 0.0,
        # Per processed frame; draw (annotation + handing over, on the publish thread) per published frame.
        "stage_ms": {s: round(v / max(stats.published if s == "draw" else stats.frames, 1), 2)
                     for s, v in stats.stage_ms.items()},
        # Percentiles over the last `frames` processed frames (at most LATENCY_WINDOW: bounded on live sources).
        "latency_ms": percentiles(stats.latencies),
        # Frame taken -> annotated frame handed to the recorder/viewers (the event line when nothing is drawn).
        "publish_latency_ms": percentiles(stats.publish_latencies),
        "observations": dict(stats.observations),
        # The frames' scale: median um/px and how many frames got it from where (given, magnification, measured
        # on the red cells, or the assumed field of view).
        "um_per_px": round(float(np.median(stats.scales)), 4) if stats.scales else None,
        "scale_from": dict(stats.scale_sources),
        "cells": {**unique, "total": sum(unique.values())},
        "blast_fraction": round(fraction, 4) if fraction is not None else None,
        "blast_fraction_ci95": [round(lo, 4), round(hi, 4)] if fraction is not None else None,
        "dropped_frames": source.dropped, "reconnects": source.reconnects, "source_lost": source.lost,
        "unreadable": [{"name": a, "error": b} for a, b in source.errors],
        **(extra or {}),
        "disclaimer": DISCLAIMER,
    }


class EventWriter:
    """Stream events as JSONL: one event per line, flushed per frame so `tail -f` follows a live run."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "w", encoding="utf-8")

    def write(self, result: FrameResult) -> None:
        self._fh.write(json.dumps(result.event(), separators=(", ", ": ")) + "\n")
        self._fh.flush()

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()


class FrameGuard:
    """Stop signals wait for the frame in hand: inside `frame()`, SIGINT (Ctrl-C) and SIGTERM (when
    `signals.graceful_stop` routes it) are held until the frame is handed to the publish stage, then raised as the
    handler in force would have (KeyboardInterrupt / Terminated); run_stream then drains the stage, so the frame's
    event is written and its picture recorded before the sinks close. Outside, e.g. while waiting for the
    source, they act at once. Handlers that are not Python callables (SIGINT ignored in a background job, SIGTERM
    left at its default) are left alone. Main thread only; elsewhere a no-op."""

    def __init__(self):
        self._previous: dict = {}
        self._pending = None
        self._in_frame = False

    def __enter__(self) -> FrameGuard:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous = signal.getsignal(sig)
                if callable(previous):
                    self._previous[sig] = previous
                    signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()

    def _handle(self, signum, frame) -> None:
        if self._in_frame:
            self._pending = (signum, frame)
        else:
            self._previous[signum](signum, frame)

    @contextlib.contextmanager
    def frame(self):
        self._in_frame = True
        try:
            yield
        finally:
            self._in_frame = False
        if self._pending is not None:
            (signum, frame), self._pending = self._pending, None
            self._previous[signum](signum, frame)


class ScaleNotes:
    """Warnings of a run, each given once: a camera that under-samples the C-NMC crops, frames with too few red
    cells to measure the scale (the assumed field of view is used), and a model without a scope gate in use."""

    def __init__(self, classifier, crop_um: float | None, on_warning: Callable[[str], None] | None = None):
        self.classifier, self.crop_um, self.on_warning = classifier, crop_um, on_warning
        self.notes: list[str] = []
        self._seen: set[str] = set()

    def note(self, kind: str, text: str | None) -> None:
        if text and kind not in self._seen:
            self._seen.add(kind)
            self.notes.append(text)
            if self.on_warning:
                self.on_warning(text)

    def check(self, scale: FrameScale | None) -> None:
        if scale is None:
            return
        if scale.source == "assumed":
            self.note("assumed", f"too few red cells to measure the scale; assuming {scale.um_per_px:.3f} um/px "
                                  "(a field ~192 um wide): give --um-per-px or --magnification")
        self.note("under", undersampling_note(scale.um_per_px, self.classifier, self.crop_um))


def run_stream(source: Source, classifier, options: StreamOptions = StreamOptions(), jsonl: str | Path | None = None,
               recorder=None, window=None, on_result: Callable[[FrameResult, StreamStats], None] | None = None,
               on_warning: Callable[[str], None] | None = None, tracker: CellTracker | None = None) -> dict:
    """Run the whole stream with its sinks; always closes them and returns the summary.

    `tracker`: the CellTracker that counts the cells (default: one for the classifier); a caller that wants its
    reads (`get`, `active`, `on_ended`) passes its own. At the end of the run it is finished (every track ends).

    `recorder`: an object with write(bgr) and close() (edge.recording.VideoRecorder; optional `drop()` and
    `recording`); `window`: show(bgr) -> False to stop, close() (draw.Window, the station's hub). Annotation is
    drawn only when one of them is given, in the publish stage (edge.publish: its own thread, its drop policy),
    which also writes the JSONL events in order; `on_result` runs in the pipeline thread while the frame is being
    published (its `publish_latency_ms` may not be known yet). The options are checked first (ValueError; the source
    is closed then too). Detection works on small images: OpenCV runs on one thread meanwhile, leaving the cores
    to onnxruntime. `on_warning(text)` hears each scale warning once (also in the summary's "warnings").

    Ctrl-C (KeyboardInterrupt) ends the run as "interrupted"; SIGTERM inside `signals.graceful_stop()` (the CLI,
    the station) as "terminated". Either way the frame in hand is finished first (FrameGuard) and the publish
    stage is drained before the sinks close: every processed frame's event is written and its picture recorded
    (or counted as dropped), so events, recording and summary agree, and the recording is closed playable.
    """
    stats, tracker = StreamStats(), tracker or CellTracker.for_classifier(classifier)
    notes = ScaleNotes(classifier, options.crop_um, on_warning)
    notes.note("scope", classifier.scope_note())  # once per run: out-of-scope cells will not be flagged
    writer = stage = None
    ended = "end of source"
    try:
        options.validate()
        writer = EventWriter(jsonl) if jsonl else None
        stage = PublishStage(recorder, window, done=_published(stats, writer), fps=source.fps)
        ended = _loop(source, classifier, options, stats, tracker, notes, stage, on_result) or ended
    except KeyboardInterrupt as exc:
        ended = "terminated" if isinstance(exc, Terminated) else "interrupted"
    finally:
        source.close()
        _close_sinks(stage, writer, recorder, window)
        tracker.finish()
    extra = {"scope": scope_entry(classifier), "model": str(getattr(classifier, "path", "")),
             "providers": list(getattr(classifier, "providers", [])),
             "jsonl": str(jsonl) if jsonl else None, "record": str(getattr(recorder, "path", "")) or None,
             "recording": recorder.stats() if hasattr(recorder, "stats") else None,
             "publish": stage.stats() if stage is not None else None,
             "warnings": notes.notes}
    return summarize(stats, tracker, source, ended, extra)


def _loop(source, classifier, options, stats, tracker, notes, stage, on_result) -> str | None:
    """The pipeline thread's loop; -> how the run ended, None for the end of the source."""
    with opencv_threads(1), FrameGuard() as guard:
        for result in _results(source, classifier, options):
            with guard.frame():
                _emit(result, stats, tracker, notes, source, stage, on_result)
            stage.pump()  # a GUI window is shown from this thread (edge.publish)
            if stage.stop_requested:
                return "closed by user"
    if options.max_frames is not None and stats.frames >= options.max_frames:
        return "max frames"
    return "source lost" if source.lost else None


def _close_sinks(stage, writer, recorder, window) -> None:
    """Drain the publish stage first (the last frames' pictures and events), then close the sinks."""
    closers = [stage.close, stage.pump] if stage is not None else []  # pump: the last picture on a GUI window
    closers += [sink.close for sink in (writer, recorder, window) if sink is not None]
    for close in closers:
        try:
            close()
        except Exception:  # noqa: BLE001 - closing a sink must not hide the summary
            pass


def _published(stats: StreamStats, writer: EventWriter | None) -> Callable[[FrameResult], None]:
    """What the publish thread does for each frame once its picture was handed over: totals, then the event."""
    def done(result: FrameResult) -> None:
        stats.add_published(result)
        if writer:
            writer.write(result)
    return done


def _emit(result: FrameResult, stats: StreamStats, tracker: CellTracker, notes: ScaleNotes, source: Source,
          stage: PublishStage, on_result) -> None:
    """One processed frame through the pipeline thread's part (scale notes, tracker, totals), to the publish stage
    with what its annotation shows (a snapshot: the picture matches this frame's counts), then to the callback
    (after the hand-over: a callback that raises, e.g. Ctrl-C outside the main thread, still leaves the frame's
    event and picture to the stage, so they agree with the totals)."""
    notes.check(result.scale)
    tracker.update(result.cells, result.frame.index)
    stats.add(result)
    hud = {"counts": tracker.counts(), "fps": stats.fps, "dropped": source.dropped} if stage.pictures else None
    stage.submit(result, hud)
    if on_result:
        on_result(result, stats)


def render_summary(s: dict, console) -> None:
    """A `run_stream` summary as a rich table on `console` (stderr in the CLI), followed by the disclaimer."""
    from rich.table import Table

    t = Table(title="stream summary", show_header=False, title_justify="left")
    t.add_row("source", f"{s['source_kind']} {s['source']}")
    t.add_row("ended", s["ended"] + (f" (reconnects {s['reconnects']})" if s["reconnects"] else ""))
    t.add_row("frames", f"{s['frames']} in {s['seconds']:.1f} s = {s['fps']:.1f} fps"
              + (f", {s['dropped_frames']} dropped (newest frame kept)" if s["dropped_frames"] else ""))
    t.add_row("per frame (ms)", "  ".join(f"{k} {v:.1f}" for k, v in s["stage_ms"].items()))
    lat = s["latency_ms"]
    t.add_row("latency (ms)", f"p50 {lat['p50']:.1f}  p95 {lat['p95']:.1f}"
              + (f"  (last {lat['frames']} frames)" if lat["frames"] < s["frames"] else ""))
    pub = s.get("publish_latency_ms") or {}
    if pub.get("frames"):
        t.add_row("to publish (ms)", f"p50 {pub['p50']:.1f}  p95 {pub['p95']:.1f}")
    stage = s.get("publish") or {}
    if stage.get("dropped") or stage.get("skipped"):
        t.add_row("published", f"{stage['published']} of {stage['processed']} frames drawn ({stage['dropped']} "
                               f"dropped while recording, {stage['skipped']} skipped for a newer one)")
    rec = s.get("recording") or {}
    if rec.get("frames") or rec.get("dropped"):
        t.add_row("recorded", f"{rec['frames']} frames ({rec.get('codec')}), {rec.get('dropped', 0)} dropped"
                  + (f", error: {rec['error']}" if rec.get("error") else ""))
    c = s["cells"]
    t.add_row("cells (tracked)", f"{c['total']}: all {c['all']}, hem {c['hem']}, other {c.get('other', 0)}"
              + ("" if s.get("scope", {}).get("used") else "  (no scope gate in use)"))
    if s["blast_fraction"] is not None:
        t.add_row("blast fraction", blast_fraction_text(s["blast_fraction"], *s["blast_fraction_ci95"]))
    t.add_row("cell sightings", ", ".join(f"{k} {s['observations'].get(k, 0)}" for k in ("all", "hem", "other")))
    if s.get("um_per_px"):
        t.add_row("scale", f"{s['um_per_px']:.4f} um/px (frames: "
                  + ", ".join(f"{k} {v}" for k, v in s.get("scale_from", {}).items()) + ")")
    if s["unreadable"]:
        t.add_row("unreadable", f"{len(s['unreadable'])} frame(s), e.g. {s['unreadable'][0]['name']}: "
                                f"{s['unreadable'][0]['error']}")
    for key, name in (("jsonl", "events"), ("record", "recording")):
        if s.get(key):
            t.add_row(name, s[key])
    if s.get("precision"):  # added by the CLI: which file of the model's set ran, and why
        t.add_row("precision", f"{s['precision']['used'].upper()} ({s['precision']['reason']})")
    console.print(t)
    if s["ended"] in ("interrupted", "terminated"):
        console.print(f"[yellow]{s['ended']}: the last frame was finished, events and recording closed[/]")
    if s["ended"] == "source lost":
        console.print("[yellow]the source was lost and did not come back; the run ended[/]")
    console.print(f"[bold]{DISCLAIMER}[/]")
