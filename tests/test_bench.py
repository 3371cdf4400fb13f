"""`leuk-edge bench`: model-only latency/throughput per batch size, providers and threads reported."""

import json

import pytest
from typer.testing import CliRunner

from leuk_edge.cli import app
from leuk_edge.edge import Classifier, bench_model


def invoke(args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_bench_json(tiny_onnx):
    res = invoke(["bench", tiny_onnx, "--batch-sizes", "1,4", "--runs", "5", "--warmup", "2", "--threads", "1",
                  "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["providers"] == ["CPUExecutionProvider"] and report["threads"] == 1
    assert report["input"] == [32, 32, 3] and report["warmup"] == 2
    assert [r["batch_size"] for r in report["results"]] == [1, 4]
    for r in report["results"]:
        assert r["runs"] == 5 and 0 < r["p50_ms"] <= r["p95_ms"] and r["images_per_s"] > 0


def test_bench_table(tiny_onnx):
    res = invoke(["bench", tiny_onnx, "-b", "2", "--runs", "3", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    text = " ".join(res.stderr.split())
    assert "p50 ms" in text and "p95 ms" in text and "CPUExecutionProvider" in text and "warm-up" in text


def test_bench_api_min_time(tiny_onnx):
    report = bench_model(Classifier(tiny_onnx), [2], runs=1, warmup=0, min_time_s=0.05)
    assert report.results[0].runs > 1  # kept going for min_time_s


@pytest.mark.parametrize("args, words", [
    (["--batch-sizes", "1,x"], "comma-separated"),
    (["--batch-sizes", "0"], ">= 1"),
    (["--device", "coreml"], "not available"),
])
def test_bench_usage_errors(tiny_onnx, args, words, monkeypatch):
    import onnxruntime as ort

    # Where CoreML exists, hide it: the test is about a device this machine lacks, never a skip.
    have = [p for p in ort.get_available_providers() if p != "CoreMLExecutionProvider"]
    monkeypatch.setattr(ort, "get_available_providers", lambda: have)
    res = invoke(["bench", tiny_onnx, *args])
    assert res.exit_code == 2 and words in res.output
    assert len([ln for ln in res.output.splitlines() if ln.strip()]) == 1


def test_bench_missing_model(tmp_path):
    res = invoke(["bench", tmp_path / "none.onnx"])
    assert res.exit_code == 2 and "model file not found" in res.output
