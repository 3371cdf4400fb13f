"""Synthetic stand-in for C-NMC: single stained white cells on black, 450x450 BMP, in the Kaggle layout.

Leukemic blasts ("all") and normal lymphocytes ("hem") differ the way the cytology literature describes,
with overlapping distributions so the task is learnable but not trivial:
  blasts: larger cells, high nucleus-to-cytoplasm ratio, fine (open) chromatin, visible nucleoli, notches;
  normal: smaller cells, more cytoplasm, coarse clumped chromatin.
Each subject gets its own stain tint, so a subject leaking across splits would inflate scores as on real data.
numpy + OpenCV only. Stand-in data: no medical claim can rest on it.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

CELL_CANVAS = 450
SYNTHETIC_MARKER = "SYNTHETIC.txt"


@dataclass(frozen=True)
class Stain:
    """Per-subject/per-slide colour of the May-Grünwald-Giemsa-like stain (RGB multipliers, brightness)."""
    tint: tuple = (1.0, 1.0, 1.0)
    brightness: float = 1.0

    @classmethod
    def random(cls, rng: np.random.Generator) -> Stain:
        return cls(tuple(rng.uniform(0.95, 1.05, 3)), float(rng.uniform(0.94, 1.04)))


def _smooth_noise(rng, shape, cells: int) -> np.ndarray:
    """Zero-mean, unit-ish noise with blobs about shape/cells across."""
    small = rng.standard_normal((cells, cells)).astype(np.float32)
    return cv2.resize(small, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)


def _polar_mask(size: int, center, radius: float, rng, wobble: float, notch: float = 0.0) -> np.ndarray:
    """A filled irregular blob: radius modulated by a few low harmonics (and an optional notch/cleft)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    dx, dy = xx - center[0], yy - center[1]
    theta = np.arctan2(dy, dx)
    r = np.ones_like(theta)
    for k in range(2, 6):
        r += wobble / k * rng.uniform(0.3, 1.0) * np.sin(k * theta + rng.uniform(0, 2 * math.pi))
    if notch > 0:
        phi = rng.uniform(-math.pi, math.pi)
        r -= notch * np.exp(-((np.angle(np.exp(1j * (theta - phi)))) ** 2) / 0.05)
    return (np.hypot(dx, dy) <= radius * r).astype(np.float32)


def render_cell(rng: np.random.Generator, label: str, stain: Stain | None = None, radius: float | None = None):
    """One white cell -> (rgb uint8 (S, S, 3) on black, cell mask float32 (S, S), nucleus mask float32).

    S is just large enough for the cell; callers paste it onto a black 450x450 canvas or a microscope field.
    """
    blast = label == "all"
    stain = stain or Stain()
    if radius is None:
        radius = rng.normal(118, 16) if blast else rng.normal(92, 14)
    radius = float(np.clip(radius, 8, 200))
    size = int(2 * radius * 1.35) + 4
    c = (size / 2 + rng.normal(0, 1), size / 2 + rng.normal(0, 1))
    cell = _polar_mask(size, c, radius, rng, wobble=rng.uniform(0.03, 0.10))
    nc = rng.uniform(0.78, 0.92) if blast else rng.uniform(0.55, 0.76)  # nucleus : cell radius
    off = radius * (0.03 if blast else 0.12) * rng.uniform(0, 1, 2) * rng.choice([-1, 1], 2)
    nuc = _polar_mask(size, (c[0] + off[0], c[1] + off[1]), radius * nc, rng,
                      wobble=rng.uniform(0.03, 0.12), notch=rng.uniform(0.0, 0.25) if blast else 0.0) * cell

    cyto_rgb = np.array([178, 160, 212]) + rng.normal(0, 10, 3)
    nuc_rgb = np.array([112, 58, 150]) + rng.normal(0, 10, 3)
    img = np.zeros((size, size, 3), np.float32)
    img += cell[..., None] * cyto_rgb
    # Chromatin: normal lymphocytes have coarse, high-contrast clumps; blasts a fine, even ("open") pattern.
    if blast:
        chroma = 0.45 * _smooth_noise(rng, (size, size), 40) + 0.15 * _smooth_noise(rng, (size, size), 10)
    else:
        chroma = 0.9 * _smooth_noise(rng, (size, size), 9) + 0.2 * _smooth_noise(rng, (size, size), 30)
    shade = 1.0 + 0.16 * np.clip(chroma, -2.5, 2.5)
    nucleus = nuc[..., None] * nuc_rgb / shade[..., None]
    img = img * (1 - nuc[..., None]) + nucleus
    if blast:  # 1-3 nucleoli: paler round spots inside the nucleus
        ys, xs = np.nonzero(nuc > 0.5)
        for _ in range(int(rng.integers(1, 4))):
            if len(ys) == 0:
                break
            i = int(rng.integers(len(ys)))
            spot = np.zeros((size, size), np.float32)
            cv2.circle(spot, (int(xs[i]), int(ys[i])), max(2, int(radius * rng.uniform(0.06, 0.11))), 1.0, -1)
            spot = cv2.GaussianBlur(spot, (0, 0), 2.0) * nuc
            img = img * (1 - 0.35 * spot[..., None]) + 0.35 * spot[..., None] * (cyto_rgb + 10)
    img *= np.array(stain.tint, np.float32) * stain.brightness
    img = cv2.GaussianBlur(img, (0, 0), 1.0)
    img += rng.normal(0, 4, img.shape).astype(np.float32) * cell[..., None]
    img *= cell[..., None]  # segmented cell on black, like C-NMC
    return np.clip(img, 0, 255).astype(np.uint8), cell, nuc


def render_cnmc_image(rng: np.random.Generator, label: str, stain: Stain | None = None,
                      radius: float | None = None) -> np.ndarray:
    """A C-NMC-like 450x450 RGB image: one cell, centred with jitter, on black. `radius` in px fixes the cell's
    size (the canvas is ~30 um wide, edge.detect.CNMC_UM_PER_PX: 1 um = 15 px); default: drawn per type."""
    return render_cnmc_cell(rng, label, stain, radius=radius)[0]


def render_cnmc_cell(rng: np.random.Generator, label: str, stain: Stain | None = None,
                     radius: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """`render_cnmc_image` and the nucleus it drew: (RGB uint8 450x450, nucleus mask bool 450x450), for tests
    that check where a model looks. Draws the same random numbers, so the image equals render_cnmc_image's."""
    rgb, _, nuc = render_cell(rng, label, stain, radius=radius)
    canvas, (mask,) = paste_centred(rng, rgb, nuc)
    return canvas, mask


def paste_centred(rng: np.random.Generator, rgb: np.ndarray, *masks: np.ndarray):
    """A square drawing (S, S, 3) on a black 450x450 canvas, centred with a few pixels' jitter (a larger one keeps
    its top-left 450x450) -> (canvas uint8, [each mask (S, S) placed the same way, as bool])."""
    canvas = np.zeros((CELL_CANVAS, CELL_CANVAS, 3), np.uint8)
    s = min(rgb.shape[0], CELL_CANVAS)
    slack = CELL_CANVAS - s
    y0 = int(np.clip(slack / 2 + rng.normal(0, 8), 0, slack))
    x0 = int(np.clip(slack / 2 + rng.normal(0, 8), 0, slack))
    canvas[y0:y0 + s, x0:x0 + s] = rgb[:s, :s]
    placed = []
    for m in masks:
        full = np.zeros((CELL_CANVAS, CELL_CANVAS), bool)
        full[y0:y0 + s, x0:x0 + s] = m[:s, :s] > 0.5
        placed.append(full)
    return canvas, placed


def write_bmp(path: Path, rgb: np.ndarray) -> None:
    """RGB -> image file (format from the suffix; BMP and PNG are lossless), parent folders created."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write {path}")


def cell_name(subject: str, index: int, label: str) -> str:
    """C-NMC naming: UID_<subject>_<image>_<cell>_<all|hem>.bmp (a few cells per microscope image)."""
    return f"UID_{subject}_{index // 3 + 1}_{index % 3 + 1}_{label}.bmp"


def _write_prelim(root: Path, rows: list, rng: np.random.Generator) -> None:
    """The labelled prelim-phase test set: renamed 1..N (shuffled), the original names kept in the labels CSV."""
    order = rng.permutation(len(rows))
    pdir = root / "validation_data" / "C-NMC_test_prelim_phase_data"
    pdir.mkdir(parents=True, exist_ok=True)
    with open(root / "validation_data" / "C-NMC_test_prelim_phase_data_labels.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["Patient_ID", "new_names", "labels"])
        for new, j in enumerate(order, start=1):
            name, label, img = rows[j]
            write_bmp(pdir / f"{new}.bmp", img)
            w.writerow([name, f"{new}.bmp", 1 if label == "all" else 0])


def write_synthetic_cnmc(out: str | Path, subjects: int = 12, cells_per_subject: int = 30, seed: int = 0,
                         final_cells: int = 10, progress=None) -> dict:
    """Write a synthetic dataset in the Kaggle C-NMC layout under OUT/C-NMC_Leukemia; returns a summary.

    About 2/3 of the subjects are ALL patients (numeric ids), 1/3 normal (H<n>), as in C-NMC. Per class, ~20 %
    of the subjects (at least one) form the labelled prelim-phase test set; the rest are spread over 3 folds.
    """
    if subjects < 6:
        raise ValueError("--subjects must be at least 6 (train, validation and test each need both classes)")
    if cells_per_subject < 1:
        raise ValueError("--cells-per-subject must be at least 1")
    rng = np.random.default_rng(seed)
    root = Path(out) / "C-NMC_Leukemia"
    n_hem = max(3, round(subjects / 3))
    n_all = subjects - n_hem
    if n_all < 3:
        raise ValueError("--subjects too small: need at least 3 ALL and 3 normal subjects")
    ids = {"all": [str(i + 1) for i in range(n_all)], "hem": [f"H{i + 1}" for i in range(n_hem)]}
    total = subjects * cells_per_subject + final_cells
    done = 0
    summary = {"root": str(root), "train": 0, "test": 0, "final": final_cells, "subjects": ids}
    root.mkdir(parents=True, exist_ok=True)
    # The marker makes every downstream artefact (plots, reports, metrics) say the data is synthetic.
    (root / SYNTHETIC_MARKER).write_text(f"Synthetic stand-in for C-NMC 2019 written by leuk-edge (seed {seed}). "
                                         "Not real cells: no medical claim can rest on it.\n")
    prelim_rows = []
    for label, subj_ids in ids.items():
        n_test = max(1, round(0.2 * len(subj_ids)))
        for k, subject in enumerate(subj_ids):
            stain = Stain.random(rng)
            is_test = k >= len(subj_ids) - n_test
            for i in range(cells_per_subject):
                img = render_cnmc_image(rng, label, stain)
                name = cell_name(subject, i, label)
                if is_test:
                    prelim_rows.append((name, label, img))
                    summary["test"] += 1
                else:
                    write_bmp(root / "training_data" / f"fold_{k % 3}" / label / name, img)
                    summary["train"] += 1
                done += 1
                if progress:
                    progress(done, total)
    _write_prelim(root, prelim_rows, rng)
    fdir = root / "testing_data" / "C-NMC_test_final_phase_data"
    fdir.mkdir(parents=True, exist_ok=True)
    for i in range(final_cells):
        label = "all" if rng.random() < 0.68 else "hem"
        write_bmp(fdir / f"{i + 1}.bmp", render_cnmc_image(rng, label, Stain.random(rng)))
        done += 1
        if progress:
            progress(done, total)
    return summary
