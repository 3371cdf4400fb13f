"""Samples of a report: the cells of one folder or subject (classify tables) or of one stream run, with their
counts, blast fraction and 95 % Wilson interval. Counts are the inputs' own labels, never recomputed; a stream run
counts tracked cells (each cell once, by the CellTracker's label of its track), never sightings, so every sample
counts cells and the total adds cells to cells. `other` is counted apart, never in the blast fraction."""

from __future__ import annotations

import os
import re
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from ..edge.labels import OTHER
from ..edge.summary import blast_fraction, blast_interval
from .inputs import Inputs, TableRow

GROUP_BY = ("folder", "subject", "none")
SUBJECT = re.compile(r"^UID_([^_]+)_")  # C-NMC cell names: UID_<subject>_<image>_<cell>_<all|hem>.bmp
NO_SUBJECT = "(no subject in name)"


@dataclass
class Sample:
    name: str
    unit: str                      # what is counted: "cells" (classify rows) or "tracked cells" (stream runs)
    all: int = 0
    hem: int = 0
    errors: int = 0
    probabilities: np.ndarray = field(default_factory=lambda: np.zeros(0))  # P(all) of the classed cells shown
    rows: list[TableRow] = field(default_factory=list)
    frames: int | None = None      # stream samples
    other: int = 0                 # out of scope: counted apart

    @property
    def cells(self) -> int:
        """Cells the model labelled: all + hem + other (unreadable files are not cells)."""
        return self.all + self.hem + self.other

    @property
    def blast_fraction(self) -> float | None:
        return blast_fraction(self.all, self.hem)

    @property
    def interval(self) -> tuple[float, float]:
        return blast_interval(self.all, self.hem)


def subject_of(path: str) -> str:
    m = SUBJECT.match(os.path.basename(path))
    return m.group(1) if m else NO_SUBJECT


def folder_of(path: str) -> str:
    return os.path.dirname(path) or "."


def _table_sample(name: str, rows: list[TableRow]) -> Sample:
    counts = defaultdict(int)
    for r in rows:
        counts[r.label] += 1
    probs = np.array([r.probability for r in rows if r.ok and r.label != OTHER], np.float64)
    return Sample(name, "cells", counts["all"], counts["hem"], counts["error"], probs, rows, other=counts[OTHER])


def table_samples(rows: list[TableRow], group_by: str = "folder") -> list[Sample]:
    """One sample per folder / subject (in order of first appearance), or one for everything ("none")."""
    if group_by not in GROUP_BY:
        raise ValueError(f"unknown --group-by {group_by!r}; choose {', '.join(GROUP_BY)}")
    if not rows:
        return []
    key = {"folder": lambda r: folder_of(r.path), "subject": lambda r: subject_of(r.path),
           "none": lambda r: "all files"}[group_by]
    groups: dict[str, list[TableRow]] = {}
    for r in rows:
        groups.setdefault(key(r), []).append(r)
    names = _short_folders(list(groups)) if group_by == "folder" else list(groups)
    return [_table_sample(name, g) for name, g in zip(names, groups.values())]


def _short_folders(folders: list[str]) -> list[str]:
    """Folders shown relative to what they share (`…/cells/A`, `…/cells/B` -> `A`, `B`); one folder stays whole."""
    if len(folders) < 2:
        return folders
    try:
        common = os.path.commonpath(folders)
    except ValueError:  # absolute and relative paths mixed
        return folders
    return [os.path.relpath(f, common) if common else f for f in folders]


def _same_file(a: str | None, b: str) -> bool:
    if not a:
        return False
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)


def _events_of(summary: dict, events: list):
    """The events of this summary's run: the same object, the same file, else the only file of the same name (the
    summary's `jsonl` is relative to where the stream ran)."""
    for e in events:
        if e.summary is summary or _same_file(summary.get("jsonl"), e.source):
            return e
    name = os.path.basename(summary.get("jsonl") or "")
    same = [e for e in events if name and os.path.basename(e.source) == name]
    return same[0] if len(same) == 1 else None


def stream_samples(inputs: Inputs) -> list[Sample]:
    """One sample per stream run, counting tracked cells: a stream summary's counts (the run's CellTracker), with
    its events file (matched by the summary's `jsonl`) giving each tracked cell's mean P(all) for the histogram;
    events without their summary count their tracks (each by the last `track_label` the tracker gave it)."""
    out, used = [], set()
    for file, s in inputs.summaries:
        ev = _events_of(s, inputs.events)
        if ev is not None:
            used.add(id(ev))
        cells = s["cells"]
        out.append(Sample(f"stream: {s.get('source', file)}", "tracked cells", int(cells.get("all", 0)),
                          int(cells.get("hem", 0)), 0, ev.probabilities if ev else np.zeros(0),
                          frames=s.get("frames"), other=int(cells.get(OTHER, 0))))
    for ev in inputs.events:
        if id(ev) not in used:
            n = ev.labels
            out.append(Sample(f"stream events: {os.path.basename(ev.source)}", "tracked cells", n["all"], n["hem"],
                              0, ev.probabilities, frames=ev.frames, other=n[OTHER]))
    return out


def total(samples: list[Sample]) -> Sample:
    """Every sample counts cells once (a classify row, a tracked cell): the total adds them."""
    units = sorted({s.unit for s in samples}) or ["cells"]
    t = Sample("all samples", " + ".join(units))
    for s in samples:
        t.all += s.all
        t.hem += s.hem
        t.other += s.other
        t.errors += s.errors
    t.probabilities = np.concatenate([s.probabilities for s in samples]) if samples else np.zeros(0)
    t.rows = [r for s in samples for r in s.rows]
    return t
