"""Cells and objects the C-NMC model has never seen, drawn the C-NMC way, to show the out-of-scope problem.

FOR TESTS AND EVALUATION ONLY. Never train the classifier on these, nor fit the scope model on them: a model that
learns them learns this renderer, not blood. The scope model is fitted on in-scope training cells alone; these
drawings measure how well it flags what it has never seen.

Kinds; SIZE_UM gives the drawn size in micrometres (after standard haematology atlases, Wright/May-Grünwald-Giemsa):
  neutrophil      10-12 across: 3-5 nucleus lobes joined by thin chromatin strands, dense clumped chromatin;
                  pale pink-lilac, finely granular cytoplasm
  eosinophil      12-17: usually two lobes ("spectacles"), sometimes three; cytoplasm packed with round orange-red
                  granules
  monocyte        15-20: folded kidney/horseshoe nucleus, often off centre, lacy chromatin; grey-blue ground-glass
                  cytoplasm with vacuoles
  basophil        10-14: a pale lobed nucleus obscured by coarse purple-black granules
  rbc_clump       2-5 overlapping red cells, each 6.5-8.5: pink discs with central pallor, darker where they overlap
  platelet_clump  4-14 platelets, each 1.5-3, aggregated in a pale matrix
  debris          3-10: stain precipitate (dark, granular, ragged) or a smudged broken cell (pale streaked chromatin)
  disc            10-18: a uniform disc of one colour (a hand-made test image: plainly not a cell)
  checkerboard    squares of 1.5-4 filling the whole tile (a hand-made test image: plainly not a cell)

They are drawn on the scale of synth.cells (a 450 px tile spans 30 um: 15 px/um), with its stain palette and its
per-slide stain (Stain), segmented on black like the C-NMC tiles: neither the background nor the overall colour
tells them from lymphoid cells; their shape, texture and size do. `render_other` draws one object at any scale
(synth.fields puts them in microscope fields); `draw_other` makes a tile; `write_out_of_scope` writes a folder.
numpy + OpenCV only. Stand-in data: no medical claim can rest on it.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..edge.detect import CNMC_CANVAS_UM
from .cells import CELL_CANVAS, SYNTHETIC_MARKER, Stain, paste_centred, write_bmp
from .smear import OD_PLATELET, OD_RBC, platelet_template, rbc_template

PX_PER_UM = CELL_CANVAS / CNMC_CANVAS_UM  # 15 px per micrometre in a C-NMC tile
LEUKOCYTE_KINDS = ("neutrophil", "eosinophil", "monocyte", "basophil")
ARTEFACT_KINDS = ("rbc_clump", "platelet_clump", "debris")
PATTERN_KINDS = ("disc", "checkerboard")  # hand-made test images, plainly not cells
KINDS = LEUKOCYTE_KINDS + ARTEFACT_KINDS + PATTERN_KINDS
# Drawn size (um): the object's diameter; for clumps each member's; for the checkerboard the side of a square.
SIZE_UM = {"neutrophil": (10.0, 12.0), "eosinophil": (12.0, 17.0), "monocyte": (15.0, 20.0),
           "basophil": (10.0, 14.0), "rbc_clump": (6.5, 8.5), "platelet_clump": (1.5, 3.0), "debris": (3.0, 10.0),
           "disc": (10.0, 18.0), "checkerboard": (1.5, 4.0)}
# Members of a clump, nucleus lobes of a granulocyte (inclusive ranges).
PARTS = {"neutrophil": (3, 5), "eosinophil": (2, 3), "rbc_clump": (2, 5), "platelet_clump": (4, 14)}
# Flat colours of the hand-made test images: the lymphoid nucleus and cytoplasm of synth.cells, red-cell pink, ...
PATTERN_COLOURS = ((112, 58, 150), (178, 160, 212), (225, 155, 168), (150, 150, 150), (70, 90, 170),
                   (235, 235, 235))
ONLY_FOR_EVALUATION = ("Drawn out-of-scope cells for tests and evaluation ONLY: never train the classifier or fit "
                       "the scope model on them (it would learn this renderer, not blood).")


@dataclass
class Drawn:
    """One drawn object: rgb uint8 (S, S, 3), black outside it; its mask and its nucleus mask (float32 0..1, the
    nucleus all zero when it has none); the drawn size (SIZE_UM's meaning) and parts (lobes or clump members)."""
    rgb: np.ndarray
    cell: np.ndarray
    nucleus: np.ndarray
    kind: str
    size_um: float
    parts: int = 1


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown out-of-scope kind {kind!r}; one of: {', '.join(KINDS)}")


def render_other(rng: np.random.Generator, kind: str, stain: Stain | None = None, size_um: float | None = None,
                 px_per_um: float = PX_PER_UM) -> Drawn:
    """Draw one object of `kind` at `px_per_um` (default: the C-NMC tile's 15 px/um); `size_um` fixes its size
    (SIZE_UM's meaning), else drawn from SIZE_UM. For tests and evaluation only (see the module docstring)."""
    _check_kind(kind)
    stain = stain or Stain()
    lo, hi = SIZE_UM[kind]
    size_um = float(rng.uniform(lo, hi) if size_um is None else size_um)
    if size_um <= 0 or px_per_um <= 0:
        raise ValueError("size and scale must be positive")
    if kind in PATTERN_KINDS:
        return _PATTERNS[kind](rng, size_um, px_per_um)
    drawn = _DRAWERS[kind](rng, size_um, px_per_um)
    drawn.rgb = _finish(rng, drawn.rgb, drawn.cell, stain, px_per_um)
    return drawn


def draw_other_tile(kind: str, rng: np.random.Generator, stain: Stain | None = None):
    """A C-NMC-style 450x450 tile of `kind` -> (rgb uint8, object mask bool, nucleus mask bool). The stain is a
    random slide's (Stain.random) unless given. For tests and evaluation only."""
    _check_kind(kind)
    drawn = render_other(rng, kind, stain if stain is not None else Stain.random(rng))
    canvas, (cell, nucleus) = paste_centred(rng, drawn.rgb, drawn.cell, drawn.nucleus)
    return canvas, cell, nucleus


def draw_other(kind: str, rng: np.random.Generator, size: int = CELL_CANVAS) -> np.ndarray:
    """A C-NMC-style tile of `kind` resized to size x size (area-averaged down, as the models' resize) -> RGB
    uint8. For tests and evaluation only: never train on it."""
    if size < 8:
        raise ValueError("size must be at least 8 pixels")
    rgb = draw_other_tile(kind, rng)[0]
    if size == CELL_CANVAS:
        return rgb
    return cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA if size < CELL_CANVAS else cv2.INTER_CUBIC)


def write_out_of_scope(root: str | Path, n_per_kind: int, size: int = CELL_CANVAS, seed: int = 0,
                       kinds=KINDS) -> list[tuple[Path, str]]:
    """Write ROOT/<kind>/<kind>_NNNN.png (n_per_kind of each kind), ROOT/index.csv (path, kind) and the synthetic
    marker; returns [(path, kind)]. Each kind has its own random stream (seed, kind): asking for fewer kinds
    leaves the others' images as they were. For tests and evaluation ONLY: never train on them."""
    if n_per_kind < 1:
        raise ValueError("--per-kind must be at least 1")
    if size < 8:
        raise ValueError("--size must be at least 8 pixels")
    if not kinds:
        raise ValueError("no kinds asked for")
    for kind in kinds:
        _check_kind(kind)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    out = []
    for kind in kinds:
        rng = np.random.default_rng([seed, KINDS.index(kind)])
        for i in range(n_per_kind):
            path = root / kind / f"{kind}_{i:04d}.png"
            write_bmp(path, draw_other(kind, rng, size))
            out.append((path, kind))
    with open(root / "index.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "kind"])
        w.writerows((p.relative_to(root).as_posix(), k) for p, k in out)
    (root / SYNTHETIC_MARKER).write_text(f"Synthetic out-of-scope cells written by leuk-edge (seed {seed}). "
                                         f"{ONLY_FOR_EVALUATION} Not real cells: no medical claim can rest on it.\n")
    return out


# ---------------------------------------------------------------------------------------------------- shapes

def _sheet(diameter_um: float, px: float, extra: float = 1.35):
    """Side of a square sheet for an object `diameter_um` across, and its centre."""
    size = int(diameter_um * px * extra) + 6
    return size, (size / 2, size / 2)


def _blob(size: int, c, r: float, rng, wobble: float, elong: float = 1.0, angle: float = 0.0,
          notch: float = 0.0, notch_width: float = 0.3) -> np.ndarray:
    """A filled irregular blob (float32 0/1): an ellipse of mean radius r (axes r*elong, r/elong at `angle`), its
    radius modulated by low harmonics, with an optional broad indentation (a kidney's hilum) on its long side."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    dx, dy = xx - c[0], yy - c[1]
    u = (dx * math.cos(angle) + dy * math.sin(angle)) / elong
    v = (-dx * math.sin(angle) + dy * math.cos(angle)) * elong
    theta = np.arctan2(v, u)
    rr = np.ones_like(theta)
    for k in range(2, 6):
        rr += wobble / k * rng.uniform(0.3, 1.0) * np.sin(k * theta + rng.uniform(0, 2 * math.pi))
    if notch > 0:
        rr -= notch * np.exp(-((np.angle(np.exp(1j * (theta - math.pi / 2)))) ** 2) / notch_width)
    return (np.hypot(u, v) <= r * rr).astype(np.float32)


def _noise(rng, size: int, blob_px: float) -> np.ndarray:
    """Smooth zero-mean noise with blobs about blob_px across."""
    n = int(np.clip(size / max(blob_px, 1.0), 2, size))
    small = rng.standard_normal((n, n)).astype(np.float32)
    return cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC)


def _spots(rng, where: np.ndarray, r_px: float, coverage: float) -> np.ndarray:
    """Round granules (float32 0..1) scattered over `where` until they cover about `coverage` of it."""
    ys, xs = np.nonzero(where > 0.5)
    out = np.zeros(where.shape, np.uint8)
    if len(ys) == 0 or coverage <= 0:
        return out.astype(np.float32)
    n = int(coverage * len(ys) / (math.pi * r_px * r_px))
    pick = rng.integers(len(ys), size=n)
    radii = r_px * rng.uniform(0.75, 1.25, n)
    jit = rng.uniform(-0.5, 0.5, (n, 2))
    for k in range(n):  # quarter-pixel precision (shift=2): granules of about 1 px stay round in fields
        centre = (int((xs[pick[k]] + jit[k, 0]) * 4), int((ys[pick[k]] + jit[k, 1]) * 4))
        cv2.circle(out, centre, max(1, int(radii[k] * 4)), 255, -1, cv2.LINE_AA, 2)
    return out.astype(np.float32) / 255.0 * (where > 0.5)


def _lobes(rng, size: int, c, px: float, n: int, a_um: float, b_um: float, gap_um: float, max_ring_um: float,
           strand_um: float) -> np.ndarray:
    """A segmented nucleus (float32 0/1): n elliptic lobes (semi-axes a along the chain, b across) strung on an
    arc with `gap_um` between neighbours, joined centre to centre by chromatin strands `strand_um` thick."""
    if n == 2:
        closing = a_um + gap_um / 2   # two lobes close no ring: this is half their centre distance
    else:
        closing = (2 * a_um + gap_um) / (2 * math.sin(math.pi / n))  # radius at which n lobes would close a ring
    ring = closing * rng.uniform(1.15, 1.5)
    if ring > max_ring_um:  # the cell is too small for these lobes: shrink them
        ring = max_ring_um
        a_um = max(0.8, (ring / 1.15 * (2 * math.sin(math.pi / n) if n > 2 else 2) - gap_um) / 2)
    step = 2 * math.asin(min(1.0, (2 * a_um + gap_um) / (2 * ring)))
    angles = rng.uniform(0, 2 * math.pi) + rng.choice([-1, 1]) * step * np.arange(n)
    centres = np.stack([np.cos(angles), np.sin(angles)], 1) * ring
    centres = (centres - centres.mean(0) + rng.normal(0, 0.3, 2)) * px + np.asarray(c)
    mask = np.zeros((size, size), np.uint8)
    for k, (x, y) in enumerate(centres):
        axes = (int(a_um * rng.uniform(0.9, 1.1) * px * 4), int(b_um * rng.uniform(0.9, 1.1) * px * 4))
        tangent = math.degrees(angles[k]) + 90
        cv2.ellipse(mask, (int(x * 4), int(y * 4)), axes, tangent, 0, 360, 255, -1, cv2.LINE_AA, 2)
    thick = max(1, int(round(strand_um * px)))
    for (x0, y0), (x1, y1) in zip(centres[:-1], centres[1:]):
        cv2.line(mask, (int(x0 * 4), int(y0 * 4)), (int(x1 * 4), int(y1 * 4)), 255, thick, cv2.LINE_AA, 2)
    return (mask > 127).astype(np.float32)


def _paint(img: np.ndarray, where: np.ndarray, rgb, shade: np.ndarray | float = 1.0) -> np.ndarray:
    """img with `where` (0..1) painted in colour rgb divided by `shade` (darker where shade > 1)."""
    w = where[..., None]
    colour = np.asarray(rgb, np.float32) / (shade[..., None] if isinstance(shade, np.ndarray) else shade)
    return img * (1 - w) + w * colour


def _colour(rng, rgb, sd: float = 8.0) -> np.ndarray:
    return np.asarray(rgb, np.float32) + rng.normal(0, sd, 3).astype(np.float32)


def _finish(rng, img: np.ndarray, cell: np.ndarray, stain: Stain, px: float) -> np.ndarray:
    """Stain cast, optical blur, camera noise and the black segmentation background, as synth.cells does."""
    img = img * np.array(stain.tint, np.float32) * stain.brightness
    img = cv2.GaussianBlur(img, (0, 0), max(0.6, px / PX_PER_UM))
    img += rng.normal(0, 4, img.shape).astype(np.float32) * cell[..., None]
    img *= cell[..., None]
    return np.clip(img, 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------------------------- leukocytes

def _neutrophil(rng, d_um: float, px: float) -> Drawn:
    size, c = _sheet(d_um, px)
    r = d_um / 2
    cell = _blob(size, c, r * px, rng, wobble=rng.uniform(0.03, 0.08))
    n = int(rng.integers(PARTS["neutrophil"][0], PARTS["neutrophil"][1] + 1))
    b = rng.uniform(1.0, 1.25)
    nuc = _lobes(rng, size, c, px, n, a_um=rng.uniform(1.3, 1.7) * (1 - 0.06 * (n - 3)), b_um=b,
                 gap_um=rng.uniform(0.4, 1.0), max_ring_um=0.82 * r - b, strand_um=rng.uniform(0.35, 0.6)) * cell
    cyto = _colour(rng, (202, 180, 210), 6)
    img = _paint(np.zeros((size, size, 3), np.float32), cell, cyto)
    grains = _spots(rng, cell * (1 - nuc), rng.uniform(0.15, 0.22) * px, rng.uniform(0.35, 0.55))
    img = _paint(img, 0.55 * grains, cyto * np.array([0.86, 0.80, 0.88], np.float32))  # fine lilac granules
    chroma = 0.9 * _noise(rng, size, 1.2 * px) + 0.2 * _noise(rng, size, 0.4 * px)  # dense, clumped
    img = _paint(img, nuc, _colour(rng, (96, 46, 130)), 1.0 + 0.16 * np.clip(chroma, -2.5, 2.5))
    return Drawn(img, cell, nuc, "neutrophil", d_um, n)


def _eosinophil(rng, d_um: float, px: float) -> Drawn:
    size, c = _sheet(d_um, px)
    r = d_um / 2
    cell = _blob(size, c, r * px, rng, wobble=rng.uniform(0.03, 0.08))
    n = 2 if rng.random() < 0.8 else 3
    b = rng.uniform(1.25, 1.6)
    nuc = _lobes(rng, size, c, px, n, a_um=rng.uniform(1.7, 2.2), b_um=b, gap_um=rng.uniform(0.6, 1.2),
                 max_ring_um=0.8 * r - b, strand_um=rng.uniform(0.4, 0.7)) * cell
    img = _paint(np.zeros((size, size, 3), np.float32), cell, _colour(rng, (228, 172, 152)))
    grains = _spots(rng, cell * (1 - nuc), rng.uniform(0.35, 0.5) * px, rng.uniform(0.8, 1.0))
    # Refractile granules: a little lighter at their centres than at their rims.
    rim = 1.0 + 0.12 * (grains - cv2.GaussianBlur(grains, (0, 0), max(0.5, 0.25 * px)))
    img = _paint(img, 0.9 * grains, _colour(rng, (222, 108, 78)), rim)
    chroma = 0.6 * _noise(rng, size, 1.0 * px) + 0.2 * _noise(rng, size, 0.4 * px)
    img = _paint(img, nuc, _colour(rng, (108, 58, 145)), 1.0 + 0.16 * np.clip(chroma, -2.5, 2.5))
    return Drawn(img, cell, nuc, "eosinophil", d_um, n)


def _monocyte(rng, d_um: float, px: float) -> Drawn:
    size, c = _sheet(d_um, px)
    r = d_um / 2
    cell = _blob(size, c, r * px, rng, wobble=rng.uniform(0.04, 0.10))
    angle = rng.uniform(0, 2 * math.pi)
    elong = rng.uniform(1.2, 1.4)
    nr = r * rng.uniform(0.56, 0.62)  # its long semi-axis (nr * elong) stays inside the cell
    shift = (r - nr) * rng.uniform(0.2, 0.5)  # eccentric, its hilum (on the +v side) facing the cell's centre
    nc = (c[0] + shift * px * math.sin(angle), c[1] - shift * px * math.cos(angle))
    nuc = _blob(size, nc, nr * px, rng, wobble=rng.uniform(0.04, 0.08), elong=elong, angle=angle)
    nuc = _bite(nuc, nc, nr * px, elong, angle, rng.uniform(0.6, 0.9), rng.uniform(0.2, 0.45)) * cell
    cyto = _colour(rng, (166, 158, 200))
    glass = 1.0 + 0.04 * _noise(rng, size, 0.5 * px)  # ground-glass cytoplasm
    img = _paint(np.zeros((size, size, 3), np.float32), cell, cyto, glass)
    img = _paint(img, 0.5 * _spots(rng, cell * (1 - nuc), 0.15 * px, rng.uniform(0.03, 0.1)), (190, 140, 190))
    img = _paint(img, _vacuoles(rng, cell * (1 - nuc), px), _colour(rng, (222, 220, 236), 4))
    lace = np.exp(-(_noise(rng, size, 1.0 * px) / 0.3) ** 2)  # a fine network of chromatin strands
    shade = 1.0 + 0.28 * lace + 0.08 * np.clip(_noise(rng, size, 0.4 * px), -2.5, 2.5)
    img = _paint(img, nuc, _colour(rng, (132, 84, 168)), shade)
    return Drawn(img, cell, nuc, "monocyte", d_um)


def _bite(mask: np.ndarray, c, r_px: float, elong: float, angle: float, radius: float, depth: float) -> np.ndarray:
    """A kidney or horseshoe from an elliptic blob (mean radius r_px, axes r*elong, r/elong at `angle`): a round
    bite `radius` x the long semi-axis across, cut into its +v side `depth` x its short axis deep."""
    a, b = r_px * elong, r_px / elong
    rb = radius * a
    d = b + rb - depth * 2 * b
    bx, by = c[0] - d * math.sin(angle), c[1] + d * math.cos(angle)
    yy, xx = np.mgrid[0:mask.shape[0], 0:mask.shape[1]].astype(np.float32)
    return mask * (((xx - bx) ** 2 + (yy - by) ** 2) > rb * rb)


def _vacuoles(rng, where: np.ndarray, px: float) -> np.ndarray:
    """0-9 round clear vacuoles (float32 0..1) inside `where`, 0.6-1.8 um across."""
    eroded = cv2.erode((where > 0.5).astype(np.uint8), np.ones((3, 3), np.uint8), iterations=max(1, int(px)))
    ys, xs = np.nonzero(eroded)
    out = np.zeros(where.shape, np.uint8)
    for _ in range(min(int(rng.poisson(3.5)), 9) if len(ys) else 0):
        k = int(rng.integers(len(ys)))
        cv2.circle(out, (int(xs[k] * 4), int(ys[k] * 4)), max(1, int(rng.uniform(0.3, 0.9) * px * 4)), 255, -1,
                   cv2.LINE_AA, 2)
    return out.astype(np.float32) / 255.0 * where


def _basophil(rng, d_um: float, px: float) -> Drawn:
    size, c = _sheet(d_um, px)
    r = d_um / 2
    cell = _blob(size, c, r * px, rng, wobble=rng.uniform(0.03, 0.08))
    nuc = _blob(size, c, r * rng.uniform(0.5, 0.65) * px, rng, wobble=rng.uniform(0.15, 0.3),
                elong=rng.uniform(1.0, 1.3), angle=rng.uniform(0, math.pi), notch=rng.uniform(0.0, 0.35)) * cell
    img = _paint(np.zeros((size, size, 3), np.float32), cell, _colour(rng, (196, 178, 214)))
    img = _paint(img, nuc, _colour(rng, (128, 86, 168)), 1.0 + 0.08 * _noise(rng, size, 1.0 * px))
    grains = _spots(rng, cell, rng.uniform(0.3, 0.55) * px, rng.uniform(0.45, 0.7))  # over the nucleus too
    return Drawn(_paint(img, 0.95 * grains, _colour(rng, (42, 18, 64))), cell, nuc, "basophil", d_um)


# ------------------------------------------------------------------------------------------------ artefacts

def _clump_centres(rng, diameters: np.ndarray, near: tuple[float, float]) -> np.ndarray:
    """Centres (um) of overlapping members: each next to a random earlier one, at near[0..1] x their diameters."""
    centres = [np.zeros(2)]
    for i in range(1, len(diameters)):
        j = int(rng.integers(i))
        a = rng.uniform(0, 2 * math.pi)
        dist = rng.uniform(*near) * (diameters[i] + diameters[j]) / 2
        centres.append(centres[j] + dist * np.array([math.cos(a), math.sin(a)]))
    centres = np.array(centres)
    return centres - (centres.min(0) + centres.max(0)) / 2


def _stamp_all(sheet: np.ndarray, templates, centres_px: np.ndarray) -> None:
    """sheet += each square template centred at its offset from the sheet's centre (cut to the sheet)."""
    c, size = sheet.shape[0] / 2, sheet.shape[0]
    for t, (x, y) in zip(templates, centres_px):
        h = t.shape[0]
        x0, y0 = int(round(c + x)) - h // 2, int(round(c + y)) - h // 2
        ax0, ay0, ax1, ay1 = max(x0, 0), max(y0, 0), min(x0 + h, size), min(y0 + h, size)
        sheet[ay0:ay1, ax0:ax1] += t[ay0 - y0:ay1 - y0, ax0 - x0:ax1 - x0]


def _rbc_clump(rng, d_um: float, px: float) -> Drawn:
    n = int(rng.integers(PARTS["rbc_clump"][0], PARTS["rbc_clump"][1] + 1))
    diam = np.concatenate([[d_um], rng.uniform(*SIZE_UM["rbc_clump"], n - 1)])
    centres = _clump_centres(rng, diam, (0.45, 0.85))
    extent = float(np.abs(centres).max() + diam.max() / 2)
    size, _ = _sheet(2 * extent, px, extra=1.1)
    thick = np.zeros((size, size), np.float32)  # summed red-cell thickness: absorbance adds where they overlap
    _stamp_all(thick, [rbc_template(rng, d * px / 2) for d in diam], centres * px)
    cell = (thick > 0.1).astype(np.float32)
    rgb = 255.0 * np.exp(-thick[..., None] * OD_RBC * rng.uniform(0.9, 1.1))
    return Drawn(rgb.astype(np.float32), cell, np.zeros_like(cell), "rbc_clump", d_um, n)


def _platelet_clump(rng, d_um: float, px: float) -> Drawn:
    n = int(rng.integers(PARTS["platelet_clump"][0], PARTS["platelet_clump"][1] + 1))
    diam = np.concatenate([[d_um], rng.uniform(*SIZE_UM["platelet_clump"], n - 1)])
    centres = _clump_centres(rng, diam, (0.6, 1.1))
    extent = float(np.abs(centres).max() + diam.max() / 2)
    size, _ = _sheet(2 * extent + 2, px, extra=1.15)
    granules = np.zeros((size, size), np.float32)
    _stamp_all(granules, [platelet_template(rng, d * px / 2) for d in diam], centres * px)
    # The pale hyalomere matrix that holds an aggregate together: the platelets' outline, closed and smoothed.
    k = max(3, int(1.2 * px) | 1)
    matrix = cv2.morphologyEx((granules > 0.05).astype(np.uint8), cv2.MORPH_CLOSE,
                              cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    matrix = cv2.GaussianBlur(matrix.astype(np.float32), (0, 0), max(1.0, 0.3 * px))
    cell = (matrix > 0.4).astype(np.float32)
    od = granules[..., None] * OD_PLATELET + 0.35 * matrix[..., None] * np.array([0.20, 0.26, 0.10], np.float32)
    return Drawn((255.0 * np.exp(-od)).astype(np.float32), cell, np.zeros_like(cell), "platelet_clump", d_um, n)


def _debris(rng, d_um: float, px: float) -> Drawn:
    """Stain precipitate (dark, granular, ragged edge) or a smudged broken cell (pale, streaked, elongated)."""
    size, c = _sheet(d_um, px, extra=1.6)
    smudge = rng.random() < 0.5
    angle = rng.uniform(0, math.pi)
    cell = _blob(size, c, d_um / 2 * px, rng, wobble=rng.uniform(0.1, 0.2) if smudge else rng.uniform(0.25, 0.4),
                 elong=rng.uniform(1.2, 1.6) if smudge else rng.uniform(1.0, 1.2), angle=angle)
    if smudge:  # chromatin smeared into streaks along the direction of the smear
        n = max(2, int(size / (1.0 * px)))
        streak = cv2.resize(rng.standard_normal((n, 3)).astype(np.float32), (size, size),
                            interpolation=cv2.INTER_CUBIC)
        rot = cv2.getRotationMatrix2D(c, math.degrees(angle), 1.0)
        streak = cv2.warpAffine(streak, rot, (size, size), borderMode=cv2.BORDER_REFLECT)
        img = _paint(np.zeros((size, size, 3), np.float32), cell, _colour(rng, (158, 118, 188)),
                     1.0 + 0.1 * np.clip(streak, -2, 2))
    else:
        grain = 1.0 + 0.35 * np.clip(_noise(rng, size, 0.35 * px), -2, 2)
        img = _paint(np.zeros((size, size, 3), np.float32), cell, _colour(rng, (72, 52, 118)), grain)
    return Drawn(img, cell, np.zeros_like(cell), "debris", d_um)


# --------------------------------------------------------------------------------------------- test images

def _disc(rng, d_um: float, px: float) -> Drawn:
    size, c = _sheet(d_um, px, extra=1.1)
    mask = np.zeros((size, size), np.uint8)
    cv2.circle(mask, (int(c[0] * 4), int(c[1] * 4)), int(d_um / 2 * px * 4), 255, -1, cv2.LINE_AA, 2)
    colour = np.array(PATTERN_COLOURS[int(rng.integers(len(PATTERN_COLOURS)))], np.float32)
    alpha = mask.astype(np.float32) / 255.0
    rgb = np.clip(alpha[..., None] * colour + 0.5, 0, 255).astype(np.uint8)
    return Drawn(rgb, alpha, np.zeros_like(alpha), "disc", d_um)


def _checkerboard(rng, square_um: float, px: float) -> Drawn:
    size = int(round(CNMC_CANVAS_UM * px))  # the whole tile
    i, j = rng.choice(len(PATTERN_COLOURS), 2, replace=False)
    parity = (np.arange(size) // max(1.0, square_um * px)).astype(int) % 2
    board = (parity[:, None] ^ parity[None, :]).astype(bool)
    rgb = np.where(board[..., None], np.array(PATTERN_COLOURS[i], np.uint8), np.array(PATTERN_COLOURS[j], np.uint8))
    ones = np.ones((size, size), np.float32)
    return Drawn(rgb, ones, np.zeros_like(ones), "checkerboard", square_um)


_DRAWERS = {"neutrophil": _neutrophil, "eosinophil": _eosinophil, "monocyte": _monocyte, "basophil": _basophil,
            "rbc_clump": _rbc_clump, "platelet_clump": _platelet_clump, "debris": _debris}
_PATTERNS = {"disc": _disc, "checkerboard": _checkerboard}
