"""Find the white cells (leukocytes) in a microscope field with OpenCV alone, and cut them out the C-NMC way.

In a May-Grünwald-Giemsa/Wright stained smear, eosin colours red cells pink: they absorb green and some blue
light. Nuclei (dark purple), lymphocyte cytoplasm (blue-grey to lilac) and platelets take basophilic dyes that
absorb red light and let blue through. In optical density (OD = -ln(I / background)) the red cells' absorbance is
projected out, with their own OD ratios measured in each frame (k_r = OD_red / OD_green, k_b = OD_blue / OD_green):

    stain = (OD_red - k_r * OD_green) + (k_b * OD_green - OD_blue)

which is ~0 on red cells of any thickness or overlap and on plasma, high on nuclei, clearly positive on cytoplasm
and platelets, and clearly negative on eosinophil granules (more orange than a red cell), which count as cytoplasm
too. Nuclei (high stain and dark, closed so that the lobes of one nucleus merge) seed the cells; each cell is the
stained region around its seed (cytoplasm included), split between neighbouring seeds. Objects too
small to be a leukocyte (platelets and their clumps) and, by default, cells cut by the frame edge are dropped.

Detection runs on the frame downscaled to about `work_um_per_px` (0.5 um/px: ~25 px across a lymphocyte) and the
boxes are mapped back to source pixels, so a 1280x720 frame costs a few milliseconds; each cell's mask border is
then decided again at source resolution (`_refine_border`), as C-NMC's cells were segmented. Sizes are in micrometres,
converted with the frame's scale: `um_per_px`, or `camera_pixel_um / magnification`, or, when neither is known,
measured on the red cells in the frame (edge.scale: their median diameter is ~7.5 um); only a frame with too few
red cells falls back to an assumed field of view `reference_um_per_px * reference_width` micrometres wide.

The physical scale of the C-NMC tiles (what the models are trained on): each tile is one segmented cell centred on
a 450 x 450 px black canvas, cut from 2560 x 1920 px photographs taken through a 100x oil objective (Nikon
Eclipse 200 with a Nikon camera; SBILab/AIIMS, C-NMC 2019). The dataset papers do not state micrometres per pixel;
it follows from the cells themselves and from the optics: the tiles hold normal lymphocytes (~8-12 um) and
lymphoblasts (~10-18 um) about 150-300 px across, i.e. ~0.05-0.08 um/px, and a 2560 px camera with 3.4 um
pixels (the Nikon DS-Fi1 class, 2/3") behind a 100x objective and the usual 0.5x video adapter gives
3.4 / 50 = 0.068 um/px. leuk-edge takes CNMC_UM_PER_PX = 30 um / 450 px = 0.0667 um/px: a tile is a field
CNMC_CANVAS_UM = 30 um wide, and synth.cells draws its cells at that scale. `stream` cuts every cell as such a
30 um square, so that after the model's resize a cell spans as many input pixels as the same cell does in a tile.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from .scale import estimate_um_per_px
from .stain import StainModel, downscale, fill_holes

# C-NMC cells sit centred on a 450x450 black canvas, about 210 px across: the crop side is ~2.15 cell widths.
CNMC_TILE_PX = 450
CNMC_CONTEXT = CNMC_TILE_PX / 210
# ... and that canvas is a fixed physical field (see the module docstring): ~30 um, 0.0667 um/px (a ~16 um blast
# spans ~236 px of it, a ~12 um lymphocyte ~184 px, as in leuk_edge.synth.cells).
CNMC_CANVAS_UM = 30.0
CNMC_UM_PER_PX = CNMC_CANVAS_UM / CNMC_TILE_PX


@dataclass(frozen=True)
class DetectorConfig:
    """Leukocyte detector settings; sizes in micrometres, scaled to pixels per frame."""
    um_per_px: float | None = None          # the frame's scale, when known
    magnification: float | None = None      # total magnification; um_per_px = camera_pixel_um / magnification
    camera_pixel_um: float = 15.0           # camera pixel pitch as it lands in the frame (after binning/resize)
    reference_width: int = 1280             # neither known: assume the field of view of ...
    reference_um_per_px: float = 0.15       # ... a 100x objective imaged at 1280 px across (~192 um)
    work_um_per_px: float = 0.5             # detection runs on the frame downscaled to about this scale
    min_nucleus_um2: float = 12.0           # platelets are 1.5-3 um (2-7 um^2); a lymphocyte nucleus >= ~20 um^2
    min_cell_um2: float = 40.0              # whole cell (nucleus + cytoplasm), ~7 um across
    max_cell_um: float = 40.0               # larger objects are stain debris or clumps, not one cell
    lobe_gap_um: float = 2.0                # nucleus lobes closer than this are one cell
    open_um: float = 3.0                    # opening of the cell mask: cuts off attached specks/platelets
    cytoplasm_um: float = 7.0               # how far a cell may extend beyond its nucleus
    cell_threshold: float = 0.12            # stain OD that counts as white cell (cytoplasm or nucleus)
    granule_threshold: float = 0.15         # stain OD below minus this: eosinophil granules, also white cell
    nucleus_threshold: float = 0.45         # stain OD of a nucleus ...
    nucleus_od: float = 0.85                # ... which is also dark: green-light OD above this
    rbc_ratio: float | None = None          # red cells' OD_red / OD_green; None = measure it in each frame
    drop_edge: bool = True                  # drop cells cut by the frame edge
    edge_margin_px: int = 4                 # boxes this close to the border are checked at full resolution
    estimate_scale: bool = True             # neither scale given: measure it on the red cells of each frame

    def scale(self, width: int) -> float:
        """Micrometres per source pixel for a frame `width` pixels wide, from the options alone (the assumed field
        of view when neither scale option is given; `frame_scale` measures it on the frame instead)."""
        if self.um_per_px:
            return float(self.um_per_px)
        if self.magnification:
            return float(self.camera_pixel_um) / float(self.magnification)
        return self.reference_um_per_px * self.reference_width / max(int(width), 1)

    def validate(self) -> DetectorConfig:
        for name in ("um_per_px", "magnification"):
            v = getattr(self, name)
            if v is not None and v <= 0:
                raise ValueError(f"--{name.replace('_', '-')} must be positive")
        if self.camera_pixel_um <= 0 or self.work_um_per_px <= 0:
            raise ValueError("camera pixel size and working scale must be positive")
        return self


@dataclass
class Detection:
    """One white cell: box (x, y, w, h) in source pixels and its mask inside the box."""
    box: tuple[int, int, int, int]
    mask: np.ndarray = field(repr=False)  # bool (h, w): the cell (nucleus + cytoplasm) within box
    touches_edge: bool = False            # cut by the frame edge (kept only with drop_edge=False)


def _disk(diameter_px: float) -> np.ndarray:
    d = max(1, int(round(diameter_px)))
    d += 1 - d % 2  # odd: an even kernel's off-centre anchor shifts every opening/closing
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (d, d))


def _cut_by_edge(rgb: np.ndarray, box, stain: StainModel, threshold: float) -> bool:
    """Whether the cell in `box` (source pixels) really reaches the frame border: look at the border pixels
    themselves at full resolution (the working scale cannot tell 0 from 3 px)."""
    x0, y0, x1, y1 = box
    H, W = rgb.shape[:2]
    strips = []
    if x0 <= 0:
        strips.append(rgb[y0:y1, 0])
    if y0 <= 0:
        strips.append(rgb[0, x0:x1])
    if x1 >= W:
        strips.append(rgb[y0:y1, W - 1])
    if y1 >= H:
        strips.append(rgb[H - 1, x0:x1])
    # A cut cell crosses the border along a chord; a cell just short of it leaves a few faint (blurred) pixels.
    return any(int((stain.maps(px)[0] > threshold).sum()) >= max(3, 0.15 * len(px)) for px in strips)


@dataclass(frozen=True)
class FrameScale:
    """The scale a frame was analysed at, and where it came from."""
    um_per_px: float
    source: str          # "given" (--um-per-px), "magnification", "red cells" (measured) or "assumed"
    red_cells: int = 0   # with "red cells": how many (equivalent) were measured


def frame_scale(rgb: np.ndarray, cfg: DetectorConfig = DetectorConfig()) -> FrameScale:
    """The frame's micrometres per pixel: given, from the magnification, measured on its red cells, or (too few
    red cells, or estimate_scale=False) the assumed field of view."""
    if cfg.um_per_px:
        return FrameScale(float(cfg.um_per_px), "given")
    if cfg.magnification:
        return FrameScale(cfg.scale(rgb.shape[1]), "magnification")
    if cfg.estimate_scale:
        est = estimate_um_per_px(rgb)
        if est is not None:
            return FrameScale(est.um_per_px, "red cells", est.red_cells)
    return FrameScale(cfg.scale(rgb.shape[1]), "assumed")


@dataclass
class _WorkGrid:
    """What detect_leukocytes found on its work-scale image, for cutting out one cell at a time."""
    nuc_lab: np.ndarray  # nucleus component labels
    stats: np.ndarray  # their connectedComponentsWithStats rows
    near: np.ndarray  # the nearest kept nucleus's label at each pixel
    reach: np.ndarray  # body pixels within the cytoplasm reach of a nucleus
    sx: float  # work pixels per source pixel, x and y
    sy: float
    wum: float  # micrometres per work pixel
    px2: float  # work pixels per um^2


def _cell_of(i: int, g: _WorkGrid, rgb: np.ndarray, stain: StainModel, cfg: DetectorConfig) -> Detection | None:
    """Nucleus `i`'s cell as a Detection in source pixels, or None (too small, too large, cut by the edge when
    edge cells are dropped, empty after mapping back)."""
    H, W = rgb.shape[:2]
    x, y, w, h = g.stats[i, :4]
    pad = int(math.ceil(cfg.cytoplasm_um / g.wum)) + 1
    x0, y0 = max(x - pad, 0), max(y - pad, 0)
    x1, y1 = min(x + w + pad, g.nuc_lab.shape[1]), min(y + h + pad, g.nuc_lab.shape[0])
    mine = g.nuc_lab[y0:y1, x0:x1] == i
    ys, xs = np.nonzero(mine)
    own_label = g.near[y0 + ys[0], x0 + xs[0]]
    region = ((g.reach[y0:y1, x0:x1] & (g.near[y0:y1, x0:x1] == own_label)) | mine).astype(np.uint8)
    # Keep the part connected to the nucleus (a neighbour's cytoplasm across a gap is not ours).
    n, lab, st, _ = cv2.connectedComponentsWithStats(region, connectivity=8)
    own = lab[ys[0], xs[0]]
    cell = (lab == own).astype(np.uint8)
    cx, cy, cw, ch, carea = st[own]
    if carea < cfg.min_cell_um2 * g.px2 or max(cw, ch) > cfg.max_cell_um / g.wum:
        return None
    # Map back to source pixels (outward-rounded box).
    bx0, by0 = int(math.floor((x0 + cx) / g.sx)), int(math.floor((y0 + cy) / g.sy))
    bx1, by1 = int(math.ceil((x0 + cx + cw) / g.sx)), int(math.ceil((y0 + cy + ch) / g.sy))
    bx0, by0, bx1, by1 = max(bx0, 0), max(by0, 0), min(bx1, W), min(by1, H)
    margin = cfg.edge_margin_px
    at_border = bx0 <= margin or by0 <= margin or bx1 >= W - margin or by1 >= H - margin
    edge = at_border and _cut_by_edge(rgb, (bx0, by0, bx1, by1), stain, cfg.cell_threshold)
    if edge and cfg.drop_edge:
        return None
    sub = cell[cy:cy + ch, cx:cx + cw].astype(np.float32)
    coarse = cv2.resize(sub, (bx1 - bx0, by1 - by0), interpolation=cv2.INTER_LINEAR) > 0.5
    if not coarse.any():
        return None
    band = int(math.ceil(0.5 / min(g.sx, g.sy))) + 1  # half a work pixel, in source pixels, and one more
    (bx0, by0), mask = _refine_border(rgb, (bx0, by0), coarse, stain, cfg, band)
    ys, xs = np.nonzero(mask)  # tighten the box to the refined mask
    tx0, ty0, tx1, ty1 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
    return Detection(box=(bx0 + tx0, by0 + ty0, tx1 - tx0, ty1 - ty0), mask=mask[ty0:ty1, tx0:tx1],
                     touches_edge=bool(edge))


def _refine_border(rgb: np.ndarray, origin: tuple[int, int], coarse: np.ndarray, stain: StainModel,
                   cfg: DetectorConfig, band: int) -> tuple[tuple[int, int], np.ndarray]:
    """The work-scale mask, up-sampled, is off by up to half a work pixel all round: a ring of plasma or red cell
    inside it, or cytoplasm cut off. C-NMC's cells were segmented at full resolution, and the model (its scope
    gate most of all: the ring is texture no training tile has) must see the same. So the border band is decided
    at source resolution: inside the mask shrunk by `band` px the cell stays; within `band` px of its border a
    pixel is cell where the stain map says white cell (or eosinophil granule); holes filled.
    -> (the new mask's origin in the frame, mask bool)."""
    H, W = rgb.shape[:2]
    x0, y0 = origin
    h, w = coarse.shape
    px0, py0, px1, py1 = max(x0 - band, 0), max(y0 - band, 0), min(x0 + w + band, W), min(y0 + h + band, H)
    canvas = np.zeros((py1 - py0, px1 - px0), np.uint8)
    canvas[y0 - py0:y0 - py0 + h, x0 - px0:x0 - px0 + w] = coarse
    disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * band + 1, 2 * band + 1))
    core, near = cv2.erode(canvas, disk), cv2.dilate(canvas, disk)
    white = cv2.GaussianBlur(stain.maps(rgb[py0:py1, px0:px1])[0], (0, 0), 1.0)  # pixel noise, not edges
    cellish = (white > cfg.cell_threshold) | (white < -cfg.granule_threshold)
    mask = fill_holes(((core > 0) | ((near > 0) & cellish)).astype(np.uint8) * 255) > 0
    return (px0, py0), mask if mask.any() else canvas > 0


def detect_leukocytes(rgb: np.ndarray, cfg: DetectorConfig = DetectorConfig(), um_per_px: float | None = None
                      ) -> list[Detection]:
    """All white cells in an RGB uint8 field, as Detections in source-frame pixels (sorted top-left first).
    `um_per_px`: the frame's scale when already known (else `frame_scale(rgb, cfg)`)."""
    H, W = rgb.shape[:2]
    um = float(um_per_px) if um_per_px else frame_scale(rgb, cfg).um_per_px
    s = min(1.0, um / cfg.work_um_per_px)  # work pixels per source pixel
    small = downscale(rgb, max(1, round(W * s)), max(1, round(H * s))) if s < 1.0 else rgb
    sy, sx = small.shape[0] / H, small.shape[1] / W
    wum = um / s  # micrometres per work pixel
    px2 = 1.0 / (wum * wum)  # work pixels per um^2

    stain = StainModel.fit(small, cfg.rbc_ratio)
    white, dark = stain.maps(small)
    nuc = ((white > cfg.nucleus_threshold) & (dark > cfg.nucleus_od)).astype(np.uint8) * 255
    nuc = cv2.morphologyEx(nuc, cv2.MORPH_CLOSE, _disk(cfg.lobe_gap_um / wum))  # lobes + chromatin gaps -> one
    nuc = fill_holes(nuc)
    n_nuc, nuc_lab, stats, _ = cv2.connectedComponentsWithStats(nuc, connectivity=8)
    keep = [i for i in range(1, n_nuc) if stats[i, cv2.CC_STAT_AREA] >= cfg.min_nucleus_um2 * px2]
    if not keep:
        return []

    # Eosinophil granules are more orange than any red cell (they absorb more blue for their green): the stain is
    # strongly negative there. Closed over ~1 um (the gaps between granules), they count as cell body: only
    # around a nucleus, as bodies never seed a cell.
    granules = cv2.morphologyEx((white < -cfg.granule_threshold).astype(np.uint8) * 255, cv2.MORPH_CLOSE,
                                _disk(1.0 / wum))
    body = ((white > cfg.cell_threshold).astype(np.uint8) * 255) | granules
    body = cv2.morphologyEx(body, cv2.MORPH_OPEN, _disk(cfg.open_um / wum))  # specks, thin bridges, platelets
    body = fill_holes(cv2.bitwise_or(body, nuc))
    # Each body pixel belongs to the nearest kept nucleus (splits touching cells), within the cytoplasm reach.
    seeds = np.where(np.isin(nuc_lab, keep), 0, 255).astype(np.uint8)
    dist, near = cv2.distanceTransformWithLabels(seeds, cv2.DIST_L2, 3, labelType=cv2.DIST_LABEL_CCOMP)
    reach = body.astype(bool) & (dist <= cfg.cytoplasm_um / wum)

    grid = _WorkGrid(nuc_lab, stats, near, reach, sx, sy, wum, px2)
    out = [d for d in (_cell_of(i, grid, rgb, stain, cfg) for i in keep) if d is not None]
    out.sort(key=lambda d: (d.box[1], d.box[0]))
    return out


def crop_cnmc(rgb: np.ndarray, det: Detection, context: float = CNMC_CONTEXT, side_px: float | None = None
              ) -> np.ndarray:
    """The C-NMC view of one detection: a square centred on the cell, everything outside the cell mask
    (neighbours, red cells, plasma, beyond the frame) black.

    The side is `side_px` when given (a fixed physical field, as C-NMC's 450 px canvas is: a blast then fills
    more of it than a small lymphocyte, and the model sees that), else `context` x the cell's larger side; never
    less than the cell itself."""
    x, y, w, h = det.box
    side = int(round(side_px)) if side_px else int(round(max(w, h) * context))
    side = max(side, max(w, h) + 2)
    ox = x + w // 2 - side // 2
    oy = y + h // 2 - side // 2
    crop = np.zeros((side, side, 3), np.uint8)
    H, W = rgb.shape[:2]
    # The cell's own box always lies in the frame; copy it through its mask.
    cx0, cy0 = x - ox, y - oy
    src = rgb[y:y + h, x:x + w]
    mh, mw = min(h, src.shape[0]), min(w, src.shape[1])
    view = crop[cy0:cy0 + mh, cx0:cx0 + mw]
    m = det.mask[:mh, :mw]
    view[m] = src[:mh, :mw][m]
    return crop
