"""The scope model: how far a cell's penultimate features lie from the training cells (docs/contracts.md, Scope).

    ood(f) = min_c (f - mu_c)^T P (f - mu_c)

f: the features feeding the final logit (the input of `p_all`), mu_c: the mean over the run's TRAINING cells of
class c, P: the inverse of the shared (class-centred) covariance shrunk by Ledoit-Wolf (a 64- or 2048-dimensional
covariance from a few hundred cells is singular without shrinkage). Only the training cells are used: never val
or test, never the drawn out-of-scope cells of `synth.others`. The threshold is the `accept` quantile of the val
cells' ood, so that share of in-scope val cells is accepted. No confidence term: the distance alone (one number
to gate, one to check in the parity gate).

Saved as RUN/scope.npz (`save`/`load`); export adds the same computation to the ONNX graph (`scope_layer`), with
P factored as L L^T (Cholesky) so the graph computes sum((f L - mu_c L)^2), a sum of squares with no float32
cancellation, while `mahalanobis` (the reference) uses P itself in float64.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

METHOD = "mahalanobis"  # metadata / metrics.json `scope.method`
FILENAME = "scope.npz"
DEFAULT_ACCEPT = 0.95
OTHERS_PER_KIND = 8  # drawn out-of-scope cells per kind for metrics.json `scope.auroc_other`


@dataclass
class ScopeStats:
    means: np.ndarray  # (C, D) float64, per-class means of the training features (class index = label)
    precision: np.ndarray  # (D, D) float64, inverse of the Ledoit-Wolf shrunk shared covariance
    threshold: float = float("inf")
    accept: float = DEFAULT_ACCEPT
    accept_rate_val: float | None = None
    n_train: int = 0

    @property
    def whitening(self) -> np.ndarray:
        """L with P = L L^T: ||(f - mu) L||^2 = (f - mu)^T P (f - mu)."""
        p = (self.precision + self.precision.T) / 2
        return np.linalg.cholesky(p)

    def metadata(self) -> dict:
        """The ONNX metadata's `scope` entry."""
        return {"method": METHOD, "threshold": float(self.threshold), "fitted_on": "train",
                "accept_rate_val": self.accept_rate_val}


def fit(features: np.ndarray, labels) -> ScopeStats:
    """Per-class means and the Ledoit-Wolf shared precision of the TRAINING cells' features."""
    from sklearn.covariance import LedoitWolf

    f = np.asarray(features, np.float64)
    y = np.asarray(labels).astype(int)
    classes = np.unique(y)
    means = np.stack([f[y == c].mean(axis=0) if c in classes else f.mean(axis=0) for c in (0, 1)])
    centred = f - means[y]
    lw = LedoitWolf(assume_centered=True).fit(centred)
    return ScopeStats(means=means, precision=np.asarray(lw.precision_, np.float64), n_train=len(f))


def mahalanobis(stats: ScopeStats, features: np.ndarray) -> np.ndarray:
    """ood per cell (float64): the squared Mahalanobis distance to the nearer class mean, with P as it is."""
    f = np.asarray(features, np.float64)
    d = [np.einsum("nd,de,ne->n", f - mu, stats.precision, f - mu) for mu in stats.means]
    return np.min(np.stack(d), axis=0)


def choose_threshold(ood_val: np.ndarray, accept: float) -> tuple[float, float]:
    """The ood threshold accepting (ood <= threshold) the share `accept` of the val cells, and the share it
    accepts. Midway to the next val score, so rounding (FP16/INT8) does not decide the cell at the edge."""
    if not 0.0 < accept <= 1.0:
        raise ValueError(f"--scope-accept must be in (0, 1], got {accept}")
    v = np.sort(np.asarray(ood_val, np.float64))
    if not len(v):
        return float("inf"), None
    k = min(len(v), max(1, int(np.ceil(accept * len(v)))))  # val cells accepted
    # accept all: a margin above the farthest val cell; else midway to the first cell refused
    t = v[-1] * 1.05 + 1e-6 if k == len(v) else (v[k - 1] + v[k]) / 2
    return float(t), float(np.mean(v <= t))


def save(stats: ScopeStats, path: str | Path) -> Path:
    path = Path(path)
    np.savez(path, means=stats.means, precision=stats.precision, threshold=stats.threshold, accept=stats.accept,
             accept_rate_val=np.nan if stats.accept_rate_val is None else stats.accept_rate_val,
             n_train=stats.n_train, method=METHOD)
    return path


def load(path: str | Path) -> ScopeStats:
    with np.load(Path(path), allow_pickle=False) as z:
        if str(z["method"]) != METHOD:
            raise ValueError(f"{path}: unknown scope method {z['method']}")
        rate = float(z["accept_rate_val"])
        return ScopeStats(means=z["means"].astype(np.float64), precision=z["precision"].astype(np.float64),
                          threshold=float(z["threshold"]), accept=float(z["accept"]),
                          accept_rate_val=None if np.isnan(rate) else rate, n_train=int(z["n_train"]))


def load_for(keras_path: str | Path) -> ScopeStats | None:
    """The run's scope statistics beside its model.keras, or None (a run trained before the gate)."""
    path = Path(keras_path).parent / FILENAME
    return load(path) if path.is_file() else None


# ------------------------------------------------------------------------------------------------- Keras side

def feature_model(model):
    """image -> the features feeding the final logit (the input of the `p_all` layer), inference mode."""
    import keras

    return keras.Model(model.inputs[0], model.get_layer("p_all").input, name="scope_features")


def features_of(model, x: np.ndarray, batch: int = 32) -> np.ndarray:
    fm = feature_model(model)
    if not len(x):
        return np.zeros((0, int(fm.outputs[0].shape[-1])), np.float64)
    return np.concatenate([np.asarray(fm(np.asarray(x[i:i + batch], np.float32), training=False), np.float64)
                           for i in range(0, len(x), batch)])


def features_of_dataset(model, ds) -> np.ndarray:
    fm = feature_model(model)
    return np.concatenate([np.asarray(fm(x if not isinstance(x, tuple) else x[0], training=False), np.float64)
                           for x in ds])


def scope_layer(stats: ScopeStats, name: str = "ood"):
    """A Keras layer: penultimate features (N, D) -> ood (N,), with L and mu_c L as constant weights."""
    import keras
    from keras import ops

    w = stats.whitening.astype(np.float32)
    b = (stats.means @ stats.whitening).astype(np.float32)  # (C, D): each class mean, whitened

    class ScopeDistance(keras.layers.Layer):
        def build(self, input_shape):
            self.w = self.add_weight(shape=w.shape, initializer=keras.initializers.Constant(w), trainable=False,
                                     name="whitening")
            self.b = self.add_weight(shape=b.shape, initializer=keras.initializers.Constant(b), trainable=False,
                                     name="class_means")

        def call(self, f):
            y = ops.matmul(f, self.w)  # (N, D)
            d = ops.sum(ops.square(y[:, None, :] - self.b[None, :, :]), axis=-1)  # (N, C)
            return ops.min(d, axis=-1)

    return ScopeDistance(name=name)


# ------------------------------------------------------------------------------------------ metrics.json entry

def other_cells(size: int, resize: str, per_kind: int = OTHERS_PER_KIND, seed: int = 0) -> np.ndarray:
    """Drawn out-of-scope cells (every kind of synth.others) through THE edge preprocessing at the model's size.
    Evaluation only: never fitted on."""
    from ..edge.preprocess import preprocess
    from ..synth.others import KINDS, draw_other_tile

    rng = np.random.default_rng(seed)
    tiles = [draw_other_tile(kind, rng)[0] for kind in KINDS for _ in range(per_kind)]
    return np.stack([preprocess(t, size, size, resize) for t in tiles])


def entry(stats: ScopeStats, ood: dict[str, np.ndarray], ood_other: np.ndarray) -> dict:
    """metrics.json's `scope`: the gate, its in-scope rates per split and its AUROC against drawn others."""
    from sklearn.metrics import roc_auc_score

    rates = {k: float(np.mean(v <= stats.threshold)) for k, v in ood.items() if len(v)}
    auroc = None
    against = "test" if len(ood.get("test", [])) else next((k for k, v in ood.items() if len(v)), None)
    if len(ood_other) and against is not None:  # in-scope test cells (evaluate: val without a test split)
        y = np.r_[np.zeros(len(ood[against])), np.ones(len(ood_other))]
        auroc = float(roc_auc_score(y, np.r_[ood[against], ood_other]))
    return {"method": METHOD, "fitted_on": "train", "n_train": stats.n_train, "accept": stats.accept,
            "threshold": float(stats.threshold), "accept_rate_val": stats.accept_rate_val,
            "in_scope_rate": rates, "auroc_other": auroc, "auroc_against": against,
            "n_other": int(len(ood_other))}


def evaluate_entry(model, stats: ScopeStats, splits: dict, size: int, resize: str, batch_size: int = 32) -> dict:
    """`evaluate`'s `scope`: the run's saved gate (its threshold as trained) on the given splits' items."""
    from .pipeline import image_dataset

    ood = {}
    for name, items in splits.items():
        ds = image_dataset([it.path for it in items], None, (size, size), resize, batch_size)
        ood[name] = mahalanobis(stats, features_of_dataset(model, ds)) if items else np.zeros(0)
    return entry(stats, ood, mahalanobis(stats, features_of(model, other_cells(size, resize))))
