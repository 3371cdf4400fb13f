"""Export benchmark: both architectures at full size, side by side in one run.

For each model: export time (tf2onnx + checks), FP32 Keras/ONNX max_abs_diff (the parity gate) and the `cam`
maps' max_abs_diff, FP16 max_abs_diff, INT8 quantization time, onnxruntime throughput at batch 8 of FP32 without
the `cam` output (a --no-cam conversion of the same model), FP32 with it (both outputs fetched) and INT8
(interleaved rounds on the same inputs, median), and INT8 decision agreement with FP32 at the model's threshold. Writes a markdown table and JSON to
benchmarks/results/.

Without --keras the models are built with weights=None (no network) and made to *behave* like trained ones
cheaply: BatchNorm statistics from synthetic cells and a logistic head fitted on the (random) features, with the
threshold chosen on held-out cells. The speed numbers do not depend on this; the agreement numbers do, and on a
random-feature InceptionV3 they are a pessimistic stand-in for a trained model's. Pass trained runs' model.keras
(with config.json beside them) to measure those instead.

    python benchmarks/bench_export.py                  # cnn 256 + inception 224
    python benchmarks/bench_export.py --keras runs/cnn/model.keras runs/inc/model.keras
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # tests/support: helpers kept out of the wheel

import numpy as np  # noqa: E402

from support.cells import labelled_cells  # noqa: E402
from common import (RESULTS, artifact, export_onnx, fmt, log, machine_info, markdown_table, save_run,  # noqa: E402
                    time_calls, write_results)


def fit_head(model, size: int, n_fit: int = 64, n_val: int = 48, bn_batch: int = 16) -> tuple[float, float]:
    """BatchNorm statistics from data + logistic head on the frozen random features; -> (threshold, val acc)."""
    from support.probe import fit_linear_probe

    x, y = labelled_cells(n_fit, size, seed=11)
    xv, yv = labelled_cells(n_val, size, seed=12)
    return fit_linear_probe(model, x, y, xv, yv, bn_batch=bn_batch)


def make_run(name: str, folder: Path) -> tuple[Path, dict]:
    import keras

    from leuk_edge.train.models import DEFAULT_SIZE, build

    keras.utils.set_random_seed(0)
    size = DEFAULT_SIZE[name]
    t0 = time.perf_counter()
    model, _ = build(name, size, weights=None)
    threshold, val_acc = fit_head(model, size)
    path = save_run(model, name, folder, size, threshold)
    return path, {"source": "weights=None + fitted head", "head_val_accuracy": val_acc,
                  "prepare_seconds": time.perf_counter() - t0, "params": model.count_params()}


def throughput(clfs: dict, x: np.ndarray, batch: int, rounds: int, min_seconds: float) -> dict:
    """img/s per model (Classifier), median over rounds; models alternate within each round so CPU contention from
    other processes hits both alike. The first round also runs 3 untimed warm-up calls per model."""
    xb = np.ascontiguousarray(x[:batch])
    calls = {k: (lambda s=c.session, o=[c.output_name] + ([c.cam_name] if c.has_cam else []), i=c.input_name:
                 s.run(o, {i: xb})) for k, c in clfs.items()}
    rates = {k: [] for k in clfs}
    for r in range(rounds):
        for k, fn in calls.items():
            lat = time_calls(fn, runs=3, warmup=3 if r == 0 else 0, min_time_s=min_seconds)
            rates[k].append(len(lat) * batch / sum(lat))
    return {k: float(np.median(v)) for k, v in rates.items()}


def no_cam_copy(keras_path: Path, fp32_onnx: Path) -> Path:
    """The same model converted without the `cam` output (calibration kept), with the exported file's metadata:
    what `export --no-cam` writes, without its gates (only timed here)."""
    import onnx

    from leuk_edge.export.convert import convert_keras, set_metadata
    from leuk_edge.export.keras_io import load_keras_model, source_info
    from leuk_edge.train.graph import explain_model

    model = load_keras_model(keras_path)
    src = source_info(model, keras_path)
    proto = convert_keras(explain_model(model, src.temperature, cam=False), src.height, src.width)
    meta = {p.key: p.value for p in onnx.load(str(fp32_onnx)).metadata_props}["leuk_edge"]
    set_metadata(proto, meta)
    out = fp32_onnx.with_name(fp32_onnx.stem + ".nocam.onnx")
    onnx.save(proto, str(out))
    return out


def bench_one(keras_path: Path, info: dict, args) -> dict:
    from leuk_edge.edge import Classifier

    log(f"== {keras_path}")
    res = export_onnx(keras_path, keras_path.with_suffix(".onnx"), parity_n=args.parity_size, fp16=True,
                      int8=True, calib_size=args.calib_size, variant_n=args.agreement_size)
    fp16, int8 = artifact(res, "fp16"), artifact(res, "int8")
    clf32 = Classifier(res.fp32.path, device="cpu", threads=args.threads)  # its metadata: what the export wrote
    src = clf32.info
    row = {
        "model": keras_path.parent.name, "architecture": src.architecture, "size": src.input.height,
        "threshold": src.threshold, **info,
        "export_seconds": res.fp32.seconds, "export_total_seconds": res.total_seconds,
        "onnx_mb": res.fp32.path.stat().st_size / 2**20,
        "fp32_passed": res.fp32.passed, "fp32_max_abs_diff": res.fp32.parity.max_abs_diff,
        "fp32_pipeline_max_abs_diff": (res.fp32.parity.pipeline or {}).get("max_abs_diff"),
        "parity_n": res.fp32.parity.n,
    }
    if fp16:
        row.update(fp16_max_abs_diff=fp16.parity.max_abs_diff, fp16_passed=fp16.passed,
                   fp16_agreement=fp16.parity.decision_agreement)
    if res.fp32.parity.cam:
        row.update(cam_grid=res.fp32.parity.cam["grid"], cam_max_abs_diff=res.fp32.parity.cam["max_abs_diff"],
                   cam_scale=res.fp32.parity.cam["scale"])
    if int8:
        x, _ = labelled_cells(args.batch, src.input.height, seed=99)
        clfs = {"fp32": clf32, "int8": Classifier(int8.path, device="cpu", threads=args.threads)}
        if clf32.has_cam:
            clfs["fp32_nocam"] = Classifier(no_cam_copy(keras_path, res.fp32.path), device="cpu",
                                            threads=args.threads)
        rates = throughput(clfs, x, args.batch, args.rounds, args.seconds)
        row.update(int8_seconds=int8.seconds, int8_mb=int8.path.stat().st_size / 2**20,
                   int8_agreement=int8.parity.decision_agreement, int8_n=int8.parity.n, int8_passed=int8.passed,
                   int8_max_abs_diff=int8.parity.max_abs_diff, fp32_img_s=rates["fp32"], int8_img_s=rates["int8"],
                   int8_speedup=rates["int8"] / rates["fp32"], fp32_nocam_img_s=rates.get("fp32_nocam"),
                   cam_cost=(rates["fp32_nocam"] / rates["fp32"]) if "fp32_nocam" in rates else None)
    log(f"  {json.dumps(row, default=str)}")
    return row


def markdown(rows: list, meta: dict) -> str:
    f = lambda v, spec: fmt(v, spec, none="-")  # noqa: E731
    headers = ["model", "size", "export s", "FP32 max abs diff", "pipeline max abs diff", "cam max abs diff (max |cam|)",
               "FP16 max abs diff", "FP32 no-cam img/s", "FP32 img/s", "no-cam/cam", "INT8 img/s", "INT8/FP32",
               "INT8 agreement (n)", "INT8 gate"]
    table = [[r["architecture"], r["size"], f(r["export_seconds"], ".1f"), f(r["fp32_max_abs_diff"], ".2e"),
              f(r.get("fp32_pipeline_max_abs_diff"), ".2e"),
              f"{f(r.get('cam_max_abs_diff'), '.2e')} ({f(r.get('cam_scale'), '.3g')})",
              f(r.get("fp16_max_abs_diff"), ".2e"), f(r.get("fp32_nocam_img_s"), ".1f"),
              f(r.get("fp32_img_s"), ".1f"), f(r.get("cam_cost"), ".2f") + "x",
              f(r.get("int8_img_s"), ".1f"), f(r.get("int8_speedup"), ".2f") + "x",
              f"{f(r.get('int8_agreement'), '.3f')} ({r.get('int8_n', '-')})",
              "pass" if r.get("int8_passed") else "FAIL"] for r in rows]
    v = meta["versions"]
    lines = [
        f"# Export benchmark ({meta['date']})", "",
        f"{meta['cpu']}, {meta['logical_cores']} cores; onnxruntime {v.get('onnxruntime', '?')}, tensorflow "
        f"{v.get('tensorflow', '?')}, tf2onnx {v.get('tf2onnx', '?')}; batch {meta['batch']}, threads "
        f"{meta['threads'] or 'default'}.", "",
        markdown_table(headers, table, align="l" * len(headers)),
    ]
    lines += ["", "Models: " + "; ".join(f"{r['architecture']}: {r['source']}"
                                        + (f" (head val acc {r['head_val_accuracy']:.2f})"
                                           if 'head_val_accuracy' in r else "") for r in rows),
              "Agreement = fraction of FP32/INT8 decisions equal at the model's threshold (synthetic cells). "
              "Throughput: onnxruntime CPU, full graph optimisation, median of interleaved rounds; FP32 and INT8 "
              "fetch both outputs (P(all) and cam), FP32 no-cam is the same model converted without the cam output."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keras", nargs="*", type=Path, help="Trained model.keras files (default: build cnn + inception)")
    ap.add_argument("--models", nargs="*", default=["cnn", "inception"], choices=["cnn", "inception"])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=2.0, help="Minimum seconds per model per round")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--parity-size", type=int, default=20)
    ap.add_argument("--agreement-size", type=int, default=200)
    ap.add_argument("--calib-size", type=int, default=64)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()

    meta = {**machine_info(), "batch": args.batch, "threads": args.threads}
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_export_") as tmp:
        if args.keras:
            runs = [(p, {"source": f"trained ({p})"}) for p in args.keras]
        else:
            runs = [make_run(name, Path(tmp) / name) for name in args.models]
        for keras_path, info in runs:
            rows.append(bench_one(Path(keras_path), info, args))
    md = markdown(rows, meta)
    write_results(args.out, "bench_export", md, {"meta": meta, "rows": rows})
    print(md)


if __name__ == "__main__":
    main()
