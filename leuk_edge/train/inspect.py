"""`leuk-edge data inspect`: what a dataset folder holds, before training on it."""

from __future__ import annotations

from collections import Counter

from .data import load_dataset, probe_images


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
    # labelled images were decoded once by load_dataset; only the unlabelled final set is read here
    sizes = ds.image_sizes + Counter(size for _, size in probe_images(ds.final) if size)
    report["image_sizes"] = dict(sizes.most_common())
    return report
