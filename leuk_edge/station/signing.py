"""Signing a slide and amending a signed one.

A slide is signed only when every cell is reviewed (cells the model called `other` are named when they are not).
The signed document holds the model's counts beside the reviewer's, who signed and when, and the audit head at
the moment of signing. A signed slide never changes: a correction is an amendment, a new signed version that
names the one it amends, who amended, what changed and why; every version is kept, in the database and as files
that are written once and never overwritten:

    signed/SLIDE.json, signed/SLIDE.fhir.json          version 1
    signed/SLIDE.v2.json, signed/SLIDE.v2.fhir.json    the first amendment, and so on
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

from .. import DISCLAIMER
from ..edge.labels import OTHER
from ..edge.summary import wilson_interval
from . import fhir

LIST_AT_MOST = 20  # cell ids named in a refusal
REVIEW_LABELS = ("all", "hem", "not classed", OTHER)


class SignRefused(ValueError):
    """The slide cannot be signed (cells left unreviewed, none at all, already signed)."""


class SlideClosed(ValueError):
    """The slide is signed: it cannot change (a correction is an amendment)."""


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _fraction(n_all: int, n_hem: int, n_other: int) -> dict:
    """Counts and the blast fraction: `other` is counted apart, never in all/hem or the fraction."""
    n = n_all + n_hem
    lo, hi = wilson_interval(n_all, n)
    return {"all": n_all, "hem": n_hem, "other": n_other, "cells": n + n_other,
            "blast_fraction": round(n_all / n, 4) if n else None,
            "ci_low": round(lo, 4) if n else None, "ci_high": round(hi, 4) if n else None}


def signed_summary(slide: str, rows: list[tuple[str, str, str]], threshold: float, band: float) -> dict:
    """rows: (model label, pre-class, reviewer's label) per cell -> the signed figures.

    `pre_classified`: the model's counts over every cell; `verified`: the reviewer's, `not classed` left out;
    `agreement`: share of cells whose reviewer label equals the model's label (a `not classed` cell counts as a
    disagreement); sensitivity/specificity of the model's `all` against the verified labels, over the cells both
    call all or hem."""
    model = Counter(m for m, _, _ in rows)
    review = Counter(r for _, _, r in rows)
    both = [(m, r) for m, _, r in rows if m in ("all", "hem") and r in ("all", "hem")]
    tp = sum(1 for m, r in both if m == "all" and r == "all")
    fn = sum(1 for m, r in both if m == "hem" and r == "all")
    tn = sum(1 for m, r in both if m == "hem" and r == "hem")
    fp = sum(1 for m, r in both if m == "all" and r == "hem")
    agree = sum(1 for m, _, r in rows if m == r)
    return {
        "slide": slide, "cells": len(rows), "threshold": threshold, "uncertain_band": band,
        "uncertain": sum(1 for _, p, _ in rows if p == "uncertain"),
        "not_classed": review["not classed"],
        "other_confirmed": sum(1 for m, _, r in rows if m == OTHER and r == OTHER),
        "pre_classified": _fraction(model["all"], model["hem"], model[OTHER]),
        "verified": _fraction(review["all"], review["hem"], review[OTHER]),
        "agreement": round(agree / len(rows), 4) if rows else None,
        "agreed": agree,
        "sensitivity": round(tp / (tp + fn), 4) if tp + fn else None,
        "specificity": round(tn / (tn + fp), 4) if tn + fp else None,
        "confusion": {"tp": tp, "fn": fn, "tn": tn, "fp": fp},
        "disclaimer": DISCLAIMER,
    }


def signed_paths(folder: Path, slide: str, version: int) -> tuple[Path, Path]:
    stem = slide if version == 1 else f"{slide}.v{version}"
    return folder / "signed" / f"{stem}.json", folder / "signed" / f"{stem}.fhir.json"


def _refuse_unreviewed(cells: list[dict]) -> None:
    if not cells:
        raise SignRefused("no cells on this slide yet")
    left = [c for c in cells if c["review"] is None]
    if not left:
        return
    message = f"{len(left)} of {len(cells)} cells are not reviewed yet"
    other = [c["id"] for c in left if c["label"] == OTHER]
    if other:
        ids = ", ".join(f"#{i}" for i in other[:LIST_AT_MOST]) + (" ..." if len(other) > LIST_AT_MOST else "")
        message += (f"; {len(other)} of them labelled other (out of the model's scope) must be reviewed before "
                    f"signing: {ids}")
    raise SignRefused(message)


def _document(store, tx, slide: dict, cells: list[dict], signer: str, version: int, extra: dict) -> dict:
    rows = [(c["label"], store.pre_class(c), c["review"]) for c in cells]
    doc = signed_summary(slide["id"], rows, store.threshold, store.band)
    path, fhir_path = signed_paths(store.folder, slide["id"], version)
    seq, head = tx.audit_head
    doc.update(version=version, status="final" if version == 1 else "amended", kind=slide["kind"],
               created=slide["created"], signed_by=signer, signed_at=now(), amends=None,
               model_sha256=store.model_sha256, model=store.model, ood_threshold=store.ood_threshold,
               reviews=str(store.jsonl), audit={"seq": seq, "hash": head}, file=str(path), fhir_file=str(fhir_path))
    doc.update(extra)
    return doc


def _record(tx, doc: dict, action: str) -> tuple[str, str]:
    """The signature row and its audit entry (which holds the SHA-256 of the stored document)."""
    text = json.dumps(doc, sort_keys=True)
    bundle = json.dumps(fhir.bundle(doc), sort_keys=True)
    tx.execute("INSERT INTO signatures (slide, version, signed_by, signed_at, summary, fhir) VALUES (?,?,?,?,?,?)",
               (doc["slide"], doc["version"], doc["signed_by"], doc["signed_at"], text, bundle))
    tx.audit(doc["signed_at"], doc["signed_by"], action, doc["slide"],
             {"slide": doc["slide"], "version": doc["version"], "signed_by": doc["signed_by"],
              "summary_sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
              "fhir_sha256": hashlib.sha256(bundle.encode("utf-8")).hexdigest()})
    return text, bundle


def sign(store, signer: str, slide_id: str) -> dict:
    with store.lock:
        store.flush()
        slide = store.db.slide(slide_id)
        if slide is None:
            raise KeyError(slide_id)
        if slide["state"] != "open":
            raise SignRefused(f"slide {slide_id} is already signed; a correction is an amendment")
        cells = store.db.cells_of(slide_id)
        _refuse_unreviewed(cells)
        with store.db.write() as tx:
            doc = _document(store, tx, slide, cells, signer, 1, {})
            _, bundle = _record(tx, doc, "sign")
            tx.execute("UPDATE slides SET state='signed' WHERE id=?", (slide_id,))
            store.after_sign(tx, slide_id)
        _write_once(Path(doc["file"]), json.dumps(doc, indent=2))
        _write_once(Path(doc["fhir_file"]), json.dumps(json.loads(bundle), indent=2))
        return doc


def _changes(store, cells: dict, changes) -> list[tuple[dict, str]]:
    """[(cell, new label)] from the request's `changes`: ValueError (422) for anything else."""
    if not isinstance(changes, list) or not changes:
        raise ValueError('an amendment needs "changes": [{"cell": ID, "label": LABEL}, ...]')
    out, seen = [], set()
    for ch in changes:
        cid, label = (ch.get("cell"), ch.get("label")) if isinstance(ch, dict) else (None, None)
        if not isinstance(cid, int) or cid not in cells:
            raise ValueError(f"cell {cid!r} is not on this slide")
        if label not in REVIEW_LABELS:
            raise ValueError(f"label must be one of {', '.join(REVIEW_LABELS)}")
        if cid in seen or cells[cid]["review"] == label:
            raise ValueError(f"cell {cid} is already {label}" if cid not in seen else f"cell {cid} given twice")
        seen.add(cid)
        out.append((cells[cid], label))
    return out


def amend(store, slide_id: str, amender: str, changes, reason: str | None) -> dict:
    with store.lock:
        slide = store.db.slide(slide_id)
        if slide is None:
            raise KeyError(slide_id)
        if slide["state"] == "open":
            raise SignRefused(f"slide {slide_id} is not signed yet: review and sign it")
        prev = store.db.signatures_of(slide_id)[-1]
        todo = _changes(store, {c["id"]: c for c in store.db.cells_of(slide_id)}, changes)
        version = prev["version"] + 1
        with store.db.write() as tx:
            records = [store.write_review(tx, cell, label, amender, amendment=version) for cell, label in todo]
            amends = {"version": prev["version"], "signed_by": prev["signed_by"], "signed_at": prev["signed_at"],
                      "file": prev["summary"]["file"]}
            diff = [{"cell": c["id"], "from": c["review"], "to": label} for c, label in todo]
            doc = _document(store, tx, slide, store.db.cells_of(slide_id), amender, version,
                            {"amends": amends, "changes": diff, "reason": (reason or "").strip() or None})
            _, bundle = _record(tx, doc, "amend")
            tx.execute("UPDATE slides SET state='amended' WHERE id=?", (slide_id,))
        store.export(records)
        _write_once(Path(doc["file"]), json.dumps(doc, indent=2))
        _write_once(Path(doc["fhir_file"]), json.dumps(json.loads(bundle), indent=2))
        return doc


def _write_once(path: Path, text: str) -> None:
    """Create the file (synced); an existing file is never overwritten."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(path, "x", encoding="utf-8") as fh:
            fh.write(text + "\n")
            fh.flush()
            os.fsync(fh.fileno())
    except FileExistsError:
        pass


def write_missing_files(store) -> None:
    """Signed files lost to a crash between the commit and the write are written from the database at start."""
    for row in store.db.rows("SELECT summary, fhir FROM signatures ORDER BY id"):
        doc = json.loads(row["summary"])
        _write_once(Path(doc["file"]), json.dumps(doc, indent=2))
        _write_once(Path(doc["fhir_file"]), json.dumps(json.loads(row["fhir"]), indent=2))
