"""classify end-to-end vs the model alone in onnxruntime vs Keras reading the same folder.

    python benchmarks/bench_classify.py [--n 400] [--size 256] [--batch 8] [--repeats 5]

Makes a folder of N 450x450 BMPs (synthetic C-NMC cells), exports the from-scratch CNN (random weights: speed
does not depend on them) to ONNX with the `leuk_edge` metadata, then measures in one process:

  model-only   Classifier.predict (one onnxruntime session.run) over pre-decoded float32 tensors, batch B
               (the ceiling for classify)
  classify     leuk_edge.edge expand_paths + classify_paths (decode + preprocess threads + batched ORT), batch B,
               rows written to a CSV, with the CLI's thread split (`thread_split`: decode workers, intra-op
               threads), and the same for a grid of other splits (workers 1..2 x intra-op threads 1..cores)
  keras        keras.utils.image_dataset_from_directory(...).map(x / 255).prefetch + model.predict, batch B

All four alternate for `--repeats` rounds after a warm-up round, so other load on the machine hits them alike; the
best round of each (the least disturbed) gives the ratios, medians and CPU time per image are reported too.
Writes benchmarks/results/bench_classify.{md,json} and prints the table.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (RESULTS, batches, export_onnx, interleave, log, machine_info, markdown_table,  # noqa: E402
                    ort_runner, preprocessed, save_random_model, summarize, write_cells, write_results)


GATE_CELLS = 120  # cells the export gates run on (>= 100: what `--precision auto` asks of an INT8 gate)


def export_cnn(folder: Path, size: int):
    """The CNN with random weights, saved and exported to ONNX with its INT8 variant (leuk_edge metadata, parity
    gates on GATE_CELLS synthetic cells, so `--precision auto` may take the INT8 file). -> (onnx path, keras
    model); a model that failed its gate is still timed."""
    keras_path, model = save_random_model("cnn", folder, size=size)
    cells = folder / "gate_cells"
    write_cells(cells, GATE_CELLS, seed=1)
    result = export_onnx(keras_path, folder / "cnn.onnx", int8=True, verbose=False, parity_data=cells,
                         calib_data=cells)
    if not result.fp32.passed:
        log(f"warning: the FP32 parity gate failed ({result.fp32.path}); timing it anyway")
    return result.fp32.path, model


def cpu_ceiling(cores: int, model_cpu_ms: float, pre_cpu_ms: float, model_only: float) -> dict:
    """What two stages sharing the cores allow at best: every core busy on model + preprocessing CPU time, no
    waiting. -> {images_per_s, vs_model_only}: the limit for `classify / model only` on this machine."""
    ceiling = cores * 1000.0 / (model_cpu_ms + pre_cpu_ms)
    return {"cores": cores, "model_cpu_ms": model_cpu_ms, "preprocess_cpu_ms": pre_cpu_ms,
            "images_per_s": ceiling, "vs_model_only": min(1.0, ceiling / model_only)}


def classify(clf, folder: Path, batch: int, workers: int | None, csv_path: Path, stages: list | dict):
    from leuk_edge.edge import StageTimes, classify_paths, expand_paths
    from leuk_edge.edge.writers import open_writer

    def run() -> tuple[int, list]:
        times = StageTimes()
        files = expand_paths([folder])
        n = 0
        with open_writer(csv_path) as w:
            for row in classify_paths(clf, files.images, batch_size=batch, workers=workers, times=times):
                w.write(row)
                n += 1
        assert n == len(files.images) and times.errors == 0
        if isinstance(stages, list):
            stages.append(times.to_dict())
        else:
            stages.update(times.to_dict())
        return n, []

    return run


def keras_folder(model, folder: Path, size: int, batch: int):
    import keras
    import tensorflow as tf

    def run() -> tuple[int, list]:
        ds = keras.utils.image_dataset_from_directory(
            str(folder), labels=None, image_size=(size, size), batch_size=batch, shuffle=False,
            interpolation="area", verbose=False)
        ds = ds.map(lambda x: x / 255.0, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
        return len(model.predict(ds, verbose=0)), []

    return run


def preprocess_cpu_ms(paths, size: int, resize: str, rounds: int = 3) -> dict:
    """CPU ms per image (this thread's CPU time, best of `rounds` passes, one OpenCV thread) of decode + preprocess
    into a batch slot: the fast path vs the generic OpenCV path (cv2.imread, INTER_AREA on 8 bits). Thread CPU
    time is far less sensitive to other load on the machine than wall time."""
    import time

    import cv2
    import numpy as np

    from bench_all import generic_preprocessing
    from leuk_edge.edge.preprocess import decode_bgr, resize_scale

    out = np.empty((size, size, 3), np.float32)
    before = cv2.getNumThreads()
    cv2.setNumThreads(1)

    def one_pass() -> tuple[float, float]:
        dec = res = 0.0
        for p in paths:
            t0 = time.thread_time()
            src = decode_bgr(p)
            t1 = time.thread_time()
            resize_scale(src, size, size, resize, out=out, swap_rb=True)
            res += time.thread_time() - t1
            dec += t1 - t0
        return 1000 * dec / len(paths), 1000 * res / len(paths)

    result = {}
    try:
        for name, ctx in (("fast", None), ("generic", generic_preprocessing)):
            best = None
            for _ in range(rounds):
                with ctx() if ctx else contextlib.nullcontext():
                    d, r = one_pass()
                best = (d, r) if best is None or d + r < sum(best) else best
            result[name] = {"decode_cpu_ms": best[0], "resize_cpu_ms": best[1], "total_cpu_ms": sum(best)}
    finally:
        cv2.setNumThreads(before)
    return result


PIPELINES = {
    "model_only": "onnxruntime model only (pre-decoded tensors, default session)",
    "model_only_spinning_off": "onnxruntime model only, intra-op spinning off (classify's session)",
    "classify": "`leuk-edge classify` end-to-end (expand + decode + preprocess + ORT + CSV)",
    "keras": "Keras `image_dataset_from_directory` + `predict`",
    "model_only_auto": "onnxruntime model only, the file `--precision auto` picks (classify's session)",
    "classify_auto": "`leuk-edge classify --precision auto` end-to-end",
}


def grid_runs(onnx_path: Path, folder: Path, batch: int, default: tuple[int, int], cores: int, tmp: Path,
              grid_stages: dict) -> dict:
    """classify with other thread splits (decode workers 1..2 x intra-op threads 1..cores), the CLI's excluded."""
    from leuk_edge.edge import Classifier

    runs = {}
    for w in (1, 2):
        for t in sorted({1, cores}):
            if (w, t) == default:
                continue
            key = f"classify_w{w}_t{t}"
            PIPELINES[key] = f"classify, {w} decode worker(s), {t} intra-op thread(s)"
            grid_stages[key] = {}
            runs[key] = classify(Classifier(onnx_path, threads=t, spinning=False), folder, batch, w,
                                 tmp / f"rows_{key}.csv", grid_stages[key])
    return runs


def markdown_rows(args, meta: dict, providers: list, result: dict, best: dict, median: dict,
                  cpu: dict) -> list[str]:
    """The table and the lines under it."""
    ratios, ceilings, auto = result["ratios"], result["cpu_ceiling"], result["auto"]
    pre_cpu = result["preprocess_cpu_ms"]
    st = result["classify_stages_last_run"]
    load_before, load_after = result["load_average_before_after"]
    rows = [
        f"# classify vs model-only vs Keras ({args.n} x 450x450 BMP, CNN {args.size}, batch {args.batch}, "
        f"{meta['logical_cores']} CPU cores, {', '.join(providers)})",
        "",
        f"Best of {args.repeats} interleaved rounds (median in brackets); CPU ms/image = process CPU time "
        "(all threads) per image.",
        "",
        markdown_table(["pipeline", "images/s best (median)", "CPU ms/image", "classify / this (best)"],
                       [[label, f"{best[k]:.1f} ({median[k]:.1f})", f"{cpu[k]:.2f}",
                         "1" if k == "classify" else f"{best['classify'] / best[k]:.3f} x"]
                        for k, label in PIPELINES.items()]),
    ]
    rows += [
        "",
        f"Targets: classify >= 0.90 x model only -> {ratios['classify_vs_model_only']:.3f} x; "
        f"classify >= 3 x Keras -> {ratios['classify_vs_keras']:.2f} x (FP32); `--precision auto` runs "
        f"{auto['used'].upper()} ({auto['reason']}): {ratios['classify_auto_vs_keras']:.2f} x Keras "
        f"(median {ratios['median_classify_auto_vs_keras']:.2f} x), "
        f"{ratios['classify_auto_vs_model_only_auto']:.3f} x its model alone.",
        *[f"CPU budget ({k}): {c['cores']} cores / (model {c['model_cpu_ms']:.2f} + preprocessing "
          f"{c['preprocess_cpu_ms']:.2f} CPU ms per image) = at most {c['images_per_s']:.0f} img/s = "
          f"{c['vs_model_only']:.3f} x the model alone: the ceiling for classify / model only when decoding and "
          "resizing share the cores with the model." for k, c in ceilings.items()],
        f"classify stages (last run): decode {st['decode_ms_per_image']:.2f} + resize {st['resize_ms_per_image']:.2f} "
        f"ms/image on worker threads, inference {st['infer_ms_per_image']:.2f} ms/image, waiting on the workers "
        f"{1000 * st['wait_s']:.0f} ms.",
        "Preprocessing CPU ms per image (one thread, best of 3 passes): " + "; ".join(
            f"{k} decode {v['decode_cpu_ms']:.3f} + resize/scale {v['resize_cpu_ms']:.3f} = {v['total_cpu_ms']:.3f}"
            for k, v in pre_cpu.items())
        + f" (fast / generic = {pre_cpu['fast']['total_cpu_ms'] / pre_cpu['generic']['total_cpu_ms']:.2f}).",
        f"Load average before/after: {load_before[0]:.2f} / {load_after[0]:.2f} (other processes on the machine "
        "skew every row; best-of is the least disturbed run).",
        "",
    ]
    return rows


def ratios_of(best: dict, median: dict) -> dict:
    """classify (FP32 and auto) against the model alone and against Keras: best rounds, and medians."""
    return {
        "classify_vs_model_only": best["classify"] / best["model_only"],
        "classify_vs_model_only_spinning_off": best["classify"] / best["model_only_spinning_off"],
        "classify_vs_keras": best["classify"] / best["keras"],
        "median_classify_vs_model_only": median["classify"] / median["model_only"],
        "median_classify_vs_keras": median["classify"] / median["keras"],
        "classify_auto_vs_keras": best["classify_auto"] / best["keras"],
        "classify_auto_vs_model_only_auto": best["classify_auto"] / best["model_only_auto"],
        "median_classify_auto_vs_keras": median["classify_auto"] / median["keras"],
    }


def build_runs(args, folder: Path, paths: list, onnx_path: Path, keras_model, tmp: Path) -> dict:
    """The pipelines to time (model alone FP32/auto, classify FP32/auto, Keras, the grid of thread splits)."""
    from leuk_edge.edge import Classifier
    from leuk_edge.edge.classify import available_cores, thread_split
    from leuk_edge.edge.precision import choose_precision

    clf = Classifier(onnx_path)  # the model alone: onnxruntime's default session options
    workers, threads = thread_split()
    workers = args.workers or workers
    clf_pipe = Classifier(onnx_path, threads=threads, spinning=False)  # what `leuk-edge classify` opens
    auto = choose_precision(onnx_path, "auto", "cpu")
    clf_auto = Classifier(auto.path, threads=threads, spinning=False)
    x = preprocessed(paths, args.size, args.size, clf.info.input.resize)
    xb = batches(x, args.batch)
    stages: list = []
    runs = {
        "model_only": ort_runner(clf, xb)[0],
        "model_only_spinning_off": ort_runner(clf_pipe, xb)[0],
        "classify": classify(clf_pipe, folder, args.batch, workers, tmp / "rows.csv", stages),
        "keras": keras_folder(keras_model, folder, args.size, args.batch),
        "model_only_auto": ort_runner(clf_auto, xb)[0],
        "classify_auto": classify(clf_auto, folder, args.batch, workers, tmp / "rows_auto.csv", {}),
    }
    cores = available_cores()
    grid_stages: dict = {}
    if not args.no_grid:
        runs |= grid_runs(onnx_path, folder, args.batch, (workers, threads), cores, tmp, grid_stages)
    PIPELINES["classify"] = (f"`leuk-edge classify` end-to-end, CLI thread split ({workers} decode worker(s), "
                             f"{threads} intra-op threads)")
    return {"runs": runs, "clf": clf, "stages": stages, "grid_stages": grid_stages, "auto": auto,
            "workers": workers, "threads": threads, "cores": cores}


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=400, help="number of 450x450 BMPs")
    ap.add_argument("--size", type=int, default=256, help="CNN input size")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--workers", type=int, default=None, help="classify decode threads (default: auto)")
    ap.add_argument("--no-grid", action="store_true", help="skip the grid of thread splits")
    ap.add_argument("--repeats", type=int, default=5, help="rounds; each round runs every pipeline once")
    ap.add_argument("--data", type=Path, default=None, help="folder for the BMPs (kept; default: a temp dir)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    return ap.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)

    meta = machine_info()
    with tempfile.TemporaryDirectory(prefix="leuk_bench_") as tmp:
        tmp = Path(tmp)
        folder = args.data or tmp / "cells"
        log(f"writing {args.n} 450x450 BMPs to {folder} ...")
        paths = write_cells(folder, args.n)
        log(f"exporting the CNN at {args.size} to ONNX ...")
        onnx_path, keras_model = export_cnn(tmp / "cnn", args.size)
        ctx = build_runs(args, folder, paths, onnx_path, keras_model, tmp)
        runs, clf, stages = ctx["runs"], ctx["clf"], ctx["stages"]
        pre_cpu = preprocess_cpu_ms(paths, args.size, clf.info.input.resize)
        load_before = os.getloadavg()
        # a warm-up round of every pipeline (page cache, allocators, traces), excluded; then interleaved rounds,
        # so that other load hits every pipeline alike
        samples = interleave(runs, args.repeats, warmup=runs, on_round=lambda r, s: log(
            f"round {r + 1}: " + ", ".join(f"{k} {v[-1].images_per_s:.0f}" for k, v in s.items()) + " img/s"))
        load_after = os.getloadavg()

    summary = {k: summarize(v, args.batch) for k, v in samples.items()}
    best = {k: summary[k]["images_per_s_best"] for k in runs}
    median = {k: summary[k]["images_per_s"] for k in runs}
    cpu = {k: summary[k]["cpu_ms_per_image"] for k in runs}
    ratios = ratios_of(best, median)
    ceilings = {k: cpu_ceiling(ctx["cores"], cpu[m], pre_cpu["fast"]["total_cpu_ms"], best[m])
                for k, m in (("fp32", "model_only_spinning_off"), ("auto", "model_only_auto"))}
    result = {
        "n_images": args.n, "image": "450x450 BMP (synthetic C-NMC cell)", "model": f"cnn {args.size}x{args.size}",
        "batch": args.batch, "repeats": args.repeats, "providers": clf.providers, "machine": meta,
        "load_average_before_after": [load_before, load_after],
        "images_per_s_best": best, "images_per_s_median": median, "cpu_ms_per_image_median": cpu,
        "summary": summary, "ratios": ratios,
        "targets": {"classify_vs_model_only": 0.90, "classify_vs_keras": 3.0, "classify_auto_vs_keras": 3.0},
        "auto": ctx["auto"].to_dict(), "cpu_ceiling": ceilings,
        "classify_stages_last_run": stages[-1], "grid_stages_last_run": ctx["grid_stages"],
        "thread_split": {"cores": ctx["cores"], "workers": ctx["workers"], "intra_op_threads": ctx["threads"]},
        "preprocess_cpu_ms": pre_cpu,
    }
    rows = markdown_rows(args, meta, clf.providers, result, best, median, cpu)
    table = "\n".join(rows)
    write_results(args.out, "bench_classify", table, result)
    print(table)
    return result


if __name__ == "__main__":
    main()
