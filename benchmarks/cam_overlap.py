"""Does a model's `cam` output point at the nucleus? Measured on synthetic cells whose nucleus mask is known.

    python benchmarks/cam_overlap.py MODEL.onnx [--n 200] [--seed 7]

For each cell (rendered by leuk_edge.synth.cells.render_cnmc_cell, alternating all/hem, random stain) the map is
upsampled to the image and its hottest point (largest |cam|) is tested against the nucleus mask. Two layouts:
`tile` — the C-NMC tile as the model was trained on (cell near the centre), and `field` — the tile pasted at a
random spot of a 600 x 600 black field, where the centre of the image is no longer a good guess. Chance = the
nucleus's share of the image; `centre` = how often the image centre itself lies on the nucleus.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

from leuk_edge.edge import Classifier
from leuk_edge.synth.cells import CELL_CANVAS, Stain, render_cnmc_cell

FIELD = 600


def cells(n: int, seed: int, layout: str):
    rng = np.random.default_rng(seed)
    for i in range(n):
        img, nuc = render_cnmc_cell(rng, "all" if i % 2 == 0 else "hem", Stain.random(rng))
        if layout == "field":
            y0, x0 = rng.integers(0, FIELD - CELL_CANVAS + 1, 2)
            field, mask = np.zeros((FIELD, FIELD, 3), np.uint8), np.zeros((FIELD, FIELD), bool)
            field[y0:y0 + CELL_CANVAS, x0:x0 + CELL_CANVAS], mask[y0:y0 + CELL_CANVAS, x0:x0 + CELL_CANVAS] = img, nuc
            img, nuc = field, mask
        yield img, nuc


def measure(clf: Classifier, n: int, seed: int, layout: str) -> dict:
    hits, chance, centre = [], [], []
    for img, mask in cells(n, seed, layout):
        _, cam = clf.predict_rgb([img], cam=True)
        h, w = mask.shape
        up = cv2.resize(np.abs(cam[0]), (w, h), interpolation=cv2.INTER_LINEAR)
        hits.append(bool(mask.flat[int(np.argmax(up))]))
        chance.append(float(mask.mean()))
        centre.append(bool(mask[h // 2, w // 2]))
    return {"layout": layout, "n": n, "on_nucleus": float(np.mean(hits)), "chance": float(np.mean(chance)),
            "centre": float(np.mean(centre))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    clf = Classifier(args.model, device="cpu")
    if not clf.has_cam:
        sys.exit(f"{args.model} has no cam output (export it with --cam)")
    print(f"| model | layout | cells | hottest point on the nucleus | chance | image centre on the nucleus |")
    print("|---|---|---|---|---|---|")
    for layout in ("tile", "field"):
        r = measure(clf, args.n, args.seed, layout)
        print(f"| {args.model.name} | {layout} | {r['n']} | {r['on_nucleus']:.3f} | {r['chance']:.3f} | "
              f"{r['centre']:.3f} |")


if __name__ == "__main__":
    main()
