"""The technologist's review, as digital-morphology systems do it: the model pre-classifies every located cell,
the galleries show them by pre-class (`all`, `hem`, and `uncertain` = P(all) within `band` of the threshold), a
person confirms or reclassifies each (`all`, `hem`, `not classed` for debris and what is not a white cell), and a
slide is signed only when nothing is left unreviewed. Each review is appended to a JSONL at once (nothing lost on
restart); `leuk-edge data reviews` turns that file into a training set.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np

from .. import DISCLAIMER
from ..edge.explain import blend
from ..edge.labels import label_for
from ..edge.summary import wilson_interval

REVIEW_LABELS = ("all", "hem", "not classed")
DEFAULT_BAND = 0.1


class SignRefused(ValueError):
    """The slide cannot be signed yet (cells left unreviewed, or none at all)."""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def slide_name(prefix: str | None = None) -> str:
    """A slide id usable as a C-NMC subject: letters, digits and '-' only (the file names split on '_')."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    name = f"{prefix}-{stamp}" if prefix else f"slide-{stamp}"
    return re.sub(r"[^A-Za-z0-9-]+", "-", name).strip("-") or "slide"


@dataclass
class Item:
    id: int
    slide: str
    origin: str          # "stream" (a tracked cell) or "upload"
    name: str
    p_sum: float = 0.0
    n: int = 0           # frames the cell was seen in (1 for an upload)
    crop: str | None = None  # file relative to the station folder
    cam: str | None = None
    review: str | None = None
    reviewed_at: str | None = None

    @property
    def probability(self) -> float:
        return self.p_sum / max(self.n, 1)


class ReviewStore:
    def __init__(self, folder: Path, threshold: float, model_sha256: str, band: float = DEFAULT_BAND,
                 slide_prefix: str | None = None):
        if not 0 <= band < 0.5:
            raise ValueError("--band must be in [0, 0.5)")
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.jsonl = self.folder / "reviews.jsonl"
        self.threshold, self.band, self.model_sha256 = float(threshold), float(band), model_sha256
        self.slide_prefix = slide_prefix
        self.slide = slide_name(slide_prefix)
        self.items: dict[int, Item] = {}
        self._by_track: dict[int, int] = {}
        self._next = 0
        self._lock = threading.Lock()

    # --- what the model said ---------------------------------------------------------------------------------
    def model_label(self, item: Item) -> str:
        return label_for(item.probability, self.threshold)

    def pre_class(self, item: Item) -> str:
        return "uncertain" if abs(item.probability - self.threshold) < self.band else self.model_label(item)

    def _save(self, item: Item, bgr: np.ndarray, kind: str) -> str:
        rel = Path("crops") / item.slide / f"{item.id:06d}{kind}.png"
        (self.folder / rel).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(self.folder / rel), bgr)
        return rel.as_posix()

    def _new(self, origin: str, name: str, rgb: np.ndarray | None, cam: np.ndarray | None) -> Item:
        item = Item(self._next, self.slide, origin, name)
        self._next += 1
        if rgb is not None:
            item.crop = self._save(item, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), "")
            if cam is not None:
                item.cam = self._save(item, blend(rgb, cam), ".cam")
        self.items[item.id] = item
        return item

    def on_cells(self, cells, crops, cams, frame) -> None:
        """The hub's per-frame hook: one item per track, its crop filed when first seen."""
        with self._lock:
            for i, c in enumerate(cells):
                key = self._by_track.get(int(c.track))
                if key is None:
                    item = self._new("stream", f"track {c.track}", crops[i] if i < len(crops) else None,
                                     cams[i] if cams is not None and i < len(cams) else None)
                    self._by_track[int(c.track)] = item.id
                else:
                    item = self.items[key]
                item.p_sum += float(c.probability)
                item.n += 1

    def add_upload(self, name: str, rgb: np.ndarray, probability: float, cam: np.ndarray | None = None) -> Item:
        with self._lock:
            item = self._new("upload", name, rgb, cam)
            item.p_sum, item.n = float(probability), 1
            return item

    # --- what the page shows ---------------------------------------------------------------------------------
    def card(self, item: Item, query: str = "") -> dict:
        return {"track": item.id, "label": self.model_label(item), "pre_class": self.pre_class(item),
                "probability": round(item.probability, 4), "frames": item.n, "origin": item.origin,
                "name": item.name, "review": item.review,
                "crop": f"/api/cells/{item.id}/crop.png{query}" if item.crop else None,
                "cam": f"/api/cells/{item.id}/cam.png{query}" if item.cam else None}

    def cells(self, query: str = "") -> list[dict]:
        with self._lock:
            return [self.card(it, query) for it in self.items.values() if it.slide == self.slide]

    def file_of(self, item_id: int, kind: str) -> Path | None:
        item = self.items.get(item_id)
        rel = getattr(item, kind, None) if item else None
        return self.folder / rel if rel else None

    # --- the technologist's part -----------------------------------------------------------------------------
    def review(self, item_id: int, label: str) -> dict:
        if label not in REVIEW_LABELS:
            raise ValueError(f"label must be one of {', '.join(REVIEW_LABELS)}")
        with self._lock:
            item = self.items.get(item_id)
            if item is None or item.slide != self.slide:
                raise KeyError(item_id)
            item.review, item.reviewed_at = label, _now()
            record = {"slide": item.slide, "track": item.id, "origin": item.origin, "name": item.name,
                      "crop": item.crop, "probability": round(item.probability, 6), "frames": item.n,
                      "pre_class": self.pre_class(item), "model_label": self.model_label(item), "review": label,
                      "threshold": self.threshold, "band": self.band, "time": item.reviewed_at,
                      "model_sha256": self.model_sha256}
            with open(self.jsonl, "a", encoding="utf-8") as fh:  # appended and closed: survives a crash
                fh.write(json.dumps(record) + "\n")
            return self.card(item)

    def sign(self) -> dict:
        """The signed slide: verified counts beside the pre-classified ones; then a new slide begins."""
        with self._lock:
            items = [it for it in self.items.values() if it.slide == self.slide]
            if not items:
                raise SignRefused("no cells on this slide yet")
            left = sum(1 for it in items if it.review is None)
            if left:
                raise SignRefused(f"{left} of {len(items)} cells are not reviewed yet")
            signed = signed_summary(self.slide, [(self.model_label(it), self.pre_class(it), it.review)
                                                 for it in items], self.threshold, self.band)
            signed.update(model_sha256=self.model_sha256, signed_at=_now(), reviews=str(self.jsonl))
            path = self.folder / "signed" / f"{self.slide}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(signed, indent=2))
            signed["file"] = str(path)
            self.slide = slide_name(self.slide_prefix)
            if self.slide == signed["slide"]:  # signed within the same second
                self.slide += f"-{len(list(path.parent.glob('*.json')))}"
            self._by_track.clear()  # cells still in view belong to the next slide
            # The signed slide lives on in reviews.jsonl and signed/: memory stays bounded on an endless source.
            self.items = {k: it for k, it in self.items.items() if it.slide != signed["slide"]}
            return signed


def _fraction(k: int, n: int) -> dict:
    lo, hi = wilson_interval(k, n)
    return {"all": k, "hem": n - k, "cells": n, "blast_fraction": round(k / n, 4) if n else None,
            "ci_low": round(lo, 4) if n else None, "ci_high": round(hi, 4) if n else None}


def signed_summary(slide: str, rows: list[tuple[str, str, str]], threshold: float, band: float) -> dict:
    """rows: (model label, pre-class, reviewer's label) per cell -> the signed figures.

    `pre_classified`: the model's counts over every cell; `verified`: the reviewer's, `not classed` left out;
    `agreement`: share of cells whose reviewer label equals the model's label (a `not classed` cell counts as a
    disagreement); sensitivity/specificity of the model's `all` against the verified labels."""
    model = [m for m, _, _ in rows]
    classed = [(m, r) for m, _, r in rows if r in ("all", "hem")]
    tp = sum(1 for m, r in classed if m == "all" and r == "all")
    fn = sum(1 for m, r in classed if m == "hem" and r == "all")
    tn = sum(1 for m, r in classed if m == "hem" and r == "hem")
    fp = sum(1 for m, r in classed if m == "all" and r == "hem")
    agree = sum(1 for m, _, r in rows if m == r)
    return {
        "slide": slide, "cells": len(rows), "threshold": threshold, "uncertain_band": band,
        "uncertain": sum(1 for _, p, _ in rows if p == "uncertain"),
        "not_classed": len(rows) - len(classed),
        "pre_classified": _fraction(model.count("all"), len(model)),
        "verified": _fraction(tp + fn, len(classed)),
        "agreement": round(agree / len(rows), 4) if rows else None,
        "agreed": agree,
        "sensitivity": round(tp / (tp + fn), 4) if tp + fn else None,
        "specificity": round(tn / (tn + fp), 4) if tn + fp else None,
        "confusion": {"tp": tp, "fn": fn, "tn": tn, "fp": fp},
        "disclaimer": DISCLAIMER,
    }
