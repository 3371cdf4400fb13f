"""THE decision rule. Everything that labels a cell calls this.

- a cell whose out-of-scope score `ood` is over the model's scope threshold is `other` (not a cell the model knows:
  a neutrophil, a red-cell clump, debris, another stain); `other` is never counted as `all` or `hem`;
- else P(all) >= threshold -> `all`, below -> `hem`.
Models without a scope gate (no `ood` output) give `ood=None`: only the P(all) rule applies.
"""

from __future__ import annotations

import numpy as np

from .. import CLASSES

OTHER = "other"  # the label of an out-of-scope cell (docs/contracts.md)


def is_all(probability, threshold: float):
    """True where P(all) reaches the threshold (scalar or array in, bool or bool array out)."""
    return np.asarray(probability) >= threshold if np.ndim(probability) else float(probability) >= threshold


def is_other(ood, ood_threshold: float | None):
    """True where the out-of-scope score is over the scope threshold (scalar or array); never without a score or
    a threshold."""
    if ood is None or ood_threshold is None:
        return np.zeros(np.shape(ood), bool) if np.ndim(ood) else False
    return np.asarray(ood) > ood_threshold if np.ndim(ood) else float(ood) > ood_threshold


def label_for(probability: float, threshold: float, classes=CLASSES, ood: float | None = None,
              ood_threshold: float | None = None) -> str:
    """The label of one cell: OTHER when `ood` is over `ood_threshold`, else classes[1] ("all") at or above the
    P(all) threshold and classes[0] ("hem") below."""
    if is_other(ood, ood_threshold):
        return OTHER
    return classes[1] if is_all(probability, threshold) else classes[0]


def is_uncertain(probability, threshold: float, band: float):
    """THE uncertain rule (report, station): P(all) within `band` of the threshold, both edges included,
    |P(all) - threshold| <= band (scalar or array in, bool or bool array out). A cell labelled `other` is out of
    scope, not uncertain: callers leave those out before asking."""
    if np.ndim(probability):
        return np.abs(np.asarray(probability, np.float64) - threshold) <= band
    return abs(float(probability) - threshold) <= band
