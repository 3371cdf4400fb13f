"""The edge runtime never loads TensorFlow, Keras or tf2onnx: `pip install leuk-edge` alone runs classify."""

import json
import subprocess
import sys
import textwrap

import cv2
import numpy as np

HEAVY = ("tensorflow", "keras", "tf2onnx")


def _run(code: str) -> dict:
    res = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


def _folder(tmp_path):
    d = tmp_path / "cells"
    d.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        cv2.imwrite(str(d / f"c{i}.bmp"), rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    (d / "bad.bmp").write_bytes(b"nope")
    return d


def test_edge_api_classifies_without_tensorflow(tiny_onnx, tmp_path):
    d = _folder(tmp_path)
    out = _run(f"""
        import json, sys
        from leuk_edge.edge import Classifier, classify_paths, expand_paths
        rows = list(classify_paths(Classifier({str(tiny_onnx)!r}), expand_paths([{str(d)!r}]).images))
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY!r})
        print(json.dumps({{"labels": [r.label for r in rows], "heavy": heavy}}))
    """)
    assert set(out["labels"]) - {"error"} <= {"all", "hem"}
    assert out["labels"].count("error") == 1 and len(out["labels"]) == 4
    assert out["heavy"] == []


def test_cli_classify_and_bench_without_tensorflow(tiny_onnx, tmp_path):
    d = _folder(tmp_path)
    csv_path = tmp_path / "rows.csv"
    out = _run(f"""
        import json, sys
        from leuk_edge.cli import app
        codes = []
        for args in (["classify", {str(d)!r}, "-m", {str(tiny_onnx)!r}, "-o", {str(csv_path)!r}],
                     ["bench", {str(tiny_onnx)!r}, "-b", "1", "--runs", "2"]):
            try:
                codes.append(app(args, standalone_mode=False) or 0)  # click returns the exit code
            except SystemExit as exc:
                codes.append(exc.code)
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY!r})
        print(json.dumps({{"codes": codes, "heavy": heavy}}))
    """)
    assert out["codes"] == [0, 0]
    assert len(csv_path.read_text().splitlines()) == 5
    assert out["heavy"] == []
