"""`leuk-edge train`: data -> model -> fit phases -> evaluate -> write the run folder (RUN/).

A straight keras-io style path in named steps; every choice that touches evaluation (best epoch, temperature,
threshold) is made on `val`, never on `test`.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .. import CLASSES, DISCLAIMER, SYNTHETIC_NOTE, __version__
from .calibration import apply_temperature, calibration_entry, calibration_figures, fit_temperature
from .data import Dataset, Item, load_dataset, make_splits, split_subjects
from .metrics import choose_threshold, compute_metrics
from .models import ARCHITECTURE, DEFAULT_SIZE, RESIZE
from .quiet import import_tensorflow
from .stain_augment import StainJitter


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
    stain_augment: str = "hed"  # hed | none: colour jitter of the training cells (train/stain_augment.py)
    stain_sigma: float = 0.05  # HED jitter strength (Tellez et al. 2019 "HED-light")
    scope_accept: float = 0.95  # share of in-scope val cells the scope gate accepts (train/scope.py)

    @property
    def size(self) -> int:
        return self.image_size or DEFAULT_SIZE[self.model]


def stain_jitter(cfg: TrainConfig) -> StainJitter:
    """The run's colour augmentation (config.json `stain_jitter` records all of its strengths)."""
    if cfg.stain_augment not in ("hed", "none"):
        raise ValueError(f"--stain-augment must be hed or none, not {cfg.stain_augment!r}")
    return StainJitter(method=cfg.stain_augment, hed_sigma=cfg.stain_sigma)


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


def _cap(items: list[Item], n: int | None, seed: int) -> list[Item]:
    if n is None or len(items) <= n:
        return items
    idx = np.random.default_rng(seed).permutation(len(items))[:n]
    return [items[i] for i in sorted(idx)]


# ---------------------------------------------------------------------------------------------- step 1: data


@dataclass
class RunData:
    """The dataset, its subject-disjoint splits and the tf.data pipelines that feed `fit`."""
    ds: Dataset
    splits: dict[str, list[Item]]
    train_ds: object
    val_ds: object
    class_weights: dict[int, float] | None
    stats_ds: object = None  # un-augmented training images in a seeded mixed order: BatchNorm statistics


def statistics_images(cfg: TrainConfig, train: list[Item], replicas: int = 1):
    """Batches of up to PRECISE_BN_IMAGES training images, un-augmented (as inference sees cells), in a seeded
    random order so each batch mixes the classes as the training batches do, at the per-replica batch size
    (the batch BatchNorm normalises over in training). Not sharded: every worker pools the same images."""
    from .batchnorm import PRECISE_BN_IMAGES
    from .pipeline import image_dataset

    order = np.random.default_rng(cfg.seed).permutation(len(train))[:PRECISE_BN_IMAGES]
    paths = [train[i].path for i in order]
    size = cfg.size
    return image_dataset(paths, None, (size, size), RESIZE[cfg.model], max(1, cfg.batch_size // replicas),
                         cache=len(paths) * size * size * 12 < 1e9)


def prepare_data(cfg: TrainConfig, run: Path, dataset: Dataset | None, log, replicas: int = 1) -> RunData:
    from .pipeline import image_dataset

    ds = dataset or load_dataset(cfg.data)
    if ds.unreadable:
        (run / "skipped_images.txt").write_text(
            f"# {len(ds.unreadable)} unreadable image(s) skipped\n" + "".join(f"{p}\t{r}\n" for p, r in ds.unreadable))
        log(f"skipped {len(ds.unreadable)} unreadable image(s); listed in {run / 'skipped_images.txt'}")
    splits = make_splits(ds, cfg.val_fraction, cfg.seed)
    splits = {k: _cap(v, cfg.max_images, cfg.seed) for k, v in splits.items()}
    (run / "split.json").write_text(json.dumps(split_subjects(splits), indent=2))
    size, resize = cfg.size, RESIZE[cfg.model]
    tr, va = splits["train"], splits["val"]
    y_tr = [it.label for it in tr]
    # Cache decoded tensors in RAM when they fit comfortably; otherwise decode every epoch (BMP decode is cheap).
    train_ds = image_dataset([it.path for it in tr], y_tr, (size, size), resize, cfg.batch_size,
                             augment=True, shuffle=True, seed=cfg.seed, cache=len(tr) * size * size * 12 < 3e9,
                             stain=stain_jitter(cfg))
    val_ds = image_dataset([it.path for it in va], [it.label for it in va], (size, size), resize, cfg.batch_size,
                           cache=len(va) * size * size * 12 < 1e9)
    cw = class_weights(y_tr) if cfg.class_weight else None
    log(f"{cfg.model} @ {size}px: train {len(tr)} / val {len(va)} / test {len(splits.get('test', []))} images; "
        f"class weights {cw}")
    return RunData(ds, splits, train_ds, val_ds, cw, statistics_images(cfg, tr, replicas))


# --------------------------------------------------------------------------------------- step 2: model, schedule


@dataclass(frozen=True)
class Phase:
    name: str  # "train" (cnn, or inception from random weights) | "head" | "fine_tune"
    epochs: int
    learning_rate: float
    base: str  # InceptionV3 base: "frozen" | "top" (mixed9 and up, BatchNorm frozen) | "all" | "-" (cnn)


def plan_phases(cfg: TrainConfig, pretrained: bool) -> list[Phase]:
    """The CNN trains in one phase. InceptionV3 with pretrained weights: head on the frozen base, then fine-tune
    the top blocks at a low rate. Without pretrained weights the base is random: frozen, it would feed the head
    noise (a constant predictor), so the whole network trains from the first epoch."""
    if cfg.model == "cnn":
        return [Phase("train", cfg.epochs, cfg.learning_rate, "-")]
    if not pretrained:
        return [Phase("train", cfg.epochs, cfg.learning_rate, "all")]
    head = max(1, math.ceil(cfg.epochs / 2))
    phases = [Phase("head", head, cfg.learning_rate, "frozen")]
    if cfg.epochs > head:
        phases.append(Phase("fine_tune", cfg.epochs - head, cfg.fine_tune_learning_rate, "top"))
    return phases


def describe_schedule(cfg: TrainConfig, phases: list[Phase]) -> str:
    """One sentence for config.json, the log and the demo report."""
    if cfg.model == "cnn":
        return f"CNN from scratch: one phase of up to {cfg.epochs} epochs"
    if phases[0].base == "all":
        return (f"InceptionV3 from random weights (--weights {cfg.weights}): no frozen phase, the whole network "
                f"trains from the first epoch (up to {cfg.epochs} epochs)")
    parts = [f"{p.epochs} epoch(s) {'head only on the frozen base' if p.base == 'frozen' else 'fine-tuning mixed9+'}"
             f" at lr {p.learning_rate:g}" for p in phases]
    return "InceptionV3 from pretrained weights: " + ", then ".join(parts)


def set_base_trainable(base, mode: str) -> None:
    from .models import unfreeze_top

    if base is None or mode == "-":
        return
    if mode == "frozen":
        base.trainable = False
    elif mode == "top":
        unfreeze_top(base)
    else:  # "all": random weights, so BatchNorm statistics must be learnt as well
        base.trainable = True


# ------------------------------------------------------------------------------------------ step 3: fit phases


@dataclass
class FitResult:
    epochs_run: int = 0
    best_val_loss: float | None = None
    best_epoch: int | None = None  # 0-based, across all phases
    seconds: float = 0.0
    epoch_seconds: list[float] = field(default_factory=list)
    phases: list[dict] = field(default_factory=list)


def fit_phases(model, base, phases: list[Phase], data: RunData, cfg: TrainConfig, run: Path, strategy) -> FitResult:
    """Run the phases in turn. ONE best-val_loss tracker spans them: each phase's checkpoint and early stopping
    start from the best loss so far, so a phase that only makes things worse never overwrites model.keras.
    Before every validation pass the BatchNorm statistics are recomputed over training images (PreciseBN,
    batchnorm.py): val_loss, the checkpoint's choice and the saved model all see the statistics that fit the
    weights of that epoch, not a lagging moving average."""
    import keras

    from .batchnorm import PreciseBatchNorm

    res = FitResult()
    t0 = time.perf_counter()
    for phase in phases:
        with strategy.scope():  # the variables live in the strategy's scope; so must the new optimizer
            set_base_trainable(base, phase.base)
            _compile(model, phase.learning_rate)
        callbacks = [
            keras.callbacks.ModelCheckpoint(run / "model.keras", monitor="val_loss", save_best_only=True,
                                            initial_value_threshold=res.best_val_loss),
            # stop after `patience` epochs without beating the best so far (of this phase or an earlier one)
            keras.callbacks.EarlyStopping("val_loss", patience=cfg.patience, baseline=res.best_val_loss),
            keras.callbacks.CSVLogger(run / "history.csv", append=res.epochs_run > 0),
            _epoch_timer(res.epoch_seconds),
        ]
        if data.stats_ds is not None:
            callbacks.insert(0, PreciseBatchNorm(data.stats_ds))  # first: before validation and the checkpoint
        first = res.epochs_run
        hist = model.fit(data.train_ds, validation_data=data.val_ds, epochs=first + phase.epochs,
                         initial_epoch=first, class_weight=data.class_weights, callbacks=callbacks, shuffle=False,
                         verbose=1 if sys.stderr.isatty() else 2)
        for i, loss in enumerate(hist.history.get("val_loss", [])):
            if math.isfinite(loss) and (res.best_val_loss is None or loss < res.best_val_loss):
                res.best_val_loss, res.best_epoch = float(loss), first + i
        res.epochs_run = first + len(hist.history.get("loss", []))
        res.phases.append({**asdict(phase), "first_epoch": first, "last_epoch": res.epochs_run - 1})
    res.seconds = time.perf_counter() - t0
    return res


# -------------------------------------------------------------------------------------------- step 4: evaluate


@dataclass
class Evaluation:
    """Per split: labels, the model's P(all) and its calibrated P(all); the temperature and threshold (both
    fitted on val only) and the metrics."""
    labels: dict[str, list[int]]
    raw: dict[str, np.ndarray]
    calibrated: dict[str, np.ndarray]
    temperature: float
    threshold: float
    metrics: dict


def evaluate_splits(model, splits: dict[str, list[Item]], cfg: TrainConfig) -> Evaluation:
    names = [k for k in ("val", "test") if splits.get(k)]
    labels = {k: [it.label for it in splits[k]] for k in names}
    raw = {k: predict_items(model, splits[k], cfg.size, RESIZE[cfg.model], cfg.batch_size) for k in names}
    # Every choice is made on val: the temperature, then the threshold on the calibrated val probabilities.
    temperature = fit_temperature(labels["val"], raw["val"]) if "val" in names else 1.0
    calibrated = {k: apply_temperature(raw[k], temperature) for k in names}
    threshold = choose_threshold(labels["val"], calibrated["val"]) if "val" in names else 0.5
    metrics = {k: {**compute_metrics(labels[k], calibrated[k], threshold),
                   **calibration_figures(labels[k], raw[k], temperature)} for k in names}
    return Evaluation(labels, raw, calibrated, temperature, threshold, metrics)


# ------------------------------------------------------------------------------------------ step 5: health


def check_health(model, data: RunData, ev: Evaluation, log) -> dict:
    """metrics.json's `health` (train/health.py): inference vs training mode on training cells, the temperature
    against its bounds, the spread of val P(all). Every failed check is logged as a WARNING line."""
    from .batchnorm import batch_statistics_predictions
    from .health import HEALTH_IMAGES, assess

    sample = data.stats_ds.unbatch().take(HEALTH_IMAGES).batch(32) if data.stats_ds is not None else []
    p_inf = np.concatenate([np.asarray(model(x, training=False)).reshape(-1) for x in sample] or [np.zeros(0)])
    p_bat = batch_statistics_predictions(model, sample)
    empty = np.zeros(0)
    health = assess(p_inf, p_bat, ev.temperature, ev.raw.get("val", empty), ev.calibrated.get("val", empty))
    for line in health["warnings"]:
        log(f"WARNING: {line}")
    if not health["warnings"]:
        bn, sp = health["batchnorm"], health["spread"]
        gap = "n/a" if bn["mean_abs_diff"] is None else f"{bn['mean_abs_diff']:.3f}"
        spread = "n/a" if sp["val_std"] is None else f"{sp['val_std']:.3f}"
        log(f"health: ok (inference vs training mode on {bn['images']} training cells: mean |dP| {gap}; "
            f"T {ev.temperature:.3f} inside {list(health['temperature']['bounds'])}; val P(all) std {spread})")
    return health


# ------------------------------------------------------------------------------------------ step 5b: scope


def fit_scope(model, splits: dict[str, list[Item]], cfg: TrainConfig, run: Path, log) -> dict:
    """The scope model (train/scope.py) on the TRAINING cells' features at its taps, its threshold on val; saved
    as RUN/scope.npz; -> metrics.json's `scope` (with the AUROC against drawn out-of-scope cells)."""
    from . import scope
    from .pipeline import image_dataset

    names = scope.default_taps(model)

    def feats(items):
        ds = image_dataset([it.path for it in items], None, (cfg.size, cfg.size), RESIZE[cfg.model], cfg.batch_size)
        return scope.features_of_dataset(model, ds, names)

    train = splits["train"]
    stats = scope.fit(feats(train), [it.label for it in train], names, groups=[it.subject for it in train])
    stats.accept = cfg.scope_accept
    held = {k: feats(splits[k]) for k in ("val", "test") if splits.get(k)}
    if "val" in held:
        scope.scale_on_val(stats, held["val"])  # the penultimate tap: on cells the network never fitted
    scores = {k: scope.ood(stats, f) for k, f in held.items()}
    if "val" in scores:
        stats.threshold, stats.accept_rate_val = scope.choose_threshold(scores["val"], cfg.scope_accept)
    scope.save(stats, run / scope.FILENAME)
    other = scope.ood(stats, scope.features_of(model, scope.other_cells(cfg.size, RESIZE[cfg.model]), names))
    entry = scope.entry(stats, scores, other)
    auroc = "n/a" if entry["auroc_other"] is None else f"{entry['auroc_other']:.3f}"
    log(f"scope: {stats.method} over {', '.join(names)} on {stats.n_train} training cells, threshold "
        f"{stats.threshold:.3g} accepts "
        f"{entry['in_scope_rate']} (in-scope share per split); AUROC vs {entry['n_other']} drawn others {auroc}")
    return entry


# ------------------------------------------------------------------------------------------- step 6: write run


def write_run(run: Path, cfg: TrainConfig, data: RunData, phases: list[Phase], fit: FitResult,
              ev: Evaluation) -> None:
    import keras

    from .plots import plot_confusion, plot_curves, plot_reliability, plot_roc

    ds = data.ds
    (run / "metrics.json").write_text(json.dumps(ev.metrics, indent=2))
    config = {
        **asdict(cfg), "image_size": cfg.size, "architecture": ARCHITECTURE[cfg.model], "resize": RESIZE[cfg.model],
        "threshold": ev.threshold,  # on the calibrated P(all)
        "calibration": calibration_entry(ev.temperature),
        "classes": list(CLASSES), "data_root": str(ds.root), "layout": ds.layout,
        "synthetic": ds.synthetic, "class_weights": data.class_weights,
        "n": {k: len(v) for k, v in data.splits.items()},
        "pretrained": cfg.model == "inception" and phases[0].base != "all",
        "schedule": describe_schedule(cfg, phases), "phases": fit.phases,
        "epochs_run": fit.epochs_run, "best_epoch": fit.best_epoch, "best_val_loss": fit.best_val_loss,
        "train_seconds": round(fit.seconds, 2), "epoch_seconds": [round(s, 2) for s in fit.epoch_seconds],
        "skipped_images": len(ds.unreadable), "stain_jitter": stain_jitter(cfg).as_config(),
        "leuk_edge_version": __version__, "keras_version": keras.__version__,
        "note": DISCLAIMER + (" " + SYNTHETIC_NOTE if ds.synthetic else ""),
    }
    (run / "config.json").write_text(json.dumps(config, indent=2, default=str))
    plot_curves(run / "history.csv", run / "curves.png", ds.synthetic)
    plot_confusion(ev.metrics, run / "confusion.png", ds.synthetic)
    plot_roc({k: (ev.labels[k], ev.calibrated[k]) for k in ev.labels}, run / "roc.png", ds.synthetic)
    plot_reliability({k: (ev.labels[k], ev.raw[k], ev.calibrated[k]) for k in ev.labels}, ev.temperature,
                     run / "reliability.png", ds.synthetic)


# ------------------------------------------------------------------------------------------------------- train


def train(cfg: TrainConfig, dataset: Dataset | None = None, log=print) -> dict:
    """Train one model into cfg.out: data -> model -> fit phases -> evaluate (calibrate, threshold on val) ->
    write the run. Returns the metrics dict (also written to metrics.json)."""
    import_tensorflow()
    import keras

    from .distribute import finish_worker, run_folder, shard_by_data, worker_name
    from .models import build
    from .weights import resolve_weights

    if cfg.model not in DEFAULT_SIZE:
        raise ValueError(f"unknown model {cfg.model!r}; choose cnn or inception")
    # One strategy for every phase, made first: MultiWorkerMirroredStrategy must precede every other TF op.
    strategy = _strategy(cfg.strategy)
    weights = resolve_weights(cfg.weights) if cfg.model == "inception" else None  # fail fast, before data
    stain_jitter(cfg)  # a bad --stain-augment fails before any work
    run, chief = run_folder(cfg.out, cfg.strategy)  # multiworker: only the chief writes cfg.out
    run.mkdir(parents=True, exist_ok=True)
    seed_everything(cfg.seed)
    data = prepare_data(cfg, run, dataset, log, replicas=strategy.num_replicas_in_sync)
    if cfg.strategy == "multiworker":  # each worker keeps its share of the batches
        data.train_ds, data.val_ds = shard_by_data(data.train_ds), shard_by_data(data.val_ds)

    with strategy.scope():
        model, base = build(cfg.model, cfg.size, weights=weights)
    phases = plan_phases(cfg, pretrained=weights is not None)
    log(describe_schedule(cfg, phases))
    fit = fit_phases(model, base, phases, data, cfg, run, strategy)
    if not chief:  # the chief evaluates and writes the run folder; this worker wrote only its scratch folder
        log(f"{worker_name()}: training done; the chief writes {cfg.out}")
        return finish_worker(run)
    if not (run / "model.keras").is_file():  # val_loss never finite: keep the last weights rather than nothing
        model.save(run / "model.keras")
    # the best epoch over all phases (uncalibrated: the temperature lives in config.json, applied downstream)
    model = keras.saving.load_model(run / "model.keras", safe_mode=True)

    ev = evaluate_splits(model, data.splits, cfg)
    log(f"calibration: temperature {ev.temperature:.3f} fitted on val; threshold {ev.threshold:.3f} on the "
        "calibrated P(all)")
    ev.metrics["health"] = check_health(model, data, ev, log)
    ev.metrics["scope"] = fit_scope(model, data.splits, cfg, run, log)
    write_run(run, cfg, data, phases, fit, ev)
    log(f"run folder: {run}")
    return ev.metrics
