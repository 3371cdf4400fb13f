"""Linear probe: fit a model's sigmoid head by logistic regression on its penultimate features.

Used where a network must give spread-out, meaningful P(all) without a full training run (export tests and
benchmarks on untrained networks), and usable as the "LP" step of linear-probe-then-fine-tune.
"""

from __future__ import annotations

import numpy as np

from leuk_edge.edge.labels import is_all


def _reset_batchnorm_stats(model, x: np.ndarray) -> None:
    """Set every BatchNorm's moving statistics to those of `x` (one training-mode pass with momentum 0)."""
    import keras

    bns = [layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)]
    saved = [layer.momentum for layer in bns]
    for layer in bns:
        layer.momentum = 0.0
    model(x, training=True)
    for layer, m in zip(bns, saved):
        layer.momentum = m


def _predict(fn, x: np.ndarray, batch: int = 8) -> np.ndarray:
    return np.concatenate([np.asarray(fn(x[i:i + batch], training=False)) for i in range(0, len(x), batch)])


def fit_linear_probe(model, x: np.ndarray, y: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
                     head: str = "p_all", bn_batch: int | None = 16) -> tuple[float, float]:
    """Fit layer `head` (Dense(1, sigmoid)) on the frozen features of x, y; threshold half-way between the
    class medians on the validation set. `bn_batch`: first reset BatchNorm statistics on that many images
    (None keeps them). Returns (threshold, validation accuracy)."""
    import keras
    from sklearn.linear_model import LogisticRegression

    if bn_batch:
        _reset_batchnorm_stats(model, x[:bn_batch])
    layer = model.get_layer(head)
    features = _predict(keras.Model(model.inputs[0], layer.input), x).astype(np.float64)
    mu, sd = features.mean(0), features.std() + 1e-9  # one scale: keeps relative feature sizes
    clf = LogisticRegression(C=1.0, max_iter=2000).fit((features - mu) / sd, y)
    w = clf.coef_[0] / sd
    layer.kernel.assign(w[:, None].astype(np.float32))
    layer.bias.assign(np.array([clf.intercept_[0] - (w * mu).sum()], np.float32))
    pv = _predict(model, x_val).ravel()
    threshold = float((np.median(pv[y_val == 1]) + np.median(pv[y_val == 0])) / 2)
    return threshold, float(np.mean(is_all(pv, threshold) == y_val))
