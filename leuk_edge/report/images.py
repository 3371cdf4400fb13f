"""Cell thumbnails and CAM overlays as `data:` URIs, so the report carries its images inside."""

from __future__ import annotations

import base64
from pathlib import Path

import cv2
import numpy as np

from ..edge.explain import iter_overlays
from ..edge.preprocess import decode_image
from .inputs import TableRow

THUMB = 128  # px, longest side


def data_uri(bgr: np.ndarray, size: int = THUMB) -> str:
    h, w = bgr.shape[:2]
    scale = size / max(h, w)
    if scale < 1:
        bgr = cv2.resize(bgr, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 85])
    if not ok:
        raise ValueError("cannot encode a thumbnail")
    return "data:image/jpeg;base64," + base64.b64encode(buf.tobytes()).decode("ascii")


def resolve(row: TableRow) -> Path | None:
    """The row's image: its path as written (relative to the working folder), else relative to the table's folder."""
    for p in (Path(row.path), Path(row.base) / row.path if row.base else None):
        if p is not None and p.is_file():
            return p
    return None


def thumbnails(rows: list[TableRow]) -> dict[str, str]:
    """{row path: data URI} for the rows whose image can still be read."""
    out = {}
    for r in rows:
        p = resolve(r)
        if p is None or r.path in out:
            continue
        try:
            out[r.path] = data_uri(cv2.cvtColor(decode_image(p), cv2.COLOR_RGB2BGR))
        except ValueError:
            continue
    return out


def cam_uris(classifier, rows: list[TableRow]) -> dict[str, str]:
    """{row path: data URI of its CAM overlay} computed with the model's `cam` output."""
    items, by_file = [], {}
    for r in rows:
        p = resolve(r)
        if p is not None and r.ok and str(p) not in by_file:
            by_file[str(p)] = r.path
            items.append((str(p), r.probability, r.label))
    out = {}
    for result in iter_overlays(classifier, items):
        if not isinstance(result, tuple):
            out[by_file[result.path]] = data_uri(result.image)
    return out


def overlay_uris(overlays: dict[str, str | Path]) -> dict[str, str]:
    """{row path: data URI} from overlay PNGs already written (`classify --cam DIR`)."""
    out = {}
    for path, png in overlays.items():
        img = cv2.imread(str(png), cv2.IMREAD_COLOR)
        if img is not None:
            out[path] = data_uri(img)
    return out
