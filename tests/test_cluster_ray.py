"""`classify --engine ray` on a local Ray instance: the same rows as `--engine local`, every file exactly once even
when an actor process dies mid-run, Parquet output, file:// URIs, one-line errors. Run alone: `pytest -m cluster`."""

import csv
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from typer.testing import CliRunner

from leuk_edge.cli import app
from leuk_edge.edge.preprocess import is_image_file

import pyarrow.parquet as pq  # noqa: E402  - the [ray] extra; missing = an error, never a skip
import ray  # noqa: E402

pytestmark = pytest.mark.cluster
N_CELLS = 300


@pytest.fixture(scope="module")
def ray_local():
    """A local Ray with 2 CPUs, no dashboard, a small object store; workers import leuk_edge like this process."""
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, object_store_memory=100 * 1024 ** 2, log_to_driver=False,
                 logging_level="ERROR")
    yield
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """>= 300 synthetic cells plus the classify tests' mixed folder (every format, 4 hostile files, a .txt)."""
    import cv2

    from leuk_edge.synth.cells import render_cnmc_image
    from test_classify import write_mixed_folder

    root = write_mixed_folder(tmp_path_factory.mktemp("cluster") / "cells")
    many = root / "many"
    many.mkdir()
    rng = np.random.default_rng(7)
    for i in range(N_CELLS):
        rgb = render_cnmc_image(rng, "all" if rng.random() < 0.68 else "hem")
        # 128 px keeps the test fast; the engine does not care about the size
        cv2.imwrite(str(many / f"c{i:04d}.bmp"), cv2.cvtColor(cv2.resize(rgb, (128, 128)), cv2.COLOR_RGB2BGR))
    return root


def image_files(root):
    """Independent count: every file with an image suffix under root (the .txt is not one)."""
    return sorted(str(p) for p in root.rglob("*") if p.is_file() and is_image_file(p))


def read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def invoke(args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def local_rows(folder, tiny_onnx, tmp_path_factory):
    out = tmp_path_factory.mktemp("local") / "local.csv"
    res = invoke(["classify", folder, "-m", tiny_onnx, "--out", out])
    assert res.exit_code == 0, res.output
    return read_csv(out)


def assert_same_rows(rows, reference):
    assert [r["path"] for r in rows] == [r["path"] for r in reference]
    for a, b in zip(rows, reference):
        assert a["label"] == b["label"], a["path"]
        assert a["error"] == b["error"], a["path"]
        if b["label"] == "error":
            assert a["probability"] in ("", None)
        else:
            assert abs(float(a["probability"]) - float(b["probability"])) <= 1e-5, a["path"]


def test_ray_engine_gives_the_local_rows(ray_local, folder, tiny_onnx, local_rows, tmp_path):
    out = tmp_path / "ray.csv"
    res = invoke(["classify", folder, "-m", tiny_onnx, "--engine", "ray", "--actors", "2", "--out", out])
    assert res.exit_code == 0, res.output
    rows = read_csv(out)
    files = image_files(folder)
    assert len(files) >= N_CELLS + 4
    assert sorted(r["path"] for r in rows) == files  # every image file exactly once
    assert [r["path"] for r in rows] == sorted(r["path"] for r in rows)  # CSV sorted by path
    assert {r["path"].rsplit("/", 1)[-1] for r in rows if r["label"] == "error"} == {
        "empty.bmp", "truncated.png", "text.bmp", "random.jpg"}
    assert_same_rows(rows, local_rows)
    assert "blast fraction" in res.output and f"{len(files)}" in res.output  # the local engine's summary


def test_ray_engine_writes_parquet(ray_local, folder, tiny_onnx, local_rows, tmp_path):
    out = tmp_path / "results.parquet"
    res = invoke(["classify", folder, "-m", tiny_onnx, "--engine", "ray", "--batch-size", "16", "--out", out])
    assert res.exit_code == 0, res.output
    table = pq.read_table(out)
    assert table.column_names == ["path", "label", "probability", "ood", "error"]
    rows = table.to_pylist()
    assert all(r["probability"] is None for r in rows if r["label"] == "error")
    assert_same_rows(rows, local_rows)


def test_actor_killed_mid_run_still_yields_every_row_once(ray_local, folder, tiny_onnx, local_rows, tmp_path):
    from leuk_edge.cluster.ray_engine import ClassifyActor, RayOptions, classify_ray, list_inputs

    marker = str(tmp_path / "died.pid")

    class DyingActor(ClassifyActor):
        """The first batch handed to any actor kills that actor's process (as an OOM kill or a lost node would)."""

        def __call__(self, batch):
            try:
                fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)  # exactly one actor dies, once
            except FileExistsError:
                return super().__call__(batch)
            os.write(fd, str(os.getpid()).encode())
            os.close(fd)
            os._exit(1)

    files = list_inputs([str(folder)]).images
    rows = list(classify_ray(files, tiny_onnx, RayOptions(actors=2, batch_size=8), actor_cls=DyingActor))
    pid = int(open(marker).read())
    assert pid != os.getpid()  # an actor process died, not the driver
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    paths = [r.path for r in rows]
    assert len(paths) == len(set(paths)) == len(image_files(folder))  # nothing lost, nothing doubled
    got = sorted(({"path": r.path, "label": r.label, "probability": r.probability, "error": r.error}
                  for r in rows), key=lambda r: r["path"])
    assert_same_rows(got, local_rows)


def test_uri_inputs_are_listed_and_read_through_pyarrow(ray_local, folder, tiny_onnx, local_rows):
    from leuk_edge.cluster.ray_engine import RayOptions, classify_ray, list_inputs

    files = list_inputs([f"file://{folder}"])
    assert files.skipped == 1  # notes.txt
    assert all(f.startswith("file://") for f in files.images)
    rows = sorted(classify_ray(files.images, tiny_onnx, RayOptions(actors=2, batch_size=32)), key=lambda r: r.path)
    got = [{"path": r.path[len("file://"):], "label": r.label, "probability": r.probability, "error": r.error}
           for r in rows]
    assert_same_rows(got, local_rows)


def test_unreachable_cluster_is_one_line_exit_2(tiny_onnx, folder, tmp_path, monkeypatch):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(ray, "is_initialized", lambda: False)  # as in a fresh CLI process
    res = invoke(["classify", folder, "-m", tiny_onnx, "--engine", "ray", "--address", f"127.0.0.1:{port}",
                  "--out", tmp_path / "x.csv"])
    assert res.exit_code == 2
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "cannot reach the Ray cluster" in lines[0], res.output
    assert not (tmp_path / "x.csv").exists()


def test_engine_option_errors(tiny_onnx, folder, tmp_path):
    res = invoke(["classify", folder, "-m", tiny_onnx, "--engine", "spark"])
    assert res.exit_code == 2 and "unknown engine" in res.output
    res = invoke(["classify", folder, "-m", tiny_onnx, "--out", tmp_path / "r.parquet"])
    assert res.exit_code == 2 and "Parquet output needs --engine ray" in res.output
    res = invoke(["classify", folder, "-m", tiny_onnx, "--engine", "ray", "--format", "parquet"])
    assert res.exit_code == 2 and "needs --out" in res.output


def test_local_engine_does_not_import_ray(tiny_onnx, folder, tmp_path):
    code = textwrap.dedent(f"""
        import json, sys
        from typer.testing import CliRunner
        from leuk_edge.cli import app
        res = CliRunner().invoke(app, ["classify", {str(folder)!r}, "-m", {str(tiny_onnx)!r},
                                       "--out", {str(tmp_path / 'l.csv')!r}])
        print(json.dumps({{"code": res.exit_code, "ray": sorted(m for m in sys.modules if m.split('.')[0] == 'ray')}}))
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out == {"code": 0, "ray": []}


def test_sigterm_keeps_the_rows_and_exits_143(folder, tiny_onnx, local_rows, tmp_path):
    """ray.init installs its own SIGTERM handler (sys.exit): a `docker stop` lost every row and exited 15. The run
    must take the graceful path, as the local engine does: rows so far written, summary, exit 143. A fresh process
    runs the real command -- its own `connect`, so the real ray.init and the handler it installs -- and sends
    itself SIGTERM after the fifth row (the only thing changed: when the signal comes)."""
    out = tmp_path / "rows.csv"
    code = textwrap.dedent(f"""
        import os, signal, sys
        from leuk_edge.cluster import ray_cli
        real = ray_cli.classify_ray
        def terminated_after_5(*args, **kwargs):
            for i, row in enumerate(real(*args, **kwargs)):
                if i == 5:
                    os.kill(os.getpid(), signal.SIGTERM)
                yield row
        ray_cli.classify_ray = terminated_after_5
        sys.argv = ["leuk-edge", "classify", {str(folder)!r}, "-m", {str(tiny_onnx)!r}, "--engine", "ray",
                    "--actors", "1", "--out", {str(out)!r}]
        from leuk_edge.cli import main
        main()
    """)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # its own local Ray, started by connect
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, env=env)
    assert res.returncode == 143, res.stderr[-3000:]
    rows = read_csv(out)
    assert 5 <= len(rows) < len(local_rows) and "terminated" in res.stderr
    assert_same_rows(rows, [r for r in local_rows if r["path"] in {x["path"] for x in rows}])


def test_actors_run_the_device_chosen_for_them(ray_local, folder, tiny_onnx, tmp_path):
    """The file is chosen for the actors' device and the actors run it there (they were handed "auto", which each
    node resolves for itself); the summary says what they really ran on."""
    summary = tmp_path / "s.json"
    res = invoke(["classify", folder, "-m", tiny_onnx, "--engine", "ray", "--actors", "1", "--out",
                  tmp_path / "r.csv", "--summary", summary])
    assert res.exit_code == 0, res.output
    s = json.loads(summary.read_text())
    assert s["providers"] == ["ray: 1 actor(s), device cpu; ran on CPUExecutionProvider"]
    assert s["precision"]["used"] == "fp32" and s["precision"]["path"] == str(tiny_onnx)


def test_gpu_actors_are_chosen_for_without_a_gpu_on_the_driver(tiny_onnx, folder, tmp_path, monkeypatch):
    """--gpus-per-actor on a CPU-only driver: the file is picked for CUDA actors without opening CUDA here (it
    raised 'device cuda is not available' on the driver); the run then goes on to the cluster."""
    import socket

    with socket.socket() as s:  # a cluster address nobody answers on: the run stops right after the choice
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(ray, "is_initialized", lambda: False)  # as in a fresh CLI process
    res = invoke(["classify", folder, "-m", tiny_onnx, "--engine", "ray", "--gpus-per-actor", "1", "--address",
                  f"127.0.0.1:{port}", "--out", tmp_path / "x.csv"])
    assert res.exit_code == 2
    assert "cannot reach the Ray cluster" in res.output and "not available" not in res.output, res.output


def test_ray_engine_applies_bit_depth_and_max_pixels_like_local(ray_local, tiny_onnx, tmp_path):
    """The actors decode with the local engine's options: a 12-bit TIFF forced to 16-bit and a pixel limit give the
    same rows as --engine local (they were refused with --engine ray before)."""
    import cv2

    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(3)
    for i in range(3):
        cv2.imwrite(str(folder / f"c{i}.tif"), rng.integers(0, 4096, (40, 40, 3)).astype(np.uint16))
    cv2.imwrite(str(folder / "big.png"), np.zeros((300, 300, 3), np.uint8))
    args = ["--bit-depth", "16", "--max-pixels", "50000"]
    local, remote = tmp_path / "local.csv", tmp_path / "ray.csv"
    assert invoke(["classify", folder, "-m", tiny_onnx, "--out", local, *args]).exit_code == 0
    res = invoke(["classify", folder, "-m", tiny_onnx, "--engine", "ray", "--actors", "1", "--out", remote, *args])
    assert res.exit_code == 0, res.output
    rows = sorted(read_csv(remote), key=lambda r: r["path"])
    assert_same_rows(rows, sorted(read_csv(local), key=lambda r: r["path"]))
    assert [r["label"] for r in rows if r["path"].endswith("big.png")] == ["error"]
