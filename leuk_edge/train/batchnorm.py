"""BatchNorm population statistics, recomputed over training images (PreciseBN), and the batch-statistics view.

Why: in inference mode a BatchNorm layer normalises with its *moving* statistics, an exponential average of the
batch statistics seen during training, started at mean 0 / variance 1. On a few hundred cells a run is a few dozen
steps, so the start values still weigh momentum^steps. Measured on issue 18's case (CNN, 256 px, 288 cells, 9 steps
per epoch, momentum 0.9): the first BatchNorm's input has a variance of ~0.009, its moving variance was 52x that
after one epoch (0.9^9 = 0.39 of the start value 1 left), 20x after two, 7.5x after three, 3.2x after four (the
second layer's 3.5x after one, the deeper ones' under 1.7x). Inference divided the first layer's output by up to ~7x
too much and gave every cell nearly the same P(all) (val accuracy 0.333 = the hem share for three epochs while
training accuracy rose 0.54 -> 0.87), while training mode (batch statistics) separated the cells. PreciseBN (Wu &
Johnson 2021, "Rethinking 'Batch' in BatchNorm"; Detectron2's and pycls's `update_bn_stats`) replaces the averages
by the population statistics of the current weights: one forward pass in training mode over training images, no
weight update. With it the same run validates at 0.986 from the first epoch.

Here the per-batch statistics are pooled exactly (mean of the batch means, E[x^2] - mean^2, weighted by batch
size), not averaged as variances. Only BatchNorm layers that train are touched: a frozen layer (a pretrained base)
normalises with its own statistics in both modes, so there is nothing to recompute.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np

from .quiet import import_tensorflow

import_tensorflow()  # keras imports TensorFlow: do it first, without the load-time C++ log lines
import keras  # noqa: E402

# Images the statistics are pooled over: Wu & Johnson find ~10^3-10^4 samples enough; more only costs time.
PRECISE_BN_IMAGES = 1024


def batchnorm_layers(model) -> list:
    """The model's BatchNormalization layers that train (nested models included), in call order."""
    found = []

    def walk(m):
        for layer in m.layers:
            if isinstance(layer, keras.Model):
                walk(layer)
            elif isinstance(layer, keras.layers.BatchNormalization) and layer.trainable and m.trainable:
                found.append(layer)

    walk(model)
    return found


@contextmanager
def _training_pass(model, momentum: float):
    """Training mode for BatchNorm only: every training BatchNorm layer runs on batch statistics with `momentum`
    (0: the moving statistics become the batch's; 1: they stay as they are); Dropout is switched off so the
    outputs are deterministic. Everything is restored on exit."""
    bns = batchnorm_layers(model)
    drops = []

    def walk(m):
        for layer in m.layers:
            if isinstance(layer, keras.Model):
                walk(layer)
            elif isinstance(layer, keras.layers.Dropout):
                drops.append(layer)

    walk(model)
    saved = [(bn, bn.momentum) for bn in bns] + [(d, d.rate) for d in drops]
    try:
        for bn in bns:
            bn.momentum = momentum
        for d in drops:
            d.rate = 0.0
        yield bns
    finally:
        for layer, value in saved:
            if isinstance(layer, keras.layers.Dropout):
                layer.rate = value
            else:
                layer.momentum = value


def recompute_statistics(model, batches) -> int:
    """PreciseBN: set every training BatchNorm layer's moving mean and variance to the population statistics of
    its input over `batches` (an iterable of image arrays or (image, label) pairs), computed with the current
    weights. Returns the number of images pooled (0: nothing to do, the statistics are left alone)."""
    bns = batchnorm_layers(model)
    if not bns:
        return 0
    total = 0
    s1 = [np.zeros(bn.moving_mean.shape, np.float64) for bn in bns]
    s2 = [np.zeros(bn.moving_mean.shape, np.float64) for bn in bns]
    old = [(np.asarray(bn.moving_mean), np.asarray(bn.moving_variance)) for bn in bns]
    with _training_pass(model, momentum=0.0):
        for batch in batches:
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            n = int(x.shape[0])
            if n == 0:
                continue
            model(x, training=True)  # momentum 0: each layer's moving statistics are now this batch's
            for i, bn in enumerate(bns):
                mean = np.asarray(bn.moving_mean, np.float64)
                s1[i] += n * mean
                s2[i] += n * (np.asarray(bn.moving_variance, np.float64) + mean ** 2)
            total += n
    for bn, (mean, var), a, b in zip(bns, old, s1, s2):
        if total == 0:
            bn.moving_mean.assign(mean)
            bn.moving_variance.assign(var)
            continue
        m = a / total
        bn.moving_mean.assign(m.astype(np.float32))
        bn.moving_variance.assign(np.maximum(b / total - m ** 2, 0.0).astype(np.float32))
    return total


def batch_statistics_predictions(model, batches) -> np.ndarray:
    """The model's outputs in training mode (BatchNorm on each batch's own statistics, Dropout off, nothing
    updated): what the weights compute before the moving statistics come in. Compared with inference mode on
    the same images it shows whether the moving statistics fit the weights."""
    out = []
    with _training_pass(model, momentum=1.0):
        for batch in batches:
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            out.append(np.asarray(model(x, training=True)).reshape(-1))
    return np.concatenate(out) if out else np.zeros((0,), np.float32)


class PreciseBatchNorm(keras.callbacks.Callback):
    """Recomputes the BatchNorm statistics (`recompute_statistics`) at the start of every validation pass inside
    `fit`, i.e. after each epoch's training steps and before val_loss, the checkpoint and early stopping see the
    model. Keras runs validation between the epoch's last step and `on_epoch_end`, so `on_test_begin` is the one
    hook that comes in time. Training itself is unchanged: in training mode BatchNorm uses batch statistics."""

    def __init__(self, batches):
        super().__init__()
        self.batches = batches
        self.images = 0  # images pooled at the last recomputation

    def on_test_begin(self, logs=None):
        self.images = recompute_statistics(self.model, self.batches)
