"""The scope model: how far a cell's features lie from the training cells, over several layers (docs/contracts.md,
Scope).

    ood(x) = sum_j (d_j(x) - c_j) / s_j,    d_j(x) = min_k (f_j - mu_jk)^T P_j (f_j - mu_jk)

f_j: the features at tap j, spatially averaged (global average pooling of the layer's maps); mu_jk: the mean over
the run's TRAINING cells of class k; P_j: the inverse of the shared (class-centred) covariance shrunk by
Ledoit-Wolf (a 256- or 2048-dimensional covariance from a few hundred cells is singular without shrinkage);
c_j, s_j: the mean and standard deviation of d_j over the training cells, so every tap counts on one scale.

Why several taps (Lee et al. 2018 combine layers too): the penultimate features of a two-class model keep only
what tells `all` from `hem`, and a neutrophil can sit right in that subspace. The mid-level maps still see
shape and texture (lobes, granules, size). Measured on the full demo's CNN (256 px, 360 training cells), AUROC
against drawn out-of-scope cells went from 0.89 (penultimate alone) and 0.97 (pooled maps alone) to 0.99 with
the last two pooling stages + pooled maps + penultimate. Why one covariance shared by the classes: a covariance per
class did a little better there (AUROC 0.992, 0.885 of the drawn cells flagged at the val threshold against 0.78)
but fell apart with few cells per class (the 64 px test run, 48 per class: AUROC 0.72 against 0.93 shared). The
taps (`default_taps`) are, for the CNN, its last two
max-pooling outputs; for InceptionV3, mixed7 and mixed8; then the pooled last maps and, when the head has a
hidden layer, the penultimate features. Only the training cells are used: never val or test, never the drawn
out-of-scope cells of `synth.others`. The threshold is the `accept` quantile of the val cells' ood, so that
share of in-scope val cells is accepted.

Saved as RUN/scope.npz (`save`/`load`; a file of the first, one-layer format loads as one `penultimate` tap with
c = 0, s = 1, which is exactly its old score). Export adds the same computation to the ONNX graph
(`scope_layer`), with P_j factored as L L^T (Cholesky) so the graph computes sum((f L - mu L)^2), a sum of
squares with no float32 cancellation, while `ood` (the reference) uses P_j itself in float64.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

METHOD = "mahalanobis-layers"  # metadata / metrics.json `scope.method`
OLD_METHOD = "mahalanobis"  # one tap (the penultimate features), raw distance: runs of the first scope gate
FILENAME = "scope.npz"
DEFAULT_ACCEPT = 0.95
OTHERS_PER_KIND = 8  # drawn out-of-scope cells per kind for metrics.json `scope.auroc_other`
POOLED, PENULTIMATE = "pooled", "penultimate"  # taps that are not layer names: the pooled last maps, p_all's input
NESTED_TAPS = ("mixed7", "mixed8")  # inside InceptionV3: the last 17x17 block and the 8x8 reduction


@dataclass
class Tap:
    """One layer's statistics. Class index = label."""
    name: str
    means: np.ndarray  # (C, D) float64, per-class means of the training features
    precision: np.ndarray  # (D, D) float64, inverse of the Ledoit-Wolf shrunk shared covariance
    centre: float = 0.0  # mean of the training cells' distances
    spread: float = 1.0  # their standard deviation

    @property
    def whitening(self) -> np.ndarray:
        """L with P = L L^T: ||(f - mu) L||^2 = (f - mu)^T P (f - mu)."""
        p = (self.precision + self.precision.T) / 2
        return np.linalg.cholesky(p)

    def distance(self, features: np.ndarray) -> np.ndarray:
        """The squared Mahalanobis distance to the nearer class mean (float64), with P as it is."""
        f = np.asarray(features, np.float64)
        return np.min(np.stack([np.einsum("nd,de,ne->n", f - mu, self.precision, f - mu) for mu in self.means]),
                      axis=0)


@dataclass
class ScopeStats:
    taps: list[Tap] = field(default_factory=list)
    threshold: float = float("inf")
    accept: float = DEFAULT_ACCEPT
    accept_rate_val: float | None = None
    n_train: int = 0
    method: str = METHOD

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.taps]

    def metadata(self) -> dict:
        """The ONNX metadata's `scope` entry."""
        return {"method": self.method, "taps": self.names, "threshold": float(self.threshold),
                "fitted_on": "train", "accept_rate_val": self.accept_rate_val}


def _fit_tap(name: str, f: np.ndarray, y: np.ndarray) -> Tap:
    from sklearn.covariance import LedoitWolf

    means = np.stack([f[y == c].mean(axis=0) if np.any(y == c) else f.mean(axis=0) for c in (0, 1)])
    lw = LedoitWolf(assume_centered=True).fit(f - means[y])
    tap = Tap(name, means, np.asarray(lw.precision_, np.float64))
    d = tap.distance(f)
    tap.centre, tap.spread = float(d.mean()), float(max(d.std(), 1e-12))
    return tap


def fit(features, labels, names: list[str] | None = None) -> ScopeStats:
    """Per tap: class means, Ledoit-Wolf shared precision and the distance scale of the TRAINING cells.
    `features`: one (N, D) array per tap (or a single array: one tap, named `penultimate`)."""
    feats = [features] if isinstance(features, np.ndarray) else list(features)
    names = names or ([PENULTIMATE] if len(feats) == 1 else [f"tap{j}" for j in range(len(feats))])
    y = np.asarray(labels).astype(int)
    taps = [_fit_tap(n, np.asarray(f, np.float64), y) for n, f in zip(names, feats)]
    return ScopeStats(taps=taps, n_train=len(y))


def ood(stats: ScopeStats, features) -> np.ndarray:
    """The reference score per cell (float64): the taps' distances, each on the training cells' scale, summed."""
    feats = [features] if isinstance(features, np.ndarray) else list(features)
    if len(feats) != len(stats.taps):
        raise ValueError(f"{len(feats)} feature arrays for {len(stats.taps)} scope taps")
    return np.sum([(t.distance(f) - t.centre) / t.spread for t, f in zip(stats.taps, feats)], axis=0)


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
    t = v[-1] + 0.05 * abs(v[-1]) + 1e-6 if k == len(v) else (v[k - 1] + v[k]) / 2
    return float(t), float(np.mean(v <= t))


def save(stats: ScopeStats, path: str | Path) -> Path:
    path = Path(path)
    arrays = {f"means_{j}": t.means for j, t in enumerate(stats.taps)}
    arrays |= {f"precision_{j}": t.precision for j, t in enumerate(stats.taps)}
    np.savez(path, **arrays, names=np.array(stats.names), centres=[t.centre for t in stats.taps],
             spreads=[t.spread for t in stats.taps], threshold=stats.threshold, accept=stats.accept,
             accept_rate_val=np.nan if stats.accept_rate_val is None else stats.accept_rate_val,
             n_train=stats.n_train, method=stats.method)
    return path


def _load_taps(z, method: str) -> list[Tap]:
    if method == OLD_METHOD:  # the first format: one tap, the raw distance
        return [Tap(PENULTIMATE, z["means"].astype(np.float64), z["precision"].astype(np.float64))]
    return [Tap(str(n), z[f"means_{j}"].astype(np.float64), z[f"precision_{j}"].astype(np.float64),
                float(z["centres"][j]), float(z["spreads"][j])) for j, n in enumerate(z["names"])]


def load(path: str | Path) -> ScopeStats:
    with np.load(Path(path), allow_pickle=False) as z:
        method = str(z["method"])
        if method not in (METHOD, OLD_METHOD):
            raise ValueError(f"{path}: unknown scope method {method}")
        rate = float(z["accept_rate_val"])
        return ScopeStats(taps=_load_taps(z, method), threshold=float(z["threshold"]), accept=float(z["accept"]),
                          accept_rate_val=None if np.isnan(rate) else rate, n_train=int(z["n_train"]),
                          method=method)


def load_for(keras_path: str | Path) -> ScopeStats | None:
    """The run's scope statistics beside its model.keras, or None (a run trained before the gate)."""
    path = Path(keras_path).parent / FILENAME
    return load(path) if path.is_file() else None


# ------------------------------------------------------------------------------------------------- Keras side

def default_taps(model) -> list[str]:
    """The layers the scope model reads (module docstring): the last two pooling stages of the CNN, or mixed7 and
    mixed8 of a nested InceptionV3 base (else its last two max-poolings), then `pooled` and, when the head has a
    hidden layer, `penultimate`."""
    import keras

    from .cam import _gap_index, split_model

    i = _gap_index(model)
    layer = model.layers[i]
    if isinstance(layer, keras.layers.GlobalAveragePooling2D):
        stages = [x.name for x in model.layers[:i] if isinstance(x, keras.layers.MaxPooling2D)][-2:]
    else:
        inner = [x.name for x in layer.layers]
        named = [n for n in NESTED_TAPS if n in inner]
        pools = [x.name for x in layer.layers if isinstance(x, keras.layers.MaxPooling2D)]
        stages = [f"{layer.name}/{n}" for n in (named if len(named) == len(NESTED_TAPS) else pools[-2:])]
    return [*stages, POOLED] + ([PENULTIMATE] if split_model(model).head else [])


def pooled_taps(names: list[str], maps: list, last, head: list) -> list:
    """Keras tensors: each tap's features from its maps (global average pooling), the pooled last maps, and the
    head's own Dense layers on them (`penultimate`; Dropout is the identity at inference)."""
    from keras import ops

    it = iter(maps)
    pooled = ops.mean(last, axis=(1, 2))
    out = []
    for name in names:
        if name == POOLED:
            out.append(pooled)
        elif name == PENULTIMATE:
            f = pooled
            for layer in head:
                f = layer(f)
            out.append(f)
        else:
            out.append(ops.mean(next(it), axis=(1, 2)))
    return out


def map_taps(names: list[str]) -> list[str]:
    return [n for n in names if n not in (POOLED, PENULTIMATE)]


def feature_model(model, names: list[str]):
    """image -> [each tap's features (N, D_j)], inference mode, one forward pass."""
    import keras

    from .cam import feature_maps, split_model

    fm = feature_maps(model, map_taps(names), name="scope_maps")
    *maps, last = fm.outputs
    feats = pooled_taps(names, maps, last, split_model(model).head)
    return keras.Model(fm.inputs, feats, name="scope_features")


def _as_list(r) -> list[np.ndarray]:
    return [np.asarray(a, np.float64) for a in (r if isinstance(r, (list, tuple)) else [r])]


def features_of(model, x: np.ndarray, names: list[str], batch: int = 32) -> list[np.ndarray]:
    fm = feature_model(model, names)
    if not len(x):
        return [np.zeros((0, int(o.shape[-1])), np.float64) for o in fm.outputs]
    parts = [_as_list(fm(np.asarray(x[i:i + batch], np.float32), training=False)) for i in range(0, len(x), batch)]
    return [np.concatenate(p) for p in zip(*parts)]


def features_of_dataset(model, ds, names: list[str]) -> list[np.ndarray]:
    fm = feature_model(model, names)
    parts = [_as_list(fm(x if not isinstance(x, tuple) else x[0], training=False)) for x in ds]
    return [np.concatenate(p) for p in zip(*parts)]


def scope_layer(stats: ScopeStats, name: str = "ood"):
    """A Keras layer: the taps' features [(N, D_j)...] -> ood (N,), with L_j, mu_j L_j, c_j and s_j as constants."""
    import keras
    from keras import ops

    consts = [(t.whitening.astype(np.float32), (t.means @ t.whitening).astype(np.float32), t.centre, t.spread)
              for t in stats.taps]

    class ScopeDistance(keras.layers.Layer):
        def build(self, input_shape):
            def const(value, name):
                return self.add_weight(shape=value.shape, initializer=keras.initializers.Constant(value),
                                       trainable=False, name=name)

            # per tap: L and the whitened class means mu_k L
            self.pairs = [(const(w, f"whitening_{j}"), const(b, f"class_means_{j}"))
                          for j, (w, b, _, _) in enumerate(consts)]

        def call(self, feats):
            total = 0.0
            for f, (w, b), (_, _, c, s) in zip(feats, self.pairs, consts):
                y = ops.matmul(f, w)  # (N, D)
                d = ops.min(ops.sum(ops.square(y[:, None, :] - b[None, :, :]), axis=-1), axis=-1)  # nearer class
                total = total + (d - c) * (1.0 / s)
            return total

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


def entry(stats: ScopeStats, scores: dict[str, np.ndarray], ood_other: np.ndarray) -> dict:
    """metrics.json's `scope`: the gate, its in-scope rates per split and its AUROC against drawn others."""
    from sklearn.metrics import roc_auc_score

    rates = {k: float(np.mean(v <= stats.threshold)) for k, v in scores.items() if len(v)}
    auroc = None
    against = "test" if len(scores.get("test", [])) else next((k for k, v in scores.items() if len(v)), None)
    if len(ood_other) and against is not None:  # in-scope test cells (evaluate: val without a test split)
        y = np.r_[np.zeros(len(scores[against])), np.ones(len(ood_other))]
        auroc = float(roc_auc_score(y, np.r_[scores[against], ood_other]))
    flagged = float(np.mean(np.asarray(ood_other) > stats.threshold)) if len(ood_other) else None
    return {"method": stats.method, "taps": stats.names, "fitted_on": "train", "n_train": stats.n_train,
            "accept": stats.accept, "threshold": float(stats.threshold), "accept_rate_val": stats.accept_rate_val,
            "in_scope_rate": rates, "auroc_other": auroc, "auroc_against": against,
            "other_flagged": flagged, "n_other": int(len(ood_other))}


def evaluate_entry(model, stats: ScopeStats, splits: dict, size: int, resize: str, batch_size: int = 32) -> dict:
    """`evaluate`'s `scope`: the run's saved gate (its threshold as trained) on the given splits' items."""
    from .pipeline import image_dataset

    scores = {}
    for name, items in splits.items():
        ds = image_dataset([it.path for it in items], None, (size, size), resize, batch_size)
        scores[name] = ood(stats, features_of_dataset(model, ds, stats.names)) if items else np.zeros(0)
    return entry(stats, scores, ood(stats, features_of(model, other_cells(size, resize), stats.names)))
