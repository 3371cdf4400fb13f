"""The scope model: how far a cell's features lie from the training cells, over several layers (docs/contracts.md,
Scope).

    ood(x) = max_j (d_j(x) - c_j) / s_j,    d_j(x) = min_k (f_j - mu_jk)^T P_j (f_j - mu_jk)

f_j: the features of tap j: the mean or the standard deviation over space of a layer's maps ("mean:LAYER",
"std:LAYER"), or the penultimate features; mu_jk: their mean over the run's TRAINING cells of class k; P_j: the
inverse of the shared (class-centred) covariance shrunk by Ledoit-Wolf (a 256-dimensional covariance from a few
hundred cells is singular without shrinkage); c_j, s_j: the mean and standard deviation of d_j over the training
cells, each scored by a fit WITHOUT its own subject (5 folds grouped by subject, as the split itself), so every tap
counts on the scale of cells it has not seen — except the penultimate features, scaled on the val cells (below). A
cell is as far out as its farthest tap says (the maximum).

Why these taps (measured on the full demo's CNN, 256 px, 360 training cells, against 270 drawn out-of-scope cells;
the threshold accepting 95 % of val):
  penultimate features alone (the first gate)      AUROC 0.89
  + means of the last two pooling stages and maps  AUROC 0.986, 69-78 % of the drawn cells flagged
  + their standard deviations over space           AUROC 1.000, 99 % flagged, 99 % of in-scope test cells kept
The penultimate features of a two-class model keep what tells `all` from `hem`, and a neutrophil can lie inside that
subspace; the mid-level maps still see shape and size (means) and texture: how unevenly a channel fires over the
cell — lobes and granules against a round nucleus (standard deviations, the diagonal of the Gram matrix that
Sastry & Oore 2020 use). One covariance shared by the classes: one per class did a little better at full size but
fell apart with few cells per class (the 64 px test run, 48 per class: AUROC 0.72 against 0.93).

Why held-out scales and the maximum (the full demo's InceptionV3, 224 px, against the same 270 cells): the training
cells' own distances understate a tap's in-scope spread, the more the wider the tap (2048-dimensional last maps: mean
355 on the cells fitted, 12,900 on cells held out; 17x17 mixed7: 322 against 2,700). Scaled by them, the sum of the
taps was the sum of the widest taps' generalisation gaps: the val threshold sat at 9,500 and 57 % of the drawn
neutrophils passed. With held-out scales and the maximum, the taps that see the lobes (InceptionV3's mixed1/mixed3)
decide for a neutrophil: 97 % of the drawn cells flagged (neutrophils 97 %), AUROC 0.999, every in-scope test cell
kept. Runs of the summed gate (method "mahalanobis-layers") still load and score as they did.

Why the penultimate features are scaled on val (VAL_SCALED): the network was trained on the very training cells
that would scale them, so even held out of the scope's fit they sit closer than cells of subjects it never saw.
Scaled that way, under the maximum, that tap alone refused 4 of the 6 in-scope test cells the CNN of a second full
demo refused (93.3 % kept). Without the tap the maps miss what a stain shift does to the features p_all reads:
silent flips under saturation x0.65 rose from 3.2 % to 6.1 % (bench_stain, 3 seeds). On the val cells — which
neither the network nor the scope model was fitted on — the tap keeps its witness and loses its bias (a third demo's
CNN: 97.8 % of test kept, 97.8 % of the drawn cells flagged; stain silent flips 3.5 %). The map taps keep held-out
training scales: 4x more cells than val, and the network did not fit their statistics directly. For InceptionV3
the penultimate features are the mean of the last maps, already a tap.

The means and covariances use the training cells only: never val or test, never the drawn out-of-scope cells of
`synth.others`. Val sets the penultimate tap's scale and the threshold, the `accept` quantile of the val cells' ood,
so that share of in-scope val cells is accepted.

Saved as RUN/scope.npz (`save`/`load`; a file of the first, one-layer format loads as one `penultimate` tap with
c = 0, s = 1, which is exactly its old score). Export adds the same computation to the ONNX graph
(`scope_layer`): the pooling, then each P_j factored as L L^T (Cholesky) so the graph computes sum((f L - mu L)^2),
a sum of squares with no float32 cancellation, while `ood` (the reference) pools in NumPy and uses P_j itself in
float64.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

METHOD = "mahalanobis-layers-max"  # metadata / metrics.json `scope.method`
SUM_METHOD = "mahalanobis-layers"  # the taps summed, each on its training cells' own scale: runs of stop 23
OLD_METHOD = "mahalanobis"  # one tap (the penultimate features), raw distance: runs of the first scope gate
FOLDS = 5  # held-out folds (grouped by subject) that set each tap's scale
VAL_SCALED = ("penultimate",)  # taps scaled on val cells: the features the network itself was fitted to
MIN_SCALE_CELLS = 4  # fewer val cells: the held-out training scale stays
FILENAME = "scope.npz"
DEFAULT_ACCEPT = 0.95
OTHERS_PER_KIND = 8  # drawn out-of-scope cells per kind for metrics.json `scope.auroc_other`
LAST, PENULTIMATE = "last", "penultimate"  # sources that are not layer names: the maps the global pooling reads,
#                                            and p_all's input
STATS = ("mean", "std")  # how a tap pools its source's maps over space
NESTED_TAPS = ("mixed1", "mixed3", "mixed7")  # inside InceptionV3: a 35x35 block, the first and last 17x17 ones


@dataclass
class Tap:
    """One layer's statistics. Class index = label."""
    name: str
    means: np.ndarray  # (C, D) float64, per-class means of the training features
    precision: np.ndarray  # (D, D) float64, inverse of the Ledoit-Wolf shrunk shared covariance
    centre: float = 0.0  # mean of the held-out training cells' distances (val cells': scaled_on "val")
    spread: float = 1.0  # their standard deviation
    scaled_on: str = "train"  # "train" (held-out folds) or "val"

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
    """Class means and the Ledoit-Wolf shared precision of one tap's features (scale not set)."""
    from sklearn.covariance import LedoitWolf

    means = np.stack([f[y == c].mean(axis=0) if np.any(y == c) else f.mean(axis=0) for c in (0, 1)])
    lw = LedoitWolf(assume_centered=True).fit(f - means[y])
    return Tap(name, means, np.asarray(lw.precision_, np.float64))


def held_out_folds(n: int, groups=None) -> list[np.ndarray]:
    """Index arrays of the held-out folds: FOLDS folds grouped by subject when `groups` names two or more, else
    shuffled cells (seed 0). Empty under 4 cells: the scale then comes from the cells fitted."""
    from sklearn.model_selection import GroupKFold, KFold

    if n < 4:
        return []
    if groups is not None and len(set(groups)) >= 2:
        splitter = GroupKFold(n_splits=min(FOLDS, len(set(groups))))
        return [te for _, te in splitter.split(np.zeros(n), groups=np.asarray(groups))]
    return [te for _, te in KFold(n_splits=min(FOLDS, n), shuffle=True, random_state=0).split(np.zeros(n))]


def _held_out_distances(f: np.ndarray, y: np.ndarray, folds: list[np.ndarray]) -> np.ndarray:
    """Each training cell's distance under a tap fitted without its fold (without its subject)."""
    d = np.empty(len(y))
    for te in folds:
        rest = np.setdiff1d(np.arange(len(y)), te)
        d[te] = _fit_tap("", f[rest], y[rest]).distance(f[te])
    return d


def fit(features, labels, names: list[str] | None = None, groups=None) -> ScopeStats:
    """Per tap: class means and Ledoit-Wolf shared precision of the TRAINING cells, and the scale (c_j, s_j) of
    their held-out distances (folds grouped by `groups`, the cells' subjects, when given).
    `features`: one (N, D) array per tap (or a single array: one tap, named `penultimate`)."""
    feats = [features] if isinstance(features, np.ndarray) else list(features)
    if names is None and len(feats) != 1:
        raise ValueError("name every scope tap (default_taps) when fitting more than one")
    names = names or [PENULTIMATE]
    y = np.asarray(labels).astype(int)
    folds = held_out_folds(len(y), groups)
    taps = []
    for name, f in zip(names, feats):
        f = np.asarray(f, np.float64)
        tap = _fit_tap(name, f, y)
        d = _held_out_distances(f, y, folds) if folds else tap.distance(f)
        tap.centre, tap.spread = float(d.mean()), float(max(d.std(), 1e-12))
        taps.append(tap)
    return ScopeStats(taps=taps, n_train=len(y))


def scale_on_val(stats: ScopeStats, val_features) -> None:
    """Re-scale the VAL_SCALED taps by the val cells' distances (module docstring: the network fitted the training
    cells' penultimate features). Needs MIN_SCALE_CELLS val cells; other taps keep their held-out scale."""
    for tap, f in zip(stats.taps, val_features):
        if tap.name in VAL_SCALED and len(f) >= MIN_SCALE_CELLS:
            d = tap.distance(f)
            tap.centre, tap.spread, tap.scaled_on = float(d.mean()), float(max(d.std(), 1e-12)), "val"


def ood(stats: ScopeStats, features) -> np.ndarray:
    """The reference score per cell (float64): each tap's distance on its held-out scale, the maximum over the
    taps (summed for a run of SUM_METHOD)."""
    feats = [features] if isinstance(features, np.ndarray) else list(features)
    if len(feats) != len(stats.taps):
        raise ValueError(f"{len(feats)} feature arrays for {len(stats.taps)} scope taps")
    z = np.stack([(t.distance(f) - t.centre) / t.spread for t, f in zip(stats.taps, feats)])
    return z.max(axis=0) if stats.method == METHOD else z.sum(axis=0)


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
             spreads=[t.spread for t in stats.taps], scaled_on=np.array([t.scaled_on for t in stats.taps]),
             threshold=stats.threshold, accept=stats.accept,
             accept_rate_val=np.nan if stats.accept_rate_val is None else stats.accept_rate_val,
             n_train=stats.n_train, method=stats.method)
    return path


def _load_taps(z, method: str) -> list[Tap]:
    if method == OLD_METHOD:  # the first format: one tap, the raw distance
        return [Tap(PENULTIMATE, z["means"].astype(np.float64), z["precision"].astype(np.float64))]
    scaled = [str(v) for v in z["scaled_on"]] if "scaled_on" in z.files else ["train"] * len(z["names"])
    return [Tap(str(n), z[f"means_{j}"].astype(np.float64), z[f"precision_{j}"].astype(np.float64),
                float(z["centres"][j]), float(z["spreads"][j]), scaled[j]) for j, n in enumerate(z["names"])]


def load(path: str | Path) -> ScopeStats:
    with np.load(Path(path), allow_pickle=False) as z:
        method = str(z["method"])
        if method not in (METHOD, SUM_METHOD, OLD_METHOD):
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

def parse_tap(name: str) -> tuple[str, str]:
    """A tap's name -> (statistic, source): "mean:LAYER" / "std:LAYER" pool a layer's maps over space ("last":
    the maps the global pooling reads); "penultimate" is p_all's input as it is."""
    if name == PENULTIMATE:
        return "value", PENULTIMATE
    stat, _, source = name.partition(":")
    if stat not in STATS or not source:
        raise ValueError(f"unknown scope tap {name!r}: expected mean:LAYER, std:LAYER or {PENULTIMATE}")
    return stat, source


def default_taps(model) -> list[str]:
    """The layers the scope model reads (module docstring): the mean and standard deviation over space of the
    CNN's last two pooling stages and of its last maps; for a nested InceptionV3 base, mean and std of mixed1,
    mixed3 and mixed7 and the mean of the last maps (its 2048-channel std would double the constants). The CNN's
    penultimate features too (scaled on val: module docstring); InceptionV3's are the mean of the last maps."""
    import keras

    from .cam import gap_index

    i = gap_index(model)
    layer = model.layers[i]
    if isinstance(layer, keras.layers.GlobalAveragePooling2D):
        stages = [x.name for x in model.layers[:i] if isinstance(x, keras.layers.MaxPooling2D)][-2:]
        return [f"{st}:{src}" for src in (*stages, LAST) for st in STATS] + [PENULTIMATE]
    inner = [x.name for x in layer.layers]
    pools = [x.name for x in layer.layers if isinstance(x, keras.layers.MaxPooling2D)]
    named = [n for n in NESTED_TAPS if n in inner] or pools[-1:]
    return [f"{st}:{layer.name}/{n}" for n in named for st in STATS] + [f"mean:{LAST}"]


def map_sources(names: list[str]) -> list[str]:
    """The layers whose maps the taps pool, in order (not `last`, not `penultimate`)."""
    out = []
    for name in names:
        src = parse_tap(name)[1]
        if src not in (LAST, PENULTIMATE) and src not in out:
            out.append(src)
    return out


def source_model(model, names: list[str]):
    """image -> [each map source's maps..., the last maps, the penultimate features], one forward pass."""
    import keras
    from keras import ops

    from .cam import feature_maps, split_model

    fm = feature_maps(model, map_sources(names), name="scope_sources")
    *maps, last = fm.outputs
    f = ops.mean(last, axis=(1, 2))
    for layer in split_model(model).head:  # the head's own Dense layers; Dropout is the identity at inference
        f = layer(f)
    return keras.Model(fm.inputs, [*maps, last, f], name="scope_sources")


def pool(stat: str, x, xp=np):
    """A tap's features from its source: the mean or the (population) standard deviation over the spatial axes
    of NHWC maps, or the vector as it is. `xp`: numpy (the reference, float64) or keras.ops (the graph)."""
    if stat == "value":
        return x
    return xp.mean(x, axis=(1, 2)) if stat == "mean" else xp.std(x, axis=(1, 2))


def _source_index(names: list[str]) -> list[tuple[int, str]]:
    """Per tap: (index into source_model's outputs, statistic)."""
    sources = map_sources(names)
    out = []
    for name in names:
        stat, src = parse_tap(name)
        k = len(sources) if src == LAST else len(sources) + 1 if src == PENULTIMATE else sources.index(src)
        out.append((k, stat))
    return out


def features_of(model, x: np.ndarray, names: list[str], batch: int = 32) -> list[np.ndarray]:
    """Each tap's features (float64) of images `x`, pooled in NumPy from the model's own maps."""
    return _features(source_model(model, names), names,
                     (np.asarray(x[i:i + batch], np.float32) for i in range(0, len(x), batch)))


def features_of_dataset(model, ds, names: list[str]) -> list[np.ndarray]:
    return _features(source_model(model, names), names, (x if not isinstance(x, tuple) else x[0] for x in ds))


def _features(sm, names: list[str], batches) -> list[np.ndarray]:
    index = _source_index(names)
    parts = []
    for xb in batches:
        outs = [np.asarray(o, np.float64) for o in sm(xb, training=False)]
        parts.append([pool(stat, outs[k]) for k, stat in index])
    if not parts:
        return [np.zeros((0, 1)) for _ in names]
    return [np.concatenate(p) for p in zip(*parts)]


def scope_layer(stats: ScopeStats, name: str = "ood"):
    """A Keras layer: source_model's outputs [maps..., last maps, penultimate] -> ood (N,). The pooling runs inside
    it (so INT8 keeps it in float with the distances); L_j, mu_j L_j, c_j and s_j are constants."""
    import keras
    from keras import ops

    index = _source_index(stats.names)
    use_max = stats.method == METHOD
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

        def call(self, sources):
            z = []
            for (k, stat), (w, b), (_, _, c, s) in zip(index, self.pairs, consts):
                y = ops.matmul(pool(stat, sources[k], ops), w)  # (N, D)
                d = ops.min(ops.sum(ops.square(y[:, None, :] - b[None, :, :]), axis=-1), axis=-1)  # nearer class
                z.append((d - c) * (1.0 / s))
            z = ops.stack(z, axis=-1)  # (N, taps)
            return ops.max(z, axis=-1) if use_max else ops.sum(z, axis=-1)

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
            "scaled_on_val": [t.name for t in stats.taps if t.scaled_on == "val"],
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
