"""Stain robustness: silent label flips on colour-shifted validation cells, without and with the colour augmentation.

    python benchmarks/bench_stain.py [--subjects 16] [--cells 40] [--size 96] [--epochs 6] [--seeds 1]
                                     [--out benchmarks/results]

Trains the CNN twice on the same synthetic C-NMC set and seed — `--stain-augment none` and `hed` — exports each
(parity gates included; a model exported with a scope gate flags `other`), then classifies the run's validation
cells as they are and under each shift of `leuk_edge.synth.stain_shift.SHIFTS` (hue +-8 deg, saturation x0.65 /
x1.35, brightness x0.85, warm white balance) and one beyond the jitter's range (saturation x0.5). Per shift and model:
  flips        - share of cells whose label moves between `all` and `hem`
  silent flips - flips the shifted cell is NOT flagged `other` for (the failure that matters: a flag is acceptable)
  flagged      - share of shifted cells labelled `other`
Writes stain.md and stain.json. Synthetic data: says nothing about real slides.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, export_onnx, log, machine_info, markdown_table, write_results  # noqa: E402

import numpy as np  # noqa: E402


def val_paths(run: Path, data: Path) -> list[str]:
    """The run's own validation cells (by the subjects split.json lists)."""
    from leuk_edge.train.data import load_dataset

    subjects = set(json.loads((run / "split.json").read_text())["val"])
    return [it.path for it in load_dataset(data).train if it.subject in subjects]


def infer_all(clf, images: list[np.ndarray]) -> tuple[list[str], list[str]]:
    """-> (label by P(all) alone, label with the scope gate) per image."""
    by_p, final = [], []
    for i in range(0, len(images), 64):
        out = clf.infer_rgb(images[i:i + 64])
        by_p += [clf.label(float(p)) for p in out.p_all]
        final += clf.labels(out)
    return by_p, final


def flip_rates(base: tuple[list[str], list[str]], shifted: tuple[list[str], list[str]]) -> dict:
    """flips: P(all) moves the cell across the threshold (all <-> hem); silent: such a flip whose shifted cell is
    not flagged `other`; flagged: shifted cells labelled `other`. Over the cells classed (not `other`) unshifted."""
    (p0, f0), (p1, f1) = base, shifted
    kept = [i for i in range(len(f0)) if f0[i] != "other"]
    flips = [i for i in kept if p0[i] != p1[i]]
    return {"n": len(kept), "flips": len(flips) / len(kept),
            "silent_flips": sum(f1[i] != "other" for i in flips) / len(kept),
            "flagged": sum(f == "other" for f in f1) / len(f1)}


def measure(model: Path, paths: list[str]) -> dict:
    """Per shift: flip, silent-flip and flag rates of one exported model over the validation cells."""
    import cv2

    from leuk_edge.edge.model import Classifier
    from leuk_edge.synth.stain_shift import BEYOND_SHIFTS, SHIFTS, shift_stain

    clf = Classifier(model)
    rgb = [cv2.cvtColor(cv2.imread(p, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB) for p in paths]
    base = infer_all(clf, rgb)
    rows = {"scope_gate": clf.has_scope, "base_other": sum(b == "other" for b in base[1]) / len(base[1])}
    for shift in SHIFTS + BEYOND_SHIFTS:
        rows[shift] = flip_rates(base, infer_all(clf, [shift_stain(im, shift) for im in rgb]))
    return rows


def train_and_export(data: Path, work: Path, augment: str, seed: int, args) -> tuple[Path, dict]:
    from leuk_edge.train.fit import TrainConfig, train

    run = work / f"cnn_{augment}_{seed}"
    metrics = train(TrainConfig(data=str(data), model="cnn", out=str(run), epochs=args.epochs, batch_size=32,
                                image_size=args.size, seed=seed, patience=args.epochs, stain_augment=augment),
                    log=lambda m: None)
    export_onnx(run / "model.keras", int8=False, verbose=False)
    return run, metrics


def average(runs: list[dict]) -> dict:
    """The arms' rates averaged over seeds, with each rate's range across them ({shift: {rate: mean, rate_range}})."""
    out = {k: v for k, v in runs[0].items() if not isinstance(v, (dict, float)) and k != "seed"}
    for key, value in runs[0].items():
        if isinstance(value, dict):
            out[key] = {}
            for rate in value:
                vals = [r[key][rate] for r in runs]
                out[key][rate] = float(np.mean(vals))
                out[key][f"{rate}_range"] = [float(min(vals)), float(max(vals))]
        elif isinstance(value, float):
            out[key] = float(np.mean([r[key] for r in runs]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--subjects", type=int, default=16)
    ap.add_argument("--cells", type=int, default=40, help="cells per subject")
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--seed", type=int, default=0, help="training seed of the first pair")
    ap.add_argument("--seeds", type=int, default=1,
                    help="train each arm with this many seeds (seed, seed+1, ...); rates are averaged over them")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()

    from leuk_edge.synth.cells import write_synthetic_cnmc
    from leuk_edge.synth.stain_shift import BEYOND_SHIFTS, SHIFTS

    results = {}
    with tempfile.TemporaryDirectory(prefix="bench_stain_") as tmp:
        work = Path(tmp)
        write_synthetic_cnmc(work / "data", subjects=args.subjects, cells_per_subject=args.cells, seed=5)
        data = work / "data"
        per_seed = {"none": [], "hed": []}
        for seed in range(args.seed, args.seed + args.seeds):
            for augment in ("none", "hed"):  # the two arms of one seed in turn: machine drift hits both alike
                log(f"training cnn --stain-augment {augment} --seed {seed} ...")
                run, metrics = train_and_export(Path(data), work, augment, seed, args)
                paths = val_paths(run, Path(data))
                per_seed[augment].append({"seed": seed, "val_balanced_accuracy": metrics["val"]["balanced_accuracy"],
                                          "test_balanced_accuracy": metrics["test"]["balanced_accuracy"],
                                          "val_cells": len(paths), **measure(run / "model.onnx", paths)})
        results = {a: average(runs) for a, runs in per_seed.items()}
    pct = lambda v: f"{100 * v:.1f} %"  # noqa: E731
    rows = [[s + (" (beyond the jitter)" if s in BEYOND_SHIFTS else "")]
            + [pct(results[a][s][k]) for a in ("none", "hed") for k in ("flips", "silent_flips", "flagged")]
            for s in SHIFTS + BEYOND_SHIFTS]
    md = ("# Stain robustness: label flips on colour-shifted validation cells\n\n"
          f"CNN at {args.size} px, {args.epochs} epochs, {args.subjects} synthetic subjects x {args.cells} cells, "
          f"{args.seeds} training seed(s) per arm (rates: mean over seeds; range in stain.json), "
          f"{results['none']['val_cells']} validation cells. Scope gate in the exported models: "
          f"{results['none']['scope_gate']} / {results['hed']['scope_gate']} (without one nothing is flagged and "
          "every flip is silent). Test balanced accuracy: "
          f"{results['none']['test_balanced_accuracy']:.3f} without, {results['hed']['test_balanced_accuracy']:.3f} "
          "with the augmentation.\n\n"
          + markdown_table(["shift", "flips (none)", "silent (none)", "flagged (none)",
                            "flips (hed)", "silent (hed)", "flagged (hed)"], rows)
          + "\n\nSynthetic data (each subject has its own mild stain tint): says nothing about real slides.\n")
    md_path, _ = write_results(args.out, "stain", md, {"args": vars(args), "results": results,
                                                        "per_seed": per_seed, "machine": machine_info()})
    print(md)
    log(f"wrote {md_path}")


if __name__ == "__main__":
    main()
