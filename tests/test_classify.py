"""`leuk-edge classify` and its Python API: every file gets a row, bad files are reported, usage errors exit 2."""

import csv
import json
import math
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from leuk_edge import DISCLAIMER
from leuk_edge.cli import app
from leuk_edge.edge import Classifier, ModelError, StageTimes, classify_paths, expand_paths, load_image
from leuk_edge.edge.summary import ClassifySummary, wilson_interval
from leuk_edge.edge.writers import open_writer

BAD = {"empty.bmp", "truncated.png", "text.bmp", "random.jpg"}


def _cell(seed: int, label: str = "all") -> np.ndarray:
    from leuk_edge.synth.cells import render_cnmc_image

    return render_cnmc_image(np.random.default_rng(seed), label)  # RGB 450x450


def write_mixed_folder(root):
    """Valid images of every supported kind, unreadable files, a non-image file; some nested. -> root."""
    root.mkdir(parents=True, exist_ok=True)
    nested = root / "patient_1" / "slide_a"
    nested.mkdir(parents=True)
    bgr = [cv2.cvtColor(_cell(i, "all" if i % 2 else "hem"), cv2.COLOR_RGB2BGR) for i in range(4)]
    cv2.imwrite(str(root / "cell_0.bmp"), bgr[0])
    cv2.imwrite(str(root / "cell_1.jpg"), bgr[1])
    cv2.imwrite(str(nested / "cell_2.tif"), bgr[2])
    cv2.imwrite(str(nested / "cell_3.JPEG"), bgr[3])
    cv2.imwrite(str(root / "gray.png"), cv2.cvtColor(bgr[0], cv2.COLOR_BGR2GRAY))
    cv2.imwrite(str(root / "gray.bmp"), cv2.cvtColor(bgr[1], cv2.COLOR_BGR2GRAY))
    cv2.imwrite(str(root / "deep16.png"), bgr[2].astype(np.uint16) * 257)
    cv2.imwrite(str(root / "deep16.tiff"), bgr[3].astype(np.uint16) * 257)
    rgba = np.dstack([bgr[1], np.full(bgr[1].shape[:2], 255, np.uint8)])
    rgba[:40] = 0  # a transparent band
    cv2.imwrite(str(root / "rgba.png"), rgba)
    # unreadable files
    (root / "empty.bmp").write_bytes(b"")
    ok, png = cv2.imencode(".png", bgr[0])
    (root / "truncated.png").write_bytes(png.tobytes()[: len(png) // 2])
    (nested / "text.bmp").write_text("this is not a bitmap\n")
    (root / "random.jpg").write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    # not an image: skipped, no row
    (root / "notes.txt").write_text("slide notes")
    return root


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    return write_mixed_folder(tmp_path_factory.mktemp("mixed") / "cells")


def read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def invoke(args):
    return CliRunner().invoke(app, [str(a) for a in args])


# --- the CLI -------------------------------------------------------------------------------------------------------

def test_every_file_gets_a_row_and_bad_ones_are_reported(mixed, tiny_onnx, tmp_path):
    out = tmp_path / "rows.csv"
    res = invoke(["classify", mixed, "--model", tiny_onnx, "--out", out, "--batch-size", "3"])
    assert res.exit_code == 0, res.output
    rows = read_csv(out)
    expected = sorted(str(p) for p in mixed.rglob("*") if p.is_file() and p.suffix.lower() != ".txt")
    assert sorted(r["path"] for r in rows) == expected and len(rows) == 13
    assert list(rows[0]) == ["path", "label", "probability", "ood", "error"]
    by_name = {r["path"].rsplit("/", 1)[-1]: r for r in rows}
    for name, r in by_name.items():
        if name in BAD:
            assert r["label"] == "error" and r["probability"] == "" and r["error"], r
        else:
            assert r["label"] in ("all", "hem") and r["error"] == "", r
            assert 0.0 <= float(r["probability"]) <= 1.0
            assert r["label"] == ("all" if float(r["probability"]) >= 0.5 else "hem")
    assert by_name["empty.bmp"]["error"] == "empty file"
    # the summary (stderr): counts, errors, the blast fraction with its interval, the disclaimer
    text = " ".join(res.stderr.split())
    assert "errors" in text and "4" in text and "Wilson" in text and "1 non-image files skipped" in text
    assert DISCLAIMER in text
    assert "CPUExecutionProvider" in text
    for stage in ("decode", "resize", "infer", "wait"):
        assert stage in text
    assert "% of wall" in text and "FP32" in text


def test_probabilities_match_the_pipeline_reference(mixed, tiny_onnx, tmp_path):
    """classify == load_image + Classifier.predict on the same files, also for 16-bit, gray and RGBA inputs."""
    out = tmp_path / "rows.csv"
    assert invoke(["classify", mixed, "-m", tiny_onnx, "-o", out, "-b", "4", "--workers", "3"]).exit_code == 0
    good = [r for r in read_csv(out) if r["label"] != "error"]
    clf = Classifier(tiny_onnx)
    ref = clf.predict(np.stack([load_image(r["path"], 32, 32) for r in good]))
    np.testing.assert_allclose([float(r["probability"]) for r in good], ref, atol=1e-5)
    # a 16-bit copy classifies like its 8-bit original
    p16 = next(r for r in good if r["path"].endswith("deep16.png"))
    p8 = clf.predict(load_image(mixed / "patient_1" / "slide_a" / "cell_2.tif", 32, 32))[0]
    assert abs(float(p16["probability"]) - p8) < 1e-3


@pytest.mark.parametrize("fmt", ["json", "jsonl"])
def test_json_formats(mixed, tiny_onnx, tmp_path, fmt):
    out = tmp_path / f"rows.{fmt}"
    res = invoke(["classify", mixed, "-m", tiny_onnx, "-o", out])  # format from the suffix
    assert res.exit_code == 0, res.output
    text = out.read_text()
    rows = json.loads(text) if fmt == "json" else [json.loads(line) for line in text.splitlines()]
    assert len(rows) == 13 and set(rows[0]) == {"path", "label", "probability", "ood", "error"}
    errors = [r for r in rows if r["label"] == "error"]
    assert len(errors) == 4 and all(r["probability"] is None and r["error"] for r in errors)


def test_stdout_when_no_out(tiny_onnx, mixed):
    res = invoke(["classify", mixed / "cell_0.bmp", str(mixed / "*.jpg"), "-m", tiny_onnx, "--format", "jsonl"])
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    assert [r["path"].rsplit("/", 1)[-1] for r in rows] == ["cell_0.bmp", "cell_1.jpg", "random.jpg"]


def test_interrupt_keeps_finished_rows_and_prints_the_summary(mixed, tiny_onnx, tmp_path, interrupt_classify_after):
    interrupt_classify_after(5)
    out = tmp_path / "rows.json"
    res = invoke(["classify", mixed, "-m", tiny_onnx, "-o", out])
    assert res.exit_code == 130
    assert len(json.loads(out.read_text())) == 5  # still a valid JSON array
    assert "interrupted" in res.stderr and "images" in res.stderr


def test_tta_runs_and_agrees_for_an_orientation_free_model(mixed, tiny_onnx, tmp_path):
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    assert invoke(["classify", mixed, "-m", tiny_onnx, "-o", a]).exit_code == 0
    res = invoke(["classify", mixed, "-m", tiny_onnx, "-o", b, "--tta"])
    assert res.exit_code == 0 and "TTA" in res.stderr
    pa = [r["probability"] for r in read_csv(a)]
    pb = [r["probability"] for r in read_csv(b)]
    assert len(pa) == len(pb) == 13
    for x, y in zip(pa, pb):  # the tiny model looks at the mean colour only: rotations do not change it
        assert (x == y == "") or abs(float(x) - float(y)) < 1e-5


def test_tta_averages_p_all_over_the_eight_views(tmp_path):
    """An orientation-dependent model (it reads the top-left corner only) on an image whose four corners differ:
    the 8 flips/rotations put each corner top-left twice, so TTA's P(all) is the mean of the four corners' P(all),
    computed here by hand -- and differs from the plain run (a TTA that ran one view eight times would not)."""
    import cv2
    from tiny_models import make_corner_onnx

    model = make_corner_onnx(tmp_path / "corner.onnx", size=32, a=6.0, b=-3.0)
    levels = {"tl": 25, "tr": 100, "bl": 180, "br": 230}
    img = np.zeros((32, 32, 3), np.uint8)
    img[:16, :16], img[:16, 16:], img[16:, :16], img[16:, 16:] = (levels[k] for k in ("tl", "tr", "bl", "br"))
    cv2.imwrite(str(tmp_path / "cell.png"), img)

    def p_of(level):
        return 1 / (1 + np.exp(-(6.0 * level / 255 - 3.0)))

    plain, tta = tmp_path / "plain.csv", tmp_path / "tta.csv"
    assert invoke(["classify", tmp_path / "cell.png", "-m", model, "-o", plain]).exit_code == 0
    assert invoke(["classify", tmp_path / "cell.png", "-m", model, "-o", tta, "--tta"]).exit_code == 0
    (p_plain,), (p_tta,) = ([float(r["probability"]) for r in read_csv(f)] for f in (plain, tta))
    assert p_plain == pytest.approx(p_of(levels["tl"]), abs=1e-5)
    assert p_tta == pytest.approx(np.mean([p_of(v) for v in levels.values()]), abs=1e-5)
    assert abs(p_tta - p_plain) > 0.2


def _one_error_line(res):
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert res.exit_code == 2, res.output
    assert len(lines) == 1 and lines[0].startswith("error:"), res.output
    return lines[0]


def test_usage_errors_exit_2_with_one_line(mixed, tiny_onnx, tmp_path):
    assert "model file not found" in _one_error_line(invoke(["classify", mixed, "-m", tmp_path / "nope.onnx"]))
    empty = tmp_path / "only_text"
    empty.mkdir()
    (empty / "a.txt").write_text("x")
    assert "no images found" in _one_error_line(invoke(["classify", empty, "-m", tiny_onnx]))
    assert "no such file" in _one_error_line(invoke(["classify", tmp_path / "missing", "-m", tiny_onnx]))
    assert "format" in _one_error_line(invoke(["classify", mixed, "-m", tiny_onnx, "--format", "xml"]))
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    assert "cannot load" in _one_error_line(invoke(["classify", mixed, "-m", tmp_path / "junk.onnx"]))


def test_unavailable_cuda_is_a_clear_error_not_a_cpu_fallback(mixed, tiny_onnx, monkeypatch):
    import onnxruntime as ort

    # Where CUDA exists, hide it: the test is about a machine without it, never a skip.
    have = [p for p in ort.get_available_providers() if p not in ("CUDAExecutionProvider", "TensorrtExecutionProvider")]
    monkeypatch.setattr(ort, "get_available_providers", lambda: have)
    line = _one_error_line(invoke(["classify", mixed, "-m", tiny_onnx, "--device", "cuda"]))
    assert "cuda" in line and "not available" in line and "leuk-edge[gpu]" in line
    assert "unknown device" in _one_error_line(invoke(["classify", mixed, "-m", tiny_onnx, "--device", "tpu"]))


def test_model_without_metadata_is_refused(mixed, tmp_path):
    from tiny_models import make_tiny_onnx, tiny_metadata

    bare = make_tiny_onnx(tmp_path / "bare.onnx", metadata=False)
    line = _one_error_line(invoke(["classify", mixed, "-m", bare]))
    assert "leuk_edge" in line and "metadata" in line
    with pytest.raises(ModelError, match="leuk_edge"):
        Classifier(bare)

    import onnx

    meta = tiny_metadata(32)
    del meta["threshold"]
    model = onnx.load(str(bare))
    onnx.helper.set_model_props(model, {"leuk_edge": json.dumps(meta)})
    partial = tmp_path / "partial.onnx"
    onnx.save(model, str(partial))
    assert "threshold" in _one_error_line(invoke(["classify", mixed, "-m", partial]))


# --- the Python API ------------------------------------------------------------------------------------------------

def test_expand_paths_folders_files_globs(mixed):
    files = expand_paths([mixed])
    assert len(files) == 13 and files.skipped == 1 and not files.missing
    assert files.images == sorted(files.images, key=str)
    again = expand_paths([mixed, mixed / "cell_0.bmp", str(mixed / "**" / "*.tif")])
    assert len(again) == 13  # duplicates dropped
    tifs = expand_paths([str(mixed / "**" / "*.ti*")])
    assert sorted(p.name for p in tifs.images) == ["cell_2.tif", "deep16.tiff"]
    assert expand_paths([mixed / "nope", "no_match_*.bmp"]).missing == [str(mixed / "nope"), "no_match_*.bmp"]


def test_classify_paths_generator_and_stage_times(mixed, tiny_onnx):
    clf = Classifier(tiny_onnx, threads=1)
    paths = expand_paths([mixed]).images
    times = StageTimes()
    rows = list(classify_paths(clf, paths, batch_size=4, workers=2, times=times))
    assert [r.path for r in rows] == [str(p) for p in paths]
    assert sum(not r.ok for r in rows) == 4 == times.errors and times.images == 13
    # 4 batches of files; the last holds only truncated.png, so no inference runs for it
    assert times.batches == 3 and times.decode_s > 0 and times.infer_s > 0 and times.throughput > 0
    assert times.resize_s > 0
    d = times.to_dict()
    for stage in ("decode", "resize", "infer", "wait"):
        assert d[f"{stage}_ms_per_image"] == pytest.approx(1000 * d[f"{stage}_s"] / 13)
        assert d[f"{stage}_share_of_wall"] == pytest.approx(d[f"{stage}_s"] / d["wall_s"])
    # stopping early is clean (the decode pool is shut down by the generator's finally)
    gen = classify_paths(clf, paths, batch_size=2)
    first = next(gen)
    gen.close()
    assert first.path == str(paths[0])


def test_writers_close_the_json_array_on_error(tmp_path):
    from leuk_edge.edge.classify import Row

    out = tmp_path / "x.json"
    with pytest.raises(RuntimeError):
        with open_writer(out) as w:
            w.write(Row("a.bmp", "all", 0.9))
            assert json.loads(out.read_text() + "\n]") == [  # flushed already
                {"path": "a.bmp", "label": "all", "probability": 0.9, "ood": None, "error": ""}]
            raise RuntimeError("boom")
    assert json.loads(out.read_text())[0]["label"] == "all"
    with open_writer(tmp_path / "empty.json"):
        pass
    assert json.loads((tmp_path / "empty.json").read_text()) == []


def test_wilson_interval():
    lo, hi = wilson_interval(5, 10)
    assert math.isclose(lo, 0.2366, abs_tol=1e-4) and math.isclose(hi, 0.7634, abs_tol=1e-4)
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and math.isclose(hi, 0.2775, abs_tol=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    s = ClassifySummary()
    from leuk_edge.edge.classify import Row

    s.extend([Row("a", "all", 0.9), Row("b", "hem", 0.1), Row("c", "error", None, "empty file")])
    d = s.to_dict()
    assert d["images"] == 3 and d["errors"] == 1 and d["blast_fraction"] == 0.5


# --- whole-pipeline parity with Keras (CI) -------------------------------------------------------------------------

@pytest.mark.slow
def test_classify_matches_keras_on_the_same_files(mixed, tmp_path):
    """Keras CNN -> tf2onnx -> `leuk-edge classify` CSV == model.predict(load_image(...)) within 1e-3."""
    import onnx
    import tensorflow as tf
    import tf2onnx

    from leuk_edge.train.models import build
    from tiny_models import tiny_metadata

    keras_model, _ = build("cnn", 48)
    # Give the random network some spread so that the comparison is not between constants.
    rng = np.random.default_rng(0)
    keras_model.set_weights([w + rng.normal(0, 0.05, w.shape).astype(w.dtype) for w in keras_model.get_weights()])
    spec = (tf.TensorSpec((None, 48, 48, 3), tf.float32, name="image"),)
    proto, _ = tf2onnx.convert.from_keras(keras_model, input_signature=spec, opset=17)
    onnx.helper.set_model_props(proto, {"leuk_edge": json.dumps(tiny_metadata(48))})
    model_path = tmp_path / "cnn48.onnx"
    onnx.save(proto, str(model_path))

    out = tmp_path / "rows.csv"
    res = invoke(["classify", mixed, "--model", model_path, "--out", out, "--batch-size", "5"])
    assert res.exit_code == 0, res.output
    good = [r for r in read_csv(out) if r["label"] != "error"]
    assert len(good) == 9
    ref = keras_model.predict(np.stack([load_image(r["path"], 48, 48) for r in good]), verbose=0)[:, 0]
    got = np.array([float(r["probability"]) for r in good])
    assert np.ptp(ref) > 1e-3  # the outputs differ between images
    np.testing.assert_allclose(got, ref, atol=1e-3)


# --- issue 9: labels follow the threshold, bit depth, pixel limit, bugs are not data, stop signals -----------------

def _tiny_p(mean_rgb, scale: float = 1.0) -> float:
    """The tiny model by hand: sigmoid(w . mean_rgb + b) with w = (-4, -8, 2), b = 1.5 (tests/tiny_models.py)."""
    r, g, b = np.asarray(mean_rgb, np.float64) * scale
    return float(1 / (1 + np.exp(-(-4 * r - 8 * g + 2 * b + 1.5))))


def test_labels_follow_the_models_threshold(tmp_path):
    from tiny_models import make_tiny_onnx

    model = make_tiny_onnx(tmp_path / "t03.onnx", threshold=0.3)
    d = tmp_path / "solid"
    d.mkdir()
    for name, level in (("a_dark", 26), ("b_mid", 51), ("c_light", 77)):  # gray: p = sigmoid(1.5 - 10 level/255)
        cv2.imwrite(str(d / f"{name}.png"), np.full((40, 40, 3), level, np.uint8))
    out = tmp_path / "rows.csv"
    assert invoke(["classify", d, "-m", model, "-o", out]).exit_code == 0
    rows = read_csv(out)
    expected_p = [_tiny_p([v / 255] * 3) for v in (26, 51, 77)]
    np.testing.assert_allclose([float(r["probability"]) for r in rows], expected_p, atol=1e-5)
    assert 0.3 <= expected_p[1] < 0.5  # the middle one is "all" only because the threshold is 0.3
    assert [r["label"] for r in rows] == ["all", "all", "hem"]


def test_metadata_scale_is_honoured(tmp_path):
    from tiny_models import make_tiny_onnx

    half = make_tiny_onnx(tmp_path / "half.onnx", scale=0.5 / 255)
    img = cv2.cvtColor(_cell(5), cv2.COLOR_RGB2BGR)
    cv2.imwrite(str(tmp_path / "c.bmp"), img)
    out = tmp_path / "rows.csv"
    assert invoke(["classify", tmp_path / "c.bmp", "-m", half, "-o", out]).exit_code == 0
    small = cv2.resize(cv2.cvtColor(img, cv2.COLOR_BGR2RGB), (32, 32), interpolation=cv2.INTER_AREA)
    mean = small.reshape(-1, 3).mean(axis=0)
    got = float(read_csv(out)[0]["probability"])
    assert abs(got - _tiny_p(mean, 0.5 / 255)) < 1e-5 and abs(got - _tiny_p(mean, 1 / 255)) > 1e-3

    from tiny_models import tiny_metadata
    import onnx

    meta = tiny_metadata(32, scale=0)
    m = onnx.load(str(half))
    onnx.helper.set_model_props(m, {"leuk_edge": json.dumps(meta)})
    onnx.save(m, str(tmp_path / "zero.onnx"))
    assert "scale" in _one_error_line(invoke(["classify", tmp_path / "c.bmp", "-m", tmp_path / "zero.onnx"]))


def test_a_12_bit_tiff_classifies_like_its_8_bit_original(tiny_onnx, tmp_path):
    d = tmp_path / "depth"
    d.mkdir()
    bgr = cv2.cvtColor(_cell(7), cv2.COLOR_RGB2BGR)
    cv2.imwrite(str(d / "a_8bit.bmp"), bgr)
    twelve = np.rint(bgr.astype(np.float64) * 4095 / 255).astype(np.uint16)
    assert cv2.imwrite(str(d / "b_12bit.tif"), twelve)
    out = tmp_path / "rows.csv"
    assert invoke(["classify", d, "-m", tiny_onnx, "-o", out]).exit_code == 0
    p8, p12 = (float(r["probability"]) for r in read_csv(out))
    assert abs(p8 - p12) < 0.02
    # forced to 16 bits the same file is nearly black: the option is really used
    assert invoke(["classify", d / "b_12bit.tif", "-m", tiny_onnx, "-o", out, "--bit-depth", "16"]).exit_code == 0
    assert abs(float(read_csv(out)[0]["probability"]) - p8) > 0.02
    assert "bit-depth" in _one_error_line(invoke(["classify", d, "-m", tiny_onnx, "--bit-depth", "11"]))


def _huge_png(path):
    """A valid 8-bit gray PNG declaring 20000 x 20000 pixels: ~389 KB on disk, 400 MB decoded (1.2 GB as RGB)."""
    import zlib

    from test_preprocess import png_bytes

    comp = zlib.compressobj(9)
    chunk = b"\x00" * (20001 * 1000)  # 1000 rows: filter byte + 20000 zero pixels each
    idat = b"".join(comp.compress(chunk) for _ in range(20)) + comp.flush()
    path.write_bytes(png_bytes(20000, 20000, 0, idat=idat))
    return path


def test_an_image_over_max_pixels_is_an_error_row_and_costs_little_memory(tiny_onnx, tmp_path):
    big = _huge_png(tmp_path / "huge.png")
    small = tmp_path / "small.bmp"
    cv2.imwrite(str(small), np.full((64, 64, 3), 90, np.uint8))
    out = tmp_path / "rows.csv"
    code = f"""
        import json, resource
        from leuk_edge.cli import app
        def run(args):
            try:
                return app(args, standalone_mode=False) or 0
            except SystemExit as exc:
                return exc.code
        run(["classify", {str(small)!r}, "-m", {str(tiny_onnx)!r}, "-o", {str(out)!r}])  # everything loaded
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        code = run(["classify", {str(big)!r}, {str(small)!r}, "-m", {str(tiny_onnx)!r}, "-o", {str(out)!r}])
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(json.dumps({{"code": code, "grew_kb": after - before}}))
    """
    res = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert got["code"] == 0
    assert got["grew_kb"] < 50 * 1024, got  # decoding it would take >= 400 MB
    rows = {Path(r["path"]).name: r for r in read_csv(out)}
    assert rows["huge.png"]["label"] == "error" and rows["huge.png"]["error"].startswith("image too large")
    assert rows["small.bmp"]["label"] in ("all", "hem")
    assert invoke(["classify", small, "-m", tiny_onnx, "--max-pixels", "-1"]).exit_code == 2


def test_only_unreadable_files_exit_1_with_one_line(tiny_onnx, tmp_path):
    d = tmp_path / "bad"
    d.mkdir()
    (d / "a.bmp").write_bytes(b"")
    (d / "b.png").write_text("not a png")
    out = tmp_path / "rows.csv"
    res = invoke(["classify", d, "-m", tiny_onnx, "-o", out])
    assert res.exit_code == 1, res.output
    last = [ln for ln in res.stderr.splitlines() if ln.strip()][-1]
    assert last.startswith("error: no file could be classified: all 2 failed") and "a.bmp: empty file" in last
    assert [r["label"] for r in read_csv(out)] == ["error", "error"]  # the rows are still written


def test_a_bug_in_a_worker_crashes_with_a_traceback_and_keeps_the_rows(mixed, tiny_onnx, tmp_path, monkeypatch):
    import leuk_edge.edge.classify as mod

    real = mod.resize_scale

    def buggy(src, *args, **kwargs):
        if src.shape[:2] == (450, 450) and src.ndim == 3 and int(src[0, 0, 0]) == 255:
            raise ValueError("a bug, not bad data")
        return real(src, *args, **kwargs)

    d = tmp_path / "crash"
    d.mkdir()
    for i in range(5):
        cv2.imwrite(str(d / f"c{i}.bmp"), cv2.cvtColor(_cell(i), cv2.COLOR_RGB2BGR))
    white = np.full((450, 450, 3), 255, np.uint8)
    cv2.imwrite(str(d / "c3.bmp"), white)  # the 4th file hits the bug (second batch of 2)
    monkeypatch.setattr(mod, "resize_scale", buggy)
    out = tmp_path / "rows.json"
    res = invoke(["classify", d, "-m", tiny_onnx, "-o", out, "-b", "2"])
    assert res.exit_code == 1
    assert isinstance(res.exception, mod.WorkerCrash) and isinstance(res.exception.__cause__, ValueError)
    assert "c3.bmp" in str(res.exception)
    rows = json.loads(out.read_text())  # still a valid JSON array, with the first batch in it
    assert [Path(r["path"]).name for r in rows] == ["c0.bmp", "c1.bmp"] and all(r["label"] != "error" for r in rows)


SLOW_CLASSIFY = """
import sys, time
from leuk_edge.edge.model import Classifier
real = Classifier.infer  # every model call goes through infer (predict too)
def slow(self, *args, **kwargs):  # a slow model, so that the signal arrives mid-run
    time.sleep(0.4)
    return real(self, *args, **kwargs)
Classifier.infer = slow
from leuk_edge.cli import app
app(sys.argv[1:])
"""


def _default_sigint():
    # A test run started from a background job inherits "ignore" for SIGINT; the child must get the default.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("sig, code, word", [(signal.SIGTERM, 143, "terminated"), (signal.SIGINT, 130, "interrupted")])
def test_stop_signals_finish_the_batch_close_the_json_and_write_the_summary(mixed, tiny_onnx, tmp_path, sig, code,
                                                                           word):
    out, summ = tmp_path / "rows.json", tmp_path / "summary.json"
    args = ["classify", str(mixed), "-m", str(tiny_onnx), "-o", str(out), "-b", "2", "--summary", str(summ)]
    proc = subprocess.Popen([sys.executable, "-c", SLOW_CLASSIFY, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=_default_sigint, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if out.exists() and out.read_text().count('"path"') >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    rows = json.loads(out.read_text())  # the array was closed
    assert 2 <= len(rows) < 13
    summary = json.loads(summ.read_text())
    assert summary["interrupted"] is True and summary["images"] == len(rows)
    assert word in err and "images" in err


def test_thread_split_from_the_core_count():
    from leuk_edge.edge.classify import thread_split

    assert thread_split(1) == (1, 1) and thread_split(2) == (1, 2) and thread_split(16) == (4, 16)


def test_opencv_thread_count_is_set_once_not_flipped_by_concurrent_runs():
    """Two pipelines in one process (the station's live stream and an upload being classified): the second run's
    end must not put OpenCV's process-wide thread count back under the first, still running. Fresh process: the
    count starts at 4 there."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent("""
        import threading, cv2
        from leuk_edge.edge.classify import opencv_threads
        cv2.setNumThreads(4)
        a_in, b_in, a_out, seen = threading.Event(), threading.Event(), threading.Event(), []
        def first():
            with opencv_threads(1):
                a_in.set(); b_in.wait(5)
            a_out.set()
        def second():
            a_in.wait(5)
            with opencv_threads(1):
                b_in.set(); a_out.wait(5)
                seen.append(cv2.getNumThreads())  # the first run has ended; this one still runs
        ts = [threading.Thread(target=first), threading.Thread(target=second)]
        [t.start() for t in ts]; [t.join(10) for t in ts]
        print(seen[0], cv2.getNumThreads())
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    during, after = map(int, res.stdout.split())
    assert during == 1 and after == 1
