"""The frame's scale (micrometres per pixel) when nobody gave it: measured on the red cells in the frame.

A dried, stained red cell is ~7.5 um across (a biological constant, +-0.5 um in health), and a smear field holds
dozens of them, so their size in pixels gives the scale. They overlap and touch, so single cells cannot simply be
segmented and measured; instead the red-cell mask is treated as a Boolean model of randomly placed discs of
diameter D: with q the uncovered fraction and C(h) the probability that two pixels h apart are both covered,

    ln((C(h) - 1 + 2q) / q^2) / -ln(q) = K(h / D),   K(u) = (2/pi) (acos u - u sqrt(1 - u^2))  (u < 1, else 0)

(K is the disc's normalised geometric covariogram; overlaps are accounted for exactly). D is where the left side
falls to 1/2 (u = 0.404). C(h) is computed with FFTs over the pixel pairs inside the frame that are not white
cells or platelets, so crops, portrait frames and rotations change nothing. On synthetic fields (synth.fields,
0.06-0.6 um/px) the measurement lies within ~8 % of the truth. Frames with too few red cells give no estimate; the
caller then falls back to an assumed field of view. (Real smears pack red cells less randomly than a Boolean model;
a systematic offset there would show as a constant factor against a stage micrometer.)
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .stain import StainModel, downscale, fill_holes

RBC_UM = 7.5            # median diameter of a red cell in a dried, stained smear
MIN_RBC = 12            # fewer red cells (equivalent count) in view: no estimate
_HALF_U = 0.4040        # K(u) = 0.5
_RBC_OD = 0.12          # green optical density of a red cell (its pale centre included)
_WHITE_STAIN = 0.12     # basophilic stain of white cells and platelets (edge.detect's cell threshold)
_MIN_D_PX = 9.0         # measure again at a finer resolution when red cells are smaller than this
_WINDOW = 384           # work pixels a side at most for the finer second look
_MAX_SHIFT = 48         # covariance up to this shift (work pixels): the half point lies at 0.4 D


@dataclass(frozen=True)
class ScaleEstimate:
    um_per_px: float    # micrometres per source pixel
    rbc_px: float       # median red-cell diameter in source pixels
    red_cells: int      # equivalent number of red cells in view (covered area / one cell's area)


def _radial_covariance(mask: np.ndarray, valid: np.ndarray | None, r_max: int) -> np.ndarray:
    """C(h) for h = 0..r_max: the fraction of pixel pairs h apart, both valid (inside the image and, if given,
    `valid`), that are both in `mask` (float32 0/1), averaged over directions; FFT autocorrelations."""
    h, w = mask.shape
    fh, fw = cv2.getOptimalDFTSize(h + r_max + 1), cv2.getOptimalDFTSize(w + r_max + 1)
    ys = np.r_[0:r_max + 1, fh - r_max:fh]
    xs = np.r_[0:r_max + 1, fw - r_max:fw]

    def auto(a: np.ndarray) -> np.ndarray:
        pad = np.zeros((fh, fw), np.float32)
        pad[:h, :w] = a
        f = cv2.dft(pad)  # packed (CCS) spectrum: ~5x faster than the complex output
        full = cv2.idft(cv2.mulSpectrums(f, f, 0, conjB=True), flags=cv2.DFT_REAL_OUTPUT | cv2.DFT_SCALE)
        return full[np.ix_(ys, xs)]

    dy = np.r_[0:r_max + 1, -r_max:0][:, None]
    dx = np.r_[0:r_max + 1, -r_max:0][None, :]
    rr = np.hypot(dy, dx)
    if valid is None:
        both, pairs = auto(mask), (h - np.abs(dy)) * (w - np.abs(dx)).astype(np.float64)  # exact pair counts
    else:
        both, pairs = auto(mask * valid), auto(valid)
    use = rr <= r_max
    ring = np.rint(rr[use]).astype(np.int64)
    num = np.bincount(ring, both[use], r_max + 1)
    return num / np.maximum(np.bincount(ring, pairs[use], r_max + 1), 1e-9)


def _disc_diameter(rgb: np.ndarray) -> tuple[float, float] | None:
    """(median red-cell diameter in pixels of `rgb`, covered fraction), or None without a clear answer."""
    stain = StainModel.fit(rgb)
    white, od_g = stain.maps(rgb)
    red = fill_holes(((od_g > _RBC_OD) & (white < _WHITE_STAIN)).astype(np.uint8) * 255)  # pale centres too
    # White cells and platelets are left out of the statistics (neither covered nor uncovered by red cells).
    stained = cv2.dilate((white > _WHITE_STAIN).astype(np.uint8), np.ones((5, 5), np.uint8))
    valid = None if not stained.any() else (stained == 0).astype(np.float32)
    r_max = min(min(rgb.shape[:2]) // 2, _MAX_SHIFT)
    c = _radial_covariance((red > 0).astype(np.float32), valid, r_max)
    p = float(c[0])
    q = 1.0 - p
    if p < 0.05 or q < 0.03:  # (almost) no red cells, or a solid red carpet: nothing to measure
        return None
    k = np.log(np.maximum((c - 1.0 + 2.0 * q) / (q * q), 1e-12)) / -np.log(q)
    below = np.nonzero(k < 0.5)[0]
    if len(below) == 0 or below[0] == 0:
        return None
    i = int(below[0])
    half = i - 1 + (k[i - 1] - 0.5) / max(k[i - 1] - k[i], 1e-9)
    return half / _HALF_U, p


def estimate_um_per_px(rgb: np.ndarray, work_side: int = 320) -> ScaleEstimate | None:
    """Micrometres per pixel of an RGB uint8 smear field from its red cells; None when too few are visible.

    Measured on the frame downscaled to about `work_side` pixels on its longer side (a few ms at 1280x720), and
    again at twice that resolution when the red cells come out smaller than ~9 px there."""
    H, W = rgb.shape[:2]
    s = min(1.0, work_side / max(H, W))
    while True:
        small = downscale(rgb, max(1, round(W * s)), max(1, round(H * s))) if s < 1.0 else rgb
        got = _disc_diameter(small)
        if got is None:
            return None
        d_small, covered = got
        if d_small >= _MIN_D_PX or s >= 1.0:
            break
        # Small red cells: again at the resolution that makes them ~12 px, on a central window of at most
        # _WINDOW px a side (hundreds of red cells: enough, and the FFT stays small).
        s = min(1.0, s * 12.0 / max(d_small, 1.0))
        ch, cw = min(H, int(_WINDOW / s)), min(W, int(_WINDOW / s))
        y0, x0 = (H - ch) // 2, (W - cw) // 2
        rgb, H, W = rgb[y0:y0 + ch, x0:x0 + cw], ch, cw
    d = d_small / s
    n = covered * H * W / (np.pi * d * d / 4)
    if n < MIN_RBC or not np.isfinite(d) or d <= 2:
        return None
    return ScaleEstimate(RBC_UM / d, float(d), int(n))
