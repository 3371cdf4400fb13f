"""Matplotlib figures for a run: learning curves, confusion matrices, ROC curves, model comparison.
Every figure carries the intended-use note (and the synthetic-data note when it applies)."""

from __future__ import annotations

import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: no display next to a training server
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .. import DISCLAIMER, SYNTHETIC_NOTE  # noqa: E402


def _footer(fig, synthetic: bool) -> None:
    note = DISCLAIMER + (" " + SYNTHETIC_NOTE if synthetic else "")
    fig.text(0.5, 0.005, note, ha="center", va="bottom", fontsize=7, color="dimgray", wrap=True)


def _save(fig, path: Path, synthetic: bool) -> Path:
    _footer(fig, synthetic)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_curves(history_csv: Path, out: Path, synthetic: bool = False) -> Path:
    with open(history_csv, newline="") as fh:
        rows = list(csv.DictReader(fh))
    epochs = [int(r["epoch"]) + 1 for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, title in ((axes[0], "accuracy", "Accuracy"), (axes[1], "loss", "Loss")):
        for prefix, style in (("", "-o"), ("val_", "--s")):
            if rows and prefix + key in rows[0]:
                ax.plot(epochs, [float(r[prefix + key]) for r in rows], style, ms=3,
                        label="validation" if prefix else "train")
        ax.set(title=title, xlabel="epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    return _save(fig, out, synthetic)


def plot_confusion(metrics: dict, out: Path, synthetic: bool = False) -> Path:
    splits = [s for s in ("val", "test") if s in metrics]
    fig, axes = plt.subplots(1, len(splits), figsize=(4.2 * len(splits), 4), squeeze=False)
    for ax, split in zip(axes[0], splits):
        cm = np.array(metrics[split]["confusion_matrix"])
        ax.imshow(cm, cmap="Blues")
        for (i, j), v in np.ndenumerate(cm):
            ax.text(j, i, str(v), ha="center", va="center", color="white" if v > cm.max() / 2 else "black")
        ax.set(xticks=[0, 1], yticks=[0, 1], xticklabels=["hem", "all"], yticklabels=["hem", "all"],
               xlabel="predicted", ylabel="true",
               title=f"{split} (n={metrics[split]['n']}, thr={metrics[split]['threshold']:.2f})")
    return _save(fig, out, synthetic)


def plot_roc(curves: dict, out: Path, synthetic: bool = False) -> Path:
    """curves: split -> (y_true, prob)."""
    from sklearn.metrics import roc_auc_score, roc_curve

    fig, ax = plt.subplots(figsize=(5, 5))
    for split, (y, p) in curves.items():
        if len(np.unique(y)) < 2:
            continue
        fpr, tpr, _ = roc_curve(y, p)
        ax.plot(fpr, tpr, label=f"{split} AUC={roc_auc_score(y, p):.3f}")
    ax.plot([0, 1], [0, 1], ":", color="gray")
    ax.set(xlabel="false positive rate (hem called all)", ylabel="true positive rate (all found)", title="ROC")
    ax.legend(loc="lower right")
    return _save(fig, out, synthetic)


COMPARE_METRICS = (("accuracy", "accuracy"), ("balanced_accuracy", "balanced acc."),
                   ("weighted_f1", "weighted F1"), ("roc_auc", "ROC AUC"))


def plot_compare(rows: list[dict], split: str, out: Path, synthetic: bool = False) -> Path:
    """rows: [{"name": ..., "metrics": {...}}] -> grouped bars per metric."""
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / max(len(rows), 1)
    x = np.arange(len(COMPARE_METRICS))
    for i, row in enumerate(rows):
        vals = [row["metrics"].get(k) or 0.0 for k, _ in COMPARE_METRICS]
        bars = ax.bar(x + (i - (len(rows) - 1) / 2) * width, vals, width, label=row["name"])
        ax.bar_label(bars, fmt="%.3f", fontsize=7)
    ax.set_xticks(x, [label for _, label in COMPARE_METRICS])
    ax.set(ylim=(0, 1.25), title=f"Model comparison on the {split} split")
    ax.legend(loc="upper center", ncol=max(len(rows), 1), frameon=False)  # above the bars, not over them
    return _save(fig, out, synthetic)


def plot_reliability(curves: dict, temperature: float, out: Path, synthetic: bool = False) -> Path:
    """curves: split -> (y_true, raw P(all), calibrated P(all)). Per split: observed fraction of `all` against
    mean P(all) in 15 equal-width bins, before and after temperature scaling, over the bin counts."""
    from .calibration import ECE_BINS, ece, reliability_bins

    splits = list(curves)
    fig, axes = plt.subplots(2, len(splits), figsize=(5 * len(splits), 6.5), squeeze=False,
                             gridspec_kw={"height_ratios": [3, 1.3]})
    width = 1.0 / ECE_BINS
    for col, split in enumerate(splits):
        y, raw, cal = curves[split]
        top, bottom = axes[0][col], axes[1][col]
        top.plot([0, 1], [0, 1], ":", color="gray", label="perfect calibration")
        for (name, p, style), shift in zip((("before", raw, "-o"), (f"after (T={temperature:.2f})", cal, "-s")),
                                           (-width / 4, width / 4)):
            b = reliability_bins(y, p)
            full = b["count"] > 0
            top.plot(b["mean_p"][full], b["fraction_all"][full], style, ms=4,
                     label=f"{name}: ECE {ece(y, p):.3f}")
            centres = b["edges"][:-1] + width / 2 + shift
            bars = bottom.bar(centres, b["count"], width / 2, label=name)
            bottom.bar_label(bars, labels=[str(c) if c else "" for c in b["count"]], fontsize=6)
        top.set(xlim=(0, 1), ylim=(0, 1), xlabel="mean P(all) in bin", ylabel="observed fraction all",
                title=f"{split} (n={len(y)})")
        top.grid(alpha=0.3)
        top.legend(loc="upper left", fontsize=8)
        bottom.set(xlim=(0, 1), xlabel="P(all) bin", ylabel="cells")
        bottom.legend(fontsize=7)
    return _save(fig, out, synthetic)
