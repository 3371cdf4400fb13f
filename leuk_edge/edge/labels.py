"""THE decision rule: P(all) >= threshold -> "all", else "hem". Everything that labels a cell calls this."""

from __future__ import annotations

import numpy as np

from .. import CLASSES


def is_all(probability, threshold: float):
    """True where P(all) reaches the threshold (scalar or array in, bool or bool array out)."""
    return np.asarray(probability) >= threshold if np.ndim(probability) else float(probability) >= threshold


def label_for(probability: float, threshold: float, classes=CLASSES) -> str:
    """The class name for one P(all): classes[1] ("all") at or above the threshold, classes[0] ("hem") below."""
    return classes[1] if is_all(probability, threshold) else classes[0]
