"""Class-activation overlays: where the model looked when it scored a cell (`classify --cam DIR`, the report).

    clf = Classifier("model.onnx")              # a model exported with its `cam` output
    written = write_cam_overlays(clf, rows, "cam/")   # one PNG per flagged row (all rows with all_rows=True)

The map is the model's `cam` output (the class-activation map of the "all" logit on the last feature-map grid, in
logit units: positive = evidence for `all`, negative = for `hem`), upsampled to the image and drawn as SIGNED
evidence on ONE FIXED scale for every map: red where it speaks for `all`, blue where for `hem`, no tint where it is
zero, full colour at +-EVIDENCE_SCALE logit units. (Scaling each map to its own min..max painted the least negative
spot of a `hem` cell red.) P(all), the label and a legend of the scale are drawn on the overlay. A post-pass over finished rows: it re-reads only the files it draws, so the classify loop is
untouched and its speed unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import cv2
import numpy as np

from .preprocess import ImageReadError, decode_image

ALPHA = 0.6  # tint weight at full evidence: the cell stays readable underneath
EVIDENCE_SCALE = 4.0  # logit units drawn at full colour (4 logits move P(all) from 0.5 to 0.98); one for every map
FOR_ALL, FOR_HEM = np.array([0, 0, 255], np.float32), np.array([255, 0, 0], np.float32)  # BGR red, blue
FONT = cv2.FONT_HERSHEY_SIMPLEX


def evidence(cam: np.ndarray, height: int, width: int, positive_only: bool = False,
             scale: float = EVIDENCE_SCALE) -> np.ndarray:
    """A (h, w) map in logit units -> float32 (height, width) in [-1, 1]: the evidence over the fixed `scale`,
    clipped (+1 = `scale` or more for `all`, -1 for `hem`, 0 = none). `positive_only`: the evidence for `all`
    alone (evaluate --explain shows the decision's side)."""
    cam = np.asarray(cam, np.float32)
    up = cv2.resize(cam, (width, height), interpolation=cv2.INTER_CUBIC if min(cam.shape) > 1 else cv2.INTER_LINEAR)
    # Cubic overshoot must not invent evidence of the other sign: stay within the map's own range.
    up = np.clip(up, min(float(cam.min()), 0.0), max(float(cam.max()), 0.0))
    v = np.clip(up / scale, -1.0, 1.0)
    return np.maximum(v, 0.0) if positive_only else v


def blend(rgb: np.ndarray, cam: np.ndarray, positive_only: bool = False) -> np.ndarray:
    """RGB uint8 image + its cam map -> BGR uint8 with the signed evidence laid over it: red for `all`, blue for
    `hem`, tint weight ALPHA x |evidence| on the fixed EVIDENCE_SCALE (no tint where the map is zero). The one
    overlay of classify --cam, the report and the station's review gallery."""
    h, w = rgb.shape[:2]
    v = evidence(cam, h, w, positive_only)[..., None]
    colour = np.where(v > 0, FOR_ALL, FOR_HEM)
    a = ALPHA * np.abs(v)
    base = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR).astype(np.float32)
    return np.clip(np.rint(base * (1 - a) + colour * a), 0, 255).astype(np.uint8)


def draw_legend(bgr: np.ndarray, positive_only: bool = False) -> None:
    """A strip along the bottom, in place: the colour for -EVIDENCE_SCALE (hem) .. 0 .. +EVIDENCE_SCALE (all) over
    a mid grey, labelled when the image is wide enough."""
    h, w = bgr.shape[:2]
    strip = max(4, h // 20)
    ramp = np.linspace(0.0 if positive_only else -1.0, 1.0, w, dtype=np.float32)[None, :, None]
    grey = np.full((strip, w, 3), 128, np.float32)
    a = ALPHA * np.abs(ramp)
    bgr[h - strip:] = np.rint(grey * (1 - a) + np.where(ramp > 0, FOR_ALL, FOR_HEM) * a).astype(np.uint8)
    if w >= 160 and strip >= 8:
        # positive_only (evaluate --explain): the map may be negated to show the decision's side, so no class name
        left, right = ("0", f"+{EVIDENCE_SCALE:g}") if positive_only else \
            (f"hem -{EVIDENCE_SCALE:g}", f"+{EVIDENCE_SCALE:g} all")
        scale = strip / 24
        right_x = w - 2 - cv2.getTextSize(right, FONT, scale, 1)[0][0]
        for text, x in ((left, 2), (right, right_x)):
            cv2.putText(bgr, text, (x, h - 2), FONT, scale, (255, 255, 255), 1, cv2.LINE_AA)


def draw_overlay(rgb: np.ndarray, cam: np.ndarray, probability: float | None, label: str,
                 positive_only: bool = False) -> np.ndarray:
    """`blend`, with P(all) and the label in the corner (`label` alone when `probability` is None) and the
    legend of the fixed scale along the bottom."""
    h, w = rgb.shape[:2]
    bgr = blend(rgb, cam, positive_only)
    draw_legend(bgr, positive_only)
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
