"""`train --strategy multiworker`: two worker processes on 127.0.0.1 (CPU) train two epochs; the chief writes a
complete run folder, the other worker leaves nothing behind; both print the same epoch logs (the all-worker mean),
the best val_loss is the saved model's loss over the whole validation split, and the same seed gives the same
history. Run alone: `pytest -m cluster`."""

import csv
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from leuk_edge.train.distribute import DistributeError, parse_tf_config, run_folder

pytestmark = pytest.mark.cluster

RUN_FILES = {"model.keras", "config.json", "history.csv", "curves.png", "split.json", "metrics.json",
             "confusion.png", "roc.png"}
EPOCHS = 2


def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def tf_config(ports, index):
    return json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                       "task": {"type": "worker", "index": index}})


def launch(data, out, ports, tmp_root, seed=3):
    """Both workers of one cluster, same command line; each with its own TMPDIR to see what it leaves."""
    procs = []
    for i in range(len(ports)):
        tmp = tmp_root / f"tmp{i}"
        tmp.mkdir(parents=True)
        env = {**os.environ, "TF_CONFIG": tf_config(ports, i), "TMPDIR": str(tmp), "TF_CPP_MIN_LOG_LEVEL": "3",
               "CUDA_VISIBLE_DEVICES": "", "COLUMNS": "200"}
        cmd = [sys.executable, "-m", "leuk_edge", "train", "--data", str(data), "--out", str(out), "--epochs",
               str(EPOCHS), "--image-size", "32", "--batch-size", "8", "--seed", str(seed), "--strategy",
               "multiworker"]
        procs.append((subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True),
                      tmp))
    return procs


def finish(procs) -> list[str]:
    """Each worker's console output, after all exited 0."""
    outputs = []
    for p, _ in procs:
        try:
            out, _ = p.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            for q, _ in procs:
                q.kill()
            raise
        assert p.returncode == 0, out[-3000:]
        outputs.append(out)
    return outputs


def history(run):
    with open(run / "history.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def epoch_logs(output: str) -> list[dict]:
    """The metrics of each Keras epoch line (`verbose=2`: "3/3 - 1s - 0.4s/step - accuracy: 0.5 - ... -
    val_loss: 0.69") as printed, timings left out."""
    lines = [line for line in output.splitlines() if " - val_loss: " in line]
    return [dict(re.findall(r"(\w+): ([-+.\deE]+|nan|inf)", line)) for line in lines]


def whole_val_loss(run: Path) -> float:
    """The saved model's binary cross-entropy over every validation image (the run's val subjects), computed here:
    the model in inference mode on the edge preprocessing, the loss by scikit-learn."""
    import keras
    from sklearn.metrics import log_loss

    from leuk_edge.edge.preprocess import load_image
    from leuk_edge.train.data import load_dataset

    config = json.loads((run / "config.json").read_text())
    val_subjects = set(json.loads((run / "split.json").read_text())["val"])
    items = [it for it in load_dataset(config["data_root"]).train if it.subject in val_subjects]
    x = np.stack([load_image(it.path, 32, 32, config["resize"]) for it in items])
    model = keras.saving.load_model(run / "model.keras", safe_mode=True)
    p = np.clip(np.asarray(model(x, training=False), np.float64).ravel(), 1e-7, 1 - 1e-7)
    return float(log_loss([it.label for it in items], p, labels=[0, 1]))


def test_two_workers_train_one_run_and_repeat_with_the_same_seed(synth_cnmc, tmp_path):
    runs = [tmp_path / "a" / "run", tmp_path / "b" / "run"]
    ports = free_ports(4)
    # Both clusters at once: same total CPU, half the wall time of running them one after the other.
    procs = [launch(synth_cnmc, runs[0], ports[:2], tmp_path / "a"),
             launch(synth_cnmc, runs[1], ports[2:], tmp_path / "b")]
    outputs = [finish(p) for p in procs]
    for run, cluster, (chief_out, worker_out) in zip(runs, procs, outputs):
        assert RUN_FILES <= {f.name for f in run.iterdir()}, sorted(f.name for f in run.iterdir())
        assert sorted(p.name for p in run.parent.iterdir()) == ["run", "tmp0", "tmp1"]  # nothing beside the run
        for _, tmp in cluster:  # no scratch folder left by either worker
            assert [p.name for p in tmp.iterdir() if p.name.startswith("leuk-edge-")] == []
        cfg = json.loads((run / "config.json").read_text())
        assert cfg["strategy"] == "multiworker" and cfg["epochs_run"] == EPOCHS
        # only the chief names the run folder as written; the other worker says who writes it
        assert f"run folder: {run}" in chief_out
        assert "run folder:" not in worker_out and f"the chief writes {run}" in worker_out, worker_out[-2000:]
        # both workers log the same epochs: the all-worker mean, not each worker's own batches
        logs = [epoch_logs(chief_out), epoch_logs(worker_out)]
        assert len(logs[0]) == EPOCHS and logs[0] == logs[1], logs
        for printed, row in zip(logs[0], history(run)):  # the printed lines are the chief's history
            assert float(printed["val_loss"]) == pytest.approx(float(row["val_loss"]), abs=6e-5)
        # the best val_loss over the workers' shards is the saved model's loss over the whole validation split
        best = min(float(r["val_loss"]) for r in history(run))
        assert cfg["best_val_loss"] == pytest.approx(best)
        assert whole_val_loss(run) == pytest.approx(best, abs=1e-6)  # phase0 (per-worker BN statistics): 4.7e-5 off
    import keras

    model = keras.saving.load_model(runs[0] / "model.keras", safe_mode=True)
    assert model.input_shape == (None, 32, 32, 3) and model.output_shape == (None, 1)
    h = [history(r) for r in runs]
    assert len(h[0]) == EPOCHS and float(h[0][0]["loss"]) > 0
    assert h[0] == h[1]  # same seed, same history, to the last digit


@pytest.mark.parametrize("text, role", [
    ('{"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 0}}', ("worker", 0, 2, True)),
    ('{"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 1}}', ("worker", 1, 2, False)),
    ('{"cluster": {"chief": ["c:1"], "worker": ["a:1"]}, "task": {"type": "worker", "index": 0}}',
     ("worker", 0, 2, False)),
    ('{"cluster": {"chief": ["c:1"], "worker": ["a:1"]}, "task": {"type": "chief", "index": 0}}',
     ("chief", 0, 2, True)),
])
def test_tf_config_roles(text, role):
    r = parse_tf_config(text)
    assert (r.task_type, r.task_index, r.num_workers, r.is_chief) == role


@pytest.mark.parametrize("text", ["", "not json", '{"cluster": {"worker": ["a:1"]}}',
                                  '{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 3}}'])
def test_bad_tf_config_is_a_clear_error(text, monkeypatch):
    monkeypatch.setenv("TF_CONFIG", text)
    with pytest.raises(DistributeError):
        parse_tf_config()


def test_non_chief_scratch_folder_is_removed(tmp_path, monkeypatch):
    from leuk_edge.train.distribute import finish_worker

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)
    monkeypatch.setenv("TF_CONFIG", tf_config([1, 2], 1))
    folder, chief = run_folder(tmp_path / "out", "multiworker")
    assert not chief and folder.parent == tmp_path and folder.is_dir()
    (folder / "history.csv").write_text("x")
    assert finish_worker(folder) == {} and list(tmp_path.iterdir()) == []
    monkeypatch.setenv("TF_CONFIG", tf_config([1, 2], 0))
    assert run_folder(tmp_path / "out", "multiworker") == (tmp_path / "out", True)


def test_multiworker_without_tf_config_is_one_line_exit_2(synth_cnmc, tmp_path, monkeypatch):
    from leuk_edge.cli import app

    monkeypatch.delenv("TF_CONFIG", raising=False)
    res = CliRunner().invoke(app, ["train", "--data", str(synth_cnmc), "--out", str(tmp_path / "run"),
                                   "--epochs", "1", "--image-size", "32", "--strategy", "multiworker"])
    assert res.exit_code == 2
    assert "needs TF_CONFIG" in res.output and len(res.output.strip().splitlines()) == 1, res.output
    assert not (tmp_path / "run").exists()
