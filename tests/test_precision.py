"""`--precision auto|fp32|fp16|int8`: a variant runs only when the parity report beside it says passed, and the run
says which model ran. Parity reports are written by hand here (passed true / false / missing / corrupt)."""

import json
import shutil

import pytest
from typer.testing import CliRunner

from leuk_edge.cli import app
from leuk_edge.edge.precision import PrecisionError, choose_precision


def invoke(args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture
def model_set(tiny_onnx, tmp_path):
    """MODEL.onnx with a copy as MODEL.int8.onnx and MODEL.fp16.onnx (no reports yet)."""
    base = tmp_path / "model.onnx"
    for name in ("model.onnx", "model.int8.onnx", "model.fp16.onnx"):
        shutil.copy(tiny_onnx, tmp_path / name)
    return base


def report(model_set, precision: str, text: str):
    (model_set.parent / f"model.{precision}.parity.json").write_text(text)


@pytest.mark.parametrize("text, used", [
    (json.dumps({"passed": True, "n": 100, "decision_agreement": 0.99}), "int8"),
    (json.dumps({"passed": False, "n": 100, "decision_agreement": 0.91}), "fp32"),
    (None, "fp32"),  # no report
    ("{not json", "fp32"),  # corrupt report
    (json.dumps({"passed": "yes"}), "fp32"),  # only a real true counts
    (json.dumps([1, 2]), "fp32"),  # not an object
])
def test_auto_on_cpu_uses_int8_only_when_its_gate_passed(model_set, text, used):
    if text is not None:
        report(model_set, "int8", text)
    report(model_set, "fp16", json.dumps({"passed": True}))  # FP16 is for GPUs: never picked on the CPU
    choice = choose_precision(model_set, "auto", "cpu")
    assert choice.used == used
    assert choice.path.name == ("model.int8.onnx" if used == "int8" else "model.onnx")
    if used == "fp32":
        assert choice.reason.startswith("FP32:") and "model.int8" in choice.reason


def test_auto_without_a_variant_file_is_fp32(model_set):
    (model_set.parent / "model.int8.onnx").unlink()
    report(model_set, "int8", json.dumps({"passed": True}))  # a report without its model is not enough
    choice = choose_precision(model_set, "auto", "cpu")
    assert choice.used == "fp32" and "not found" in choice.reason


def test_explicit_precisions(model_set):
    assert choose_precision(model_set, "fp32", "cpu").path == model_set
    with pytest.raises(PrecisionError, match="did not pass"):
        report(model_set, "fp16", json.dumps({"passed": False}))
        choose_precision(model_set, "fp16", "cpu")
    report(model_set, "fp16", json.dumps({"passed": True}))
    assert choose_precision(model_set, "fp16", "cpu").path.name == "model.fp16.onnx"
    with pytest.raises(PrecisionError, match="no parity report"):
        choose_precision(model_set, "int8", "cpu")
    with pytest.raises(PrecisionError, match="unknown precision"):
        choose_precision(model_set, "int4", "cpu")
    # a variant file passed directly runs as given
    given = choose_precision(model_set.parent / "model.int8.onnx", "auto", "cpu")
    assert given.used == "int8" and given.path.name == "model.int8.onnx"
    with pytest.raises(PrecisionError, match="INT8 variant"):
        choose_precision(model_set.parent / "model.int8.onnx", "fp32", "cpu")


def test_classify_says_which_model_ran(model_set, tmp_path):
    import cv2
    import numpy as np

    img = tmp_path / "c.png"
    cv2.imwrite(str(img), np.full((40, 40, 3), 80, np.uint8))
    summ = tmp_path / "s.json"
    report(model_set, "int8", json.dumps({"passed": True}))
    res = invoke(["classify", img, "-m", model_set, "-o", tmp_path / "r.csv", "--summary", summ])
    assert res.exit_code == 0, res.output
    prec = json.loads(summ.read_text())["precision"]
    assert prec["used"] == "int8" and prec["requested"] == "auto" and prec["path"].endswith("model.int8.onnx")
    assert "INT8" in res.stderr
    report(model_set, "int8", json.dumps({"passed": False}))
    res = invoke(["classify", img, "-m", model_set, "-o", tmp_path / "r.csv", "--summary", summ])
    assert res.exit_code == 0 and json.loads(summ.read_text())["precision"]["used"] == "fp32"
    assert "did not pass" in " ".join(res.stderr.split())
    res = invoke(["classify", img, "-m", model_set, "--precision", "int8"])
    assert res.exit_code == 2 and "did not pass its parity gate" in res.output


def test_bench_says_which_model_ran(model_set):
    (model_set.parent / "model.int8.parity.json").write_text(json.dumps({"passed": True}))
    res = invoke(["bench", model_set, "-b", "1", "--runs", "2", "--warmup", "0", "--json"])
    assert res.exit_code == 0, res.output
    prec = json.loads(res.stdout)["precision"]
    assert prec["used"] == "int8" and prec["path"].endswith("model.int8.onnx")
    res = invoke(["bench", model_set, "-b", "1", "--runs", "2", "--precision", "fp32", "--json"])
    assert json.loads(res.stdout)["precision"]["used"] == "fp32"
