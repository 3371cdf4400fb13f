"""`--precision auto|fp32|fp16|int8`: a variant runs only when it is bound to the FP32 file beside it (export's
manifest, the report's SHA-256s) and, for `auto`, when its gate was the export's own on >= 100 real images on the
execution provider that will run it; the run says which file ran and why.

The model sets are made as export makes them (real FP16/INT8 variants, export's gate, export's manifest; see
tests/support/model_sets.py): nothing here writes a `"passed": true` by hand."""

import json
import shutil

import onnxruntime.quantization  # noqa: F401  (the INT8 variants need it: a missing one fails, never skips)
import pytest
from typer.testing import CliRunner

from support.model_sets import gated_set, image_folder
from tiny_models import make_tiny_onnx

from leuk_edge.cli import app
from leuk_edge.edge.precision import PrecisionError, auto_shortfall, choose_precision



def invoke(args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return image_folder(tmp_path_factory.mktemp("gate_images"), n=100)


@pytest.fixture(scope="module")
def exported(tmp_path_factory, images):
    """A pristine set: model.onnx, model.int8.onnx, model.fp16.onnx, their reports, model.manifest.json."""
    return gated_set(tmp_path_factory.mktemp("exported"), images)


@pytest.fixture
def model_set(exported, tmp_path):
    folder = tmp_path / "set"
    shutil.copytree(exported.parent, folder)
    return folder / "model.onnx"


def test_auto_on_cpu_runs_the_bound_int8(model_set):
    report = json.loads((model_set.parent / "model.int8.parity.json").read_text())
    assert report["passed"] and report["n"] == 100 and report["images"] == "folder"  # export's gate, made here
    choice = choose_precision(model_set, "auto", "cpu")
    assert choice.used == "int8" and choice.path.name == "model.int8.onnx"
    assert "100 images" in choice.reason and "CPUExecutionProvider" in choice.reason


def test_a_copied_fp32_model_beside_an_old_variant_runs_fp32(model_set, tmp_path):
    """A new MODEL.onnx copied over the old one: the old INT8 belongs to other weights."""
    other = make_tiny_onnx(tmp_path / "other.onnx", size=32, threshold=0.3)
    shutil.copy(other, model_set)
    choice = choose_precision(model_set, "auto", "cpu")
    assert choice.used == "fp32" and choice.path == model_set
    assert "model.onnx is not the file the export wrote" in choice.reason
    with pytest.raises(PrecisionError, match="model.onnx is not the file the export wrote"):
        choose_precision(model_set, "int8", "cpu")


def test_a_foreign_variant_with_its_own_passed_report_runs_fp32(model_set, images, tmp_path):
    """Another model's INT8 and its (passed, genuine) report copied into this set."""
    foreign = gated_set(tmp_path / "foreign", images, variants=("int8",))
    for name in ("model.int8.onnx", "model.int8.parity.json"):
        shutil.copy(foreign.parent / name, model_set.parent / name)
    choice = choose_precision(model_set, "auto", "cpu")
    assert choice.used == "fp32" and "model.int8" in choice.reason and "not the file the export wrote" in choice.reason


def test_a_report_rewritten_by_a_loose_parity_run_is_not_trusted(model_set, images):
    """`leuk-edge parity M.onnx M.int8.onnx --size 5 --min-agreement 0.5` rewrites the report with passed true."""
    from leuk_edge.export.manifest import write_manifest

    int8 = model_set.parent / "model.int8.onnx"
    res = invoke(["parity", model_set, int8, "--data", images, "--size", "5", "--min-agreement", "0.5"])
    assert res.exit_code == 0, res.output
    assert json.loads((model_set.parent / "model.int8.parity.json").read_text())["passed"] is True
    choice = choose_precision(model_set, "auto", "cpu")
    assert choice.used == "fp32" and "model.int8.parity.json is not the file the export wrote" in choice.reason
    # Even with the manifest re-written over the new report, the loose gate itself is not the export's.
    files = [model_set.parent / n for n in ("model.onnx", "model.int8.onnx", "model.int8.parity.json")]
    write_manifest(model_set, None, files)
    choice = choose_precision(model_set, "auto", "cpu")
    assert choice.used == "fp32" and "decision agreement >= 0.98" in choice.reason and "0.5" in choice.reason


def test_a_set_without_its_manifest_runs_fp32(model_set):
    """A commit cut short before its last step (the manifest), or files put together by hand."""
    (model_set.parent / "model.manifest.json").unlink()
    choice = choose_precision(model_set, "auto", "cpu")
    assert choice.used == "fp32" and "no export manifest (model.manifest.json)" in choice.reason


@pytest.mark.parametrize("n, data, why", [
    (60, "folder", "gated on 60 images, fewer than the 100"),
    (100, None, "gated on synthetic cells"),
])
def test_a_weak_gate_is_not_for_auto_but_may_be_asked_for(tmp_path, images, n, data, why):
    base = gated_set(tmp_path / "weak", images if data else None, variants=("int8",), n=n)
    choice = choose_precision(base, "auto", "cpu")
    assert choice.used == "fp32" and why in choice.reason
    asked = choose_precision(base, "int8", "cpu")  # bound to this model: runs when asked for, and says so
    assert asked.used == "int8" and "auto would not run it" in asked.reason and why in asked.reason


def test_a_gate_on_another_provider_is_not_for_auto(model_set):
    """FP16 gated on the CPU says nothing about CUDA's FP16 kernels (no GPU here: the rule itself)."""
    report = json.loads((model_set.parent / "model.fp16.parity.json").read_text())
    assert report["device"] == "CPUExecutionProvider"
    assert auto_shortfall(report, "fp16", "CPUExecutionProvider") is None
    why = auto_shortfall(report, "fp16", "CUDAExecutionProvider")
    assert why == "it was gated on CPUExecutionProvider, and would run on CUDAExecutionProvider"


def test_the_file_for_another_device_is_chosen_without_that_device_here(model_set):
    """A Ray driver without a GPU picks the file for its CUDA actors: FP16 is preferred there, but this one was gated
    on the CPU, so FP32 -- and nothing asks this machine for CUDA (it raised 'not available' before)."""
    choice = choose_precision(model_set, "auto", "cuda")  # on a machine with or without CUDA
    assert choice.used == "fp32" and "would run on CUDAExecutionProvider" in choice.reason


@pytest.mark.parametrize("text, why", [
    (None, "has no parity report"),
    ("{not json", "is not a readable parity report"),
    (json.dumps([1, 2]), "is not a readable parity report"),
])
def test_missing_or_unreadable_reports(model_set, text, why):
    report = model_set.parent / "model.int8.parity.json"
    report.unlink()
    if text is not None:
        report.write_text(text)
    choice = choose_precision(model_set, "auto", "cpu")
    assert choice.used == "fp32" and why in choice.reason


def test_explicit_precisions(model_set, images):
    from leuk_edge.export.parity import check_variant

    assert choose_precision(model_set, "fp32", "cpu").path == model_set
    assert choose_precision(model_set, "fp16", "cpu").path.name == "model.fp16.onnx"
    failed = check_variant(model_set, model_set.parent / "model.fp16.onnx", data=images, n=10, atol=0.0)
    assert not failed.passed  # a real failed gate (atol 0)
    failed.write(model_set.parent / "model.fp16.parity.json")
    with pytest.raises(PrecisionError, match="did not pass its parity gate"):
        choose_precision(model_set, "fp16", "cpu")
    (model_set.parent / "model.int8.onnx").unlink()
    with pytest.raises(PrecisionError, match="model.int8.onnx not found"):
        choose_precision(model_set, "int8", "cpu")
    with pytest.raises(PrecisionError, match="unknown precision"):
        choose_precision(model_set, "int4", "cpu")
    # a variant file passed directly runs as given
    given = choose_precision(model_set.parent / "model.fp16.onnx", "auto", "cpu")
    assert given.used == "fp16" and given.path.name == "model.fp16.onnx"
    with pytest.raises(PrecisionError, match="FP16 variant"):
        choose_precision(model_set.parent / "model.fp16.onnx", "fp32", "cpu")


def _image(tmp_path):
    import cv2
    import numpy as np

    img = tmp_path / "c.png"
    cv2.imwrite(str(img), np.full((40, 40, 3), 80, np.uint8))
    return img


def test_classify_says_which_model_ran(model_set, tmp_path):
    img, summ = _image(tmp_path), tmp_path / "s.json"
    res = invoke(["classify", img, "-m", model_set, "-o", tmp_path / "r.csv", "--summary", summ])
    assert res.exit_code == 0, res.output
    prec = json.loads(summ.read_text())["precision"]
    assert prec["used"] == "int8" and prec["requested"] == "auto" and prec["path"].endswith("model.int8.onnx")
    assert "INT8" in res.stderr
    (model_set.parent / "model.manifest.json").unlink()
    res = invoke(["classify", img, "-m", model_set, "-o", tmp_path / "r.csv", "--summary", summ])
    prec = json.loads(summ.read_text())["precision"]
    assert res.exit_code == 0 and prec["used"] == "fp32" and "no export manifest" in prec["reason"]
    res = invoke(["classify", img, "-m", model_set, "--precision", "int8"])
    assert res.exit_code == 2 and "no export manifest" in " ".join(res.output.split())


def test_bench_says_which_model_ran(model_set):
    res = invoke(["bench", model_set, "-b", "1", "--runs", "2", "--warmup", "0", "--json"])
    assert res.exit_code == 0, res.output
    prec = json.loads(res.stdout)["precision"]
    assert prec["used"] == "int8" and prec["path"].endswith("model.int8.onnx")
    res = invoke(["bench", model_set, "-b", "1", "--runs", "2", "--precision", "fp32", "--json"])
    assert json.loads(res.stdout)["precision"]["used"] == "fp32"


def test_stream_runs_and_names_the_chosen_file(model_set, tmp_path):
    img, summ = _image(tmp_path), tmp_path / "s.json"
    for precision, used in (("auto", "int8"), ("fp32", "fp32"), ("fp16", "fp16")):
        res = invoke(["stream", "--source", img, "-m", model_set, "--precision", precision, "--max-frames", "1",
                      "--um-per-px", "0.3", "--summary", summ])
        assert res.exit_code == 0, res.output
        s = json.loads(summ.read_text())
        assert s["precision"]["used"] == used and s["precision"]["requested"] == precision
        assert s["model"].endswith({"int8": "model.int8.onnx", "fp16": "model.fp16.onnx"}.get(used, "model.onnx"))
    res = invoke(["stream", "--source", img, "-m", model_set, "--precision", "int4", "--max-frames", "1"])
    assert res.exit_code == 2 and "unknown precision" in res.output


def test_station_health_names_the_chosen_file(model_set, tmp_path):
    import httpx
    from station_helpers import serve_in_thread

    from leuk_edge.station.app import build_station

    st = build_station(model_set, tmp_path / "st", device="cpu")
    with serve_in_thread(st) as base:
        health = httpx.get(f"{base}/api/health").json()
        assert health["precision"]["used"] == "int8" and health["model"] == "model.int8.onnx"
        assert health["precision"]["path"].endswith("model.int8.onnx")
        assert httpx.get(f"{base}/api/model").json()["file"] == "model.int8.onnx"
    st = build_station(model_set, tmp_path / "st2", device="cpu", precision="fp32")
    with serve_in_thread(st) as base:
        assert httpx.get(f"{base}/api/health").json()["precision"]["used"] == "fp32"


def _cam_variant(base, images):
    """A bound FP16 'variant' of the tiny cam model whose P(all) is the FP32 model's exactly but whose map is the
    darkness of the red channel alone (not of the mean): its P(all) gate passes, its cam check must not."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper
    from tiny_models import make_tiny_cam_onnx

    from leuk_edge.edge.model_files import report_path, variant_path
    from leuk_edge.export.manifest import write_manifest
    from leuk_edge.export.parity import check_variant

    variant = variant_path(base, "fp16")
    make_tiny_cam_onnx(variant, size=32, extra_metadata={"precision": "fp16"})
    m = onnx.load(str(variant))
    node = next(n for n in m.graph.node if n.op_type == "ReduceMean" and n.input[0] == "nchw")
    node.CopyFrom(helper.make_node("Gather", ["nchw", "red_index"], ["gray"], axis=1))
    m.graph.initializer.append(numpy_helper.from_array(np.array([0], np.int64), "red_index"))
    onnx.save(m, str(variant))
    rep = check_variant(base, variant, data=images, n=100)
    rep.write(report_path(variant))
    write_manifest(base, None, [base, variant, report_path(variant)])
    return variant, rep


def test_overlays_come_from_a_gated_map(tmp_path, images):
    """classify --cam with a variant whose maps failed their check draws the FP32 model's maps, not the variant's."""
    import csv

    import cv2
    import numpy as np
    from tiny_models import make_tiny_cam_onnx

    from leuk_edge.edge import Classifier
    from leuk_edge.edge.classify import Row
    from leuk_edge.edge.explain import write_cam_overlays

    (tmp_path / "set").mkdir()
    base = make_tiny_cam_onnx(tmp_path / "set" / "model.onnx", size=32)
    variant, rep = _cam_variant(base, images)
    img = tmp_path / "cell.png"
    yy, xx = np.mgrid[0:64, 0:64]
    rgb = np.stack([xx * 4, np.full_like(xx, 60), yy * 4], axis=-1).astype(np.uint8)  # red along x, blue along y
    cv2.imwrite(str(img), rgb[:, :, ::-1])
    res = invoke(["classify", img, "-m", base, "--precision", "fp16", "--cam", tmp_path / "cam", "--cam-all",
                  "-o", tmp_path / "rows.csv", "--summary", tmp_path / "s.json"])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "s.json").read_text())["precision"]["used"] == "fp16"
    drawn = cv2.imread(str(tmp_path / "cam" / "cell.cam.png"))
    (table,) = csv.DictReader(open(tmp_path / "rows.csv"))
    row = [Row(str(img), table["label"], float(table["probability"]))]
    by_fp32 = write_cam_overlays(Classifier(base, device="cpu"), row, tmp_path / "fp32", all_rows=True)
    by_variant = write_cam_overlays(Classifier(variant, device="cpu"), row, tmp_path / "var", all_rows=True)
    expected, wrong = cv2.imread(str(by_fp32[str(img)])), cv2.imread(str(by_variant[str(img)]))
    assert not np.array_equal(expected, wrong)  # the two maps draw differently on this cell
    assert np.array_equal(drawn, expected)
    # why: the variant passed its P(all) gate, its maps did not pass theirs
    assert rep.passed and rep.cam["gated"] and not rep.cam["passed"], rep.to_dict()
