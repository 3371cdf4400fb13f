"""Labelled synthetic cells through THE preprocessing, for tests and benchmarks."""

from __future__ import annotations

import numpy as np

from leuk_edge.edge.preprocess import preprocess
from leuk_edge.export.parity import PARITY_SEED, _cell_labels, synthetic_cells


def labelled_cells(n: int, size: int, seed: int = PARITY_SEED, resize: str = "area") -> tuple[np.ndarray, np.ndarray]:
    """`synthetic_cells` through THE preprocessing at size x size, with their labels (1 = all, 0 = hem)."""
    x = np.stack([preprocess(c, size, size, resize) for c in synthetic_cells(n, seed)])
    return x, _cell_labels(n)
