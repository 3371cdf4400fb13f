"""Stain and camera shifts for evaluation: how a lab's slides can differ in colour from the training data.

The shifts the stain-robustness benchmark applies to validation cells (issue 16): hue +-8 degrees, saturation x0.65 /
x1.35, brightness x0.85 and a warm white balance (SHIFTS), and one beyond the training jitter (BEYOND_SHIFTS).
Each keeps the black background of a C-NMC tile black.
numpy + OpenCV only; RGB uint8 in, RGB uint8 out.
"""

from __future__ import annotations

import cv2
import numpy as np

SHIFTS = ("hue+8", "hue-8", "saturation*0.65", "saturation*1.35", "brightness*0.85", "warm_white_balance")
# Beyond the training jitter's saturation range (x0.6-1.4): what the benchmark reports to show the limit honestly.
BEYOND_SHIFTS = ("saturation*0.5",)
WARM_GAINS = (1.08, 1.0, 0.88)  # R, G, B: a lower colour temperature (tungsten-ish) than the training light


def _hsv_shift(rgb: np.ndarray, hue_deg: float = 0.0, sat: float = 1.0, val: float = 1.0) -> np.ndarray:
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV_FULL).astype(np.float32)  # H in 0..255 for 0..360 degrees
    hsv[..., 0] = np.mod(hsv[..., 0] + hue_deg * 256.0 / 360.0, 256.0)
    hsv[..., 1] = np.clip(hsv[..., 1] * sat, 0, 255)
    hsv[..., 2] = np.clip(hsv[..., 2] * val, 0, 255)
    return cv2.cvtColor(np.round(hsv).astype(np.uint8), cv2.COLOR_HSV2RGB_FULL)


def shift_stain(rgb: np.ndarray, shift: str) -> np.ndarray:
    """Apply one of SHIFTS to an RGB uint8 image."""
    if shift.startswith("hue"):
        return _hsv_shift(rgb, hue_deg=float(shift[3:]))
    if shift.startswith("saturation*"):
        return _hsv_shift(rgb, sat=float(shift.split("*")[1]))
    if shift.startswith("brightness*"):
        return _hsv_shift(rgb, val=float(shift.split("*")[1]))
    if shift == "warm_white_balance":
        return np.clip(rgb.astype(np.float32) * np.float32(WARM_GAINS), 0, 255).round().astype(np.uint8)
    raise ValueError(f"unknown stain shift {shift!r}; choose one of {', '.join(SHIFTS)}")
