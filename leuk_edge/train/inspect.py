"""`leuk-edge data inspect`: what a dataset folder holds, before training on it."""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import cv2

from .data import load_dataset


def _size(path: str):
    img = cv2.imread(path, cv2.IMREAD_UNCHANGED)  # header-only reads are not portable across formats
    return None if img is None else f"{img.shape[1]}x{img.shape[0]}"


def inspect_dataset(data) -> dict:
    ds = load_dataset(data, check_images=True)
    labelled = ds.train + ds.test
    names = {0: "hem", 1: "all"}
    by_split = {"training_data": ds.train, "prelim_test": ds.test}
    report = {
        "root": str(ds.root), "layout": ds.layout, "synthetic": ds.synthetic,
        "splits": {k: {"images": len(v), "all": sum(i.label for i in v), "hem": sum(1 - i.label for i in v),
                       "subjects": len({i.subject for i in v})} for k, v in by_split.items()},
        "final_unlabelled": len(ds.final),
        "folds": {f: dict(Counter(names[i.label] for i in ds.train if i.fold == f))
                  for f in sorted({i.fold for i in ds.train})},
        "subjects": {s: {"class": names[lab], "images": n}
                     for (s, lab), n in sorted(Counter((i.subject, i.label) for i in labelled).items())},
        "unreadable": [{"path": p, "reason": r} for p, r in ds.unreadable],
    }
    with ThreadPoolExecutor(4) as pool:
        sizes = Counter(s for s in pool.map(_size, [i.path for i in labelled] + ds.final) if s)
    report["image_sizes"] = dict(sizes.most_common())
    return report
