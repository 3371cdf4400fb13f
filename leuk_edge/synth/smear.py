"""The optics of a stained blood smear that fields and out-of-scope objects share: the lamp, the absorbance of
stained objects (optical density per RGB channel; overlaps add), and the thickness maps of red cells and platelets.
numpy + OpenCV only."""

from __future__ import annotations

import math

import numpy as np

# Light through an empty slide, and the absorbance (optical density per channel, RGB) of the stained objects.
LIGHT = np.array([246.0, 240.0, 242.0], np.float32)
OD_PLASMA = np.array([0.010, 0.035, 0.030], np.float32)
OD_RBC = np.array([0.09, 0.44, 0.36], np.float32)       # eosin pink; a single cell ~ (225, 155, 168)
OD_PLATELET = np.array([0.42, 0.80, 0.28], np.float32)  # azure purple granules


def rbc_template(rng: np.random.Generator, radius: float) -> np.ndarray:
    """Thickness map of one biconcave red cell: thick rim, thin centre (central pallor), slightly oval."""
    ax, ay = radius * rng.uniform(0.94, 1.06), radius * rng.uniform(0.94, 1.06)
    half = int(math.ceil(max(ax, ay))) + 2
    yy, xx = np.mgrid[-half:half + 1, -half:half + 1].astype(np.float32)
    a = rng.uniform(0, math.pi)
    u = (xx * math.cos(a) + yy * math.sin(a)) / ax
    v = (-xx * math.sin(a) + yy * math.cos(a)) / ay
    rho = np.sqrt(u * u + v * v)
    profile = 0.42 + 0.58 * np.exp(-((rho - 0.74) / 0.30) ** 2)
    edge = np.clip((1.0 - rho) * radius / 1.3, 0.0, 1.0)  # ~1 px soft edge
    return (profile * edge).astype(np.float32)


def platelet_template(rng: np.random.Generator, radius: float) -> np.ndarray:
    """A small irregular granular blob: dense purple centre (granulomere), pale rim."""
    half = int(math.ceil(radius * 1.4)) + 2
    yy, xx = np.mgrid[-half:half + 1, -half:half + 1].astype(np.float32)
    theta = np.arctan2(yy, xx)
    r = radius * (1 + 0.18 * np.sin(2 * theta + rng.uniform(0, 6.3)) + 0.1 * np.sin(3 * theta + rng.uniform(0, 6.3)))
    rho = np.hypot(xx, yy) / np.maximum(r, 1e-3)
    body = np.clip((1.0 - rho) * radius / 1.0, 0.0, 1.0)
    grain = 0.75 + 0.5 * rng.random(body.shape).astype(np.float32)
    core = np.exp(-(rho / 0.55) ** 2)
    return (body * (0.35 + 0.9 * core * grain)).astype(np.float32)
