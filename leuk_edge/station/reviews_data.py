"""Reviews become data: a station's reviews (its database, or the reviews.jsonl export) -> a labelled dataset in
the C-NMC layout.

    OUT/C-NMC_Leukemia/training_data/fold_0/{all,hem}/UID_<slide>_<track>_1_<label>.png

The slide is the subject (C-NMC names carry the subject, and `leuk-edge train` splits by subject, so no slide is
in two splits). The last review of a cell wins (a reviewer may correct themselves, an amendment corrects a signed
slide); `not classed` and `other` cells are left out; a record whose crop file is gone is counted, not fatal. Crops are copied byte for byte (the pixels the
model saw). The source JSONL is recorded in REVIEWS.txt beside the data.
"""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
from pathlib import Path

LABELS = ("all", "hem")


class ReviewsError(ValueError):
    """The reviews file cannot be used."""


def _subject(slide: str) -> str:
    return re.sub(r"[^A-Za-z0-9-]+", "-", str(slide)).strip("-") or "slide"


def read_reviews(path: Path) -> tuple[dict, int]:
    """The last review per (slide, track) and the number of lines that were not review records."""
    if not path.is_file():
        raise ReviewsError(f"reviews file not found: {path}")
    latest, bad = {}, 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            key = (str(rec["slide"]), int(rec["track"]))
            rec["review"]
        except (ValueError, KeyError, TypeError):
            bad += 1
            continue
        latest[key] = rec
    return latest, bad


def read_database(path: Path) -> dict:
    """The last review per (slide, track) from a station database (read-only)."""
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            rows = db.execute("SELECT record FROM reviews WHERE id IN (SELECT MAX(id) FROM reviews GROUP BY cell)"
                              " ORDER BY id").fetchall()
        finally:
            db.close()
    except sqlite3.DatabaseError as exc:
        raise ReviewsError(f"cannot read the station database {path}: {exc}") from None
    latest = {}
    for (text,) in rows:
        rec = json.loads(text)
        latest[(str(rec["slide"]), int(rec["track"]))] = rec
    return latest


def read_any(source: Path) -> tuple[dict, int, Path]:
    """(last review per cell, unreadable lines, the folder crops are relative to) from a station folder, its
    station.db or a reviews JSONL."""
    db = source / "station.db" if source.is_dir() else source
    if db.suffix == ".db":
        if not db.is_file():
            raise ReviewsError(f"no station database: {db}")
        return read_database(db), 0, db.parent
    latest, bad = read_reviews(source)
    return latest, bad, source.parent


def write_reviews_dataset(reviews: str | Path, out: str | Path) -> dict:
    reviews, out = Path(reviews), Path(out)
    latest, bad, base = read_any(reviews)
    root = out / "C-NMC_Leukemia" / "training_data" / "fold_0"
    counts = {"all": 0, "hem": 0, "not classed": 0, "other": 0, "missing_crop": 0, "bad_lines": bad}
    subjects = set()
    for (slide, track), rec in sorted(latest.items()):
        label = rec["review"]
        if label not in LABELS:
            counts["other" if label == "other" else "not classed"] += 1
            continue
        crop = Path(rec.get("crop") or "")
        crop = crop if crop.is_absolute() else base / crop
        if not rec.get("crop") or not crop.is_file():
            counts["missing_crop"] += 1
            continue
        subject = _subject(slide)
        dest = root / label / f"UID_{subject}_{track}_1_{label}{crop.suffix.lower() or '.png'}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(crop, dest)
        counts[label] += 1
        subjects.add(subject)
    if counts["all"] + counts["hem"] == 0:
        raise ReviewsError(f"no reviewed all/hem cells with their crops in {reviews}")
    for cls in LABELS:
        (root / cls).mkdir(parents=True, exist_ok=True)
    (out / "C-NMC_Leukemia" / "REVIEWS.txt").write_text(
        f"Cells reviewed at a leuk-edge station, from {reviews.resolve()}; labels are the reviewers', "
        "subjects are slides.\n")
    return {"root": str(out / "C-NMC_Leukemia"), "subjects": sorted(subjects), **counts}
