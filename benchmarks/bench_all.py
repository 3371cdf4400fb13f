"""Every way to run the models, side by side in one run on the same images: Keras predict, tf.function,
onnxruntime FP32 / INT8, OpenVINO (when installed) and `leuk-edge classify` end to end.

    python benchmarks/bench_all.py [--n 160] [--batch-size 8] [--repeats 5] [--models cnn,inception]
                                   [--out benchmarks/results] [--work DIR]

For each model at its full size (CNN 256, InceptionV3 224; random weights: speed only) the script saves a .keras
file, exports it with `leuk_edge.export.exporter.export_model` (FP32 parity gate + INT8 calibrated on the BMP
folder, agreement gate), counts the FLOPs of the ONNX graph, and times, on one folder of N synthetic 450x450 BMPs:

  keras_predict   the seed's way: keras.utils.image_dataset_from_directory(labels=None, image_size, batch_size)
                  .map(x / 255) + model.predict: reads and decodes the BMPs itself
  tf_function     tf.function(model(x, training=False), jit_compile=False) on pre-decoded tensors
  ort_fp32        onnxruntime, FP32 model, leuk_edge.edge.Classifier(...).predict on pre-decoded tensors
  ort_int8        the same with the INT8 (QDQ) model
  openvino_fp32   OpenVINO CPU plugin on the FP32 ONNX, pre-decoded tensors (a "not installed" row without it)
  classify_fp32   `leuk-edge classify FOLDER` end to end through the Python API the CLI calls (expand_paths,
  classify_int8   choose_precision, Classifier with the CLI's thread split and spinning=False, classify_paths
  classify_auto   with decode threads, rows written to a CSV); `auto` = the default `--precision auto`
  classify_fp32_generic  the same FP32 run with the fast preprocessing paths switched off (cv2.imread for the
                  BMPs, INTER_AREA on 8 bits): the path before issue 13, same pixels

Pre-decoded tensors come from THE edge preprocessing (decode, RGB, area resize, /255) of the same BMPs. After an
untimed warm-up of every engine, the engines alternate for --repeats rounds (each a full pass over the N images),
so other load on the machine hits them alike. Reported per engine: img/s (median over rounds), per-batch latency
p50/p95, ratios to Keras predict and to onnxruntime FP32, achieved GFLOP/s and its share of the CPU's FP32 peak.
Writes OUT/bench_all.md and OUT/bench_all.json and prints the markdown.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (RESULTS, artifact, batches, cpu_peak, export_onnx, export_summary, fmt,  # noqa: E402
                    interleave, intervals, log, machine_info, markdown_table, onnx_flops, ort_runner,
                    preprocessed, save_random_model, summarize, write_cells, write_results)

ENGINES = {
    "keras_predict": ("Keras `predict` (seed's way)", "BMP folder"),
    "tf_function": ("`tf.function`", "tensors"),
    "ort_fp32": ("onnxruntime FP32", "tensors"),
    "ort_int8": ("onnxruntime INT8", "tensors"),
    "openvino_fp32": ("OpenVINO FP32", "tensors"),
    "classify_fp32_generic": ("`leuk-edge classify` FP32, generic OpenCV preprocessing (before)", "BMP folder"),
    "classify_fp32": ("`leuk-edge classify` FP32", "BMP folder"),
    "classify_int8": ("`leuk-edge classify` INT8", "BMP folder"),
    "classify_auto": ("`leuk-edge classify` (default `--precision auto`)", "BMP folder"),
}
# (label, numerator, denominator, goal per model)
GOALS = [
    ("classify FP32 / model alone (onnxruntime FP32)", "classify_fp32", "ort_fp32", {"cnn": 0.90, "inception": 0.95}),
    ("classify default (`auto`) / Keras predict", "classify_auto", "keras_predict", {"cnn": 3.0, "inception": 3.0}),
    ("classify INT8 / classify FP32", "classify_int8", "classify_fp32", {"cnn": 1.2, "inception": 1.8}),
    ("classify FP32 / before (generic preprocessing)", "classify_fp32", "classify_fp32_generic", {}),
]
KERAS_INTERPOLATION = {"area": "area", "linear": "bilinear"}


# ---------------------------------------------------------------------------------------------------- runners
# Each maker returns (run, warm): run() -> (images, per-batch seconds) over the whole timed input; warm() is the
# untimed warm-up (traces, allocations, kernel choice) on a couple of batches.

def keras_predict_runner(model, folder: Path, warm_folder: Path, size: int, resize: str, batch: int):
    import keras
    import tensorflow as tf

    class Stamps(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.t: list[float] = []

        def on_predict_batch_end(self, batch, logs=None):
            self.t.append(time.perf_counter())

    def predict(where: Path):
        stamps = Stamps()
        t0 = time.perf_counter()
        ds = keras.utils.image_dataset_from_directory(
            str(where), labels=None, image_size=(size, size), batch_size=batch, shuffle=False,
            interpolation=KERAS_INTERPOLATION.get(resize, "bilinear"), verbose=False)
        ds = ds.map(lambda x: x / 255.0, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
        y = model.predict(ds, verbose=0, callbacks=[stamps])
        return len(y), intervals(t0, stamps.t)

    return (lambda: predict(folder)), (lambda: predict(warm_folder))


def tf_function_runner(model, xb: list, size: int):
    import tensorflow as tf

    fn = tf.function(lambda t: model(t, training=False), jit_compile=False,
                     input_signature=[tf.TensorSpec((None, size, size, 3), tf.float32)])
    tensors = [tf.constant(b) for b in xb]

    def over(ts):
        lat, n = [], 0
        for t in ts:
            t0 = time.perf_counter()
            n += len(fn(t).numpy())
            lat.append(time.perf_counter() - t0)
        return n, lat

    return (lambda: over(tensors)), (lambda: over(tensors[:2]))


def openvino_runner(onnx_path: Path, xb: list, settings: dict | None = None):
    """OpenVINO CPU plugin with its default configuration (no performance hint set); what it chose goes to
    `settings` (PERFORMANCE_HINT, NUM_STREAMS, INFERENCE_NUM_THREADS)."""
    import openvino as ov

    compiled = ov.Core().compile_model(str(onnx_path), "CPU")
    if settings is not None:
        for key in ("PERFORMANCE_HINT", "NUM_STREAMS", "INFERENCE_NUM_THREADS"):
            try:
                settings[key] = str(compiled.get_property(key))
            except Exception:  # noqa: BLE001 - a property this version does not report
                pass
    request = compiled.create_infer_request()

    def over(bs):
        lat, n = [], 0
        for b in bs:
            t0 = time.perf_counter()
            out = request.infer({0: b})
            n += len(next(iter(out.values())))
            lat.append(time.perf_counter() - t0)
        return n, lat

    return (lambda: over(xb)), (lambda: over(xb[:2]))


@contextlib.contextmanager
def generic_preprocessing():
    """The preprocessing before issue 13: cv2.imread for every file and INTER_AREA on 8 bits (same pixels)."""
    import importlib

    pre = importlib.import_module("leuk_edge.edge.preprocess")
    saved = pre.read_bmp_pixels, pre._float_area
    pre.read_bmp_pixels, pre._float_area = (lambda path, scratch: None), (lambda *a: False)
    try:
        yield
    finally:
        pre.read_bmp_pixels, pre._float_area = saved


def classify_runner(onnx_path: Path, folder: Path, warm_folder: Path, batch: int, workers: int | None,
                    csv_path: Path, precision: str = "fp32", generic: bool = False, info: dict | None = None):
    """`leuk-edge classify` as the CLI runs it: precision choice, thread split, spinning off; `info` receives the
    precision choice and the stage times of the last run."""
    from leuk_edge.edge import Classifier, StageTimes, classify_paths, expand_paths
    from leuk_edge.edge.classify import thread_split
    from leuk_edge.edge.precision import choose_precision
    from leuk_edge.edge.writers import open_writer

    choice = choose_precision(onnx_path, precision, "cpu")
    auto_workers, auto_threads = thread_split()
    workers = workers or auto_workers
    clf = Classifier(choice.path, threads=auto_threads, spinning=False)  # what `leuk-edge classify` opens
    if info is not None:
        info.update(precision=choice.to_dict(), workers=workers, threads=auto_threads)

    def classify(where: Path):
        t0 = time.perf_counter()
        stamps: list[float] = []
        times = StageTimes()
        files = expand_paths([where])
        n = 0
        with open_writer(csv_path) as w, (generic_preprocessing() if generic else contextlib.nullcontext()):
            for row in classify_paths(clf, files.images, batch_size=batch, workers=workers, times=times):
                if n % batch == 0:  # a batch's rows come out together, right after its inference
                    stamps.append(time.perf_counter())
                w.write(row)
                n += 1
        if times.errors or n != len(files.images):
            raise RuntimeError(f"classify read {n} of {len(files.images)} files, {times.errors} errors")
        if info is not None:
            info["times"] = times.to_dict()
        return n, intervals(t0, stamps)

    return (lambda: classify(folder)), (lambda: classify(warm_folder))


# ------------------------------------------------------------------------------------------------------ model

def bench_model(name: str, args, work: Path, folder: Path, warm_folder: Path, paths: list, peak_gflops: float):
    import tensorflow as tf

    from leuk_edge.edge import Classifier
    from leuk_edge.train.models import ARCHITECTURE, DEFAULT_SIZE, RESIZE

    size, resize = DEFAULT_SIZE[name], RESIZE[name]
    mdir = work / name
    log(f"== {name} {size}x{size}: saving a random-weight model and exporting it (FP32 + INT8, gates on)")
    keras_path, model = save_random_model(name, mdir, size, seed=args.seed)
    t0 = time.perf_counter()
    # The variant gates run on the folder's real images (>= 100): `--precision auto` runs a variant only when its gate
    # was the export's own on real images, never on synthetic cells (edge.precision).
    res = export_onnx(keras_path, mdir / "model.onnx", int8=True, parity_data=folder, calib_data=folder,
                      calib_size=args.calib_size, verbose=not args.quiet)
    log(f"  export + gates: {time.perf_counter() - t0:.0f} s; FP32 gate {'passed' if res.fp32.passed else 'FAILED'}"
        + "".join(f", {v.precision.upper()} gate {'passed' if v.passed else 'FAILED'}" for v in res.variants))
    fp32, int8 = artifact(res, "fp32"), artifact(res, "int8")
    flops = onnx_flops(fp32.path)
    log(f"  {flops['gflops']:.3f} GFLOP/image counted over {flops['nodes']} Conv/MatMul/Gemm nodes"
        + (f" ({len(flops['uncounted'])} without shapes)" if flops["uncounted"] else ""))

    x = preprocessed(paths, size, size, resize)
    xb = batches(x, args.batch_size)
    ov_settings: dict = {}
    classify_info: dict = {k: {} for k in ENGINES if k.startswith("classify")}
    del x
    makers = {
        "keras_predict": lambda: keras_predict_runner(model, folder, warm_folder, size, resize, args.batch_size),
        "tf_function": lambda: tf_function_runner(model, xb, size),
        "ort_fp32": lambda: ort_runner(Classifier(fp32.path), xb),
        "ort_int8": lambda: ort_runner(Classifier(int8.path), xb),
        "openvino_fp32": lambda: openvino_runner(fp32.path, xb, ov_settings),
        "classify_fp32_generic": lambda: classify_runner(fp32.path, folder, warm_folder, args.batch_size,
                                                         args.workers, mdir / "rows_generic.csv", "fp32",
                                                         generic=True, info=classify_info["classify_fp32_generic"]),
        "classify_fp32": lambda: classify_runner(fp32.path, folder, warm_folder, args.batch_size, args.workers,
                                                 mdir / "rows_fp32.csv", "fp32", info=classify_info["classify_fp32"]),
        "classify_int8": lambda: classify_runner(int8.path, folder, warm_folder, args.batch_size, args.workers,
                                                 mdir / "rows_int8.csv", "auto", info=classify_info["classify_int8"]),
        "classify_auto": lambda: classify_runner(fp32.path, folder, warm_folder, args.batch_size, args.workers,
                                                 mdir / "rows_auto.csv", "auto", info=classify_info["classify_auto"]),
    }
    runners, warm, status = {}, {}, {}
    for key, make in makers.items():
        if key.endswith("int8") and int8 is None:
            status[key] = "no INT8 model (the FP32 model failed its gate)"
            continue
        if key == "openvino_fp32":
            try:
                import openvino  # noqa: F401
            except ImportError:
                status[key] = "not installed"
                continue
        try:
            runners[key], warm[key] = make()
        except Exception as exc:  # noqa: BLE001 - one engine that cannot start is a row, not the end of the run
            status[key] = f"error: {type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}"
            log(f"  {key}: {status[key]}")

    load_before = os.getloadavg()
    log(f"  warm-up, then {args.repeats} interleaved round(s) of {len(paths)} images: {', '.join(runners)}")
    samples = interleave(runners, args.repeats, warmup=warm, on_round=lambda r, s: log(
        f"  round {r + 1}: " + ", ".join(f"{k} {v[-1].images_per_s:.1f}" for k, v in s.items()) + " img/s"))
    load_after = os.getloadavg()

    engines: dict = {}
    for key in ENGINES:
        if key in samples:
            engines[key] = summarize(samples[key], args.batch_size)
        else:
            engines[key] = {"status": status.get(key, "not run"), "images_per_s": None}
    keras_rate = engines["keras_predict"].get("images_per_s")
    ort_rate = engines["ort_fp32"].get("images_per_s")
    for key, e in engines.items():
        rate = e.get("images_per_s")
        if rate is None:
            continue
        e["vs_keras_predict"] = rate / keras_rate if keras_rate else None
        e["vs_ort_fp32"] = rate / ort_rate if ort_rate else None
        e["gflops_per_s"] = rate * flops["flops"] / 1e9
        e["pct_of_fp32_peak"] = 100.0 * e["gflops_per_s"] / peak_gflops
        e.setdefault("status", "ok")

    del runners, warm, samples, model, xb
    tf.keras.backend.clear_session()
    gc.collect()
    return {"architecture": ARCHITECTURE[name], "size": size, "resize": resize, "flops": flops,
            "export": export_summary(res), "load_before_after": [load_before, load_after], "engines": engines,
            "openvino_settings": ov_settings, "classify": classify_info,
            "goals": goal_rows(name, engines)}


def goal_rows(name: str, engines: dict) -> list[dict]:
    """The issue-13 ratios of one model, with the goal and whether it was reached."""
    out = []
    for label, num, den, goals in GOALS:
        a, b = engines.get(num, {}).get("images_per_s"), engines.get(den, {}).get("images_per_s")
        ratio = a / b if a and b else None
        goal = goals.get(name)
        out.append({"ratio": label, "value": ratio, "goal": goal,
                    "reached": None if goal is None or ratio is None else ratio >= goal})
    return out


# --------------------------------------------------------------------------------------------------- markdown

def model_table(m: dict) -> str:
    rows = []
    for key, (label, source) in ENGINES.items():
        e = m["engines"][key]
        if e.get("images_per_s") is None:
            rows.append([label, source, e.get("status", "–")] + ["–"] * 7)
            continue
        x = lambda v: fmt(v, ".2f") + " x" if v is not None else "–"  # noqa: E731
        rows.append([label, source, fmt(e["images_per_s"], ".1f"), fmt(e["batch_p50_ms"], ".1f"),
                     fmt(e["batch_p95_ms"], ".1f"), fmt(e.get("cpu_ms_per_image"), ".2f"),
                     x(e["vs_keras_predict"]), x(e["vs_ort_fp32"]),
                     fmt(e["gflops_per_s"], ".1f"), fmt(e["pct_of_fp32_peak"], ".1f") + " %"])
    return markdown_table(["engine", "input", "img/s", "batch p50 ms", "batch p95 ms", "CPU ms/img",
                           "vs Keras predict", "vs ORT FP32", "GFLOP/s", "% of FP32 peak"], rows, "llrrrrrrrr")


def goals_table(m: dict) -> str:
    rows = []
    for g in m["goals"]:
        v, goal = g["value"], g["goal"]
        verdict = "–" if g["reached"] is None else ("reached" if g["reached"] else
                                                    f"**not reached** ({100 * (v / goal - 1):+.0f} %)")
        rows.append([g["ratio"], fmt(v, ".2f") + " x" if v is not None else "–",
                     f">= {goal:.2f} x" if goal else "–", verdict])
    return markdown_table(["ratio (img/s / img/s, medians)", "measured", "goal", ""], rows, "lrrl")


def stage_line(m: dict) -> str:
    """Per-image stage times of the classify rows' last run (worker CPU for decode/resize, main-thread inference)."""
    parts = []
    for key in ("classify_fp32_generic", "classify_fp32", "classify_auto"):
        info = m.get("classify", {}).get(key) or {}
        t = info.get("times")
        if not t:
            continue
        prec = (info.get("precision") or {}).get("used", "?").upper()
        parts.append(f"{ENGINES[key][0]} [{prec}, {info.get('workers')} worker(s), {info.get('threads')} intra-op "
                     f"threads]: decode {t['decode_ms_per_image']:.2f}, resize {t['resize_ms_per_image']:.2f}, "
                     f"inference {t['infer_ms_per_image']:.2f}, wait {t['wait_ms_per_image']:.2f} ms/image")
    return "- classify stages (last round; decode/resize are worker-thread times, overlapping inference): " + \
        "; ".join(parts) + "."


def gate_line(m: dict) -> str:
    ex = m["export"]
    parts = []
    for prec in ("fp32", "int8"):
        a = ex.get(prec)
        if not a:
            continue
        crit = (f"max abs diff {a['max_abs_diff']:.1e}" if prec == "fp32"
                else f"agreement {a['decision_agreement']:.3f} on {a['n']}")
        parts.append(f"{prec.upper()} {'passed' if a['passed'] else 'FAILED'} ({crit})")
    return "; ".join(parts)


def thread_line(result: dict) -> str:
    tf_threads = result["settings"].get("tensorflow_threads") or {}
    intra, inter = tf_threads.get("intra_op", 0), tf_threads.get("inter_op", 0)
    line = ("- Threads: TensorFlow (Keras predict, tf.function) left at its defaults (intra_op_parallelism_threads "
            f"{intra}, inter_op_parallelism_threads {inter}; 0 = TensorFlow sizes the pools from the logical cores); ")
    ov = [f"{m['architecture']}: " + ", ".join(f"{k} {v}" for k, v in m["openvino_settings"].items())
          for m in result["models"].values() if m.get("openvino_settings")]
    if not result["meta"]["versions"].get("openvino"):
        return line + "OpenVINO not installed."
    return line + ("OpenVINO CPU plugin at its defaults (no performance hint or stream/thread count set"
                   + (f"; it chose {'; '.join(ov)}" if ov else "") + ").")


def markdown(result: dict) -> str:
    meta, peak, s = result["meta"], result["peak"], result["settings"]
    v = meta["versions"]
    lines = [
        "# leuk-edge: all engines, one run",
        "",
        "**Synthetic images, random weights: speed only** (no accuracy meaning).",
        "",
    ]
    for name, m in result["models"].items():
        lines += [f"## {m['architecture']} {m['size']}x{m['size']} ({m['flops']['gflops']:.2f} GFLOP/image)", "",
                  model_table(m), "", goals_table(m), "", stage_line(m), ""]
    ov = v.get("openvino")
    lines += [
        f"- Machine: {meta['cpu']}, {meta['logical_cores']} logical cores (sched_getaffinity)"
        + (f", {meta['hypervisor']} VM" if meta.get("hypervisor") else "") + f"; {meta['platform']}; {meta['date']}.",
        f"- Versions: onnxruntime {v.get('onnxruntime', '?')}, tensorflow {v.get('tensorflow', '?')}, keras "
        f"{v.get('keras', '?')}, tf2onnx {v.get('tf2onnx', '?')}, OpenCV {v.get('cv2', '?')}, Python {meta['python']}; "
        f"OpenVINO {ov if ov else 'not installed'}.",
        f"- Same {s['n']} synthetic 450x450 BMP cells for every engine; batch size {s['batch_size']}; "
        f"{s['repeats']} interleaved round(s) after an untimed warm-up of every engine; img/s = images / wall time "
        "of a whole pass, median over rounds.",
        "- Input \"BMP folder\": the engine reads and decodes the files itself (Keras: image_dataset_from_directory "
        "+ x/255, area resize; classify: decode threads + batched onnxruntime + CSV rows). \"tensors\": model only, "
        "on tensors pre-decoded with the edge preprocessing.",
        "- onnxruntime sessions: model-only rows use its defaults (`Classifier(path)`, idle threads spin); classify "
        "rows open the model as the CLI does (`spinning=False`, so the decode threads get the cores).",
        thread_line(result),
        "- Batch latency: model-only rows time each call; folder rows time the gap between consecutive batch results "
        "(the first from the start of the pass), so decoding not hidden behind inference shows up there.",
        "- CPU ms/img: process CPU time (all threads) per image, median over rounds; less sensitive to other load "
        "than img/s (spinning onnxruntime threads count as busy).",
        "- FLOPs: 2 x MACs of Conv (grouped included), MatMul and Gemm in the FP32 ONNX graph, shapes inferred at "
        "batch 1; elementwise ops, pooling and normalisation are ignored. GFLOP/s = img/s x FLOPs/image (model "
        "only, decoding not counted).",
        f"- Peak: {peak['assumption']}. INT8 rows are measured against this FP32 peak too (the CPU's INT8 peak, "
        "e.g. with VNNI, is higher), so their share is not a like-for-like efficiency.",
        "- Export gates (export_model, INT8 calibrated on the BMP folder): "
        + " | ".join(f"{m['architecture']}: {gate_line(m)}" for m in result["models"].values())
        + ". Random-weight outputs sit near one value, so an INT8 agreement failure here says little; the model "
        "is timed anyway.",
        "- Load average before/after: " + ", ".join(
            f"{m['architecture']} {m['load_before_after'][0][0]:.2f}/{m['load_before_after'][1][0]:.2f}"
            for m in result["models"].values()) + " (other load on the machine slows every row alike).",
    ]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------------- main

def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()),
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--n", type=int, default=160, help="number of 450x450 BMPs (the same for every engine)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=5, help="interleaved timed rounds (each a full pass)")
    ap.add_argument("--models", default="cnn,inception", help="comma-separated: cnn, inception")
    ap.add_argument("--workers", type=int, default=None, help="classify decode threads (None: as the CLI)")
    ap.add_argument("--calib-size", type=int, default=64, help="INT8 calibration images from the BMP folder")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, default=None,
                    help="keep BMPs and models here (None: a temporary folder, removed afterwards)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--quiet", action="store_true", help="less export logging")
    args = ap.parse_args(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    bad = [m for m in models if m not in ("cnn", "inception")]
    if bad or not models:
        ap.error(f"--models: choose from cnn, inception (got {args.models!r})")
    if args.n < 1 or args.batch_size < 1 or args.repeats < 1:
        ap.error("--n, --batch-size and --repeats must be at least 1")

    t_start = time.perf_counter()
    peak = cpu_peak(measure=True)
    import tensorflow as tf  # already imported by cpu_peak's GEMM; its thread settings are left at the defaults

    tf_threads = {"intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
                  "inter_op": tf.config.threading.get_inter_op_parallelism_threads()}
    meta = machine_info(("onnxruntime", "tensorflow", "keras", "tf2onnx", "onnx", "cv2", "numpy", "openvino"))
    log(f"{meta['cpu']}, {meta['logical_cores']} cores; {peak.assumption()}")
    with tempfile.TemporaryDirectory(prefix="bench_all_") as tmp:
        work = args.work or Path(tmp)
        # Siblings named by n and seed: Keras and classify read every image under a folder, recursively.
        folder = work / f"cells_n{args.n}_s{args.seed}"
        warm_folder = work / f"warmup_n{min(args.n, 2 * args.batch_size)}_s{args.seed}"
        log(f"writing {args.n} BMPs to {folder} ...")
        paths = write_cells(folder, args.n, seed=args.seed)
        write_cells(warm_folder, min(args.n, 2 * args.batch_size), seed=args.seed + 1000, prefix="warm")
        result = {"meta": meta, "peak": peak.to_dict(),
                  "settings": {"n": args.n, "batch_size": args.batch_size, "repeats": args.repeats,
                               "models": models, "workers": args.workers, "calib_size": args.calib_size,
                               "tensorflow_threads": tf_threads,
                               "images": "synthetic 450x450 BMP (leuk_edge.synth.cells.render_cnmc_image)",
                               "weights": "random (speed only)"},
                  "models": {}}
        for name in models:
            result["models"][name] = bench_model(name, args, work, folder, warm_folder, paths, peak.gflops)
    result["total_seconds"] = time.perf_counter() - t_start
    md = markdown(result)
    write_results(args.out, "bench_all", md, result)
    print(md)
    log(f"done in {result['total_seconds']:.0f} s -> {args.out / 'bench_all.md'}, {args.out / 'bench_all.json'}")
    return result


if __name__ == "__main__":
    main()
