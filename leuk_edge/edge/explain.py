"""Class-activation overlays: where the model looked when it scored a cell (`classify --cam DIR`, the report).

    clf = Classifier("model.onnx")              # a model exported with its `cam` output
    written = write_cam_overlays(clf, rows, "cam/")   # one PNG per flagged row (all rows with all_rows=True)

The map is the model's `cam` output (the class-activation map of the "all" logit on the last feature-map grid),
upsampled to the image, scaled to its own range and drawn as a heat map over the cell, with P(all) and the label
in the corner. A post-pass over finished rows: it re-reads only the files it draws, so the classify loop is
untouched and its speed unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import cv2
import numpy as np

from .preprocess import ImageReadError, decode_image

ALPHA = 0.45  # heat-map weight in the blend: the cell stays readable underneath
FONT = cv2.FONT_HERSHEY_SIMPLEX


def heat(cam: np.ndarray, height: int, width: int, positive_only: bool = False) -> np.ndarray:
    """A (h, w) map -> float32 (height, width) in [0, 1], scaled to the map's own min..max (a flat map is 0);
    `positive_only`: only the positive evidence, scaled 0..max (evaluate --explain shows the decision's side)."""
    cam = np.asarray(cam, np.float32)
    if positive_only:
        cam = np.maximum(cam, 0.0)
    up = cv2.resize(cam, (width, height), interpolation=cv2.INTER_CUBIC if min(cam.shape) > 1 else cv2.INTER_LINEAR)
    lo, hi = (0.0 if positive_only else float(cam.min())), float(cam.max())  # cubic overshoot is clipped to it
    if hi - lo < 1e-12:
        return np.zeros((height, width), np.float32)
    return np.clip((up - lo) / (hi - lo), 0.0, 1.0)


def blend(rgb: np.ndarray, cam: np.ndarray, positive_only: bool = False) -> np.ndarray:
    """RGB uint8 image + its cam map -> BGR uint8, the JET heat map laid over it (red = strongest evidence for
    `all`). The one overlay of classify --cam, the report and the station's review gallery."""
    h, w = rgb.shape[:2]
    colored = cv2.applyColorMap((255 * heat(cam, h, w, positive_only)).astype(np.uint8), cv2.COLORMAP_JET)
    return cv2.addWeighted(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), 1 - ALPHA, colored, ALPHA, 0)


def draw_overlay(rgb: np.ndarray, cam: np.ndarray, probability: float | None, label: str,
                 positive_only: bool = False) -> np.ndarray:
    """`blend`, with P(all) and the label in the corner (`label` alone when `probability` is None)."""
    h, w = rgb.shape[:2]
    bgr = blend(rgb, cam, positive_only)
    text = f"P(all) {probability:.2f}  {label}" if probability is not None else label
    scale = max(0.35, w / 600)
    (tw, th), base = cv2.getTextSize(text, FONT, scale, 1)
    pad = max(2, int(4 * scale))
    cv2.rectangle(bgr, (0, 0), (tw + 2 * pad, th + base + 2 * pad), (30, 30, 30), -1)
    cv2.putText(bgr, text, (pad, pad + th), FONT, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return bgr


@dataclass(frozen=True)
class Overlay:
    path: str            # the classified file
    image: np.ndarray    # BGR overlay


def iter_overlays(classifier, items: Sequence[tuple[str, float | None, str]], batch_size: int = 8
                  ) -> Iterable[Overlay | tuple[str, str]]:
    """(path, P(all), label) items -> an Overlay per readable file, or (path, reason) when it cannot be read.
    Batched like classify; the P(all) and label drawn are the given ones (the table's, TTA included)."""
    for i in range(0, len(items), batch_size):
        chunk, images = [], []
        for path, p, label in items[i:i + batch_size]:
            try:
                images.append(decode_image(path))
                chunk.append((path, p, label))
            except ImageReadError as exc:  # a file gone or changed since classify: say so, go on (bugs crash)
                yield path, str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if not chunk:
            continue
        _, cams = classifier.predict_rgb(images, cam=True)
        for (path, p, label), rgb, cam in zip(chunk, images, cams):
            yield Overlay(path, draw_overlay(rgb, cam, p, label))


def overlay_name(path: str | Path, taken: set[str]) -> str:
    """`<stem>.cam.png`, made unique (`<stem>_2.cam.png`, …) when files of the same name come from other folders."""
    stem = Path(path).stem or "image"
    name, k = f"{stem}.cam.png", 1
    while name in taken:
        k += 1
        name = f"{stem}_{k}.cam.png"
    taken.add(name)
    return name


def write_cam_overlays(classifier, rows: Iterable, out_dir: str | Path, all_rows: bool = False,
                       batch_size: int = 8) -> dict[str, Path]:
    """One overlay PNG in `out_dir` per flagged row (label "all"), or per classified row with `all_rows`.

    `rows` are classify rows (objects with path, label, probability and `ok`). Returns {row path: PNG path};
    files that can no longer be read are skipped (the table already holds their result).
    """
    if not classifier.has_cam:
        raise ValueError(f"{Path(classifier.path).name} has no 'cam' output; export it with `leuk-edge export --cam`")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    all_label = classifier.info.classes[1]
    items = [(r.path, r.probability, r.label) for r in rows
             if r.probability is not None and (all_rows or r.label == all_label)]
    written: dict[str, Path] = {}
    taken: set[str] = set()
    for result in iter_overlays(classifier, items, batch_size):
        if isinstance(result, Overlay):
            target = out / overlay_name(result.path, taken)
            if not cv2.imwrite(str(target), result.image):
                raise ValueError(f"cannot write {target}")
            written[result.path] = target
    return written
