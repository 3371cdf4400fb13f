"""CI parity tests for `leuk-edge export` / `parity`: both architectures at small sizes, the gates (and that they
can fail), FP16/INT8 variants, metadata completeness, and the refusal of models that carry code."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import tf2onnx  # noqa: E402,F401  - the [train] extra; missing = an error, never a skip

from typer.testing import CliRunner  # noqa: E402

from leuk_edge.cli import app  # noqa: E402
from leuk_edge.edge import Classifier  # noqa: E402
from support.cells import labelled_cells  # noqa: E402

CNN_SIZE, INCEPTION_SIZE = 48, 75  # 75 = InceptionV3's smallest input
runner = CliRunner()


def _fit_head(model, size: int) -> float:
    """Make an untrained CNN behave like a trained one, cheaply: BatchNorm statistics from data and a logistic
    head on its (random) features. Its P(all) then spreads over (0, 1), so INT8 decision agreement means
    something. Returns a threshold chosen on a separate validation set, as training does."""
    from support.probe import fit_linear_probe

    x, y = labelled_cells(48, size, seed=11)
    xv, yv = labelled_cells(24, size, seed=12)
    return fit_linear_probe(model, x, y, xv, yv, bn_batch=len(x))[0]


def _write_run(run: Path, model, name: str, size: int, threshold: float) -> Path:
    from leuk_edge.train.models import ARCHITECTURE, RESIZE

    run.mkdir(parents=True, exist_ok=True)
    model.save(run / "model.keras")
    (run / "config.json").write_text(json.dumps({
        "model": name, "architecture": ARCHITECTURE[name], "image_size": size, "resize": RESIZE[name],
        "threshold": threshold, "classes": ["hem", "all"]}))
    return run / "model.keras"


@pytest.fixture(scope="module")
def cnn_keras(tmp_path_factory):
    import keras

    from leuk_edge.train.models import build

    keras.utils.set_random_seed(3)
    model, _ = build("cnn", CNN_SIZE)
    threshold = _fit_head(model, CNN_SIZE)
    return _write_run(tmp_path_factory.mktemp("cnn_run"), model, "cnn", CNN_SIZE, threshold)


@pytest.fixture(scope="module")
def inception_keras(tmp_path_factory):
    import keras

    from leuk_edge.train.models import build

    keras.utils.set_random_seed(4)
    model, _ = build("inception", INCEPTION_SIZE, weights=None)
    return _write_run(tmp_path_factory.mktemp("inc_run"), model, "inception", INCEPTION_SIZE, 0.5)


@pytest.fixture(scope="module")
def cnn_export(cnn_keras):
    from leuk_edge.export.exporter import export_model

    # min_agreement 0.9: a 48-px model on random features sits closer to its threshold than a trained one; the
    # default 0.98 gate is exercised by the benchmark at full size.
    return export_model(cnn_keras, cnn_keras.with_suffix(".onnx"), parity_n=10, batch_sizes=(1, 5), fp16=True,
                        int8=True, calib_size=24, variant_n=60, min_agreement=0.9)


@pytest.fixture(scope="module")
def inception_export(inception_keras):
    from leuk_edge.export.exporter import export_model

    return export_model(inception_keras, inception_keras.with_suffix(".onnx"), parity_n=5, batch_sizes=(1, 5))


def _single_initializer_scaled(src: Path, dst: Path, factor: float = 1.5) -> str:
    """Copy of an ONNX model with its largest float weight tensor scaled: what a corrupted export looks like."""
    m = onnx.load(str(src))
    init = max((t for t in m.graph.initializer if t.data_type == onnx.TensorProto.FLOAT),
               key=lambda t: int(np.prod(t.dims)))
    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * np.float32(factor), init.name))
    onnx.save(m, str(dst))
    return init.name


# ------------------------------------------------------------------------------------------------------ FP32

@pytest.mark.slow
@pytest.mark.parametrize("arch", ["cnn", "inception"])
def test_export_passes_gate_at_batch_1_and_5(arch, request):
    result = request.getfixturevalue(f"{arch}_export")
    fp32 = result.fp32
    assert fp32.passed, fp32.parity.failures
    assert fp32.path.name == "model.onnx" and fp32.path.is_file()
    assert not (fp32.path.parent / "model.failed.onnx").exists()
    report = json.loads((fp32.path.parent / "model.parity.json").read_text())
    for key in ("n", "max_abs_diff", "mean_abs_diff", "decision_agreement", "atol", "passed", "reference", "images",
                "image_source", "cam", "device", "temperature"):
        assert key in report
    # no run data on disk beside these test models: synthetic cells, and the report says so
    assert report["images"] == "synthetic" and report["temperature"] == 1.0
    assert report["cam"]["passed"] and report["cam"]["max_abs_diff"] <= report["cam"]["tolerance"]
    assert report["passed"] is True and report["max_abs_diff"] <= report["atol"] == 1e-4
    assert set(report["per_batch"]) == {"1", "5"}
    assert report["reference"].startswith("keras:")
    # whole-pipeline parity: the training tf.data pipeline + Keras vs the edge preprocessing + ONNX, same files
    assert report["pipeline"]["passed"] and report["pipeline"]["n"] == report["n"]
    assert report["pipeline"]["max_abs_diff"] <= 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("arch,size,name", [("cnn", CNN_SIZE, "cnn"), ("inception", INCEPTION_SIZE, "inception_v3")])
def test_exported_model_is_valid_and_self_describing(arch, size, name, request):
    from leuk_edge.edge.files import sha256_file

    result = request.getfixturevalue(f"{arch}_export")
    path = result.fp32.path
    onnx.checker.check_model(str(path), full_check=True)
    m = onnx.load(str(path))
    assert [p.key for p in m.metadata_props] == ["leuk_edge"]
    meta = json.loads(m.metadata_props[0].value)
    config = json.loads((path.parent / "config.json").read_text())
    assert meta["architecture"] == name and meta["classes"] == ["hem", "all"]
    assert meta["threshold"] == pytest.approx(config["threshold"])
    assert meta["input"] == {"name": "image", "height": size, "width": size, "channels": 3, "layout": "NHWC",
                             "color": "RGB", "scale": pytest.approx(1 / 255), "resize": "area"}
    assert meta["output"]["name"] == "p_all"
    assert meta["source_sha256"] == sha256_file(result.keras_path)
    assert meta["schema_version"] == 1 and meta["opset"] == 17 and meta["leuk_edge_version"] and meta["created"]
    assert "calibration" not in meta  # the run has no calibration entry: uncalibrated, as older runs
    assert meta["cam"]["output"] == "cam" and meta["cam"]["method"] == ("grad-cam" if arch == "cnn" else "cam")
    assert meta["card"]["threshold"]["value"] == pytest.approx(config["threshold"])
    # stable I/O names and a dynamic batch dimension
    (inp,), (out, cam) = m.graph.input, m.graph.output
    assert (inp.name, out.name, cam.name) == ("image", "p_all", "cam")
    assert inp.type.tensor_type.shape.dim[0].dim_param == "N" == cam.type.tensor_type.shape.dim[0].dim_param
    assert [d.dim_value for d in inp.type.tensor_type.shape.dim[1:]] == [size, size, 3]
    # the edge runner needs nothing but the file
    clf = Classifier(path, device="cpu")
    assert clf.size == (size, size) and clf.threshold == pytest.approx(config["threshold"])
    x, _ = labelled_cells(5, size, seed=0)
    p5, p1 = clf.predict(x), np.concatenate([clf.predict(x[i:i + 1]) for i in range(5)])
    assert p5.shape == (5,) and np.all((p5 >= 0) & (p5 <= 1))
    np.testing.assert_allclose(p1, p5, atol=1e-5)


@pytest.mark.slow
def test_tampered_model_fails_parity(cnn_export, tmp_path):
    good = cnn_export.fp32.path
    keras_path = cnn_export.keras_path
    tampered = tmp_path / "tampered.onnx"
    _single_initializer_scaled(good, tampered)

    ok = runner.invoke(app, ["parity", str(keras_path), str(good), "--size", "5", "--no-report"])
    assert ok.exit_code == 0, ok.output

    bad = runner.invoke(app, ["parity", str(keras_path), str(tampered), "--size", "5"])
    assert bad.exit_code == 1, bad.output
    assert "does not match" in bad.output and "atol" in bad.output
    report = json.loads((tmp_path / "tampered.parity.json").read_text())
    assert report["passed"] is False and report["max_abs_diff"] > 1e-4
    # the same check between two ONNX files (how variants are judged)
    bad_onnx = runner.invoke(app, ["parity", str(good), str(tampered), "--size", "5", "--no-report"])
    assert bad_onnx.exit_code == 1, bad_onnx.output


def _snapshot(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def deployed(cnn_keras, tmp_path_factory):
    """A run folder with a passed export and its FP16 variant in place: the set a new export must not lose."""
    run = tmp_path_factory.mktemp("deployed")
    for name in ("model.keras", "config.json"):
        shutil.copy(cnn_keras.parent / name, run / name)
    res = runner.invoke(app, ["export", str(run / "model.keras"), "--fp16", "--parity-size", "4"])
    assert res.exit_code == 0, res.output
    assert {"model.onnx", "model.parity.json", "model.fp16.onnx", "model.fp16.parity.json",
            "model.card.md", "model.manifest.json"} <= set(_snapshot(run))
    return run


@pytest.fixture
def deployed_copy(deployed, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(deployed, run)
    return run


@pytest.mark.slow
def test_failed_conversion_keeps_the_deployed_set(deployed_copy, monkeypatch):
    """A conversion that goes wrong (the converter returns a graph with one weight tensor scaled) fails the gate:
    exit 1, the candidate is model.failed.onnx with its report, and every previous file is byte-identical."""
    from leuk_edge.export import exporter

    run = deployed_copy
    before = _snapshot(run)
    real = exporter.convert_keras

    def tampered(*args, **kwargs):
        proto = real(*args, **kwargs)
        init = max((t for t in proto.graph.initializer if t.data_type == onnx.TensorProto.FLOAT),
                   key=lambda t: int(np.prod(t.dims)))
        init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * np.float32(1.5), init.name))
        return proto

    monkeypatch.setattr(exporter, "convert_keras", tampered)
    res = runner.invoke(app, ["export", str(run / "model.keras"), "--fp16", "--int8", "--parity-size", "4"])
    assert res.exit_code == 1, res.output
    assert "parity gate failed" in res.output and "left as they were" in res.output
    after = _snapshot(run)
    assert {k: after[k] for k in before} == before  # model, reports, variant and card untouched
    assert set(after) - set(before) == {"model.failed.onnx", "model.failed.parity.json"}
    report = json.loads((run / "model.failed.parity.json").read_text())
    assert report["passed"] is False and report["model"].endswith("model.failed.onnx")
    assert not [p for p in run.iterdir() if p.name.startswith(".")]  # no staging left behind


@pytest.mark.slow
def test_manifest_is_written_last_and_a_commit_cut_short_is_detected(deployed_copy, monkeypatch):
    """MODEL.manifest.json lists every committed file with the SHA-256 of its bytes; a commit that stops half-way
    (here: the disk fails on its third move) leaves no manifest, and no variant is trusted."""
    import hashlib
    import os

    from leuk_edge.edge.precision import PrecisionError, choose_precision
    from leuk_edge.export.exporter import export_model

    run = deployed_copy
    manifest = json.loads((run / "model.manifest.json").read_text())
    assert set(manifest["files"]) == {"model.onnx", "model.parity.json", "model.fp16.onnx", "model.fp16.parity.json",
                                      "model.card.md"}
    for name, sha in manifest["files"].items():
        assert hashlib.sha256((run / name).read_bytes()).hexdigest() == sha, name
    assert choose_precision(run / "model.onnx", "fp16", "cpu").used == "fp16"  # bound: runs when asked for
    real, moved = os.replace, []

    def disk_fails_on_the_third_move(src, dst):
        moved.append(dst)
        if len(moved) == 3:
            raise OSError(28, "No space left on device")
        return real(src, dst)

    monkeypatch.setattr(os, "replace", disk_fails_on_the_third_move)
    with pytest.raises(OSError, match="No space left"):
        export_model(run / "model.keras", fp16=True, parity_n=4)
    monkeypatch.setattr(os, "replace", real)
    assert not (run / "model.manifest.json").exists()
    with pytest.raises(PrecisionError, match="no export manifest"):
        choose_precision(run / "model.onnx", "fp16", "cpu")
    assert choose_precision(run / "model.onnx", "auto", "cpu").used == "fp32"


@pytest.mark.slow
def test_failed_gate_then_passing_export_replaces_the_set(deployed_copy):
    """An export that passes replaces the whole set: a stale failed candidate and variants it did not make go."""
    run = deployed_copy
    (run / "model.failed.onnx").write_bytes(b"an old failed candidate")
    old_model = (run / "model.onnx").read_bytes()
    res = runner.invoke(app, ["export", str(run / "model.keras"), "--parity-size", "4", "--no-cam"])
    assert res.exit_code == 0, res.output
    names = set(_snapshot(run))
    assert {"model.onnx", "model.parity.json", "model.card.md"} <= names
    assert not names & {"model.failed.onnx", "model.fp16.onnx", "model.fp16.parity.json"}
    assert (run / "model.onnx").read_bytes() != old_model  # the new one (no cam output) is in place
    assert not Classifier(run / "model.onnx", device="cpu").has_cam


@pytest.mark.slow
@pytest.mark.parametrize("args,message", [
    (["--parity-data", "{run}/no_such_dir"], "image folder not found"),
    (["--int8", "--calib-data", "{run}/no_such_dir"], "image folder not found"),
    (["--device", "cuda"], "not available"),
])
def test_usage_errors_touch_nothing(deployed_copy, args, message):
    run = deployed_copy
    before = _snapshot(run)
    res = runner.invoke(app, ["export", str(run / "model.keras"), *[a.format(run=run) for a in args]])
    assert res.exit_code == 2, res.output
    assert message in res.output and len(res.output.strip().splitlines()) == 1
    assert _snapshot(run) == before and {p.name for p in run.iterdir()} == set(before)


@pytest.mark.slow
def test_unreadable_keras_touches_nothing(deployed_copy):
    run = deployed_copy
    (run / "model.keras").write_bytes(b"not a zip file")
    before = _snapshot(run)
    res = runner.invoke(app, ["export", str(run / "model.keras")])
    assert res.exit_code == 2, res.output
    assert "cannot load" in res.output
    assert _snapshot(run) == before


@pytest.mark.slow
def test_parity_on_an_unavailable_device_is_a_usage_error(cnn_export):
    res = runner.invoke(app, ["parity", str(cnn_export.keras_path), str(cnn_export.fp32.path), "--device",
                              "openvino", "--no-report"])
    assert res.exit_code == 2, res.output
    assert "device 'openvino' is not available" in res.output


@pytest.mark.slow
def test_parity_device_is_recorded(cnn_export):
    res = runner.invoke(app, ["parity", str(cnn_export.keras_path), str(cnn_export.fp32.path), "--device",
                              "cpu", "--size", "4", "--no-report", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["device"] == "CPUExecutionProvider"


@pytest.mark.slow
def test_pipeline_parity_catches_train_serve_skew(cnn_export, tmp_path):
    from leuk_edge.export.parity import check_parity

    m = onnx.load(str(cnn_export.fp32.path))
    meta = json.loads(m.metadata_props[0].value)
    meta["input"]["resize"] = "linear"  # the edge would resize differently from training (config.json: area)
    m.metadata_props[0].value = json.dumps(meta)
    skewed = tmp_path / "skewed.onnx"
    onnx.save(m, str(skewed))
    rep = check_parity(cnn_export.keras_path, skewed, n=6)
    assert rep.max_abs_diff <= 1e-4  # the graphs agree on identical tensors ...
    assert not rep.pipeline["passed"] and not rep.passed  # ... but file-to-probability they do not
    assert any("whole-pipeline" in f for f in rep.failures)


@pytest.mark.slow
def test_parity_on_an_image_folder(cnn_export, synth_cnmc):
    from leuk_edge.export.parity import check_parity

    rep = check_parity(cnn_export.keras_path, cnn_export.fp32.path, data=synth_cnmc, n=6)
    assert rep.passed, rep.failures
    assert rep.n == 6 and rep.images == "folder" and str(synth_cnmc) in rep.image_source and rep.pipeline["n"] == 6


@pytest.mark.slow
def test_export_without_config_infers_and_warns(cnn_keras, tmp_path):
    bare = tmp_path / "bare.keras"
    shutil.copy(cnn_keras, bare)
    res = runner.invoke(app, ["export", str(bare), "--parity-size", "4"])
    assert res.exit_code == 0, res.output
    assert "threshold 0.5 assumed" in res.output
    info = Classifier(tmp_path / "bare.onnx", device="cpu").info
    assert info.architecture == "cnn" and info.threshold == 0.5 and info.input.resize == "area"


# -------------------------------------------------------------------------------------------------- variants

@pytest.mark.slow
def test_fp16_variant(cnn_export):
    fp16 = next(v for v in cnn_export.variants if v.precision == "fp16")
    assert fp16.passed and fp16.path.name == "model.fp16.onnx"
    onnx.checker.check_model(str(fp16.path), full_check=True)
    m = onnx.load(str(fp16.path))
    kinds = {t.data_type for t in m.graph.initializer if len(t.dims) == 4}
    assert kinds == {onnx.TensorProto.FLOAT16}  # conv weights stored as float16 ...
    assert m.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # ... float32 in and out
    assert m.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert json.loads(m.metadata_props[0].value)["precision"] == "fp16"
    report = json.loads(fp16.parity_path.read_text())
    assert report["reference"].startswith("onnx:") and report["reference"].endswith("model.onnx")
    assert report["passed"] and report["max_abs_diff"] <= report["atol"] == 2e-2
    assert fp16.path.stat().st_size < 0.6 * cnn_export.fp32.path.stat().st_size


@pytest.mark.slow
def test_int8_variant(cnn_export):
    int8 = next(v for v in cnn_export.variants if v.precision == "int8")
    assert int8.path.name == "model.int8.onnx" and int8.passed, int8.parity.failures
    onnx.checker.check_model(str(int8.path), full_check=True)
    m = onnx.load(str(int8.path))
    ops = {n.op_type for n in m.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # QDQ format
    inits = {t.name: t for t in m.graph.initializer}
    per_channel = [n for n in m.graph.node if n.op_type == "DequantizeLinear" and n.input[1] in inits
                   and len(inits[n.input[1]].dims) == 1 and inits[n.input[1]].dims[0] > 1]
    assert per_channel, "expected per-channel weight scales"
    report = json.loads((int8.path.parent / "model.int8.parity.json").read_text())
    assert report["criterion"] == "decision_agreement" and report["min_agreement"] == 0.9
    assert report["decision_agreement"] >= 0.9 and report["n"] == 60 and "calibration" in report
    clf = Classifier(int8.path, device="cpu")
    assert clf.threshold == Classifier(cnn_export.fp32.path, device="cpu").threshold


@pytest.mark.slow
def test_int8_agreement_gate_can_fail(cnn_export, tmp_path):
    from leuk_edge.export.parity import check_variant

    int8 = next(v for v in cnn_export.variants if v.precision == "int8").path
    rep = check_variant(cnn_export.fp32.path, int8, min_agreement=1.01, n=10)
    assert not rep.passed and "decision agreement" in rep.failures[0]


@pytest.mark.slow
def test_variant_gate_follows_metadata_precision(cnn_export):
    """`leuk-edge parity model.onnx model.int8.onnx` with no gate options judges like the exporter does."""
    from leuk_edge.export.defaults import FP16_ATOL, INT8_MIN_AGREEMENT, MIN_GATE_IMAGES
    from leuk_edge.export.parity import check_variant

    fp32 = Classifier(cnn_export.fp32.path, device="cpu")  # one open model serves as the reference of both
    by_precision = {v.precision: check_variant(fp32, v.path) for v in cnn_export.variants}
    int8, fp16 = by_precision["int8"], by_precision["fp16"]
    assert (int8.criterion, int8.atol, int8.min_agreement) == ("decision_agreement", None, INT8_MIN_AGREEMENT)
    assert (fp16.criterion, fp16.atol, fp16.min_agreement) == ("max_abs_diff", FP16_ATOL, None)
    assert int8.n == fp16.n == MIN_GATE_IMAGES
    assert fp16.passed, fp16.failures
    assert int8.passed == (int8.decision_agreement >= INT8_MIN_AGREEMENT)


@pytest.mark.slow
def test_keras_parity_agreement_gate_can_fail(cnn_export):
    from leuk_edge.export.parity import check_parity

    rep = check_parity(cnn_export.keras_path, cnn_export.fp32.path, n=4, pipeline=False, min_agreement=1.01)
    assert rep.max_abs_diff <= rep.atol and not rep.passed
    assert rep.criterion == "max_abs_diff+decision_agreement" and rep.min_agreement == 1.01
    assert len(rep.failures) == 1 and "decision agreement" in rep.failures[0]


# ---------------------------------------------------------------------------------------------------- inputs

def test_calibration_and_parity_picks_are_disjoint(synth_cnmc):
    from leuk_edge.export.defaults import CALIB_SEED
    from leuk_edge.export.parity import parity_inputs, pick_images

    total = len(list(synth_cnmc.rglob("*.bmp")))
    parity = pick_images(synth_cnmc, 10)
    assert parity == pick_images(synth_cnmc, 10) and len(set(parity)) == 10  # deterministic, no repeats
    assert {"all", "hem"} <= {p.stem.rsplit("_", 1)[-1] for p in parity}  # a shuffle, not one class folder
    calib = parity_inputs(8, 8, "area", synth_cnmc, 12, seed=CALIB_SEED, avoid=parity)
    assert not set(calib.files) & set(parity) and "also parity" not in calib.description
    # a folder too small for both: the calibration set is filled up with parity images, and says so
    big = parity_inputs(8, 8, "area", synth_cnmc, total - 5, seed=CALIB_SEED, avoid=parity)
    assert len(set(big.files) & set(parity)) == 5 and "5 of them also parity images" in big.description
    # synthetic: calibration cells are other cells than the parity cells
    a, b = parity_inputs(8, 8, "area", None, 4).x, parity_inputs(8, 8, "area", None, 4, seed=CALIB_SEED).x
    assert not any(np.array_equal(u, v) for u in a for v in b)


def test_cam_gate_fails_on_maps_that_differ_and_passes_within_tolerance():
    """The `cam` part of the gate on hand-made runners: P(all) identical, maps off by a known amount. The
    tolerance is atol x max(1, max |reference map|)."""
    from leuk_edge.export.parity import ParityInputs, _gate, compare

    x = np.zeros((4, 2, 2, 3), np.float32)
    p = np.array([0.1, 0.4, 0.6, 0.9], np.float32)
    ref_cam = np.zeros((4, 3, 3), np.float32)
    ref_cam[:, 1, 1] = 50.0  # max |map| 50 -> tolerance 1e-4 * 50 = 5e-3

    def runner_with(offset):
        return lambda b: (p[:len(b)], ref_cam[:len(b)] + offset)

    inp = ParityInputs(x, None, None, "4 hand-made inputs", "synthetic")
    for offset, ok in ((0.004, True), (0.02, False)):
        res = compare(runner_with(0.0), runner_with(offset), x, 0.5, batch_sizes=(4,))
        rep = _gate(res, "Keras", 1e-4, None, 0.5, (4,), "keras:hand", "hand.onnx", inp, cam_rtol=1e-4)
        assert rep.cam["max_abs_diff"] == pytest.approx(offset, rel=1e-3)
        assert rep.cam["tolerance"] == pytest.approx(5e-3) and rep.passed is ok
        assert rep.max_abs_diff == 0.0 and (ok or "cam maps differ" in rep.failures[0])
    # a variant's maps are judged on their own (2 % of max|map|): maps off by more do not fail its P(all) gate,
    # they are marked not to be drawn
    for offset, ok in ((0.9, True), (1.1, False)):
        res = compare(runner_with(0.0), runner_with(offset), x, 0.5, batch_sizes=(4,))
        rep = _gate(res, "FP32", None, 0.98, 0.5, (4,), "onnx:a", "b.onnx", inp, cam_rtol=0.02, cam_fails_gate=False)
        assert rep.passed and rep.cam["gated"] and rep.cam["tolerance"] == pytest.approx(1.0)
        assert rep.cam["passed"] is ok and (ok or "overlays come from the FP32 model" in rep.cam["note"])


# -------------------------------------------------------------------------------------------------- safety

@pytest.mark.slow
def test_keras_model_with_lambda_is_refused(tmp_path):
    import keras

    marker = tmp_path / "code_ran"
    # The lambda leaves a marker when executed: loading must refuse before anything runs.
    fn = eval(f"lambda x: (open({str(marker)!r}, 'w').close(), x)[1]")  # noqa: S307 - test fixture
    inp = keras.Input((32, 32, 3), name="image")
    model = keras.Model(inp, keras.layers.Dense(1, activation="sigmoid", name="p_all")(
        keras.layers.GlobalAveragePooling2D()(keras.layers.Lambda(fn)(inp))), name="leuk_cnn")
    path = tmp_path / "evil.keras"
    model.save(path)
    marker.unlink(missing_ok=True)

    res = runner.invoke(app, ["export", str(path), "--out", str(tmp_path / "evil.onnx")])
    assert res.exit_code == 2, res.output
    assert "refusing to load" in res.output and "Lambda" in res.output
    assert not marker.exists()
    assert not list(tmp_path.glob("*.onnx"))


def test_card_names_where_the_threshold_came_from(tmp_path):
    """A run whose config.json lacks the threshold takes the val threshold from metrics.json: the card must say
    so, not '0.5 assumed' beside a value of 0.3."""
    from leuk_edge.export.card import card_essentials
    from leuk_edge.export.keras_io import SourceInfo

    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps({"val": {"threshold": 0.3}}))
    src = SourceInfo("cnn", 32, 32, "area", 0.3, threshold_source="metrics.json")
    assert "metrics.json" in card_essentials(run / "model.keras", src)["threshold"]["chosen"]
    assumed = SourceInfo("cnn", 32, 32, "area", 0.5, threshold_source="assumed")
    assert "assumed" in card_essentials(run / "model.keras", assumed)["threshold"]["chosen"]
    config = SourceInfo("cnn", 32, 32, "area", 0.4, threshold_source="config", config={"threshold": 0.4})
    assert "validation split" in card_essentials(run / "model.keras", config)["threshold"]["chosen"]


def test_export_repeats_the_runs_training_health_warnings(cnn_keras, tmp_path):
    """A run whose metrics.json `health` has warnings is exported with them said out loud (export warns and goes
    on): on the console, last and in red; in `--json`; first on the model card; in the metadata's card. A healthy
    run's card says it passed; a run from before the checks says 'not checked'."""
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(cnn_keras, run / "model.keras")
    shutil.copy(cnn_keras.parent / "config.json", run / "config.json")
    lines = [("temperature T = 20 stopped at a bound of its search [0.05, 20.0]: the validation outputs cannot "
              "be calibrated"),
             "raw P(all) does not spread over the validation cells: standard deviation 0.0030 < 0.05"]
    metrics = {"val": {"n": 24, "accuracy": 0.5, "threshold": 0.5}, "health": {"warnings": lines}}
    (run / "metrics.json").write_text(json.dumps(metrics))
    res = runner.invoke(app, ["export", str(run / "model.keras"), "--parity-size", "4", "--no-cam", "--json"])
    assert res.exit_code == 0, res.output
    warnings = json.loads(res.stdout)["warnings"]
    assert [w for w in warnings if w.startswith("TRAINING HEALTH: ")] == [f"TRAINING HEALTH: {w}" for w in lines]
    banner = res.stderr[res.stderr.index("WARNING: the training run failed 2 health check(s)"):]
    assert all(w.split(":")[0] in banner for w in lines), res.stderr
    card = (run / "model.card.md").read_text()
    assert card.index("## Training health") < card.index("## Intended use")
    assert "failed 2 training health check(s)" in card and all(f"- {w}" in card for w in lines)
    assert "health" not in card[card.index("## Metrics"):card.index("## Calibration")]  # not a split row
    meta = Classifier(run / "model.onnx", device="cpu").info.extra["card"]
    assert meta["health"] == lines and list(meta["metrics"]) == ["val"]

    metrics["health"]["warnings"] = []
    (run / "metrics.json").write_text(json.dumps(metrics))
    res = runner.invoke(app, ["export", str(run / "model.keras"), "--parity-size", "4", "--no-cam"])
    assert res.exit_code == 0 and "health check" not in res.output, res.output
    assert "- no warnings:" in (run / "model.card.md").read_text()
    del metrics["health"]
    (run / "metrics.json").write_text(json.dumps(metrics))
    assert runner.invoke(app, ["export", str(run / "model.keras"), "--parity-size", "4", "--no-cam"]).exit_code == 0
    assert "- not checked:" in (run / "model.card.md").read_text()
    assert Classifier(run / "model.onnx", device="cpu").info.extra["card"]["health"] is None
