"""Wall time per training epoch for both architectures at their full input sizes on a synthetic C-NMC set.

    python benchmarks/bench_train.py [--cells 2000] [--cnn-epochs 3] [--inception-epochs 2] [--out benchmarks/results]

Writes train.md and train.json: seconds per epoch (train + validation pass), images/s of the steady epochs (train +
validation images over the median epoch after the first), and the balanced accuracy each model reached on the
held-out synthetic test subjects. Synthetic data: says nothing about real patients.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, fmt, machine_info, markdown_table, write_results  # noqa: E402  (sets TF_CPP_MIN_LOG_LEVEL)


def steady_img_per_s(epoch_seconds: list, images: int) -> float | None:
    """Train + validation images over the median epoch after the first (None with a single epoch)."""
    later = epoch_seconds[1:]
    return round(images / statistics.median(later), 1) if later else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, default=2000)
    ap.add_argument("--cnn-epochs", type=int, default=3)
    ap.add_argument("--inception-epochs", type=int, default=2)
    ap.add_argument("--weights", default="none", help="inception weights: none | imagenet | PATH")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()

    from leuk_edge.train.fit import TrainConfig, train
    from leuk_edge.synth.cells import write_synthetic_cnmc

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        work = Path(tmp)
        subjects = max(10, args.cells // 40)
        data = write_synthetic_cnmc(work / "data", subjects=subjects, cells_per_subject=args.cells // subjects,
                                    seed=11)
        for model, epochs in (("cnn", args.cnn_epochs), ("inception", args.inception_epochs)):
            metrics = train(TrainConfig(data=str(work / "data"), model=model, out=str(work / model), epochs=epochs,
                                        batch_size=32, weights=args.weights, patience=epochs))
            cfg = json.loads((work / model / "config.json").read_text())
            n_train, n_val = cfg["n"]["train"], cfg["n"]["val"]
            rows.append({"model": model, "image_size": cfg["image_size"], "train_images": n_train,
                         "val_images": n_val, "epoch_seconds": cfg["epoch_seconds"],
                         "train_val_img_per_s_steady": steady_img_per_s(cfg["epoch_seconds"], n_train + n_val),
                         "test_balanced_accuracy": metrics["test"]["balanced_accuracy"],
                         "weights": args.weights if model == "inception" else "scratch"})
    meta = machine_info()
    md = markdown_table(
        ["model", "px", "train imgs", "epoch seconds (each)", "train+val img/s (median epoch after the 1st)",
         "test balanced acc"],
        [[f"{r['model']} ({r['weights']})", r["image_size"], r["train_images"],
          ", ".join(f"{s:.0f}" for s in r["epoch_seconds"]), fmt(r["train_val_img_per_s_steady"], ".1f"),
          f"{r['test_balanced_accuracy']:.3f}"] for r in rows], align="l" * 6)
    md += (f"\n\n{meta['logical_cores']} CPU cores ({meta['cpu']}); synthetic data.\n"
           "Each epoch time includes the validation pass; the first epoch also includes the tf.data cache fill and "
           "graph tracing. For inception the first half of the epochs (rounded up) trains only the head on the "
           "frozen base, the second half fine-tunes mixed9/mixed10 (its first epoch traces again). img/s = (train + "
           "validation images) / median epoch seconds after the first epoch (– with one epoch).\n")
    write_results(args.out, "train", md, {"machine": meta, "cells": data["train"] + data["test"], "rows": rows})
    print(md)


if __name__ == "__main__":
    main()
