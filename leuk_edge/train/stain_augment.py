"""Stain colour augmentation for training: HED jitter plus brightness and saturation jitter.

Why HED: a lab's stain and camera differ from C-NMC's. Tellez et al. 2019 ("Quantifying the effects of data
augmentation and stain color normalization...") measured colour augmentation in the haematoxylin-eosin-DAB (HED)
optical-density space as the best single choice for cross-lab robustness, better than stain normalisation at
inference (which can hurt on badly stained images). Their "HED-light" setting perturbs each stain channel as
`s * alpha + beta` with alpha ~ U(1 - sigma, 1 + sigma), beta ~ U(-sigma, sigma), sigma = 0.05. A camera's gain and
white balance change brightness and saturation rather than stain amounts, so a brightness and saturation jitter
goes with it (as their HSV augmentation). The saturation range, x0.6-1.4, covers the paler and stronger stains a lab
shows (issue 16 names x0.65 and x1.35): with x0.75-1.25, desaturation to x0.65 still flipped 6.7 % of the
validation cells silently (benchmarks/bench_stain.py, 3 seeds). Hue is not jittered directly: the HED jitter already
moves it.

Only the cell is perturbed: C-NMC images are segmented cells on exact black, and the black must stay black (in
optical density it is "infinitely dark", and jittering it would paint the background).
Images are float32 RGB in [0, 1], as the edge's preprocessing makes them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .quiet import import_tensorflow

tf = import_tensorflow()

# Ruifrok & Johnston's stain vectors (rows: haematoxylin, eosin, DAB) in optical density, as scikit-image's
# `rgb_from_hed`; the third row completes the basis.
RGB_FROM_HED = np.array([[0.65, 0.70, 0.29],
                         [0.07, 0.99, 0.11],
                         [0.27, 0.57, 0.78]], np.float32)
HED_FROM_RGB = np.linalg.inv(RGB_FROM_HED).astype(np.float32)
OD_FLOOR = 1.0 / 255.0  # the darkest representable grey: keeps log() finite
FOREGROUND = 8.0 / 255.0  # brighter than this in any channel = cell (C-NMC background is exact black)


@dataclass(frozen=True)
class StainJitter:
    """The colour augmentation's strengths; `none` switches it off. Recorded in config.json."""
    method: str = "hed"        # hed | none
    hed_sigma: float = 0.05    # Tellez HED-light
    brightness: float = 0.10   # multiply by U(1 - b, 1 + b)
    saturation: float = 0.40   # HSV saturation times U(1 - s, 1 + s): x0.6-1.4, see the module docstring

    def as_config(self) -> dict:
        return {"method": self.method, "hed_sigma": self.hed_sigma, "brightness": self.brightness,
                "saturation": self.saturation,
                "reference": "Tellez et al. 2019, HED-light + HSV brightness/saturation "
                             "(cell only, black background kept)"}


def _hed_jitter(x, alpha, beta):
    """x (H, W, 3) in [0, 1] -> the same cell with its stain amounts scaled by alpha (3,) and shifted by beta (3,)."""
    od = -tf.math.log(tf.maximum(x, OD_FLOOR))
    hed = tf.tensordot(od, tf.constant(HED_FROM_RGB), axes=1)
    hed = hed * alpha + beta
    od = tf.tensordot(hed, tf.constant(RGB_FROM_HED), axes=1)
    return tf.clip_by_value(tf.exp(-od), 0.0, 1.0)


def _saturate(x, factor):
    """HSV saturation times `factor`, hue and value kept: the S channel that HSV colour augmentation (Tellez et al.
    2019) and a camera's saturation setting act on. (Scaling the distance from the pixel's grey instead keeps the
    mean and darkens the lightest channel: a desaturated stain keeps its brightest channel and pales, as here.)"""
    hsv = tf.image.rgb_to_hsv(x)
    h, s, v = tf.unstack(hsv, axis=-1)
    s = tf.clip_by_value(s * factor, 0.0, 1.0)
    return tf.clip_by_value(tf.image.hsv_to_rgb(tf.stack([h, s, v], axis=-1)), 0.0, 1.0)


def jitter_stain(x, seed, jitter: StainJitter):
    """One image (H, W, 3) float32 in [0, 1] and a stateless seed pair -> the colour-jittered image.

    Pixels of the black background are returned unchanged (bit for bit)."""
    if jitter.method == "none":
        return x
    s = jitter.hed_sigma
    u = tf.random.stateless_uniform((8,), seed=seed, minval=-1.0, maxval=1.0)
    alpha, beta = 1.0 + s * u[0:3], s * u[3:6]
    y = _hed_jitter(x, alpha, beta)
    y = _saturate(y, 1.0 + jitter.saturation * u[6])
    y = tf.clip_by_value(y * (1.0 + jitter.brightness * u[7]), 0.0, 1.0)
    cell = tf.reduce_max(x, axis=-1, keepdims=True) > FOREGROUND
    return tf.where(cell, y, x)
