"""Read the report's inputs: classify tables (CSV/JSON/JSONL), stream events (JSONL) and stream summaries (JSON).

Each file's kind is found from its content, so `leuk-edge report results.csv session.jsonl summary.json` works in
any order. A file that is none of these is a ReportInputError (one line, CLI exit 2).
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..edge.classify import TABLE_FIELDS
from ..edge.labels import OTHER

LABELS = ("all", "hem", OTHER, "error")
CELL_LABELS = ("all", "hem", OTHER)


class ReportInputError(ValueError):
    """An input that is not a classify table, stream events or a stream summary."""


@dataclass(frozen=True)
class TableRow:
    """One classify-table row (docs/contracts.md): probability is P(all), None for error rows."""

    path: str
    label: str
    probability: float | None
    error: str = ""
    base: str = ""  # folder of the table file: relative image paths are also looked up from there
    ood: float | None = None  # out-of-scope score (tables of models with a scope gate)

    @property
    def ok(self) -> bool:
        return self.probability is not None and self.label != "error"


@dataclass
class StreamEvents:
    """The tracked cells of one stream run's events: each cell once (its track), labelled by the CellTracker's
    decision (the last `track_label` of the track), with its mean P(all) over the sightings."""

    source: str
    frames: int = 0
    summary: dict | None = None  # the stream summary of the same run, when known (else matched by its `jsonl`)
    tracks: dict = field(default_factory=dict)  # track id -> [sum of P(all), sightings, the track's label]

    def add(self, track: int, probability: float, track_label: str) -> None:
        """One sighting of the cell `track`; the track's label is the tracker's latest word on it."""
        t = self.tracks.setdefault(int(track), [0.0, 0, track_label])
        t[0] += float(probability)
        t[1] += 1
        t[2] = track_label

    @property
    def labels(self) -> Counter:
        """Tracked cells per label (each cell once)."""
        return Counter(label for _, _, label in self.tracks.values())

    @property
    def probabilities(self) -> np.ndarray:
        """Mean P(all) of each tracked cell the model classed (`other` left out: not counted, not uncertain)."""
        return np.array([s / n for s, n, label in self.tracks.values() if label != OTHER], np.float64)


@dataclass
class Inputs:
    rows: list[TableRow] = field(default_factory=list)
    events: list[StreamEvents] = field(default_factory=list)
    summaries: list[tuple[str, dict]] = field(default_factory=list)  # (file, stream summary)
    files: list[tuple[str, str]] = field(default_factory=list)        # (file, kind) in the order given


def _number(value, where: str, name: str) -> float | None:
    if value in (None, ""):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ReportInputError(f"{where}: {name} {value!r} is not a number") from None


def _probability(value, where: str) -> float | None:
    if value in (None, ""):
        return None
    try:
        p = float(value)
    except (TypeError, ValueError):
        raise ReportInputError(f"{where}: probability {value!r} is not a number") from None
    if not 0.0 <= p <= 1.0:
        raise ReportInputError(f"{where}: probability {p} is outside [0, 1]")
    return p


def _row(record: dict, where: str, base: str) -> TableRow:
    if not isinstance(record, dict) or "path" not in record or "label" not in record:
        raise ReportInputError(f"{where}: not a classify row (needs path, label, probability, error)")
    p = _probability(record.get("probability"), where)
    label = str(record["label"])
    if label not in LABELS:
        raise ReportInputError(f"{where}: label {label!r} is not one of {', '.join(LABELS)}")
    if label != "error" and p is None:
        raise ReportInputError(f"{where}: row labelled {label!r} has no probability")
    return TableRow(str(record["path"]), label, p, str(record.get("error") or ""), base,
                    _number(record.get("ood"), where, "ood"))


def _is_summary(obj) -> bool:
    return isinstance(obj, dict) and isinstance(obj.get("cells"), dict) and "frames" in obj and "ended" in obj


def _is_event(obj) -> bool:
    return isinstance(obj, dict) and "frame" in obj and isinstance(obj.get("cells"), list)


def _add_event(ev: StreamEvents, obj: dict, where: str) -> None:
    ev.frames += 1
    for cell in obj["cells"]:
        if not isinstance(cell, dict) or "label" not in cell:
            raise ReportInputError(f"{where}: stream event cell without a label")
        if not isinstance(cell.get("track"), int) or cell.get("track_label") not in CELL_LABELS:
            raise ReportInputError(f"{where}: stream event cell without its track and track_label (events written "
                                   "before cells were counted by track); give the run's --summary instead of its "
                                   "events, or run stream again")
        p = _probability(cell.get("probability"), where)
        if p is None:
            raise ReportInputError(f"{where}: stream event cell without a probability")
        ev.add(cell["track"], p, cell["track_label"])


def _read_csv(path: Path, text: str, into: Inputs) -> None:
    reader = csv.DictReader(text.splitlines())
    header = tuple(reader.fieldnames or ())
    if {"path", "label", "probability"} - set(header):
        raise ReportInputError(f"{path}: not a classify table (CSV header must be {','.join(TABLE_FIELDS)}, "
                               f"got {','.join(header) or 'nothing'})")
    base = str(path.parent)
    into.rows += [_row(r, f"{path} line {i}", base) for i, r in enumerate(reader, 2)]
    into.files.append((str(path), "classify table"))


def _read_jsonl(path: Path, lines: list[str], into: Inputs) -> None:
    events, rows = None, []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path} line {i}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            raise ReportInputError(f"{where}: not JSON") from None
        if _is_event(obj) and not rows:
            events = events or StreamEvents(str(path))
            _add_event(events, obj, where)
        elif events is None:
            rows.append(_row(obj, where, str(path.parent)))
        else:
            raise ReportInputError(f"{where}: a stream events file holds only events")
    if events is not None:
        into.events.append(events)
        into.files.append((str(path), "stream events"))
    else:
        into.rows += rows
        into.files.append((str(path), "classify table"))


def read_input(path: str | Path, into: Inputs) -> None:
    path = Path(path)
    if not path.is_file():
        raise ReportInputError(f"no such input file: {path}")
    try:
        text = path.read_text(encoding="utf-8-sig")  # a spreadsheet's BOM is not part of the header
    except (OSError, UnicodeDecodeError) as exc:
        raise ReportInputError(f"cannot read {path}: {exc}") from None
    stripped = text.lstrip()
    if not stripped:
        raise ReportInputError(f"{path} is empty")
    if stripped[0] not in "[{":
        _read_csv(path, text, into)
        return
    try:
        obj = json.loads(text)
    except json.JSONDecodeError:
        _read_jsonl(path, text.splitlines(), into)  # several JSON documents: one per line
        return
    if _is_summary(obj):
        into.summaries.append((str(path), obj))
        into.files.append((str(path), "stream summary"))
    elif isinstance(obj, list):
        into.rows += [_row(r, f"{path} item {i}", str(path.parent)) for i, r in enumerate(obj)]
        into.files.append((str(path), "classify table"))
    else:
        _read_jsonl(path, [text], into)  # a one-line JSONL file: one event or one row


def read_inputs(paths) -> Inputs:
    inputs = Inputs()
    for p in paths:
        read_input(p, inputs)
    if not inputs.files:
        raise ReportInputError("no inputs given")
    return inputs


def inputs_from_rows(rows, name: str = "classify run") -> Inputs:
    """Classify rows still in memory (edge.classify.Row or anything with path/label/probability/error)."""
    inputs = Inputs([TableRow(str(r.path), r.label, r.probability, r.error or "", ood=getattr(r, "ood", None))
                     for r in rows])
    inputs.files.append((name, "classify table"))
    return inputs


def inputs_from_stream(summary: dict, events: StreamEvents | None, name: str = "stream run") -> Inputs:
    """A stream run's summary (and its events, when they were collected) without reading files back."""
    if events is not None:
        events.summary = summary
    inputs = Inputs(summaries=[(name, summary)], events=[events] if events else [])
    inputs.files.append((name, "stream summary"))
    return inputs
