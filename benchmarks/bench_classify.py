"""classify end-to-end vs the model alone in onnxruntime vs Keras reading the same folder.

    python benchmarks/bench_classify.py [--n 400] [--size 256] [--batch 8] [--repeats 3]

Makes a folder of N 450x450 BMPs (synthetic C-NMC cells), exports the from-scratch CNN (random weights: speed
does not depend on them) to ONNX with the `leuk_edge` metadata, then measures in one process:

  model-only   onnxruntime session.run over pre-decoded float32 tensors, batch B (the ceiling for classify)
  classify     leuk_edge.edge expand_paths + classify_paths (decode + preprocess threads + batched ORT), batch B,
               rows written to a CSV
  keras        keras.utils.image_dataset_from_directory(...).map(x / 255).prefetch + model.predict, batch B

Model-only and classify alternate `--repeats` times (the medians are reported) so machine noise hits both alike.
Writes benchmarks/results/bench_classify.{md,json} and prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def make_folder(folder: Path, n: int, seed: int = 0) -> list[Path]:
    from leuk_edge.train.synth import render_cnmc_image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        p = folder / f"cell_{i:05d}.bmp"
        if not p.exists():
            rgb = render_cnmc_image(rng, "all" if rng.random() < 0.68 else "hem")
            cv2.imwrite(str(p), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        paths.append(p)
    return paths


def export_cnn(path: Path, size: int):
    """Build the CNN (random weights) and export it with tf2onnx + the leuk_edge metadata. -> keras model."""
    import onnx
    import tensorflow as tf
    import tf2onnx

    from leuk_edge import __version__
    from leuk_edge.edge.metadata import METADATA_KEY
    from leuk_edge.train.models import RESIZE, build

    model, _ = build("cnn", size)
    spec = (tf.TensorSpec((None, size, size, 3), tf.float32, name="image"),)
    proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=17)
    meta = {
        "schema_version": 1, "architecture": "cnn", "classes": ["hem", "all"], "threshold": 0.5,
        "input": {"name": "image", "height": size, "width": size, "channels": 3, "layout": "NHWC",
                  "color": "RGB", "scale": 1 / 255, "resize": RESIZE["cnn"]},
        "output": {"name": proto.graph.output[0].name, "meaning": "P(all)"},
        "source_sha256": "0" * 64, "leuk_edge_version": __version__, "created": "benchmark",
    }
    onnx.helper.set_model_props(proto, {METADATA_KEY: json.dumps(meta)})
    onnx.save(proto, str(path))
    return model


def time_model_only(clf, x: np.ndarray, batch: int) -> float:
    """images/s of session.run alone over pre-decoded tensors (batches sliced beforehand)."""
    sess, inp, out = clf.session, clf.input_name, [clf.output_name]
    batches = [np.ascontiguousarray(x[i:i + batch]) for i in range(0, len(x), batch)]
    t0 = time.perf_counter()
    for b in batches:
        sess.run(out, {inp: b})
    return len(x) / (time.perf_counter() - t0)


def time_classify(clf, folder: Path, batch: int, workers: int | None, csv_path: Path) -> tuple[float, dict]:
    from leuk_edge.edge import StageTimes, classify_paths, expand_paths
    from leuk_edge.edge.writers import open_writer

    times = StageTimes()
    t0 = time.perf_counter()
    files = expand_paths([folder])
    n = 0
    with open_writer(csv_path) as w:
        for row in classify_paths(clf, files.images, batch_size=batch, workers=workers, times=times):
            w.write(row)
            n += 1
    dt = time.perf_counter() - t0
    assert n == len(files.images) and times.errors == 0
    return n / dt, times.to_dict()


def time_keras(model, folder: Path, size: int, batch: int) -> float:
    import keras
    import tensorflow as tf

    def dataset():
        ds = keras.utils.image_dataset_from_directory(
            str(folder), labels=None, image_size=(size, size), batch_size=batch, shuffle=False,
            interpolation="area", verbose=False)
        return ds.map(lambda x: x / 255.0, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)

    model.predict(np.zeros((batch, size, size, 3), np.float32), verbose=0)  # trace + warm-up, excluded
    t0 = time.perf_counter()
    p = model.predict(dataset(), verbose=0)
    dt = time.perf_counter() - t0
    return len(p) / dt


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=400, help="number of 450x450 BMPs")
    ap.add_argument("--size", type=int, default=256, help="CNN input size")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--workers", type=int, default=None, help="classify decode threads (default: auto)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--keras-repeats", type=int, default=1)
    ap.add_argument("--data", type=Path, default=None, help="folder for the BMPs (kept; default: a temp dir)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)

    from leuk_edge.edge import Classifier, load_image

    with tempfile.TemporaryDirectory(prefix="leuk_bench_") as tmp:
        tmp = Path(tmp)
        folder = args.data or tmp / "cells"
        print(f"writing {args.n} 450x450 BMPs to {folder} ...", file=sys.stderr)
        paths = make_folder(folder, args.n)
        onnx_path = tmp / "cnn.onnx"
        print(f"exporting the CNN at {args.size} to ONNX ...", file=sys.stderr)
        keras_model = export_cnn(onnx_path, args.size)
        clf = Classifier(onnx_path)  # the model alone: onnxruntime's default session options
        clf_pipe = Classifier(onnx_path, spinning=False)  # what `leuk-edge classify` opens
        x = np.stack([load_image(p, args.size, args.size, clf.info.input.resize) for p in paths])
        for c in (clf, clf_pipe):
            time_model_only(c, x[: args.batch * 3], args.batch)  # warm-up, excluded
        time_classify(clf_pipe, folder, args.batch, args.workers, tmp / "rows.csv")  # page cache, warm-up

        load_before = os.getloadavg()
        model_only, model_only_nospin, classify, stages = [], [], [], []
        for r in range(args.repeats):
            model_only.append(time_model_only(clf, x, args.batch))
            model_only_nospin.append(time_model_only(clf_pipe, x, args.batch))
            ips, st = time_classify(clf_pipe, folder, args.batch, args.workers, tmp / "rows.csv")
            classify.append(ips)
            stages.append(st)
            print(f"repeat {r + 1}: model-only {model_only[-1]:.1f} img/s (spinning off "
                  f"{model_only_nospin[-1]:.1f}), classify {ips:.1f} img/s", file=sys.stderr)
        del x
        keras_runs = [time_keras(keras_model, folder, args.size, args.batch) for _ in range(args.keras_repeats)]
        print(f"keras: {', '.join(f'{k:.1f}' for k in keras_runs)} img/s", file=sys.stderr)

    load_after = os.getloadavg()
    mo, mo2, cl, ke = (statistics.median(v) for v in (model_only, model_only_nospin, classify, keras_runs))
    result = {
        "n_images": args.n, "image": "450x450 BMP (synthetic C-NMC cell)", "model": f"cnn {args.size}x{args.size}",
        "batch": args.batch, "repeats": args.repeats, "providers": clf.providers,
        "cpu_count": os.cpu_count(), "machine": platform.platform(), "python": platform.python_version(),
        "load_average_before_after": [load_before, load_after],
        "images_per_s": {"model_only": mo, "model_only_spinning_off": mo2, "classify": cl, "keras": ke},
        "runs": {"model_only": model_only, "model_only_spinning_off": model_only_nospin, "classify": classify,
                 "keras": keras_runs},
        "ratios": {"classify_vs_model_only": cl / mo, "classify_vs_model_only_spinning_off": cl / mo2,
                   "classify_vs_keras": cl / ke},
        "targets": {"classify_vs_model_only": 0.95, "classify_vs_keras": 3.0},
        "classify_stages_last_run": stages[-1],
    }
    table = "\n".join([
        f"# classify vs model-only vs Keras ({args.n} x 450x450 BMP, CNN {args.size}, batch {args.batch}, "
        f"{os.cpu_count()} CPU cores, {', '.join(clf.providers)})",
        "",
        "| pipeline | images/s (median) | ratio to classify | target |",
        "|---|---:|---:|---|",
        f"| onnxruntime model only (pre-decoded tensors) | {mo:.1f} | classify = {cl / mo:.3f} x | >= 0.95 x |",
        f"| onnxruntime model only, intra-op spinning off (classify's session) | {mo2:.1f} | "
        f"classify = {cl / mo2:.3f} x | |",
        f"| `leuk-edge classify` end-to-end (decode + preprocess + ORT) | {cl:.1f} | 1 | |",
        f"| Keras `image_dataset_from_directory` + `predict` | {ke:.1f} | classify = {cl / ke:.2f} x | >= 3 x |",
        "",
        f"classify stages (last run): decode+preprocess {stages[-1]['decode_ms_per_image']:.2f} ms/image on worker "
        f"threads, inference {stages[-1]['infer_ms_per_image']:.2f} ms/image, waiting on decode "
        f"{1000 * stages[-1]['wait_s']:.0f} ms. Load average before/after: "
        f"{load_before[0]:.2f} / {load_after[0]:.2f} (other processes on the machine skew all rows).",
        "",
    ])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_classify.md").write_text(table)
    (args.out / "bench_classify.json").write_text(json.dumps(result, indent=2))
    print(table)
    return result


if __name__ == "__main__":
    main()
