"""Wall time per training epoch for both architectures at their full input sizes on a synthetic C-NMC set.

    python benchmarks/bench_train.py [--cells 2000] [--cnn-epochs 3] [--inception-epochs 2] [--out benchmarks/results]

Writes train.md and train.json: seconds per epoch (train + validation pass), images/s, and the balanced accuracy
each model reached on the held-out synthetic test subjects. Synthetic data: says nothing about real patients.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, default=2000)
    ap.add_argument("--cnn-epochs", type=int, default=3)
    ap.add_argument("--inception-epochs", type=int, default=2)
    ap.add_argument("--weights", default="none", help="inception weights: none | imagenet | PATH")
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args()

    from leuk_edge.train.fit import TrainConfig, train
    from leuk_edge.train.synth import write_synthetic_cnmc

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench_train_"))
    subjects = max(10, args.cells // 40)
    data = write_synthetic_cnmc(work / "data", subjects=subjects, cells_per_subject=args.cells // subjects, seed=11)
    rows = []
    for model, epochs in (("cnn", args.cnn_epochs), ("inception", args.inception_epochs)):
        metrics = train(TrainConfig(data=str(work / "data"), model=model, out=str(work / model), epochs=epochs,
                                    batch_size=32, weights=args.weights, patience=epochs))
        cfg = json.loads((work / model / "config.json").read_text())
        n_train = cfg["n"]["train"]
        rows.append({"model": model, "image_size": cfg["image_size"], "train_images": n_train,
                     "val_images": cfg["n"]["val"], "epoch_seconds": cfg["epoch_seconds"],
                     "train_img_per_s_first_epoch": round(n_train / cfg["epoch_seconds"][0], 1),
                     "test_balanced_accuracy": metrics["test"]["balanced_accuracy"],
                     "weights": args.weights if model == "inception" else "scratch"})
    info = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(), "cells": data["train"]
            + data["test"], "rows": rows}
    (out / "train.json").write_text(json.dumps(info, indent=2))
    lines = ["| model | px | train imgs | epoch seconds (each) | train img/s (epoch 1) | test balanced acc |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} ({r['weights']}) | {r['image_size']} | {r['train_images']} | "
                     f"{', '.join(f'{s:.0f}' for s in r['epoch_seconds'])} | {r['train_img_per_s_first_epoch']} | "
                     f"{r['test_balanced_accuracy']:.3f} |")
    md = "\n".join(lines) + f"\n\n{os.cpu_count()} CPU cores; synthetic data.\n"
    (out / "train.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
