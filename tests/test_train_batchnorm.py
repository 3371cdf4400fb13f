"""BatchNorm statistics that fit the weights (PreciseBN) and the training health checks (issue 18, defect 0).

The slow test is the issue's case, cut to CI size: the default CNN at its default 256 px, a few epochs on ~100
synthetic 450x450 cells. Before PreciseBN its moving variances still carried their start value 1 (the first
layer's true variance is ~0.01), so in inference mode every cell got the same P(all) and val accuracy sat at the
majority share while training accuracy rose."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from leuk_edge.cli import app


def _tiny_cnn(size=32, seed=0):
    import keras

    from leuk_edge.train.models import build_cnn

    keras.utils.set_random_seed(seed)
    return build_cnn((size, size, 3))


def _first_conv_and_bn(model):
    import keras

    conv = next(layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D))
    bn = next(layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization))
    return conv, bn


def _moments_of_first_conv(model, x):
    """The population mean and variance of the first convolution's output over every pixel of x, in numpy: the
    first BatchNorm's input does not depend on any other BatchNorm, so this is its exact population statistic."""
    import keras

    conv, _ = _first_conv_and_bn(model)
    a = np.asarray(keras.Model(model.inputs, conv.output)(x), np.float64)
    return a.mean(axis=(0, 1, 2)), a.var(axis=(0, 1, 2))


def test_recomputed_statistics_are_the_population_statistics():
    from leuk_edge.train.batchnorm import recompute_statistics

    model = _tiny_cnn()
    rng = np.random.default_rng(0)
    x = (rng.random((23, 32, 32, 3)) * rng.random((23, 1, 1, 1))).astype(np.float32)  # images unlike each other
    _, bn = _first_conv_and_bn(model)
    assert np.allclose(np.asarray(bn.moving_variance), 1.0)  # Keras' start value, far from the true variance
    # uneven batches (7, 7, 7, 2): pooled by size, not averaged per batch
    n = recompute_statistics(model, [x[i:i + 7] for i in range(0, 23, 7)])
    mean, var = _moments_of_first_conv(model, x)
    assert n == 23
    assert np.allclose(np.asarray(bn.moving_mean), mean, rtol=1e-4, atol=1e-6)
    assert np.allclose(np.asarray(bn.moving_variance), var, rtol=1e-3, atol=1e-7)
    assert var.max() < 0.2  # the start value 1 was off by this much
    # the pass changed nothing else: momentum and dropout rates are restored
    import keras

    assert bn.momentum == 0.9
    assert {d.rate for d in model.layers if isinstance(d, keras.layers.Dropout)} == {0.4}


def test_batch_statistics_view_and_frozen_layers_touch_nothing():
    import keras

    from leuk_edge.train.batchnorm import batch_statistics_predictions, recompute_statistics

    model = _tiny_cnn(seed=1)
    x = np.random.default_rng(1).random((8, 32, 32, 3)).astype(np.float32)
    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]

    def statistics():
        return [np.asarray(w).copy() for bn in bns for w in (bn.moving_mean, bn.moving_variance)]

    before = statistics()
    p = batch_statistics_predictions(model, [x[:4], x[4:]])
    assert p.shape == (8,) and np.all((p > 0) & (p < 1))
    assert all(np.array_equal(a, b) for a, b in zip(before, statistics()))
    # the same batches, once more: deterministic (Dropout is off in this view)
    assert np.array_equal(p, batch_statistics_predictions(model, [x[:4], x[4:]]))
    for layer in model.layers:  # a frozen network (a pretrained base) keeps its own statistics
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
    assert recompute_statistics(model, [x]) == 0
    assert all(np.array_equal(a, b) for a, b in zip(before, statistics()))


def test_health_checks_by_hand():
    from leuk_edge.train.health import assess, health_warnings

    rng = np.random.default_rng(0)
    y = np.arange(40) % 2
    good = np.clip(0.2 + 0.6 * y + rng.normal(0, 0.05, 40), 0.01, 0.99)
    ok = assess(good, good + 0.01, 1.3, good, good)
    assert ok["warnings"] == [] and ok["batchnorm"]["mean_abs_diff"] == pytest.approx(0.01)
    assert ok["temperature"]["at_bound"] is False and ok["spread"]["val_std"] == pytest.approx(good.std())
    # the collapse: inference P 0.27-0.30 for every cell, training mode separates; T at its upper bound
    flat = 0.27 + 0.03 * rng.random(40)
    bad = assess(flat, good, 20.0, flat, np.full(40, 0.489) + 0.001 * rng.random(40))
    text = " | ".join(bad["warnings"])
    assert len(bad["warnings"]) == 4, text
    assert "inference mode disagrees with training mode" in text and "T = 20 stopped at a bound" in text
    assert "raw P(all) does not spread" in text and "calibrated P(all) does not spread" in text
    assert assess(good, good, 0.05, good, good)["temperature"]["at_bound"] is True
    assert health_warnings({"val": {}}) is None and health_warnings({"health": bad}) == bad["warnings"]


def _history(run):
    with open(run / "history.csv", newline="") as fh:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(fh)]


@pytest.fixture(scope="module")
def small_256(tmp_path_factory):
    """12 subjects x 16 cells of 450 x 450: 112 training, 32 validation (16 + 16), 48 test cells."""
    from leuk_edge.synth.cells import write_synthetic_cnmc

    out = tmp_path_factory.mktemp("small256")
    return write_synthetic_cnmc(out, subjects=12, cells_per_subject=16, final_cells=0, seed=0)["root"]


@pytest.mark.slow
def test_default_cnn_at_256px_works_in_inference_mode_on_a_small_set(small_256, tmp_path):
    import keras

    from leuk_edge.edge.preprocess import load_image
    from leuk_edge.train.calibration import T_BOUNDS
    from leuk_edge.train.data import load_dataset, make_splits

    run = tmp_path / "run"
    res = CliRunner().invoke(app, ["train", "--data", small_256, "--model", "cnn", "--out", str(run),
                                   "--epochs", "3"])
    assert res.exit_code == 0, res.output
    history = _history(run)
    # val accuracy (inference mode, P >= 0.5) rises with training accuracy; a collapse sits at 0.5 (16 + 16)
    assert history[-1]["val_accuracy"] >= 0.8, history
    config = json.loads((run / "config.json").read_text())
    assert config["image_size"] == 256 and config["epochs_run"] == 3
    t = config["calibration"]["temperature"]
    assert T_BOUNDS[0] * 1.01 < t < T_BOUNDS[1] / 1.01, t
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["health"]["warnings"] == [], metrics["health"]
    assert "WARNING" not in res.output

    # the saved model, in inference mode, on the validation cells read by the edge preprocessing: outputs spread
    model = keras.saving.load_model(run / "model.keras")
    splits = make_splits(load_dataset(small_256), 0.2, 0)
    x_val = np.stack([load_image(it.path, 256, 256, "area") for it in splits["val"]])
    p_val = np.asarray(model(x_val, training=False)).ravel()
    y_val = np.array([it.label for it in splits["val"]])
    assert p_val.std() > 0.1, p_val
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(y_val, p_val) >= 0.9
    # and its first BatchNorm layer holds the population statistics of its input over the training cells (to
    # TensorFlow's float32 batch moments over 2 M values each: ~0.5 %; the moving average was ~50x off)
    x_train = np.stack([load_image(it.path, 256, 256, "area") for it in splits["train"]])
    mean, var = _moments_of_first_conv(model, x_train)
    _, bn = _first_conv_and_bn(model)
    assert np.allclose(np.asarray(bn.moving_variance), var, rtol=0.02, atol=1e-7)
    assert np.allclose(np.asarray(bn.moving_mean), mean, rtol=0.02, atol=1e-6)


@pytest.mark.slow
def test_stale_statistics_are_reported_loudly(synth_cnmc, tmp_path, monkeypatch):
    """Without the recomputation (as before issue 18) a short run keeps moving statistics that do not fit its
    weights: train says so on the console, last and in red, and in metrics.json `health`."""
    from leuk_edge.train.batchnorm import PreciseBatchNorm

    monkeypatch.setattr(PreciseBatchNorm, "on_test_begin", lambda self, logs=None: None)
    run = tmp_path / "run"
    res = CliRunner().invoke(app, ["train", "--data", str(synth_cnmc), "--out", str(run), "--epochs", "2",
                                   "--batch-size", "8", "--image-size", "32"])
    assert res.exit_code == 0, res.output
    health = json.loads((run / "metrics.json").read_text())["health"]
    assert health["batchnorm"]["mean_abs_diff"] > 0.1, health
    assert any("inference mode disagrees with training mode" in w for w in health["warnings"]), health
    tail = res.output[res.output.rindex("training health warning(s)"):]
    assert "WARNING" in res.output and "inference mode disagrees" in tail
