"""Annotated frames for the stream: boxes coloured by class with P(all), running counts, blast fraction, fps;
an optional window (the recorder is edge.recording) (only where OpenCV has a GUI and a display exists)."""

from __future__ import annotations

import os
import sys

import cv2
import numpy as np

from .summary import blast_fraction

# BGR. Blasts red, normal cells green: both stand out against pink red cells and pale plasma; out-of-scope cells
# (`other`: not counted) grey-blue, so they read as set aside.
COLORS = {"all": (40, 40, 220), "hem": (40, 160, 20), "other": (150, 120, 90)}
HUD_BG = (40, 30, 30)
FONT = cv2.FONT_HERSHEY_SIMPLEX


def _text(img, text, org, scale, color, thick=1):
    cv2.putText(img, text, org, FONT, scale, color, thick, cv2.LINE_AA)


def annotate(result, counts: dict | None = None, fps: float = 0.0, dropped: int = 0) -> np.ndarray:
    """FrameResult -> annotated BGR frame (a new array; the frame's RGB image is untouched)."""
    bgr = cv2.cvtColor(result.frame.image, cv2.COLOR_RGB2BGR)
    h, w = bgr.shape[:2]
    scale = max(0.4, h / 1200)
    thick = max(2, int(round(h / 360)))
    for cell in result.cells:
        x, y, bw, bh = cell.box
        color = COLORS.get(cell.label, (200, 200, 200))
        cv2.rectangle(bgr, (x, y), (x + bw - 1, y + bh - 1), color, thick)
        label = f"{cell.label} {cell.probability:.2f}"
        (tw, th), base = cv2.getTextSize(label, FONT, scale, 1)
        ty = y - 4 if y - th - base - 4 >= 0 else y + bh + th + 4
        cv2.rectangle(bgr, (x, ty - th - 3), (x + tw + 4, ty + base - 1), color, -1)
        _text(bgr, label, (x + 2, ty - 1), scale, (255, 255, 255))
    counts = counts or {}
    frac = blast_fraction(counts.get("all", 0), counts.get("hem", 0))  # `other` is never in it
    lines = [f"cells  all {counts.get('all', 0)}  hem {counts.get('hem', 0)}  other {counts.get('other', 0)}  "
             f"blast fraction {'-' if frac is None else f'{100 * frac:.0f}%'}",
             f"frame {result.frame.index}  {fps:.1f} fps  in view {len(result.cells)}"
             + (f"  dropped {dropped}" if dropped else "")]
    (lw, lh), _ = cv2.getTextSize(max(lines, key=len), FONT, scale, 1)
    pad = int(6 * scale / 0.6)
    cv2.rectangle(bgr, (0, 0), (lw + 2 * pad, (lh + pad) * len(lines) + pad), HUD_BG, -1)
    for i, line in enumerate(lines):
        _text(bgr, line, (pad, (lh + pad) * (i + 1)), scale, (255, 255, 255))
    _text(bgr, "Research use only - not a diagnostic device", (pad, h - pad), scale * 0.8, HUD_BG)
    return bgr


def display_available() -> bool:
    """A GUI-enabled OpenCV and a display to put a window on."""
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return False
    try:
        info = cv2.getBuildInformation()
    except cv2.error:
        return False
    gui = [ln for ln in info.splitlines() if ln.strip().startswith("GUI:")]
    return not gui or "NONE" not in gui[0].upper()


class Window:
    """`--show`: a window with the annotated stream; q or Esc closes it (and ends the run). HighGUI wants one
    thread (on macOS the main one): the publish stage draws, the stream's own thread shows (`gui_thread_only`)."""
    gui_thread_only = True

    def __init__(self, title: str = "leuk-edge stream"):
        self.title = title
        cv2.namedWindow(self.title, cv2.WINDOW_NORMAL)

    def show(self, bgr: np.ndarray) -> bool:
        cv2.imshow(self.title, bgr)
        key = cv2.waitKey(1) & 0xFF
        return key not in (ord("q"), 27)

    def close(self) -> None:
        try:
            cv2.destroyWindow(self.title)
            cv2.waitKey(1)
        except cv2.error:
            pass
