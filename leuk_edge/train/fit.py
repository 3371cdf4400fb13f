"""`leuk-edge train`: data -> augment -> model -> fit -> threshold on val -> metrics and plots in RUN/.

A straight keras-io style path; every choice that touches evaluation is made on `val`, never on `test`.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .. import CLASSES, DISCLAIMER, SYNTHETIC_NOTE, __version__
from .data import Dataset, Item, load_dataset, make_splits, split_subjects
from .metrics import choose_threshold, compute_metrics
from .models import ARCHITECTURE, DEFAULT_SIZE, RESIZE


@dataclass
class TrainConfig:
    data: str
    model: str = "cnn"  # cnn | inception
    out: str = "runs/cnn"
    epochs: int = 20
    batch_size: int = 32
    image_size: int | None = None  # None: the architecture's default (256 cnn, 224 inception)
    weights: str = "imagenet"  # inception only: imagenet | none | PATH
    seed: int = 0
    strategy: str = "default"  # default | mirrored | multiworker (TF_CONFIG)
    val_fraction: float = 0.2
    patience: int = 5
    learning_rate: float = 3e-4
    fine_tune_learning_rate: float = 1e-5
    class_weight: bool = True
    max_images: int | None = None  # cap per split for quick runs (subjects kept whole where possible)

    @property
    def size(self) -> int:
        return self.image_size or DEFAULT_SIZE[self.model]


def seed_everything(seed: int) -> None:
    """Python, numpy and TF seeds plus deterministic kernels: same seed on CPU -> same run."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    tf.get_logger().setLevel("ERROR")  # the fine-tuning recompile triggers harmless retracing warnings
    tf.config.experimental.enable_op_determinism()


def class_weights(labels) -> dict[int, float]:
    """'balanced' weights from the training split (C-NMC is ~2:1 all:hem)."""
    from sklearn.utils.class_weight import compute_class_weight

    labels = np.asarray(labels)
    w = compute_class_weight("balanced", classes=np.array([0, 1]), y=labels)
    return {0: float(w[0]), 1: float(w[1])}


def predict_items(model, items: list[Item], size: int, resize: str, batch_size: int = 32) -> np.ndarray:
    from .pipeline import image_dataset

    if not items:
        return np.zeros((0,), np.float32)
    ds = image_dataset([it.path for it in items], None, (size, size), resize, batch_size)
    return model.predict(ds, verbose=0).reshape(-1)


def _strategy(name: str):
    import tensorflow as tf

    if name == "multiworker":
        from .distribute import multiworker_strategy

        return multiworker_strategy()  # workers from TF_CONFIG; the batch size is the global batch
    if name == "mirrored":
        # All local GPUs (or the CPU when there are none); the batch size is the global batch.
        return tf.distribute.MirroredStrategy()
    if name != "default":
        raise ValueError(f"unknown strategy {name!r}; choose default, mirrored or multiworker")
    return tf.distribute.get_strategy()


def _epoch_timer(seconds: list[float]):
    """A callback appending each epoch's wall time (train + validation pass) to `seconds`."""
    import keras

    started = []
    return keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda epoch, logs: started.append(time.perf_counter()),
        on_epoch_end=lambda epoch, logs: seconds.append(time.perf_counter() - started[-1]))


def _compile(model, lr: float):
    import keras

    model.compile(optimizer=keras.optimizers.Adam(lr), loss="binary_crossentropy",
                  metrics=["accuracy", keras.metrics.AUC(name="auc")])


def _fit_phase(model, train_ds, val_ds, cfg: TrainConfig, run: Path, epochs: int, initial_epoch: int,
               cw, epoch_seconds: list[float]) -> int:
    import keras

    callbacks = [
        # Early stopping on val loss; the best weights are kept and checkpointed as model.keras.
        keras.callbacks.EarlyStopping("val_loss", patience=cfg.patience, restore_best_weights=True),
        keras.callbacks.ModelCheckpoint(run / "model.keras", monitor="val_loss", save_best_only=True),
        keras.callbacks.CSVLogger(run / "history.csv", append=initial_epoch > 0),
        _epoch_timer(epoch_seconds),
    ]
    hist = model.fit(train_ds, validation_data=val_ds, epochs=initial_epoch + epochs, initial_epoch=initial_epoch,
                     class_weight=cw, callbacks=callbacks, shuffle=False, verbose=1 if sys.stderr.isatty() else 2)
    return initial_epoch + len(hist.history.get("loss", []))


def _cap(items: list[Item], n: int | None, seed: int) -> list[Item]:
    if n is None or len(items) <= n:
        return items
    idx = np.random.default_rng(seed).permutation(len(items))[:n]
    return [items[i] for i in sorted(idx)]


def train(cfg: TrainConfig, dataset: Dataset | None = None, log=print) -> dict:
    """Train one model into cfg.out; returns the metrics dict (also written to metrics.json)."""
    import keras

    from .distribute import finish_worker, run_folder, shard_by_data
    from .models import build, unfreeze_top
    from .pipeline import image_dataset
    from .plots import plot_confusion, plot_curves, plot_roc
    from .weights import resolve_weights

    if cfg.model not in DEFAULT_SIZE:
        raise ValueError(f"unknown model {cfg.model!r}; choose cnn or inception")
    strategy = _strategy(cfg.strategy)  # first TF op: MultiWorkerMirroredStrategy must precede all others
    weights = resolve_weights(cfg.weights) if cfg.model == "inception" else None  # fail fast, before data
    run, chief = run_folder(cfg.out, cfg.strategy)  # multiworker: only the chief writes cfg.out
    run.mkdir(parents=True, exist_ok=True)
    ds = dataset or load_dataset(cfg.data)
    if ds.unreadable:
        (run / "skipped_images.txt").write_text(
            f"# {len(ds.unreadable)} unreadable image(s) skipped\n" + "".join(f"{p}\t{r}\n" for p, r in ds.unreadable))
        log(f"skipped {len(ds.unreadable)} unreadable image(s); listed in {run / 'skipped_images.txt'}")
    splits = make_splits(ds, cfg.val_fraction, cfg.seed)
    splits = {k: _cap(v, cfg.max_images, cfg.seed) for k, v in splits.items()}
    (run / "split.json").write_text(json.dumps(split_subjects(splits), indent=2))
    size, resize = cfg.size, RESIZE[cfg.model]
    seed_everything(cfg.seed)

    tr, va = splits["train"], splits["val"]
    y_tr = [it.label for it in tr]
    # Cache decoded tensors in RAM when they fit comfortably; otherwise decode every epoch (BMP decode is cheap).
    cache = len(tr) * size * size * 12 < 3e9
    train_ds = image_dataset([it.path for it in tr], y_tr, (size, size), resize, cfg.batch_size,
                             augment=True, shuffle=True, seed=cfg.seed, cache=cache)
    val_ds = image_dataset([it.path for it in va], [it.label for it in va], (size, size), resize, cfg.batch_size,
                           cache=len(va) * size * size * 12 < 1e9)
    if cfg.strategy == "multiworker":  # each worker keeps its share of the batches
        train_ds, val_ds = shard_by_data(train_ds), shard_by_data(val_ds)
    cw = class_weights(y_tr) if cfg.class_weight else None
    log(f"{cfg.model} @ {size}px: train {len(tr)} / val {len(va)} / test {len(splits.get('test', []))} images; "
        f"class weights {cw}")

    epoch_seconds: list[float] = []  # one strategy (made first) for both phases: the variables live in its scope
    t0 = time.perf_counter()
    with strategy.scope():
        model, base = build(cfg.model, size, weights=weights)
        if base is not None:
            base.trainable = False  # phase 1: train only the new head on frozen ImageNet features
        _compile(model, cfg.learning_rate)
    head_epochs = cfg.epochs if base is None else max(1, math.ceil(cfg.epochs / 2))
    done = _fit_phase(model, train_ds, val_ds, cfg, run, head_epochs, 0, cw, epoch_seconds)
    if base is not None and cfg.epochs - head_epochs > 0:
        with strategy.scope():
            unfreeze_top(base)  # phase 2: fine-tune mixed9/mixed10 at a low learning rate
            _compile(model, cfg.fine_tune_learning_rate)
        done = _fit_phase(model, train_ds, val_ds, cfg, run, cfg.epochs - head_epochs, done, cw, epoch_seconds)
    train_seconds = time.perf_counter() - t0
    if not chief:
        return finish_worker(run)  # the chief evaluates and writes the run folder
    if not (run / "model.keras").is_file():  # val_loss never finite: keep the last weights rather than nothing
        model.save(run / "model.keras")
    model = keras.saving.load_model(run / "model.keras", safe_mode=True)

    p_val = predict_items(model, va, size, resize, cfg.batch_size)
    threshold = choose_threshold([it.label for it in va], p_val)
    probs = {"val": ([it.label for it in va], p_val)}
    if splits.get("test"):
        te = splits["test"]
        probs["test"] = ([it.label for it in te], predict_items(model, te, size, resize, cfg.batch_size))
    metrics = {k: compute_metrics(y, p, threshold) for k, (y, p) in probs.items()}
    (run / "metrics.json").write_text(json.dumps(metrics, indent=2))

    config = {
        **asdict(cfg), "image_size": size, "architecture": ARCHITECTURE[cfg.model], "resize": resize,
        "threshold": threshold, "classes": list(CLASSES), "data_root": str(ds.root), "layout": ds.layout,
        "synthetic": ds.synthetic, "class_weights": cw, "n": {k: len(v) for k, v in splits.items()},
        "epochs_run": done, "train_seconds": round(train_seconds, 2),
        "epoch_seconds": [round(s, 2) for s in epoch_seconds], "skipped_images": len(ds.unreadable),
        "leuk_edge_version": __version__, "keras_version": keras.__version__,
        "note": DISCLAIMER + (" " + SYNTHETIC_NOTE if ds.synthetic else ""),
    }
    (run / "config.json").write_text(json.dumps(config, indent=2, default=str))
    plot_curves(run / "history.csv", run / "curves.png", ds.synthetic)
    plot_confusion(metrics, run / "confusion.png", ds.synthetic)
    plot_roc(probs, run / "roc.png", ds.synthetic)
    return metrics
