"""Both models build and train; the CNN learns the synthetic task; run folders follow docs/contracts.md."""

import json
import os
import shutil
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from leuk_edge.cli import app

pytestmark = pytest.mark.slow
METRIC_KEYS = {"n", "accuracy", "balanced_accuracy", "weighted_f1", "roc_auc", "precision", "recall",
               "confusion_matrix", "threshold"}
RUN_FILES = {"model.keras", "config.json", "history.csv", "curves.png", "split.json", "metrics.json",
             "confusion.png", "roc.png", "reliability.png"}
CALIBRATION_KEYS = {"ece", "brier", "nll", "uncalibrated"}


@pytest.fixture(scope="module")
def learnable(tmp_path_factory):
    """15 subjects (5 normal) x 24 cells: enough subjects per class for honest subject-disjoint splits."""
    from leuk_edge.synth.cells import write_synthetic_cnmc

    out = tmp_path_factory.mktemp("learnable")
    return write_synthetic_cnmc(out, subjects=15, cells_per_subject=24, final_cells=2, seed=5)["root"]


@pytest.fixture(scope="module")
def cnn_run(learnable, tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "cnn"
    res = CliRunner().invoke(app, ["train", "--data", learnable, "--model", "cnn", "--out", str(run),
                                   "--epochs", "15", "--batch-size", "16", "--image-size", "64", "--patience", "6"])
    assert res.exit_code == 0, res.output
    return run


def test_models_build_at_default_sizes():
    from leuk_edge.train.models import build

    cnn, _ = build("cnn")
    assert cnn.input_shape == (None, 256, 256, 3) and cnn.output_shape == (None, 1)
    inc, base = build("inception", weights=None)
    assert inc.input_shape == (None, 224, 224, 3) and inc.output_shape == (None, 1)
    assert base.name == "inception_v3" and base.output_shape == (None, 2048)  # average pooling


def test_cnn_learns_synthetic_cells(cnn_run):
    assert RUN_FILES <= {p.name for p in cnn_run.iterdir()}
    metrics = json.loads((cnn_run / "metrics.json").read_text())
    assert set(metrics) == {"val", "test", "health", "scope"}  # health, scope describe the run, not a split
    assert metrics["health"]["warnings"] == [], metrics["health"]
    for m in (metrics["val"], metrics["test"]):
        assert METRIC_KEYS | CALIBRATION_KEYS <= set(m) and set(m["uncalibrated"]) == {"ece", "brier", "nll"}
    # the held-out test split (other subjects, never used for any choice) is learnt
    assert metrics["test"]["balanced_accuracy"] >= 0.9, metrics["test"]
    config = json.loads((cnn_run / "config.json").read_text())
    assert config["threshold"] == metrics["val"]["threshold"] == metrics["test"]["threshold"]
    cal = config["calibration"]
    assert cal["method"] == "temperature" and cal["fitted_on"] == "val" and cal["temperature"] > 0
    # Platt's targets give a finite T even on a validation split the model separates
    assert 0.05 * 1.01 < cal["temperature"] < 20 / 1.01
    assert config["architecture"] == "cnn" and config["image_size"] == 64 and config["synthetic"] is True
    # the colour augmentation is on by default and recorded with its strengths
    assert config["stain_augment"] == "hed" and config["stain_jitter"]["method"] == "hed"
    assert config["stain_jitter"]["hed_sigma"] == 0.05
    split = json.loads((cnn_run / "split.json").read_text())
    assert not set(split["train"]) & set(split["val"]) and not set(split["val"]) & set(split["test"])


def test_evaluate_and_compare(cnn_run, learnable, tmp_path):
    res = CliRunner().invoke(app, ["evaluate", str(cnn_run), "--data", learnable])
    assert res.exit_code == 0, res.output
    again = json.loads(res.stdout)
    saved = json.loads((cnn_run / "metrics.json").read_text())
    for split in ("val", "test"):
        assert again[split]["confusion_matrix"] == saved[split]["confusion_matrix"]
        for key in ("ece", "brier", "nll"):  # the run's temperature is applied again
            assert again[split][key] == pytest.approx(saved[split][key], abs=1e-6)
            assert again[split]["uncalibrated"][key] == pytest.approx(saved[split]["uncalibrated"][key], abs=1e-6)
    other = tmp_path / "other"
    shutil.copytree(cnn_run, other)
    # a run written before calibration existed (no "calibration" entry) is evaluated with T = 1
    config = json.loads((other / "config.json").read_text())
    del config["calibration"]
    (other / "config.json").write_text(json.dumps(config))
    res = CliRunner().invoke(app, ["evaluate", str(other), "--data", learnable])
    assert res.exit_code == 0, res.output
    old = json.loads(res.stdout)["val"]
    assert old["ece"] == pytest.approx(old["uncalibrated"]["ece"])
    assert old["nll"] == pytest.approx(saved["val"]["uncalibrated"]["nll"], abs=1e-6)
    res = CliRunner().invoke(app, ["compare", str(cnn_run), str(other), "--out", str(tmp_path / "cmp")])
    assert res.exit_code == 0, res.output
    table = (tmp_path / "cmp" / "comparison.md").read_text()
    assert "weighted F1" in table and table.count("| cnn@64 |") == 2 and "not a diagnostic device" in table
    assert (tmp_path / "cmp" / "comparison.png").stat().st_size > 10_000


def _first_conv(base):
    """The base's very first convolution (layer names are numbered per process, so found by type)."""
    import keras

    return next(layer for layer in base.layers if isinstance(layer, keras.layers.Conv2D))


def test_inception_without_pretrained_weights_trains_the_whole_base_from_epoch_1(synth_cnmc, tmp_path,
                                                                                  monkeypatch):
    """--weights none: a frozen random base would make the head a constant predictor, so there is no frozen
    phase; the run says so. Also: a corrupt image is skipped and listed."""
    import numpy as np

    from leuk_edge.train import models

    initial = {}
    real_build = models.build

    def build_and_remember(*args, **kwargs):
        model, base = real_build(*args, **kwargs)
        initial["stem"] = _first_conv(base).get_weights()[0].copy()
        return model, base

    monkeypatch.setattr(models, "build", build_and_remember)
    data = tmp_path / "C-NMC_Leukemia"
    shutil.copytree(synth_cnmc, data)
    (data / "training_data" / "fold_0" / "all" / "UID_1_77_1_all.bmp").write_bytes(b"\x00" * 100)
    run = tmp_path / "inc"
    res = CliRunner().invoke(app, ["train", "--data", str(tmp_path), "--model", "inception", "--weights", "none",
                                   "--out", str(run), "--epochs", "2", "--batch-size", "8", "--image-size", "75"])
    assert res.exit_code == 0, res.output
    assert RUN_FILES <= {p.name for p in run.iterdir()}
    assert "UID_1_77_1_all.bmp" in (run / "skipped_images.txt").read_text()
    config = json.loads((run / "config.json").read_text())
    assert config["architecture"] == "inception_v3" and config["epochs_run"] == 2 and config["skipped_images"] == 1
    assert config["pretrained"] is False and "no frozen phase" in config["schedule"]
    assert [(p["name"], p["base"], p["first_epoch"], p["last_epoch"]) for p in config["phases"]] == \
        [("train", "all", 0, 1)]
    assert len((run / "history.csv").read_text().strip().splitlines()) == 3  # header + 2 epochs
    import keras

    saved = keras.saving.load_model(run / "model.keras")
    stem = _first_conv(saved.get_layer("inception_v3")).get_weights()[0]
    assert not np.allclose(stem, initial["stem"]), "the base's first convolution never trained"


def test_schedule_freezes_only_a_pretrained_base():
    from leuk_edge.train.fit import Phase, TrainConfig, plan_phases

    cfg = TrainConfig(data="-", model="inception", epochs=5, learning_rate=1e-3, fine_tune_learning_rate=1e-5)
    assert plan_phases(cfg, pretrained=True) == [Phase("head", 3, 1e-3, "frozen"), Phase("fine_tune", 2, 1e-5, "top")]
    assert plan_phases(cfg, pretrained=False) == [Phase("train", 5, 1e-3, "all")]
    cfg.model = "cnn"
    assert plan_phases(cfg, pretrained=False) == [Phase("train", 5, 1e-3, "-")]


def test_a_worse_second_phase_keeps_the_first_phase_model(synth_cnmc, tmp_path):
    """The saved model is the best val_loss over ALL phases: a second phase wrecked on purpose (a huge learning
    rate) must not overwrite the first phase's model (a fresh checkpoint per phase did exactly that)."""
    import csv

    import keras
    import numpy as np
    import tensorflow as tf
    from sklearn.metrics import log_loss

    from leuk_edge.train.fit import Phase, TrainConfig, fit_phases, predict_items, prepare_data, seed_everything
    from leuk_edge.train.models import build

    cfg = TrainConfig(data=str(synth_cnmc), out=str(tmp_path), epochs=3, batch_size=8, image_size=32, seed=0)
    seed_everything(0)
    data = prepare_data(cfg, tmp_path, None, log=lambda m: None)
    model, _ = build("cnn", 32)
    phases = [Phase("head", 2, 3e-3, "-"), Phase("fine_tune", 1, 50.0, "-")]
    res = fit_phases(model, None, phases, data, cfg, tmp_path, tf.distribute.get_strategy())
    with open(tmp_path / "history.csv", newline="") as fh:
        val_loss = [float(r["val_loss"]) for r in csv.DictReader(fh)]
    assert len(val_loss) == 3 and np.isfinite(val_loss[2]) and val_loss[2] > min(val_loss[:2]) + 0.05, val_loss
    assert res.best_epoch == int(np.argmin(val_loss[:2])) and res.best_val_loss == pytest.approx(min(val_loss))
    assert [(p["first_epoch"], p["last_epoch"]) for p in res.phases] == [(0, 1), (2, 2)]
    # the saved model is the first phase's best: its val loss, computed here from its predictions, is that epoch's
    val = data.splits["val"]
    p = predict_items(keras.saving.load_model(tmp_path / "model.keras"), val, 32, "area")
    assert log_loss([it.label for it in val], p, labels=[0, 1]) == pytest.approx(min(val_loss[:2]), abs=2e-3)


def test_training_is_deterministic_under_seed(synth_cnmc, tmp_path):
    histories = []
    for i in range(2):
        res = CliRunner().invoke(app, ["train", "--data", str(synth_cnmc), "--out", str(tmp_path / f"r{i}"),
                                       "--epochs", "2", "--batch-size", "8", "--image-size", "32", "--seed", "7"])
        assert res.exit_code == 0, res.output
        histories.append((tmp_path / f"r{i}" / "history.csv").read_text())
    assert histories[0] == histories[1]


def test_offline_imagenet_fails_fast_with_a_clear_message(synth_cnmc, tmp_path):
    env = {**os.environ, "KERAS_HOME": str(tmp_path / "keras"),
           "LEUK_EDGE_IMAGENET_HOST": "127.0.0.1:9",  # a closed port: what "no network" looks like
           "TF_CPP_MIN_LOG_LEVEL": "3"}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "leuk_edge", "train", "--data", str(synth_cnmc), "--model",
                           "inception", "--out", str(tmp_path / "run")], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2
    assert "--weights /path/to/inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert time.perf_counter() - t0 < 60  # seconds (mostly the TensorFlow import), never a hang


def _hand_made_predictions(model, items, *args, **kwargs):
    """Stands in for the model: validation cells score hem 0.55-0.65 and all 0.70-0.90 (val-optimal threshold
    0.70, not 0.5: every hem is over 0.5); test (prelim) cells score hem 0.10-0.20 and all 0.30-0.40
    (test-optimal threshold 0.30)."""
    import numpy as np

    test = all(it.fold == "prelim" for it in items)
    lo = {0: 0.10, 1: 0.30} if test else {0: 0.55, 1: 0.70}
    span = {0: 0.10, 1: 0.10} if test else {0: 0.10, 1: 0.20}
    out, seen = [], {0: 0, 1: 0}
    n = {c: max(1, sum(it.label == c for it in items) - 1) for c in (0, 1)}
    for it in items:
        out.append(lo[it.label] + span[it.label] * seen[it.label] / n[it.label])
        seen[it.label] += 1
    return np.array(out, np.float32)


def test_threshold_and_temperature_come_from_val_only(synth_cnmc, tmp_path, monkeypatch):
    import numpy as np

    from leuk_edge.train import fit
    from leuk_edge.train.calibration import apply_temperature
    from leuk_edge.train.data import load_dataset

    seen = {"choose_threshold": [], "fit_temperature": []}

    def spy(name, real):
        def wrapper(y, p):
            seen[name].append(sorted(np.asarray(y).astype(int).tolist()))
            return real(y, p)
        return wrapper

    monkeypatch.setattr(fit, "choose_threshold", spy("choose_threshold", fit.choose_threshold))
    monkeypatch.setattr(fit, "fit_temperature", spy("fit_temperature", fit.fit_temperature))
    monkeypatch.setattr(fit, "predict_items", _hand_made_predictions)
    ds = load_dataset(synth_cnmc)
    ds.test = ds.test[:5]  # a test split unlike val in size, so test labels cannot pass for val labels
    run = tmp_path / "run"
    metrics = fit.train(fit.TrainConfig(data=str(synth_cnmc), out=str(run), epochs=1, batch_size=8, image_size=32),
                        dataset=ds, log=lambda m: None)

    split = json.loads((run / "split.json").read_text())
    val_labels = sorted(it.label for it in ds.train if it.subject in set(split["val"]))
    assert len(val_labels) != len(ds.test) and 0 < sum(val_labels) < len(val_labels)
    for name, calls in seen.items():
        assert calls, f"train() never called {name}"
        assert all(c == val_labels for c in calls), f"{name} was given labels other than val's: {calls}"

    config = json.loads((run / "config.json").read_text())
    t, thr = config["calibration"]["temperature"], config["threshold"]
    # the threshold separates val perfectly: above every calibrated val hem (0.65), at most the lowest all (0.70)
    assert apply_temperature([0.65], t)[0] < thr <= apply_temperature([0.70], t)[0] + 1e-9
    assert thr != pytest.approx(0.5, abs=1e-3)
    assert metrics["val"]["balanced_accuracy"] == 1.0
    # and it is not the test-optimal one (0.30): on test, every all cell (<= 0.40) falls below it
    assert thr > apply_temperature([0.40], t)[0]
    assert metrics["test"]["recall"] == {"hem": 1.0, "all": 0.0}
    # T minimises the val cross-entropy against Platt's targets (the over-confident case is in
    # test_calibration.py): checked here against a grid search over the whole range, computed by hand
    val_items = [it for it in ds.train if it.subject in set(split["val"])]
    val_p = _hand_made_predictions(None, val_items)  # the (label, P) pairs do not depend on the order
    y = np.array([it.label for it in val_items])
    n1, n0 = int(y.sum()), int(len(y) - y.sum())
    target = np.where(y == 1, (n1 + 1) / (n1 + 2), 1 / (n0 + 2))
    z = np.log(val_p / (1 - val_p)).astype(np.float64)

    def cross_entropy(temp):
        q = 1 / (1 + np.exp(-z / temp))
        return float(-np.mean(target * np.log(q) + (1 - target) * np.log(1 - q)))

    grid = np.exp(np.linspace(np.log(0.05), np.log(20), 4001))
    assert t != 1.0 and cross_entropy(t) <= min(cross_entropy(g) for g in grid) + 1e-9


def test_train_output_is_free_of_tensorflow_log_noise(synth_cnmc, tmp_path):
    """What a user sees from `leuk-edge train`: no Abseil C++ log lines (oneDNN/CUDA notes at load, tf.data's
    'NodeDef mentions attribute use_unbounded_threadpool' errors), even with TF_CPP_MIN_LOG_LEVEL unset."""
    import re

    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    proc = subprocess.run([sys.executable, "-m", "leuk_edge", "train", "--data", str(synth_cnmc), "--out",
                           str(tmp_path / "run"), "--epochs", "1", "--batch-size", "8", "--image-size", "32"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    noise = re.compile(r"^[IWEF]\d{4} [\d:.]+\s+\d+ \S+:\d+\]|absl::InitializeLog|NodeDef mentions", re.M)
    assert not noise.search(proc.stderr + proc.stdout), (proc.stderr + proc.stdout)[:3000]
    assert "run folder:" in proc.stdout + proc.stderr


def test_random_inception_batchnorm_settles_fast():
    """From random weights InceptionV3's ~94 BatchNorm layers start at mean 0 / variance 1; with Keras' default
    momentum 0.99 a short run's moving statistics barely move, so validation sees a near-constant predictor
    (measured on the demo data, 96 px, 4 epochs: val AUC 0.53 at 0.99 vs 0.99 at 0.9). Random bases use 0.9, as the
    CNN does; a pretrained base keeps its ImageNet statistics' momentum."""
    from keras import layers

    from leuk_edge.train.models import build_inception

    _, base = build_inception((75, 75, 3), weights=None)
    momenta = {bn.momentum for bn in base.layers if isinstance(bn, layers.BatchNormalization)}
    assert momenta == {0.9}


def test_evaluate_and_export_read_the_runs_threshold_by_one_rule(synth_cnmc, tmp_path):
    """A run whose config.json has no threshold: export took metrics.json's validation threshold, evaluate fell
    back to 0.5 — two answers to "the run's threshold". Both go through `run_threshold` now."""
    import keras

    from leuk_edge.export.keras_io import source_info
    from leuk_edge.train.evaluate import evaluate
    from leuk_edge.train.models import build

    run = tmp_path / "run"
    run.mkdir()
    keras.utils.set_random_seed(0)
    model, _ = build("cnn", 32)
    model.save(run / "model.keras")
    (run / "config.json").write_text(json.dumps({"model": "cnn", "image_size": 32, "resize": "area"}))
    (run / "metrics.json").write_text(json.dumps({"val": {"threshold": 0.3}}))
    out = evaluate(run, synth_cnmc)
    assert [m["threshold"] for m in out.values()] == [0.3, 0.3]  # all_labelled (no split.json) and test
    src = source_info(model, run / "model.keras")
    assert (src.threshold, src.threshold_source, src.warnings) == (0.3, "metrics.json", [])
    (run / "metrics.json").unlink()
    assert {m["threshold"] for m in evaluate(run, synth_cnmc).values()} == {0.5}
    src = source_info(model, run / "model.keras")
    assert (src.threshold, src.threshold_source) == (0.5, "assumed") and "0.5 assumed" in src.warnings[0]
