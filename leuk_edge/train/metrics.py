"""Evaluation metrics (scikit-learn) with `all` as the positive class; weighted F1 is the C-NMC ranking metric."""

from __future__ import annotations

import math

import numpy as np
from sklearn import metrics as skm

from ..edge.labels import is_all
from ..edge.run_metrics import SPLITS, split_metrics  # noqa: F401 (the one rule, shared with the report)


def choose_threshold(y_true, prob) -> float:
    """The threshold maximising Youden's J (= balanced accuracy) on the validation split.
    Picked on val only: the test split never influences any choice."""
    y_true = np.asarray(y_true).astype(int)
    if len(np.unique(y_true)) < 2:
        return 0.5
    fpr, tpr, thr = skm.roc_curve(y_true, prob)
    j = tpr - fpr
    best = int(np.argmax(j))
    # roc_curve's thresholds are the scores themselves (the first is +inf): the val image scoring exactly thr[best]
    # would be decided by rounding (INT8/FP16 variants), so take the midpoint to the next lower score, which
    # makes the same decisions on val with a margin either side.
    t = thr[best] if np.isfinite(thr[best]) else 1.0
    below = np.asarray(prob, dtype=np.float64)[np.asarray(prob) < t]
    if below.size:
        t = (t + below.max()) / 2
    return float(np.clip(t, 1e-6, 1.0))


def compute_metrics(y_true, prob, threshold: float = 0.5) -> dict:
    y_true = np.asarray(y_true).astype(int)
    prob = np.asarray(prob, dtype=np.float64).ravel()
    y_pred = is_all(prob, threshold).astype(int)
    p, r, _, _ = skm.precision_recall_fscore_support(y_true, y_pred, labels=[0, 1], zero_division=0)
    cm = skm.confusion_matrix(y_true, y_pred, labels=[0, 1])
    both = len(np.unique(y_true)) == 2
    auc = float(skm.roc_auc_score(y_true, prob)) if both else None
    return {
        "n": int(len(y_true)),
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "balanced_accuracy": float(skm.balanced_accuracy_score(y_true, y_pred)) if both else None,
        "weighted_f1": float(skm.f1_score(y_true, y_pred, average="weighted", labels=[0, 1], zero_division=0)),
        "roc_auc": None if auc is None or math.isnan(auc) else auc,
        "precision": {"hem": float(p[0]), "all": float(p[1])},
        "recall": {"hem": float(r[0]), "all": float(r[1])},
        "confusion_matrix": cm.astype(int).tolist(),  # [[tn, fp], [fn, tp]], all = positive
        "threshold": float(threshold),
    }


# metrics.json: one entry per evaluated split (`evaluate` scores `all_labelled` when a run has no val subjects);
# every other key (`health`, the scope gate's `scope`) describes the run, not a split.


def run_threshold(run_dir, config: dict) -> tuple[float, str]:
    """A run's decision threshold and where it came from, one rule for `evaluate`, `evaluate --explain` and
    `export`: config.json's `threshold` ("config"), else the validation threshold in the run's metrics.json
    ("metrics.json", runs whose config.json lacks it), else 0.5 ("assumed"). ValueError (one line) for a value
    that is not a probability."""
    import json
    from pathlib import Path

    value, source = config.get("threshold"), "config"
    if value is None:
        source = "metrics.json"
        try:
            value = json.loads((Path(run_dir) / "metrics.json").read_text())["val"]["threshold"]
        except (OSError, KeyError, TypeError, ValueError):
            value, source = 0.5, "assumed"
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"threshold {value!r} ({source}) is not a number") from None
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"threshold {value} ({source}) is not a probability")
    return value, source
