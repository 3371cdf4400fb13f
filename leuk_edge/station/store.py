"""The station's durable state: one SQLite database (`FOLDER/station.db`, WAL, synchronous=FULL).

Slides, cells, reviews, signatures and the audit log live here; a write is committed (and the WAL synced) before
the request that made it is answered, so an acknowledged review survives `kill -9` or a power cut. One connection
and one lock: every write is one short transaction (`with db.write() as tx:`), reads take the same lock.
Crops stay files beside the database (`crops/SLIDE/ID.png`); rows name them relative to the folder.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from pathlib import Path

from . import audit

DB_NAME = "station.db"
LOCK_NAME = "station.lock"
SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS slides (
    id TEXT PRIMARY KEY, kind TEXT NOT NULL, source TEXT, created TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'open');
CREATE TABLE IF NOT EXISTS cells (
    id INTEGER PRIMARY KEY, slide TEXT NOT NULL REFERENCES slides(id), origin TEXT NOT NULL, name TEXT,
    track INTEGER, probability REAL NOT NULL, ood REAL, label TEXT NOT NULL, frames INTEGER NOT NULL,
    crop TEXT, cam TEXT, review TEXT, reviewer TEXT, reviewed_at TEXT);
CREATE INDEX IF NOT EXISTS cells_by_slide ON cells (slide, id);
CREATE TABLE IF NOT EXISTS reviews (
    id INTEGER PRIMARY KEY, cell INTEGER NOT NULL REFERENCES cells(id), slide TEXT NOT NULL, label TEXT NOT NULL,
    reviewer TEXT NOT NULL, time TEXT NOT NULL, amendment INTEGER, record TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS signatures (
    id INTEGER PRIMARY KEY, slide TEXT NOT NULL REFERENCES slides(id), version INTEGER NOT NULL,
    signed_by TEXT NOT NULL, signed_at TEXT NOT NULL, summary TEXT NOT NULL, fhir TEXT NOT NULL,
    UNIQUE (slide, version));
CREATE TRIGGER IF NOT EXISTS reviews_append_only BEFORE UPDATE ON reviews
    BEGIN SELECT RAISE(ABORT, 'reviews are append-only'); END;
CREATE TRIGGER IF NOT EXISTS signatures_append_only BEFORE UPDATE ON signatures
    BEGIN SELECT RAISE(ABORT, 'signatures are append-only'); END;
CREATE TRIGGER IF NOT EXISTS reviews_no_delete BEFORE DELETE ON reviews
    BEGIN SELECT RAISE(ABORT, 'reviews are append-only'); END;
CREATE TRIGGER IF NOT EXISTS signatures_no_delete BEFORE DELETE ON signatures
    BEGIN SELECT RAISE(ABORT, 'signatures are append-only'); END;
"""
CELL_COLUMNS = ("id", "slide", "origin", "name", "track", "probability", "ood", "label", "frames", "crop", "cam",
                "review", "reviewer", "reviewed_at")


class StoreError(ValueError):
    """The station database cannot be used (locked by another station, newer schema, not a database)."""


def _exclusive(path: Path):
    """One station per folder: an advisory lock held while the station runs (the OS drops it if the process dies,
    `kill -9` included). Two stations writing one folder would each think their slide is current."""
    fh = open(path, "a+")
    try:
        import fcntl

        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except ImportError:  # not POSIX: SQLite's own locking still keeps the database whole
        pass
    except OSError:
        fh.close()
        raise StoreError(f"another station is using {path.parent} (its {path.name} is locked)") from None
    return fh


class Tx:
    """One write transaction: the connection plus the audit chain's head."""

    def __init__(self, conn: sqlite3.Connection, db: StationDB):
        self.conn, self._db = conn, db

    def execute(self, sql: str, args=()) -> sqlite3.Cursor:
        return self.conn.execute(sql, args)

    def audit(self, time: str, actor: str | None, action: str, slide: str | None, detail: dict) -> tuple[int, str]:
        self._db._pending_head = audit.append(self.conn, self._db._pending_head, time, actor, action, slide, detail)
        return self._db._pending_head

    @property
    def audit_head(self) -> tuple[int, str]:
        return self._db._pending_head


class StationDB:
    def __init__(self, folder: str | Path):
        self.path = Path(folder) / DB_NAME
        self._hold = _exclusive(Path(folder) / LOCK_NAME)
        try:
            self._conn = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None,
                                         timeout=10)
            self._conn.row_factory = sqlite3.Row
            self._setup()
        except sqlite3.DatabaseError as exc:
            self._hold.close()
            raise StoreError(f"cannot use {self.path}: {exc}") from None
        self.lock = threading.RLock()
        self._pending_head = audit.head_of(self._conn)

    def _setup(self) -> None:
        c = self._conn
        if c.execute("PRAGMA journal_mode=WAL").fetchone()[0].lower() != "wal":
            raise StoreError(f"{self.path}: the file system does not support SQLite's WAL mode")
        c.execute("PRAGMA synchronous=FULL")  # the WAL is synced at every commit: committed = on disk
        c.execute("PRAGMA foreign_keys=ON")
        c.executescript(SCHEMA + audit.SCHEMA)
        row = c.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
        if row is None:
            c.execute("INSERT INTO meta (key, value) VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
        elif int(row[0]) > SCHEMA_VERSION:
            raise StoreError(f"{self.path} was written by a newer leuk-edge (schema {row[0]})")

    @contextlib.contextmanager
    def write(self):
        """A committed transaction, or none at all: BEGIN IMMEDIATE ... COMMIT under the station's lock."""
        with self.lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._pending_head = audit.head_of(self._conn)
                yield Tx(self._conn, self)
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def rows(self, sql: str, args=()) -> list[dict]:
        with self.lock:
            return [dict(r) for r in self._conn.execute(sql, args).fetchall()]

    def one(self, sql: str, args=()) -> dict | None:
        got = self.rows(sql, args)
        return got[0] if got else None

    def close(self) -> None:
        with self.lock:
            self._conn.close()
            self._hold.close()

    # --- named reads -------------------------------------------------------------------------------------------
    def meta(self, key: str) -> str | None:
        row = self.one("SELECT value FROM meta WHERE key=?", (key,))
        return row["value"] if row else None

    def slide(self, slide_id: str) -> dict | None:
        return self.one("SELECT * FROM slides WHERE id=?", (slide_id,))

    def cell(self, cell_id: int) -> dict | None:
        return self.one("SELECT * FROM cells WHERE id=?", (cell_id,))

    def cells_of(self, slide_id: str) -> list[dict]:
        return self.rows("SELECT * FROM cells WHERE slide=? ORDER BY id", (slide_id,))

    def signatures_of(self, slide_id: str) -> list[dict]:
        rows = self.rows("SELECT * FROM signatures WHERE slide=? ORDER BY version", (slide_id,))
        for r in rows:
            r["summary"], r["fhir"] = json.loads(r["summary"]), json.loads(r["fhir"])
        return rows

    def slide_list(self) -> list[dict]:
        """Every slide with its cell and review counts and its latest signer, oldest first."""
        return self.rows(
            "SELECT s.id, s.kind, s.source, s.created, s.state, "
            "(SELECT COUNT(*) FROM cells c WHERE c.slide = s.id) AS cells, "
            "(SELECT COUNT(*) FROM cells c WHERE c.slide = s.id AND c.review IS NOT NULL) AS reviewed, "
            "(SELECT signed_by FROM signatures g WHERE g.slide = s.id ORDER BY version DESC LIMIT 1) AS signed_by, "
            "(SELECT MAX(version) FROM signatures g WHERE g.slide = s.id) AS version "
            "FROM slides s ORDER BY s.created, s.rowid")

    def reviews_after(self, review_id: int) -> list[dict]:
        return self.rows("SELECT id, record FROM reviews WHERE id > ? ORDER BY id", (review_id,))


def set_meta(tx: Tx, key: str, value: str | None) -> None:
    tx.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
               (key, value))


def insert_cell(tx: Tx, cell: dict) -> int:
    cols = [k for k in CELL_COLUMNS if k in cell and k != "id"]
    cur = tx.execute(f"INSERT INTO cells ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                     [cell[k] for k in cols])
    return int(cur.lastrowid)


def update_cell(tx: Tx, cell_id: int, **values) -> None:
    bad = set(values) - set(CELL_COLUMNS)
    if bad:
        raise KeyError(f"no cell column {sorted(bad)}")
    sets = ", ".join(f"{k}=?" for k in values)
    tx.execute(f"UPDATE cells SET {sets} WHERE id=?", [*values.values(), cell_id])
