"""Row writers for the classify table (CSV, JSON, JSONL). Each row is flushed as it is written, so an
interrupted run keeps every finished row; the JSON array is closed on exit so the file stays valid JSON."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import IO

from .classify import TABLE_FIELDS, Row

FORMATS = ("csv", "json", "jsonl")
FIELDS = TABLE_FIELDS  # path,label,probability,ood,error


def infer_format(out: str | Path | None, fmt: str | None) -> str:
    """`--format` wins; otherwise the `--out` suffix (.json, .jsonl/.ndjson); otherwise CSV."""
    if fmt:
        fmt = fmt.lower()
        if fmt not in FORMATS:
            raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
        return fmt
    suffix = Path(out).suffix.lower() if out else ""
    return {".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl"}.get(suffix, "csv")


def _number(value: float | None) -> float | None:
    return None if value is None else round(float(value), 6)


def record(row: Row) -> dict:
    """A row as the JSON/JSONL tables (and the station's /api/classify) write it."""
    return {"path": row.path, "label": row.label, "probability": _number(row.probability),
            "ood": _number(row.ood), "error": row.error}


class RowWriter:
    """Base: owns the stream (a file it opened, or stdout which it leaves open). Use as a context manager."""

    def __init__(self, stream: IO[str], owned: bool):
        self.stream = stream
        self.owned = owned
        self.count = 0
        self.begin()

    def begin(self) -> None:
        pass

    def end(self) -> None:
        pass

    def _write(self, row: Row) -> None:
        raise NotImplementedError

    def write(self, row: Row) -> None:
        self._write(row)
        self.count += 1
        self.stream.flush()

    def close(self) -> None:
        if self.stream is None:
            return
        try:
            self.end()
            self.stream.flush()
        finally:
            if self.owned:
                self.stream.close()
            self.stream = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


class CsvWriter(RowWriter):
    def begin(self) -> None:
        self._csv = csv.writer(self.stream, lineterminator="\n")
        self._csv.writerow(FIELDS)
        self.stream.flush()

    def _write(self, row: Row) -> None:
        p, ood = ("" if v is None else f"{float(v):.6f}" for v in (row.probability, row.ood))
        self._csv.writerow([row.path, row.label, p, ood, row.error])


class JsonlWriter(RowWriter):
    def _write(self, row: Row) -> None:
        self.stream.write(json.dumps(record(row)) + "\n")


class JsonWriter(RowWriter):
    """A JSON array, one object per line; `]` is written on close, interrupted or not."""

    def begin(self) -> None:
        self.stream.write("[")
        self.stream.flush()

    def _write(self, row: Row) -> None:
        self.stream.write(("\n" if self.count == 0 else ",\n") + json.dumps(record(row)))

    def end(self) -> None:
        self.stream.write("\n]\n" if self.count else "]\n")


_WRITERS = {"csv": CsvWriter, "json": JsonWriter, "jsonl": JsonlWriter}


def open_writer(out: str | Path | None, fmt: str | None = None) -> RowWriter:
    """A writer to the file `out` (parents created), or to stdout when `out` is None or '-'."""
    fmt = infer_format(None if out in (None, "-") else out, fmt)
    if out is None or str(out) == "-":
        return _WRITERS[fmt](sys.stdout, owned=False)
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    return _WRITERS[fmt](open(path, "w", newline="", encoding="utf-8"), owned=True)
