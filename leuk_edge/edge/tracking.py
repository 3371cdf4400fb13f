"""The one place cells are counted: `CellTracker` follows each cell across frames and decides its label once.

    tracker = CellTracker.for_classifier(clf)
    tracker.on_ended(lambda track: store.file(track))   # e.g. the station files a finished cell
    for result in results:
        tracker.update(result.cells, result.frame.index)    # numbers the cells: cell.track, cell.track_label
    tracker.finish()                                        # the run is over: every track still followed ends
    tracker.counts()                                        # {"all", "hem", "other"}, each cell once

**The track rule** (`track_label`): a track is labelled by the means over its sightings, with THE decision rule of
`edge.labels`: `other` when its mean out-of-scope score `ood` is over the model's scope threshold, else `all` when
its mean P(all) reaches the threshold, else `hem`. Means, not a vote of the sightings' labels: every view of the
cell weighs the same (as TTA averages the views of one image), and a cell whose score hovers at a threshold gets one
answer from all its views. `stream`'s summary, the station's totals and the report (through the events'
`track_label`) all read this one decision.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import numpy as np

from .. import CLASSES
from .labels import OTHER, label_for


@dataclass
class Cell:
    """One sighting of a cell in one frame. `track` and `track_label` are set by the CellTracker."""
    box: tuple[int, int, int, int]  # x, y, w, h in source-frame pixels
    label: str                      # this sighting's label (edge.labels.label_for)
    probability: float              # P(all)
    ood: float | None = None        # out-of-scope score (None: the model has no scope gate in use)
    track: int | None = None        # the same cell across frames
    track_label: str | None = None  # the track's label after this sighting (the track rule)

    def to_event(self) -> dict:
        """The cell in a stream event (docs/contracts.md): box, label, probability, then ood (scope models) and
        the tracker's track id and track label."""
        out = {"box": [int(v) for v in self.box], "label": self.label,
               "probability": round(float(self.probability), 4)}
        if self.ood is not None:
            out["ood"] = round(float(self.ood), 4)
        if self.track is not None:
            out["track"] = int(self.track)
            out["track_label"] = self.track_label
        return out


def track_label(mean_probability: float, mean_ood: float | None, threshold: float,
                ood_threshold: float | None = None, classes: Sequence[str] = CLASSES) -> str:
    """THE track rule (module docstring): edge.labels.label_for applied to the track's mean P(all) and mean ood."""
    return label_for(mean_probability, threshold, classes, mean_ood, ood_threshold)


@dataclass(frozen=True)
class TrackInfo:
    """What a reader may know of a track: its id, the tracker's label, mean P(all) and mean ood over its sightings,
    how often and from which frame to which it was seen, and whether it is over (never seen again)."""
    id: int
    label: str
    probability: float        # mean P(all) over the sightings
    ood: float | None         # mean out-of-scope score (None without a scope gate)
    sightings: int
    first_frame: int
    last_frame: int
    ended: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class _Track:
    id: int
    first_frame: int
    last_frame: int
    centre: np.ndarray
    size: float
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(2))
    missed: int = 0
    sightings: int = 0
    p_sum: float = 0.0
    ood_sum: float = 0.0
    ood_n: int = 0            # sightings that carried an ood score

    def add(self, cell: Cell) -> None:
        self.sightings += 1
        self.p_sum += float(cell.probability)
        if cell.ood is not None:
            self.ood_sum += float(cell.ood)
            self.ood_n += 1

    @property
    def mean_probability(self) -> float:
        return self.p_sum / max(self.sightings, 1)

    @property
    def mean_ood(self) -> float | None:
        return self.ood_sum / self.ood_n if self.ood_n else None


def _centre(box) -> np.ndarray:
    return np.array([box[0] + box[2] / 2, box[1] + box[3] / 2], np.float64)


def _size(box) -> float:
    return float(max(box[2], box[3], 1))


class CellTracker:
    """Counts each cell once while the slide drifts through the view, and labels it once (the track rule).

    Tracks are matched greedily by the distance between a cell's centre and the track's predicted centre (last
    centre + velocity x frames elapsed, so dropped frames and strides are bridged), relative to the cell size. A
    track missed more than `max_missed` times in a row is over: its label goes into fixed totals, the `on_ended`
    listeners hear it, and it is dropped, so the cost per frame and the memory stay bounded on an endless live
    source. Thread-safe: the pipeline thread updates, request threads read (`counts`, `get`, `active`); listeners
    are called on the updating thread, outside the tracker's lock."""

    def __init__(self, threshold: float = 0.5, ood_threshold: float | None = None, classes: Sequence[str] = CLASSES,
                 max_distance: float = 0.75, max_missed: int = 5):
        self.threshold, self.ood_threshold, self.classes = float(threshold), ood_threshold, tuple(classes)
        self.max_distance, self.max_missed = max_distance, max_missed
        self.tracks: dict[int, _Track] = {}  # the tracks still followed
        self._ended: Counter = Counter({k: 0 for k in self.labels})  # labels of the tracks that are over
        self._listeners: list[Callable[[TrackInfo], None]] = []
        self._lock = threading.RLock()
        self._next = 0
        self._next_index = 0

    @classmethod
    def for_classifier(cls, classifier, **kwargs) -> CellTracker:
        """A tracker with the model's thresholds and classes (its scope threshold when the gate is in use)."""
        info = getattr(classifier, "info", None)
        return cls(classifier.threshold, getattr(classifier, "ood_threshold", None),
                   info.classes if info is not None else CLASSES, **kwargs)

    @property
    def labels(self) -> tuple[str, str, str]:
        """The labels a track can get, in the order summaries list them: all, hem, other."""
        return self.classes[1], self.classes[0], OTHER

    # --- the rule ----------------------------------------------------------------------------------------------
    def _label(self, t: _Track) -> str:
        return track_label(t.mean_probability, t.mean_ood, self.threshold, self.ood_threshold, self.classes)

    def _info(self, t: _Track, ended: bool = False) -> TrackInfo:
        ood = t.mean_ood
        return TrackInfo(t.id, self._label(t), t.mean_probability, ood, t.sightings, t.first_frame,
                         t.last_frame, ended)

    # --- writing (the pipeline thread) -------------------------------------------------------------------------
    def on_ended(self, listener: Callable[[TrackInfo], None]) -> None:
        """Call `listener(TrackInfo)` (ended=True) for every track that is over, with its final label."""
        self._listeners.append(listener)

    def update(self, cells: list[Cell], index: int | None = None) -> list[TrackInfo]:
        """Number the frame's cells (cell.track, cell.track_label) and fold them into their tracks.
        -> the tracks that ended with this frame (also given to the `on_ended` listeners)."""
        with self._lock:
            index = self._next_index if index is None else int(index)
            self._next_index = index + 1
            waiting = dict(self.tracks)
            self._match(cells, waiting, index)
            for c in cells:
                t = self._follow(c, index)
                t.add(c)
                waiting.pop(t.id, None)
            for c in cells:
                c.track_label = self._label(self.tracks[c.track])
            ended = [self._end(t) for t in waiting.values() if self._missed(t)]
        self._tell(ended)
        return ended

    def finish(self) -> list[TrackInfo]:
        """The run is over: every track still followed ends (listeners hear each). -> those tracks."""
        with self._lock:
            ended = [self._end(t) for t in list(self.tracks.values())]
        self._tell(ended)
        return ended

    def _match(self, cells: list[Cell], waiting: dict[int, _Track], index: int) -> None:
        """Greedy matching, nearest pairs first, of the cells to the tracks' predicted centres."""
        pairs = []
        for i, c in enumerate(cells):
            c.track = None
            centre, size = _centre(c.box), _size(c.box)
            for k, t in waiting.items():
                predicted = t.centre + t.velocity * (index - t.last_frame)
                d = float(np.hypot(*(centre - predicted))) / max(size, t.size)
                if d <= self.max_distance:
                    pairs.append((d, i, k))
        used_c, used_t = set(), set()
        for _d, i, k in sorted(pairs):
            if i not in used_c and k not in used_t:
                used_c.add(i)
                used_t.add(k)
                cells[i].track = k

    def _follow(self, c: Cell, index: int) -> _Track:
        """The cell's track (a new one when it matched none), moved to where the cell is."""
        centre = _centre(c.box)
        if c.track is None:
            c.track = self._next
            self.tracks[self._next] = _Track(self._next, index, index, centre, _size(c.box))
            self._next += 1
            return self.tracks[c.track]
        t = self.tracks[c.track]
        gap = max(index - t.last_frame, 1)
        t.velocity = 0.5 * t.velocity + 0.5 * (centre - t.centre) / gap
        t.centre, t.size, t.last_frame, t.missed = centre, _size(c.box), index, 0
        return t

    def _missed(self, t: _Track) -> bool:
        t.missed += 1
        return t.missed > self.max_missed  # never matched again: count it and let it go

    def _end(self, t: _Track) -> TrackInfo:
        info = self._info(t, ended=True)
        self._ended[info.label] += 1
        del self.tracks[t.id]
        return info

    def _tell(self, ended: list[TrackInfo]) -> None:
        for info in ended:
            for listener in self._listeners:
                listener(info)

    # --- reading (any thread) ----------------------------------------------------------------------------------
    def counts(self) -> dict:
        """{"all", "hem", "other"}: every cell seen so far once, by its track's label (ended and followed)."""
        with self._lock:
            out = Counter(self._ended)
            for t in self.tracks.values():
                out[self._label(t)] += 1
            return {k: int(out[k]) for k in self.labels}

    def get(self, track_id: int) -> TrackInfo | None:
        """A track still followed (None once it has ended: its TrackInfo went to the `on_ended` listeners)."""
        with self._lock:
            t = self.tracks.get(int(track_id))
            return self._info(t) if t is not None else None

    def active(self) -> list[TrackInfo]:
        """The tracks still followed, oldest first."""
        with self._lock:
            return [self._info(t) for t in self.tracks.values()]
