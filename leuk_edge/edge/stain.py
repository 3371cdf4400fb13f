"""The stain model the cell finder (edge.detect) and the scale estimate (edge.scale) share, and their image helpers.

In a May-Grünwald-Giemsa/Wright stained smear, eosin colours red cells pink: they absorb green and some blue light;
nuclei, lymphocyte cytoplasm and platelets take basophilic dyes that absorb red light and let blue through. In
optical density (OD = -ln(I / background)) the red cells' absorbance is projected out with their own OD ratios
measured in each frame (see edge.detect's docstring for the formula). Its own module so that the arrows point one
way: detect -> scale -> stain, detect -> stain.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

RBC_RATIO_DEFAULT = 0.2  # red cells' OD_red / OD_green when a frame has too few of them to measure
RBC_RATIO_MAX = 0.42
BLUE_RATIO_DEFAULT = 0.8  # red cells' OD_blue / OD_green, likewise


def _od_luts(bg: np.ndarray) -> np.ndarray:
    """Per channel: grey level -> optical density relative to the background light."""
    levels = np.maximum(np.arange(256, dtype=np.float32), 0.5)
    return np.stack([np.log(max(float(b), 1.0) / levels) for b in bg]).astype(np.float32)


@dataclass(frozen=True)
class StainModel:
    """Per-frame optical-density model: the background light (as OD lookup tables) and the red cells' absorbance
    direction, as OD_red / OD_green and OD_blue / OD_green ratios measured on the red cells themselves."""
    luts: np.ndarray   # (3, 256) grey level -> OD per channel
    rbc_ratio: float   # red cells' OD_red / OD_green
    blue_ratio: float  # red cells' OD_blue / OD_green

    @classmethod
    def fit(cls, rgb: np.ndarray, rbc_ratio: float | None = None) -> StainModel:
        sample = rgb[::3, ::3].reshape(-1, 3)
        bg = np.percentile(sample, 98, axis=0)  # the brightest pixels: plasma between the red cells
        luts = _od_luts(bg)
        s_r, s_g, s_b = luts[0][sample[:, 0]], luts[1][sample[:, 1]], luts[2][sample[:, 2]]
        stained = s_g > 0.15
        ratio = s_r[stained] / s_g[stained]
        # Red cells: eosin absorbs green far more than red (ratio ~0.1-0.3; white cells 0.45-1).
        eosin = ratio < RBC_RATIO_MAX
        enough = eosin.sum() >= 0.02 * len(sample)
        if rbc_ratio is None:
            rbc_ratio = float(np.median(ratio[eosin])) if enough else RBC_RATIO_DEFAULT
        blue = float(np.median(s_b[stained][eosin] / s_g[stained][eosin])) if enough else BLUE_RATIO_DEFAULT
        return cls(luts, float(rbc_ratio), blue)

    def maps(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """RGB uint8 (..., 3) -> (stain, od_green) float32.

        `stain` is the absorbance that red cells do not explain, ~0 on red cells of any thickness and on plasma:
        the red light absorbed by basophilic dyes (nuclei, cytoplasm, platelets) plus the blue light a red cell
        of the same green absorbance would have absorbed but the (blue-violet) white cell lets through.
        `od_green` is the overall darkness."""
        od_r, od_g, od_b = (self.luts[c][rgb[..., c]] for c in range(3))
        return od_r - np.float32(self.rbc_ratio) * od_g + (np.float32(self.blue_ratio) * od_g - od_b), od_g


def downscale(rgb: np.ndarray, w: int, h: int) -> np.ndarray:
    """Anti-aliased downscale. OpenCV's INTER_AREA is fast only for integer factors: for large factors go
    linearly to twice the target, then area-average 2x2 (a 1280x720 frame: ~0.5 ms instead of ~3 ms)."""
    if rgb.shape[1] > 2 * w and rgb.shape[0] > 2 * h:
        rgb = cv2.resize(rgb, (2 * w, 2 * h), interpolation=cv2.INTER_LINEAR)
    return cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill enclosed holes (pale nucleoli, chromatin gaps) of a uint8 0/255 mask."""
    h, w = mask.shape
    flood = np.zeros((h + 2, w + 2), np.uint8)
    flood[1:-1, 1:-1] = mask
    ff = np.zeros((h + 4, w + 4), np.uint8)
    cv2.floodFill(flood, ff, (0, 0), 255)
    return mask | cv2.bitwise_not(flood[1:-1, 1:-1])
