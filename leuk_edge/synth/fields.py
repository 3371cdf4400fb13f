"""Synthetic microscope fields: what a camera on a stained blood smear sees, with the truth known.

A field is a pale plasma background, many overlapping red cells (pink, with central pallor; overlaps are darker
because absorbance adds), small purple platelets, and a few white cells at a realistic scale. Sizes are in
micrometres, turned into pixels with `um_per_px` (default 0.15 um/px: a 1280x720 frame spans about 192x108 um, a
100x oil field). The white cells, by `mix`:
  "lymphoid" (default): blasts ("all") and normal lymphocytes ("hem") only, drawn by `synth.cells.render_cell`,
      a blast with probability `blast_fraction`;
  "normal": a normal differential (NORMAL_DIFFERENTIAL: neutrophils ~55 %, lymphocytes ~30 %, monocytes ~6 %,
      eosinophils ~3 %, basophils ~1 %, scaled to 100 %) plus `blast_share` of blasts: P(blast) = blast_share, each
      other kind (1 - blast_share) x its share. Neutrophils, monocytes, eosinophils and basophils are drawn by
      `synth.others` and are out of the C-NMC model's scope: their expected label is "other".
Each cell's truth: `box`, `kind` (blast, lymphocyte, neutrophil, ...), `in_scope` (lymphoid or not) and `label`, the
label a model that knows what it does not know should give (all / hem / other).

`write_fields` writes still frames + ground_truth.json and a short video of the field drifting as a slide moved
on the stage does (+ its per-frame truth). numpy + OpenCV only. Stand-in data: no medical claim can rest on it.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from .. import SYNTHETIC_NOTE
from ..edge.recording import VideoRecorder
from .cells import SYNTHETIC_MARKER, Stain, render_cell, write_bmp
from .others import LEUKOCYTE_KINDS, SIZE_UM, render_other
from .smear import LIGHT, OD_PLASMA, OD_PLATELET, OD_RBC, platelet_template, rbc_template

MIXES = ("lymphoid", "normal")
# A normal adult differential (shares of the white cells; the usual mid-range values: they sum to 0.95 and are
# scaled to 1 when drawn).
NORMAL_DIFFERENTIAL = {"neutrophil": 0.55, "lymphocyte": 0.30, "monocyte": 0.06, "eosinophil": 0.03,
                       "basophil": 0.01}
LYMPHOID_LABELS = {"blast": "all", "lymphocyte": "hem"}  # the in-scope kinds and the label each should get


def expected_label(kind: str) -> str:
    """The label a scope-aware model should give a cell of `kind`: all (blast), hem (lymphocyte) or other."""
    return LYMPHOID_LABELS.get(kind, "other")


@dataclass(frozen=True)
class FieldConfig:
    """Everything that shapes a synthetic field; sizes in micrometres."""
    width: int = 1280
    height: int = 720
    um_per_px: float = 0.15
    leukocytes: int = 5
    blast_fraction: float = 0.5
    rbc_coverage: float = 0.65          # summed red-cell area / field area (overlaps make the visible part less)
    rbc_um: float = 7.5
    platelets_per_rbc: float = 0.08
    platelet_um: tuple = (1.5, 3.0)
    lymphocyte_um: tuple = (10.0, 14.0)  # normal small/medium lymphocytes
    blast_um: tuple = (13.0, 19.0)       # lymphoblasts are larger
    edge_margin_um: float = 4.0          # still fields: white cells lie wholly inside the frame
    noise: float = 2.0                   # camera noise (grey levels)
    mix: str = "lymphoid"                # "lymphoid" (blasts + lymphocytes) or "normal" (see the module docstring)
    blast_share: float = 0.0             # mix "normal": the share of all white cells that are blasts
    differential: tuple = ()             # mix "normal": ((kind, weight), ...) instead of NORMAL_DIFFERENTIAL

    def px(self, um: float) -> float:
        return um / self.um_per_px

    def validate(self) -> FieldConfig:
        if self.mix not in MIXES:
            raise ValueError(f"--mix must be one of {', '.join(MIXES)}, not {self.mix!r}")
        if not 0.0 <= self.blast_share <= 1.0 or not 0.0 <= self.blast_fraction <= 1.0:
            raise ValueError("--blast-share and --blast-fraction must lie in [0, 1]")
        if self.mix != "normal" and self.blast_share:
            raise ValueError("--blast-share needs --mix normal (the lymphoid mix uses --blast-fraction)")
        for kind, weight in self.differential:
            if kind not in NORMAL_DIFFERENTIAL or weight < 0:
                raise ValueError(f"differential: unknown kind {kind!r} or negative weight "
                                 f"(kinds: {', '.join(NORMAL_DIFFERENTIAL)})")
        return self

    def kind_shares(self) -> dict[str, float]:
        """P(kind) of a white cell under this mix."""
        if self.mix == "lymphoid":
            return {"blast": self.blast_fraction, "lymphocyte": 1.0 - self.blast_fraction}
        weights = dict(self.differential) or NORMAL_DIFFERENTIAL
        total = sum(weights.values())
        rest = {k: (1.0 - self.blast_share) * v / total for k, v in weights.items()}
        return {"blast": self.blast_share, **rest}

    def diameter_range(self, kind: str) -> tuple[float, float]:
        if kind == "blast":
            return self.blast_um
        if kind == "lymphocyte":
            return self.lymphocyte_um
        return SIZE_UM[kind]


def _clip(x0: int, y0: int, w: int, h: int, width: int, height: int):
    """A w x h patch with its top-left corner at (x0, y0) on a width x height image -> (image slices, patch
    slices) of the part that lies inside, or None when nothing does."""
    ax0, ay0 = max(x0, 0), max(y0, 0)
    ax1, ay1 = min(x0 + w, width), min(y0 + h, height)
    if ax1 <= ax0 or ay1 <= ay0:
        return None
    return (slice(ay0, ay1), slice(ax0, ax1)), (slice(ay0 - y0, ay1 - y0), slice(ax0 - x0, ax1 - x0))


def _stamp(acc: np.ndarray, tmpl: np.ndarray, cx: float, cy: float) -> None:
    """acc[...] += tmpl centred at (cx, cy), clipped to acc."""
    h, w = tmpl.shape
    clip = _clip(int(round(cx)) - w // 2, int(round(cy)) - h // 2, w, h, acc.shape[1], acc.shape[0])
    if clip is not None:
        acc[clip[0]] += tmpl[clip[1]]


def draw_kind(rng, cfg: FieldConfig) -> str:
    """One white cell's kind under the mix (the lymphoid mix draws exactly as it always has: one uniform number)."""
    if cfg.mix == "lymphoid":
        return "blast" if rng.random() < cfg.blast_fraction else "lymphocyte"
    kinds, shares = zip(*cfg.kind_shares().items())
    i = int(np.searchsorted(np.cumsum(shares), rng.random() * sum(shares), side="right"))
    return kinds[min(i, len(kinds) - 1)]


def _place_leukocytes(rng, cfg: FieldConfig, width: int, height: int, count: int, margin: float):
    """Centres, radii (px) and kinds for `count` white cells that do not overlap each other."""
    placed = []
    for _ in range(count):
        kind = draw_kind(rng, cfg)
        lo, hi = cfg.diameter_range(kind)
        radius = cfg.px(rng.uniform(lo, hi)) / 2
        for _try in range(200):
            m = margin + radius * 1.15
            if width - 2 * m <= 0 or height - 2 * m <= 0:
                break
            cx, cy = rng.uniform(m, width - m), rng.uniform(m, height - m)
            if all(math.hypot(cx - x, cy - y) > (radius + r) * 1.15 + cfg.px(2.0) for x, y, r, _ in placed):
                placed.append((cx, cy, radius, kind))
                break
    return placed


def _draw_platelets(rng, cfg: FieldConfig, width: int, height: int, n_rbc: int):
    """Platelets in proportion to the red cells, now and then a small clump -> (thickness map, their truth)."""
    plt = np.zeros((height, width), np.float32)
    platelets = []
    n_plt = rng.poisson(cfg.platelets_per_rbc * n_rbc)
    while len(platelets) < n_plt:
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        for _k in range(1 if rng.random() < 0.8 else int(rng.integers(2, 4))):
            d_um = rng.uniform(*cfg.platelet_um)
            x, y = cx + rng.normal(0, cfg.px(1.6)) * (_k > 0), cy + rng.normal(0, cfg.px(1.6)) * (_k > 0)
            _stamp(plt, platelet_template(rng, cfg.px(d_um) / 2), x, y)
            platelets.append({"center": [round(float(x), 1), round(float(y), 1)], "diameter_um": round(d_um, 2)})
    return plt, platelets


def render_slide(rng: np.random.Generator, cfg: FieldConfig, width: int, height: int, leukocytes: int,
                 margin_px: float = 0.0, stain: Stain | None = None, label_map: np.ndarray | None = None):
    """One stained smear region of width x height px -> (rgb uint8, cells, platelets).

    cells: dicts with `box` [x, y, w, h] (the whole white cell, cytoplasm included), `label` (all / hem / other:
    what a scope-aware model should say), `kind`, `in_scope`, `center`, `diameter_um`; platelets: dicts with
    `center` and `diameter_um`. `label_map` (uint8, height x width), when given, receives the pixel truth:
    1 platelet, 2 white-cell cytoplasm, 3 nucleus.
    """
    stain = stain or Stain.random(rng)
    od = np.zeros((height, width), np.float32)  # red-cell thickness (sum over overlapping cells)
    n_rbc = int(cfg.rbc_coverage * width * height / (math.pi * cfg.px(cfg.rbc_um / 2) ** 2))
    templates = [rbc_template(rng, cfg.px(rng.normal(cfg.rbc_um, 0.45)) / 2) for _ in range(16)]
    for _ in range(n_rbc):
        _stamp(od, templates[int(rng.integers(len(templates)))], rng.uniform(-20, width + 20),
               rng.uniform(-20, height + 20))

    plt, platelets = _draw_platelets(rng, cfg, width, height, n_rbc)
    if label_map is not None:
        label_map[plt > 0.3] = 1
    plasma = 1.0 + 0.15 * cv2.resize(rng.standard_normal((6, 10)).astype(np.float32), (width, height),
                                     interpolation=cv2.INTER_CUBIC)
    total = (plasma[..., None] * OD_PLASMA + od[..., None] * OD_RBC * rng.uniform(0.9, 1.1)
             + plt[..., None] * OD_PLATELET)
    img = LIGHT * np.exp(-total)
    img = cv2.GaussianBlur(img, (0, 0), 0.6)

    cells = []
    for cx, cy, radius, kind in _place_leukocytes(rng, cfg, width, height, leukocytes, margin_px):
        rgb, cell, nuc = _render_leukocyte(rng, cfg, kind, stain, radius)
        size = rgb.shape[0]
        clip = _clip(int(round(cx - size / 2)), int(round(cy - size / 2)), size, size, width, height)
        if clip is None:
            continue
        dst, sub = clip
        alpha = cv2.GaussianBlur(cell, (0, 0), 0.7)[sub][..., None]
        cell_rgb = rgb[sub].astype(np.float32) * (LIGHT / 255.0)  # the same lamp as the rest of the field
        img[dst] = img[dst] * (1 - alpha) + cell_rgb * alpha
        if label_map is not None:
            lm = label_map[dst]
            lm[cell[sub] > 0.5] = 2
            lm[nuc[sub] > 0.5] = 3
        ys, xs = np.nonzero(cell[sub] > 0.5)
        if len(xs) == 0:
            continue
        ax0, ay0 = dst[1].start, dst[0].start
        bx, by = int(xs.min()) + ax0, int(ys.min()) + ay0
        box = [bx, by, int(xs.max()) + ax0 - bx + 1, int(ys.max()) + ay0 - by + 1]
        cells.append({"box": box, "label": expected_label(kind), "kind": kind, "in_scope": kind in LYMPHOID_LABELS,
                      "center": [round(cx, 1), round(cy, 1)], "diameter_um": round(2 * radius * cfg.um_per_px, 2)})

    img = img * np.array(stain.tint, np.float32) ** 0.5  # the slide's stain cast affects the whole field
    img += rng.normal(0, cfg.noise, img.shape).astype(np.float32)
    return np.clip(img + 0.5, 0, 255).astype(np.uint8), cells, platelets


def _render_leukocyte(rng, cfg: FieldConfig, kind: str, stain: Stain, radius: float):
    """One white cell of `kind`, `radius` px -> (rgb uint8 on black, cell mask, nucleus mask), as render_cell."""
    if kind in LYMPHOID_LABELS:
        return render_cell(rng, LYMPHOID_LABELS[kind], stain, radius=radius)
    assert kind in LEUKOCYTE_KINDS, kind
    drawn = render_other(rng, kind, stain, size_um=2 * radius * cfg.um_per_px, px_per_um=1.0 / cfg.um_per_px)
    return drawn.rgb, drawn.cell, drawn.nucleus


def render_field(rng: np.random.Generator, cfg: FieldConfig = FieldConfig()):
    """One camera frame (cfg.width x cfg.height) -> (rgb uint8, cells, platelets); white cells wholly inside."""
    return render_slide(rng, cfg, cfg.width, cfg.height, cfg.leukocytes, margin_px=cfg.px(cfg.edge_margin_um))


def box_in_view(box, dx: int, dy: int, width: int, height: int):
    """A slide-coordinate box seen through a window at (dx, dy) -> (clipped box or None, cut by the edge)."""
    x, y, w, h = box
    x0, y0 = x - dx, y - dy
    cx0, cy0 = max(x0, 0), max(y0, 0)
    cx1, cy1 = min(x0 + w, width), min(y0 + h, height)
    if cx1 <= cx0 or cy1 <= cy0:
        return None, True
    # Clipped, or reaching the outermost pixel row/column: nobody can tell whether it goes on beyond.
    cut = cx0 <= 0 or cy0 <= 0 or cx1 >= width or cy1 >= height
    return [int(cx0), int(cy0), int(cx1 - cx0), int(cy1 - cy0)], cut


def drift_path(n: int, max_dx: int, max_dy: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    """Integer window offsets of a slide pushed slowly across the stage: a smooth pan with a little sway."""
    phase = rng.uniform(0, 2 * math.pi)
    out = []
    for i in range(n):
        t = i / max(n - 1, 1)
        dx = max_dx * (0.5 - 0.5 * math.cos(math.pi * t))  # ease in / ease out
        dy = max_dy * (0.5 + 0.45 * math.sin(2 * math.pi * t + phase))
        out.append((int(round(dx)), int(round(min(max(dy, 0), max_dy)))))
    return out


def render_drift(rng: np.random.Generator, cfg: FieldConfig, frames: int, drift_um=(40.0, 12.0)):
    """A slide moving under the camera -> (list of rgb frames, per-frame truth). Cells crossing the frame edge
    are in the truth with `cut: true` and their visible box; `track` is the cell's index on the slide (the same
    cell in every frame)."""
    max_dx, max_dy = int(cfg.px(drift_um[0])), int(cfg.px(drift_um[1]))
    sw, sh = cfg.width + max_dx, cfg.height + max_dy
    n_leuk = max(1, round(cfg.leukocytes * sw * sh / (cfg.width * cfg.height)))
    slide, cells, platelets = render_slide(rng, cfg, sw, sh, n_leuk, margin_px=0)
    out, truth = [], []
    for i, (dx, dy) in enumerate(drift_path(frames, max_dx, max_dy, rng)):
        out.append(np.ascontiguousarray(slide[dy:dy + cfg.height, dx:dx + cfg.width]))
        seen = []
        for k, c in enumerate(cells):
            box, cut = box_in_view(c["box"], dx, dy, cfg.width, cfg.height)
            if box is not None:
                seen.append({"box": box, "label": c["label"], "cut": cut, "track": k, "kind": c["kind"],
                             "in_scope": c["in_scope"]})
        pl = [[p["center"][0] - dx, p["center"][1] - dy] for p in platelets
              if 0 <= p["center"][0] - dx < cfg.width and 0 <= p["center"][1] - dy < cfg.height]
        truth.append({"frame": i, "offset": [dx, dy], "cells": seen, "platelets": pl})
    return out, truth


def drift_tracks(truth: list[dict]) -> list[dict]:
    """Per-frame drift truth -> one entry per cell that came into view: `track`, `kind`, `label`, `in_scope`,
    `frames` (seen at all), `whole_frames` (seen uncut: only those can be detected), `first_frame`,
    `last_frame`."""
    tracks: dict[int, dict] = {}
    for f in truth:
        for c in f["cells"]:
            t = tracks.setdefault(c["track"], {"track": c["track"], "kind": c["kind"], "label": c["label"],
                                               "in_scope": c["in_scope"], "frames": 0, "whole_frames": 0,
                                               "first_frame": f["frame"], "last_frame": f["frame"]})
            t["frames"] += 1
            t["whole_frames"] += not c["cut"]
            t["last_frame"] = f["frame"]
    return [tracks[k] for k in sorted(tracks)]


def kind_counts(cells) -> dict[str, int]:
    """How many cells (or tracks) of each kind, in a stable order (lymphoid first)."""
    order = list(LYMPHOID_LABELS) + list(LEUKOCYTE_KINDS)
    counts = {k: 0 for k in order}
    for c in cells:
        counts[c["kind"]] = counts.get(c["kind"], 0) + 1
    return {k: n for k, n in counts.items() if n}


def write_fields(out: str | Path, frames: int = 6, video_frames: int = 60, fps: float = 15.0,
                 cfg: FieldConfig = FieldConfig(), seed: int = 0, progress=None) -> dict:
    """Write OUT/frames/field_NNN.png + OUT/ground_truth.json and OUT/drift.mp4 + OUT/drift.json (its per-frame
    truth and `tracks`, one per cell that came into view)."""
    cfg.validate()
    if frames < 0 or video_frames < 0:
        raise ValueError("--frames and --video-frames must be >= 0")
    if cfg.um_per_px <= 0:
        raise ValueError("--um-per-px must be positive")
    if cfg.width < 64 or cfg.height < 64:
        raise ValueError("fields must be at least 64x64 pixels")
    rng = np.random.default_rng(seed)
    out = Path(out)
    (out / "frames").mkdir(parents=True, exist_ok=True)
    meta = {"synthetic": True, "note": SYNTHETIC_NOTE, "seed": seed, "config": asdict(cfg), "mix": cfg.mix,
            "kind_shares": {k: round(v, 4) for k, v in cfg.kind_shares().items()}}
    items = []
    total = frames + (1 if video_frames else 0)
    for i in range(frames):
        rgb, cells, platelets = render_field(rng, cfg)
        name = f"field_{i:03d}.png"
        write_bmp(out / "frames" / name, rgb)  # any format cv2.imwrite knows by the suffix
        items.append({"name": name, "cells": [{**c, "cut": False} for c in cells], "platelets": platelets})
        if progress:
            progress(i + 1, total)
    counts = kind_counts(c for f in items for c in f["cells"])
    (out / "ground_truth.json").write_text(json.dumps({**meta, "width": cfg.width, "height": cfg.height,
                                                       "counts": counts, "frames": items}, indent=1))
    summary = {"root": str(out), "frames": frames, "cells": sum(len(f["cells"]) for f in items),
               "video": None}
    if video_frames:
        video, truth = render_drift(rng, cfg, video_frames)
        recorder = VideoRecorder(out / "drift.mp4", fps, clock="frames")
        try:
            for rgb in video:
                recorder.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        finally:
            recorder.close()
        tracks = drift_tracks(truth)
        (out / "drift.json").write_text(json.dumps({**meta, "video": "drift.mp4", "fps": fps,
                                                    "width": cfg.width, "height": cfg.height,
                                                    "counts": kind_counts(tracks), "tracks": tracks,
                                                    "frames": truth}, indent=1))
        summary["video"] = str(out / "drift.mp4")
        if progress:
            progress(total, total)
    (out / SYNTHETIC_MARKER).write_text(f"Synthetic microscope fields written by leuk-edge (seed {seed}). "
                                       "Not real blood: no medical claim can rest on it.\n")
    return summary
