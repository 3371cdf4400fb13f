"""The technologist's review, as digital-morphology systems do it: the model pre-classifies every located cell,
the galleries show them by pre-class (`all`, `hem`, `uncertain` = P(all) within `band` of the threshold, and
`other` = out of the model's scope), a person confirms or reclassifies each (`all`, `hem`, `not classed` for
debris and what is not a white cell, `other` for a cell the model does not know), and a slide is signed only when
nothing is left unreviewed (signing.py).

State is durable (store.py): every slide, cell, review and signature is in the station's SQLite database before a
request is answered, so a restart restores every unsigned slide with its cells, crops and reviews. Slides are the
units a lab handles: the live source feeds the *live* slide; uploads and `--data-root` classifications each form
their own batch slide; any unsigned slide can be made *current* (the one the page reviews). `reviews.jsonl` is an
export of the reviews table, appended after each commit (and caught up at start).
"""

from __future__ import annotations

import json
import re
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np

from ..edge.explain import blend
from ..edge.labels import OTHER, is_uncertain, label_for
from . import signing
from .signing import REVIEW_LABELS, SignRefused, SlideClosed, now  # noqa: F401 (the app's names)
from .store import StationDB, Tx, insert_cell, set_meta, update_cell

DEFAULT_BAND = 0.1
FLUSH_S = 1.0  # running P(all)/frames of cells still in view are written at most this often (and when they end)
MAX_REVIEWER = 100


def slide_name(prefix: str | None = None) -> str:
    """A slide id usable as a C-NMC subject: letters, digits and '-' only (the file names split on '_')."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    name = f"{prefix}-{stamp}" if prefix else f"slide-{stamp}"
    return re.sub(r"[^A-Za-z0-9-]+", "-", name).strip("-") or "slide"


def check_reviewer(name) -> str:
    """A reviewer's name as given: non-empty text of at most 100 characters (ValueError otherwise)."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError('give the reviewer\'s name: "reviewer": "NAME"')
    name = " ".join(name.split())
    if len(name) > MAX_REVIEWER or not name.isprintable():
        raise ValueError(f"reviewer must be printable text of at most {MAX_REVIEWER} characters")
    return name


class ReviewStore:
    def __init__(self, folder: Path, threshold: float, model_sha256: str, band: float = DEFAULT_BAND,
                 slide_prefix: str | None = None, ood_threshold: float | None = None, model: dict | None = None):
        if not 0 <= band < 0.5:
            raise ValueError("--band must be in [0, 0.5)")
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.jsonl = self.folder / "reviews.jsonl"
        self.threshold, self.band, self.model_sha256 = float(threshold), float(band), model_sha256
        self.ood_threshold = ood_threshold
        self.model = {"sha256": model_sha256, **(model or {})}
        self.slide_prefix = slide_prefix
        self.db = StationDB(self.folder)
        self.lock = self.db.lock
        self.tracker = None                     # the live source's edge.tracking.CellTracker (set by the station)
        self._by_track: dict[int, int] = {}     # tracker id -> cell id, on the live slide
        self._seen: set[int] = set()            # tracks seen since their cells were last written
        self._flushed = time.monotonic()
        self.current, self.live = self._restore()
        self._catch_up_jsonl()
        signing.write_missing_files(self)

    # --- slides ------------------------------------------------------------------------------------------------
    def _restore(self) -> tuple[str, str]:
        """The current and live slides as they were (unsigned ones only); a new live slide when there is none."""
        def open_slide(key, kind=None):
            s = self.db.slide(self.db.meta(key) or "")
            return s["id"] if s and s["state"] == "open" and (kind is None or s["kind"] == kind) else None
        live = open_slide("live", "live")
        if live is None:
            rows = self.db.rows("SELECT id FROM slides WHERE kind='live' AND state='open' ORDER BY created DESC, "
                                "rowid DESC LIMIT 1")
            live = rows[0]["id"] if rows else None
        if live is None:
            with self.db.write() as tx:
                live = self._new_slide(tx, "live", None, None)
                set_meta(tx, "live", live)
        current = open_slide("current") or live
        with self.db.write() as tx:
            set_meta(tx, "live", live)
            set_meta(tx, "current", current)
            tx.audit(now(), None, "station-start", current, {"live": live, "model_sha256": self.model_sha256})
        return current, live

    def _unique_id(self, prefix: str | None) -> str:
        base = slide_name(prefix)
        name, k = base, 1
        while self.db.slide(name) or (self.folder / "signed" / f"{name}.json").exists():
            k += 1
            name = f"{base}-{k}"
        return name

    def _new_slide(self, tx: Tx, kind: str, source: str | None, actor: str | None) -> str:
        prefix = self.slide_prefix if kind == "live" else "-".join(p for p in (self.slide_prefix, kind) if p)
        sid = self._unique_id(prefix)
        tx.execute("INSERT INTO slides (id, kind, source, created) VALUES (?, ?, ?, ?)", (sid, kind, source, now()))
        tx.audit(now(), actor, "slide-new", sid, {"kind": kind, "source": source})
        return sid

    def _switch_live(self, tx: Tx, slide_id: str) -> None:
        """The live source feeds another slide from now on: cells in view become new cells of that slide."""
        self._flush(tx)
        self._by_track.clear()
        self.live = slide_id
        set_meta(tx, "live", slide_id)

    def new_slide(self, actor: str | None = None) -> dict:
        """`POST /api/slides`: a new live slide, current from now on."""
        with self.lock, self.db.write() as tx:
            sid = self._new_slide(tx, "live", None, actor)
            self._switch_live(tx, sid)
            self.current = sid
            set_meta(tx, "current", sid)
        return self.slide_entry(sid)

    def open_slide(self, slide_id: str, actor: str | None = None) -> dict:
        """`POST /api/slides/{id}/open`: an unsigned slide becomes current (a live one is fed again)."""
        with self.lock:
            s = self.db.slide(slide_id)
            if s is None:
                raise KeyError(slide_id)
            if s["state"] != "open":
                raise SlideClosed(f"slide {slide_id} is signed; a correction is an amendment")
            with self.db.write() as tx:
                if s["kind"] == "live" and slide_id != self.live:
                    self._switch_live(tx, slide_id)
                self.current = slide_id
                set_meta(tx, "current", slide_id)
                tx.audit(now(), actor, "slide-open", slide_id, {})
        return self.slide_entry(slide_id)

    def slides(self) -> list[dict]:
        return [self._entry(s) for s in self.db.slide_list()]

    def slide_entry(self, slide_id: str) -> dict:
        got = [s for s in self.db.slide_list() if s["id"] == slide_id]
        if not got:
            raise KeyError(slide_id)
        return self._entry(got[0])

    def _entry(self, s: dict) -> dict:
        return {"id": s["id"], "state": s["state"], "cells": s["cells"], "reviewed": s["reviewed"],
                "signed_by": s["signed_by"], "kind": s["kind"], "source": s["source"], "created": s["created"],
                "version": s["version"], "current": s["id"] == self.current, "live": s["id"] == self.live}

    @property
    def slide(self) -> str:
        return self.current

    # --- what the model said -----------------------------------------------------------------------------------
    def model_label(self, probability: float, ood: float | None) -> str:
        return label_for(probability, self.threshold, ood=ood, ood_threshold=self.ood_threshold)

    def pre_class(self, cell: dict) -> str:
        if cell["label"] == OTHER:
            return OTHER
        return "uncertain" if is_uncertain(cell["probability"], self.threshold, self.band) else cell["label"]

    def _save(self, slide: str, cell_id: int, bgr: np.ndarray, kind: str) -> str:
        rel = Path("crops") / slide / f"{cell_id:06d}{kind}.png"
        (self.folder / rel).parent.mkdir(parents=True, exist_ok=True)
        if not cv2.imwrite(str(self.folder / rel), bgr):
            raise OSError(f"cannot write {rel}")
        return rel.as_posix()

    def _add(self, tx: Tx, slide: str, origin: str, name: str, rgb, cam, probability: float, ood, frames: int,
             track: int | None = None, label: str | None = None) -> int:
        p = float(probability)
        ood = None if ood is None else float(ood)
        cid = insert_cell(tx, {"slide": slide, "origin": origin, "name": name, "track": track, "probability": p,
                               "ood": ood, "label": label or self.model_label(p, ood), "frames": frames})
        if rgb is not None:
            files = {"crop": self._save(slide, cid, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), "")}
            if cam is not None:
                files["cam"] = self._save(slide, cid, blend(rgb, cam), ".cam")
            update_cell(tx, cid, **files)
        return cid

    # --- the live source ---------------------------------------------------------------------------------------
    def on_cells(self, cells, crops, cams, frame) -> None:
        """The hub's per-frame hook (after the tracker has numbered the cells): a new track becomes a cell of the
        live slide, its crop filed and committed at once. The track's label, mean P(all), mean ood and sightings
        are the tracker's (`self.tracker`): written at most once a second while the cell is in view, and when the
        tracker says the track is over (`on_track_ended`)."""
        with self.lock:
            new = [i for i, c in enumerate(cells) if int(c.track) not in self._by_track]
            if new:
                with self.db.write() as tx:
                    for i in new:
                        c = cells[i]
                        cid = self._add(tx, self.live, "stream", f"track {c.track}",
                                        crops[i] if i < len(crops) else None,
                                        cams[i] if cams is not None and i < len(cams) else None,
                                        c.probability, c.ood, 1, track=int(c.track), label=c.track_label)
                        self._by_track[int(c.track)] = cid
            self._seen.update(int(c.track) for c in cells)
            if self._seen and time.monotonic() - self._flushed >= FLUSH_S:
                with self.db.write() as tx:
                    self._flush(tx)

    def on_track_ended(self, info) -> None:
        """The tracker's notification: the track's final label and means go to its cell (committed)."""
        with self.lock:
            cid = self._by_track.pop(int(info.id), None)
            self._seen.discard(int(info.id))
            if cid is not None:
                with self.db.write() as tx:
                    self._write_track(tx, cid, info)

    def _write_track(self, tx: Tx, cid: int, info) -> None:
        update_cell(tx, cid, probability=float(info.probability), frames=int(info.sightings), label=info.label,
                    ood=None if info.ood is None else float(info.ood))

    def _flush(self, tx: Tx) -> None:
        for track in sorted(self._seen):
            info = self.tracker.get(track) if self.tracker is not None else None
            cid = self._by_track.get(track)
            if info is not None and cid is not None:
                self._write_track(tx, cid, info)
        self._seen.clear()
        self._flushed = time.monotonic()

    def flush(self) -> None:
        with self.lock:
            if self._seen:
                with self.db.write() as tx:
                    self._flush(tx)

    # --- batches: uploads and --data-root folders ----------------------------------------------------------------
    def batch(self, kind: str, source: str | None = None, actor: str | None = None):
        """A callable `add(name, rgb, probability, ood=None, cam=None, label=None)` that files each classified image in a new
        batch slide of its own (made at the first image, so a request of errors only makes none); `.slide` names
        it afterwards."""
        return _Batch(self, kind, source, actor)

    # --- what the page shows -----------------------------------------------------------------------------------
    def card(self, cell: dict, query: str = "") -> dict:
        return {"track": cell["id"], "slide": cell["slide"], "label": cell["label"], "pre_class": self.pre_class(cell),
                "probability": round(cell["probability"], 4),
                "ood": None if cell["ood"] is None else round(cell["ood"], 4), "frames": cell["frames"],
                "origin": cell["origin"], "name": cell["name"], "review": cell["review"],
                "reviewer": cell["reviewer"], "reviewed_at": cell["reviewed_at"],
                "crop": f"/api/cells/{cell['id']}/crop.png{query}" if cell["crop"] else None,
                "cam": f"/api/cells/{cell['id']}/cam.png{query}" if cell["cam"] else None}

    def cells(self, query: str = "", slide: str | None = None) -> list[dict]:
        with self.lock:
            self.flush()
            sid = slide or self.current
            if slide is not None and self.db.slide(slide) is None:
                raise KeyError(slide)
            return [self.card(c, query) for c in self.db.cells_of(sid)]

    def file_of(self, cell_id: int, kind: str) -> Path | None:
        cell = self.db.cell(cell_id)
        rel = cell.get(kind) if cell else None
        return self.folder / rel if rel else None

    # --- the technologist's part -------------------------------------------------------------------------------
    def record(self, cell: dict, label: str, reviewer: str, at: str, amendment: int | None = None) -> dict:
        """The reviews.jsonl line (and the database's copy) of one review."""
        return {"slide": cell["slide"], "track": cell["id"], "origin": cell["origin"], "name": cell["name"],
                "crop": cell["crop"], "probability": round(cell["probability"], 6), "ood": cell["ood"],
                "frames": cell["frames"], "pre_class": self.pre_class(cell), "model_label": cell["label"],
                "review": label, "reviewer": reviewer, "threshold": self.threshold, "band": self.band,
                "ood_threshold": self.ood_threshold, "time": at, "model_sha256": self.model_sha256,
                "amendment": amendment}

    def write_review(self, tx: Tx, cell: dict, label: str, reviewer: str, amendment: int | None = None) -> dict:
        at = now()
        rec = self.record(cell, label, reviewer, at, amendment)
        # The id is known before the row is written (one writer: the transaction holds the database's write lock),
        # so the stored record is complete on its first and only write (reviews are append-only).
        rec["review_id"] = rid = int(tx.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM reviews").fetchone()[0])
        tx.execute("INSERT INTO reviews (id, cell, slide, label, reviewer, time, amendment, record) "
                   "VALUES (?,?,?,?,?,?,?,?)", (rid, cell["id"], cell["slide"], label, reviewer, at, amendment,
                                                json.dumps(rec)))
        update_cell(tx, cell["id"], review=label, reviewer=reviewer, reviewed_at=at)
        tx.audit(at, reviewer, "amend-review" if amendment else "review", cell["slide"],
                 {"review_id": rid, "cell": cell["id"], "label": label, "reviewer": reviewer, "time": at,
                  "previous": cell["review"], "amendment": amendment})
        return rec

    def review(self, cell_id: int, label: str, reviewer: str) -> dict:
        if label not in REVIEW_LABELS:
            raise ValueError(f"label must be one of {', '.join(REVIEW_LABELS)}")
        reviewer = check_reviewer(reviewer)
        with self.lock:  # the cell's P(all) as last written (at most FLUSH_S old while it is in view): one commit
            cell = self.db.cell(cell_id)
            if cell is None:
                raise KeyError(cell_id)
            if self.db.slide(cell["slide"])["state"] != "open":
                raise SlideClosed(f"cell {cell_id} is on signed slide {cell['slide']}; a correction is an "
                                  "amendment")
            with self.db.write() as tx:
                rec = self.write_review(tx, cell, label, reviewer)
            self.export([rec])
            return self.card(self.db.cell(cell_id))

    def sign(self, reviewer: str, slide: str | None = None) -> dict:
        return signing.sign(self, check_reviewer(reviewer), slide or self.current)

    def amend(self, slide: str, reviewer: str, changes, reason: str | None = None) -> dict:
        return signing.amend(self, slide, check_reviewer(reviewer), changes, reason)

    def after_sign(self, tx: Tx, slide: str) -> None:
        """A signed slide is fed no more: the live source moves to a new slide; the page to the live slide."""
        if slide == self.live:
            self._switch_live(tx, self._new_slide(tx, "live", None, None))
        if slide == self.current:
            self.current = self.live
            set_meta(tx, "current", self.current)

    # --- reviews.jsonl, the export -----------------------------------------------------------------------------
    def export(self, records: list[dict]) -> None:
        with open(self.jsonl, "a", encoding="utf-8") as fh:  # appended and closed: survives a crash
            for rec in records:
                fh.write(json.dumps(rec) + "\n")

    def _catch_up_jsonl(self) -> None:
        """Reviews committed but not yet exported (a crash between the commit and the append) are appended now."""
        last = _last_exported(self.jsonl)
        missing = [json.loads(r["record"]) for r in self.db.reviews_after(last)]
        if missing:
            self.export(missing)

    def close(self) -> None:
        with self.lock:
            self.flush()
            self.db.close()


def _last_exported(path: Path) -> int:
    """The highest review_id in the JSONL's last 64 KiB (0 when none)."""
    if not path.is_file():
        return 0
    with open(path, "rb") as fh:
        fh.seek(max(0, path.stat().st_size - (64 << 10)))
        tail = fh.read().decode("utf-8", errors="replace").splitlines()
    for line in reversed(tail):
        try:
            rid = json.loads(line).get("review_id")
        except (ValueError, AttributeError):
            continue
        if isinstance(rid, int):
            return rid
    return 0


class _Batch:
    def __init__(self, store: ReviewStore, kind: str, source: str | None, actor: str | None):
        self.store, self.kind, self.source, self.actor = store, kind, source, actor
        self.slide: str | None = None
        self.cells = 0
        self._lock = threading.Lock()

    def __call__(self, name: str, rgb, probability: float, ood: float | None = None, cam=None,
                 label: str | None = None) -> int:
        st = self.store
        with self._lock, st.lock, st.db.write() as tx:
            if self.slide is None:
                self.slide = st._new_slide(tx, self.kind, self.source, self.actor)
            self.cells += 1
            return st._add(tx, self.slide, self.kind, name, rgb, cam, probability, ood, 1, label=label)
