"""Uploads: limits, the header checks that run BEFORE any decoder, and classify rows, in bounded memory.

`declared_size(head)` reads an image's width and height from its header alone (PNG IHDR, BMP info header, JPEG
SOF, TIFF first IFD). Before anything is decoded, an image is refused when its header declares more than
`max_pixels` pixels, or when the array the decoder would allocate (width x height x channels x bytes per sample,
16-bit counted as 2) is over the decode budget: a 308 KB PNG that declares 6300x6300 16-bit RGBA (303 MiB of
pixels) cannot take the station's memory. A file whose header is none of these is refused too: only what can be
checked is decoded.

Memory stays bounded by design: the uploaded files arrive in temporary files (the request router streams them
there), are copied in chunks into a temporary folder and classified through `edge.classify.classify_paths` (the
classify command's own path) with one decode worker; at most `Limits.decodes` requests decode at once (the
others wait their turn). The review gallery keeps a small copy of each classified upload, made from that one
decode: at most REVIEW_SIDE px on its longer side (never the whole image).
"""

from __future__ import annotations

import contextlib
import io
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import BinaryIO

import cv2
import numpy as np

from ..edge.classify import ERROR_LABEL, Row, StageTimes, classify_paths
from ..edge.image_headers import Layout, declared_layout
from ..edge.summary import ClassifySummary, scope_entry
from ..edge.writers import record

HEAD_BYTES = 1 << 20  # enough of a file to reach any of the headers below (JPEG: past EXIF and thumbnails)
COPY_CHUNK = 1 << 20
CNMC_SIDE = 450      # a C-NMC cell image: the review copy is never smaller than this (nor than the model's input)
REVIEW_SIDE = 1024   # ... and never larger than this


@dataclass(frozen=True)
class Limits:
    max_files: int = 200                 # files per request
    max_file_bytes: int = 25 << 20       # per file
    max_request_bytes: int = 200 << 20   # whole request
    max_pixels: int = 40_000_000         # declared width x height
    max_decode_bytes: int = 256 << 20    # declared width x height x channels x bytes per sample
    decodes: int = 2                     # requests decoding at once


class HeaderError(ValueError):
    """The header is not one this check understands, is cut short, or declares too much."""


def _layout(head: bytes) -> Layout:
    found = declared_layout(io.BytesIO(head))
    if found is None:
        raise HeaderError("not a PNG, JPEG, BMP or TIFF image, or its header is cut short")
    return found


def declared_size(head: bytes) -> tuple[int, int, str]:
    """(width, height, format) as the file's header declares them (the edge runner's own header reader);
    HeaderError when unknown or cut short."""
    found = _layout(head)
    return found.width, found.height, found.format


def check_header(head: bytes, limits: Limits) -> str:
    """The format of an acceptable image; HeaderError with a one-line reason otherwise (nothing decoded)."""
    d = _layout(head)
    w, h, fmt = d.width, d.height, d.format.upper()
    if w <= 0 or h <= 0:
        raise HeaderError(f"{fmt} declares an empty image ({w}x{h})")
    if w * h > limits.max_pixels:
        raise HeaderError(f"{fmt} declares {w}x{h} = {w * h / 1e6:.0f} Mpx, over the station's limit of "
                          f"{limits.max_pixels / 1e6:.0f} Mpx (refused before decoding)")
    if d.decode_bytes > limits.max_decode_bytes:
        raise HeaderError(f"{fmt} declares {w}x{h}, {d.channels} channel(s) of {8 * d.sample_bytes} bits = "
                          f"{d.decode_bytes / 2**20:.0f} MiB to decode, over the station's decode budget of "
                          f"{limits.max_decode_bytes / 2**20:.0f} MiB (--max-decode-mb; refused before decoding)")
    return d.format


def safe_name(name: str | None, i: int) -> str:
    """The client's file name, reduced to its last component (never used as a path on the station)."""
    base = PurePath((name or "").replace("\\", "/")).name
    return base[:200] or f"upload-{i}"


def review_copy(bgr: np.ndarray, model_side: int) -> np.ndarray:
    """RGB copy for the review gallery: the longer side scaled down (INTER_AREA) to at most
    min(REVIEW_SIDE, max(model_side, CNMC_SIDE)); smaller images are kept as they are."""
    side = min(REVIEW_SIDE, max(model_side, CNMC_SIDE))
    h, w = bgr.shape[:2]
    scale = side / max(h, w)
    if scale < 1:
        bgr = cv2.resize(bgr, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)  # a new array: the decoder's scratch buffer is reused


def _stage(files: list[tuple[str, BinaryIO]], tmp: Path, limits: Limits, rows: list) -> list[tuple[int, Path]]:
    """Header-checked uploads copied (in chunks) into `tmp`; the others become error rows in `rows`."""
    todo = []
    for i, (name, fh) in enumerate(files):
        fh.seek(0)
        try:
            fmt = check_header(fh.read(HEAD_BYTES), limits)
        except HeaderError as exc:
            rows[i] = Row(name, ERROR_LABEL, None, str(exc))
            continue
        path = tmp / f"{i:05d}.{fmt}"
        fh.seek(0)
        with open(path, "wb") as out:
            shutil.copyfileobj(fh, out, COPY_CHUNK)
        todo.append((i, path))
    return todo


def _classify(classifier, paths: list[Path], names: list[str], index: list[int], rows: list, limits: Limits,
              on_image, slots, times: StageTimes) -> None:
    """rows[index[k]] := the row of paths[k] (named names[index[k]]); the review copy of each classified image is
    made from its one decode and handed to `on_image(name, rgb, row)` as its row comes (only the batches in flight
    are held). One decode worker: with `slots`, at most that many images are decoded at once on the station."""
    copies: dict[int, np.ndarray] = {}
    side = max(classifier.size)
    keep = (lambda k, bgr: copies.__setitem__(k, review_copy(bgr, side))) if on_image else None
    with slots or contextlib.nullcontext():
        got = classify_paths(classifier, paths, times=times, workers=1, max_pixels=limits.max_pixels,
                             on_decoded=keep)
        for k, (i, row) in enumerate(zip(index, got)):
            rows[i] = Row(names[i], row.label, row.probability, row.error, row.ood)
            copy = copies.pop(k, None)
            if on_image is not None and row.ok:
                on_image(names[i], copy, rows[i])


def classify_files(classifier, files: list[tuple[str, BinaryIO]], limits: Limits, on_image=None,
                   slots: threading.Semaphore | None = None) -> dict:
    """[(name, seekable binary file)] -> {"rows": [...], "summary": {...}} in the classify contract. Bad files are
    error rows. `on_image(name, rgb, row)` gets each classified image's review copy (the gallery); `slots` bounds
    the requests that decode at once."""
    rows: list[Row | None] = [None] * len(files)
    times = StageTimes()
    with tempfile.TemporaryDirectory(prefix="leuk-station-") as tmp:
        todo = _stage(files, Path(tmp), limits, rows)
        _classify(classifier, [p for _, p in todo], [name for name, _ in files], [i for i, _ in todo], rows, limits,
                  on_image, slots, times)
    return summarize(rows, classifier, times)


def classify_folder(classifier, paths: list[Path], names: list[str], limits: Limits, on_image=None,
                    slots: threading.Semaphore | None = None) -> dict:
    """Images under --data-root (already confined to it) -> the same answer as uploads; rows named relatively.
    `on_image` and `slots` as for uploads."""
    rows: list[Row | None] = [None] * len(paths)
    todo = []
    for i, p in enumerate(paths):
        try:
            with open(p, "rb") as fh:
                check_header(fh.read(HEAD_BYTES), limits)
            todo.append(i)
        except (HeaderError, OSError) as exc:
            rows[i] = Row(names[i], ERROR_LABEL, None, str(exc))
    times = StageTimes()
    _classify(classifier, [paths[i] for i in todo], names, todo, rows, limits, on_image, slots, times)
    return summarize(rows, classifier, times)


def summarize(rows: list[Row], classifier, times: StageTimes) -> dict:
    s = ClassifySummary(providers=list(classifier.providers), times=times, model=str(classifier.path),
                        scope=scope_entry(classifier))
    s.extend(rows)
    return {"rows": [record(r) for r in rows], "summary": s.to_dict()}
