"""Uploads: limits, the declared-dimension check that runs BEFORE any decoder, and classify rows.

`declared_size(head)` reads an image's width and height from its header alone (PNG IHDR, BMP info header, JPEG
SOF, TIFF first IFD); an image that declares more than `max_pixels` is refused without decoding, so a tiny file
that claims 20000x20000 cannot make the station allocate gigabytes. A file whose header is none of these is
refused too: only what can be checked is decoded. The bytes go to a temporary folder, are classified through
`edge.classify.classify_paths` (the classify command's own path) and are deleted.
"""

from __future__ import annotations

import io
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePath

from ..edge.classify import ERROR_LABEL, Row, StageTimes, classify_paths
from ..edge.image_headers import header_dims
from ..edge.preprocess import decode_image
from ..edge.summary import ClassifySummary, scope_entry
from ..edge.writers import record

HEAD_BYTES = 1 << 20  # enough of a file to reach any of the headers below (JPEG: past EXIF and thumbnails)


@dataclass(frozen=True)
class Limits:
    max_files: int = 200               # files per request
    max_file_bytes: int = 25 << 20     # per file
    max_request_bytes: int = 200 << 20  # whole request
    max_pixels: int = 40_000_000       # declared width x height


class HeaderError(ValueError):
    """The header is not one this check understands, or is cut short."""


def declared_size(head: bytes) -> tuple[int, int, str]:
    """(width, height, format) as the file's header declares them (the edge runner's own header reader);
    HeaderError when unknown or cut short."""
    found = header_dims(io.BytesIO(head))
    if found is None:
        raise HeaderError("not a PNG, JPEG, BMP or TIFF image, or its header is cut short")
    return found


def check_dimensions(head: bytes, max_pixels: int) -> str:
    """The format of an acceptable image; ValueError with a one-line reason otherwise."""
    w, h, fmt = declared_size(head)
    if w <= 0 or h <= 0:
        raise HeaderError(f"{fmt.upper()} declares an empty image ({w}x{h})")
    if w * h > max_pixels:
        raise HeaderError(f"{fmt.upper()} declares {w}x{h} = {w * h / 1e6:.0f} Mpx, over the station's limit of "
                          f"{max_pixels / 1e6:.0f} Mpx (refused before decoding)")
    return fmt


def safe_name(name: str | None, i: int) -> str:
    """The client's file name, reduced to its last component (never used as a path on the station)."""
    base = PurePath((name or "").replace("\\", "/")).name
    return base[:200] or f"upload-{i}"


def classify_files(classifier, files: list[tuple[str, bytes]], max_pixels: int, on_image=None) -> dict:
    """[(name, bytes)] -> {"rows": [...], "summary": {...}} in the classify contract. Bad files are error rows.
    `on_image(name, rgb, probability)` is called for each classified image (the review gallery)."""
    rows: list[Row | None] = [None] * len(files)
    todo: list[tuple[int, Path]] = []
    times = StageTimes()
    with tempfile.TemporaryDirectory(prefix="leuk-station-") as tmp:
        for i, (name, data) in enumerate(files):
            try:
                fmt = check_dimensions(data[:HEAD_BYTES], max_pixels)
            except HeaderError as exc:
                rows[i] = Row(name, ERROR_LABEL, None, str(exc))
                continue
            path = Path(tmp) / f"{i:05d}.{fmt}"
            path.write_bytes(data)
            todo.append((i, path))
        for (i, path), row in zip(todo, classify_paths(classifier, [p for _, p in todo], times=times,
                                                               max_pixels=max_pixels)):
            rows[i] = Row(files[i][0], row.label, row.probability, row.error, row.ood)
            if on_image is not None and row.ok:
                on_image(files[i][0], decode_image(path), float(row.probability))
    return summarize(rows, classifier, times)


def classify_folder(classifier, paths: list[Path], names: list[str], max_pixels: int) -> dict:
    """Images under --data-root (already confined to it) -> the same answer as uploads; rows named relatively."""
    rows: list[Row | None] = [None] * len(paths)
    todo = []
    for i, p in enumerate(paths):
        try:
            with open(p, "rb") as fh:
                check_dimensions(fh.read(HEAD_BYTES), max_pixels)
            todo.append(i)
        except (HeaderError, OSError) as exc:
            rows[i] = Row(names[i], ERROR_LABEL, None, str(exc))
    times = StageTimes()
    for i, row in zip(todo, classify_paths(classifier, [paths[i] for i in todo], times=times,
                                                     max_pixels=max_pixels)):
        rows[i] = Row(names[i], row.label, row.probability, row.error, row.ood)
    return summarize(rows, classifier, times)


def summarize(rows: list[Row], classifier, times: StageTimes) -> dict:
    s = ClassifySummary(providers=list(classifier.providers), times=times, model=str(classifier.path),
                        scope=scope_entry(classifier))
    s.extend(rows)
    return {"rows": [record(r) for r in rows], "summary": s.to_dict()}
