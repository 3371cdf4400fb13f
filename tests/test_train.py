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
             "confusion.png", "roc.png"}


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
    assert set(metrics) == {"val", "test"}
    for m in metrics.values():
        assert METRIC_KEYS <= set(m)
    # the held-out test split (other subjects, never used for any choice) is learnt
    assert metrics["test"]["balanced_accuracy"] >= 0.9, metrics["test"]
    config = json.loads((cnn_run / "config.json").read_text())
    assert config["threshold"] == metrics["val"]["threshold"] == metrics["test"]["threshold"]
    assert config["architecture"] == "cnn" and config["image_size"] == 64 and config["synthetic"] is True
    split = json.loads((cnn_run / "split.json").read_text())
    assert not set(split["train"]) & set(split["val"]) and not set(split["val"]) & set(split["test"])


def test_evaluate_and_compare(cnn_run, learnable, tmp_path):
    res = CliRunner().invoke(app, ["evaluate", str(cnn_run), "--data", learnable])
    assert res.exit_code == 0, res.output
    again = json.loads(res.stdout)
    saved = json.loads((cnn_run / "metrics.json").read_text())
    for split in ("val", "test"):
        assert again[split]["confusion_matrix"] == saved[split]["confusion_matrix"]
    other = tmp_path / "other"
    shutil.copytree(cnn_run, other)
    res = CliRunner().invoke(app, ["compare", str(cnn_run), str(other), "--out", str(tmp_path / "cmp")])
    assert res.exit_code == 0, res.output
    table = (tmp_path / "cmp" / "comparison.md").read_text()
    assert "weighted F1" in table and table.count("| cnn@64 |") == 2 and "not a diagnostic device" in table
    assert (tmp_path / "cmp" / "comparison.png").stat().st_size > 10_000


def test_inception_trains_both_phases_and_skips_corrupt_image(synth_cnmc, tmp_path):
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
    assert len((run / "history.csv").read_text().strip().splitlines()) == 3  # header + head epoch + fine-tune epoch


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
