"""The station's audit log: append-only and hash-chained, and its verifier (`leuk-edge audit FOLDER`).

Each entry holds the SHA-256 of the previous entry (`prev`) and its own `hash` = SHA-256(prev + the entry's
canonical JSON), so changing, removing or reordering any entry breaks every hash after it. SQLite triggers refuse
UPDATE and DELETE on the table (an honest program cannot rewrite history); the chain catches a dishonest one.
The verifier also checks that every review and signature row has its audit entry with the same content, and
that every signed file is the document its entry recorded and names an entry that is in the chain (so cutting the
log's tail after a signature shows).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path

GENESIS = "0" * 64
SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY, time TEXT NOT NULL, actor TEXT, action TEXT NOT NULL, slide TEXT,
    detail TEXT NOT NULL, prev TEXT NOT NULL, hash TEXT NOT NULL);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
"""


def canonical(obj) -> str:
    """The one JSON text an entry's detail is stored and hashed as."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def entry_hash(prev: str, seq: int, time: str, actor: str | None, action: str, slide: str | None,
               detail: str) -> str:
    payload = canonical([seq, time, actor, action, slide, detail])
    return hashlib.sha256((prev + payload).encode("utf-8")).hexdigest()


def append(db: sqlite3.Connection, head: tuple[int, str], time: str, actor: str | None, action: str,
           slide: str | None, detail: dict) -> tuple[int, str]:
    """Insert the entry after `head` (seq, hash) inside the caller's transaction; returns the new head."""
    seq, prev = head[0] + 1, head[1]
    text = canonical(detail)
    digest = entry_hash(prev, seq, time, actor, action, slide, text)
    db.execute("INSERT INTO audit (seq, time, actor, action, slide, detail, prev, hash) VALUES (?,?,?,?,?,?,?,?)",
               (seq, time, actor, action, slide, text, prev, digest))
    return seq, digest


def head_of(db: sqlite3.Connection) -> tuple[int, str]:
    row = db.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
    return (int(row[0]), str(row[1])) if row else (0, GENESIS)


@dataclass
class Verdict:
    ok: bool
    entries: int
    head: str
    problem: str | None = None  # the first broken entry, in one line


def _chain(db: sqlite3.Connection) -> tuple[Verdict, dict[int, tuple[str, dict, str]]]:
    prev, expected, seen = GENESIS, 1, {}
    for seq, time, actor, action, slide, detail, stored_prev, digest in db.execute(
            "SELECT seq, time, actor, action, slide, detail, prev, hash FROM audit ORDER BY seq"):
        where = f"audit entry {seq} ({action}, {time})"
        if seq != expected:
            return Verdict(False, expected - 1, prev, f"audit entry {expected} is missing (next is {seq})"), seen
        if stored_prev != prev:
            return Verdict(False, seq - 1, prev, f"{where}: does not follow entry {seq - 1} (prev hash differs)"), seen
        if entry_hash(prev, seq, time, actor, action, slide, detail) != digest:
            return Verdict(False, seq - 1, prev, f"{where}: its hash does not match its content"), seen
        try:
            seen[seq] = (action, json.loads(detail), digest)
        except ValueError:
            return Verdict(False, seq - 1, prev, f"{where}: detail is not JSON"), seen
        prev, expected = digest, seq + 1
    return Verdict(True, expected - 1, prev), seen


def _cross_check(db: sqlite3.Connection, seen: dict) -> str | None:
    """Every review and signature row must be what its audit entry recorded."""
    by_review = {d.get("review_id"): (s, d) for s, (a, d, _) in seen.items() if a in ("review", "amend-review")}
    for rid, cell, label, reviewer, time in db.execute(
            "SELECT id, cell, label, reviewer, time FROM reviews ORDER BY id"):
        s, d = by_review.get(rid, (None, None))
        if d is None:
            return f"review {rid} (cell {cell}) has no audit entry"
        if (d.get("cell"), d.get("label"), d.get("reviewer"), d.get("time")) != (cell, label, reviewer, time):
            return f"review {rid} (cell {cell}) differs from audit entry {s}"
    by_sig = {(d.get("slide"), d.get("version")): (s, d) for s, (a, d, _) in seen.items() if a in ("sign", "amend")}
    for slide, version, signed_by, summary, bundle in db.execute(
            "SELECT slide, version, signed_by, summary, fhir FROM signatures ORDER BY id"):
        s, d = by_sig.get((slide, version), (None, None))
        if d is None:
            return f"signature of {slide} version {version} has no audit entry"
        if (d.get("signed_by"), d.get("summary_sha256"), d.get("fhir_sha256")) != (
                signed_by, _sha(summary), _sha(bundle)):
            return f"signature of {slide} version {version} differs from audit entry {s}"
    return None


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _signed_key(name: str) -> tuple[str, int, str]:
    """`SLIDE[.vN](.json|.fhir.json)` -> (slide, version, which hash of the entry names it)."""
    kind = "fhir_sha256" if name.endswith(".fhir.json") else "summary_sha256"
    stem = name[:-len(".fhir.json")] if kind == "fhir_sha256" else name[:-len(".json")]
    slide, _, version = stem.rpartition(".v")
    return (slide, int(version), kind) if slide and version.isdigit() else (stem, 1, kind)


def _signed_files(folder: Path, seen: dict) -> str | None:
    """Every signed file must have its sign/amend entry and be the document it recorded, and the audit head it
    names (the log as it was when it was signed) must still be in the chain: cutting the log's tail, signature rows
    and all, shows here."""
    hashes = {seq: digest for seq, (_, _, digest) in seen.items()}
    signed = {(d.get("slide"), d.get("version")): d for a, d, _ in seen.values() if a in ("sign", "amend")}
    for path in sorted((folder / "signed").glob("*.json")):
        slide, version, kind = _signed_key(path.name)
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return f"{path.name}: unreadable"
        entry = signed.get((slide, version))
        if entry is None:
            return f"{path.name}: its signature is not in the audit log"
        # A file is the stored text pretty-printed: the same JSON, so the same SHA-256 once re-serialised.
        if _sha(json.dumps(doc, sort_keys=True)) != entry.get(kind):
            return f"{path.name} differs from the document that was signed"
        anchor = (doc.get("audit") or {}) if kind == "summary_sha256" else {}
        seq = anchor.get("seq")
        if seq and hashes.get(seq) != anchor.get("hash"):
            return f"{path.name} was signed after audit entry {seq}, which the log no longer holds as it was"
    return None


def verify(folder: str | Path) -> Verdict:
    """Check the chain of FOLDER/station.db (read-only); FileNotFoundError when there is no station database."""
    folder = Path(folder)
    path = folder / "station.db"
    if not path.is_file():
        raise FileNotFoundError(f"no station database in {folder} (expected {path.name})")
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        verdict, seen = _chain(db)
        if verdict.ok:
            problem = _cross_check(db, seen) or _signed_files(folder, seen)
            if problem:
                verdict = Verdict(False, verdict.entries, verdict.head, problem)
        return verdict
    finally:
        db.close()
