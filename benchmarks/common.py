"""Shared helpers for the scripts in benchmarks/ (not part of the package; imported as `common` or
`benchmarks.common`).

    from common import write_cells, save_random_model, export_onnx, onnx_flops, cpu_peak, time_calls, summarize

- data:    `write_cells` (a folder of synthetic 450x450 C-NMC-style BMPs), `preprocessed` (THE edge preprocessing)
- models:  `save_random_model` (.keras + config.json, random weights), `save_run` (a built model + its
           config.json), `export_onnx` (export_model, gates included)
- timing:  `time_calls` (warm-up excluded), `interleave` (rounds alternating between runners), `summarize`
           (p50/p95/mean), `cpu_seconds`, `ort_runner` (a Classifier's predict over pre-cut batches),
           `ModelCalls` (model calls counted, crops kept), `model_ceiling` (the model alone on those crops),
           `fps_stats` (fps median / p5 from per-frame times)
- machine: `cpu_peak` (peak FP32 FLOP/s estimate and its assumptions), `machine_info` (cores, CPU, versions)
- graph:   `onnx_flops` (2 x MACs of Conv/MatMul/Gemm from an ONNX graph with shape inference at batch 1)
- output:  `markdown_table`, `fmt`, `write_results`

Nothing here imports tensorflow at module level: edge-only benchmarks can use it without the [train] extra.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------------- data

def write_cells(folder: str | Path, n: int, seed: int = 0, p_all: float = 0.68, prefix: str = "cell") -> list[Path]:
    """N synthetic 450x450 C-NMC-style cell images as BMP (`leuk_edge.synth.cells.render_cnmc_image`), ~68 % `all`
    as in C-NMC. Files already there (same name) are kept, so a `--work` folder can be reused. -> sorted paths."""
    import cv2

    from leuk_edge.synth.cells import render_cnmc_image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        label = "all" if rng.random() < p_all else "hem"
        p = folder / f"{prefix}_{i:05d}.bmp"
        rgb = render_cnmc_image(rng, label)  # always drawn, so image i is the same whether or not it existed
        if not p.exists():
            cv2.imwrite(str(p), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        paths.append(p)
    return paths


def preprocessed(paths: Sequence[str | Path], height: int, width: int, resize: str = "area") -> np.ndarray:
    """Decode + THE edge preprocessing (RGB, resize, float32 / 255) -> NHWC float32 array."""
    from leuk_edge.edge import load_image

    return np.stack([load_image(p, height, width, resize) for p in paths])


def batches(x: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Contiguous slices of batch_size (the last one may be shorter), cut once, outside any timed region."""
    return [np.ascontiguousarray(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]


# ----------------------------------------------------------------------------------------------------- models

def save_random_model(name: str, folder: str | Path, size: int | None = None, seed: int = 0,
                      threshold: float = 0.5):
    """Build `name` ("cnn" | "inception", weights=None) at `size` (default: its full size) with random weights and
    save FOLDER/model.keras + the config.json a training run writes beside it. -> (path, keras model).
    Random weights are fine for speed; accuracy/agreement numbers from such a model mean little."""
    import keras

    from leuk_edge.train.models import DEFAULT_SIZE, build

    keras.utils.set_random_seed(seed)
    size = size or DEFAULT_SIZE[name]
    model, _ = build(name, size, weights=None)
    return save_run(model, name, folder, size, threshold, note="benchmark: random weights"), model


def save_run(model, name: str, folder: str | Path, size: int, threshold: float = 0.5,
             note: str | None = None) -> Path:
    """Save a built `name` model as FOLDER/model.keras + the config.json a training run writes beside it (what
    `export_model` reads its settings from). -> the .keras path."""
    from leuk_edge.train.models import ARCHITECTURE, RESIZE

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.keras"
    model.save(path)
    config = {"model": name, "architecture": ARCHITECTURE[name], "image_size": size, "resize": RESIZE[name],
              "threshold": threshold, "classes": ["hem", "all"]}
    if note:
        config["note"] = note
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    return path


def export_onnx(keras_path: str | Path, out: str | Path | None = None, int8: bool = True, fp16: bool = False,
                calib_data: str | Path | None = None, calib_size: int | None = None, verbose: bool = True,
                **kwargs):
    """`leuk_edge.export.exporter.export_model` with its parity gates; -> ExportResult. Extra kwargs go through
    (parity_data, parity_n, variant_n, ...). A model that failed its gate lies at ….failed.onnx (see
    `artifact_path`), still fine to time."""
    from leuk_edge.export.exporter import export_model

    if calib_size is not None:
        kwargs["calib_size"] = calib_size
    return export_model(keras_path, out, int8=int8, fp16=fp16, calib_data=calib_data,
                        log=(lambda m: log("  " + m)) if verbose else (lambda m: None), **kwargs)


def artifact(result, precision: str = "fp32"):
    """The ArtifactResult of `precision` ("fp32" | "fp16" | "int8") in an ExportResult, or None."""
    return next((a for a in result.artifacts if a.precision == precision), None)


def export_summary(result) -> dict:
    """JSON-able gate outcome per artifact of an ExportResult."""
    out = {"total_seconds": result.total_seconds, "warnings": list(result.warnings)}
    for a in result.artifacts:
        p = a.parity
        out[a.precision] = {"path": str(a.path), "passed": a.passed, "seconds": a.seconds,
                            "max_abs_diff": p.max_abs_diff, "decision_agreement": p.decision_agreement, "n": p.n,
                            "criterion": p.criterion, "failures": list(p.failures),
                            "mb": a.path.stat().st_size / 2**20 if a.path.exists() else None}
    return out


# ----------------------------------------------------------------------------------------------------- timing

def cpu_seconds() -> float:
    """User + system CPU time of this process, all threads."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def time_calls(fn: Callable[[], object], runs: int = 20, warmup: int = 3, min_time_s: float = 0.0) -> list[float]:
    """Call fn() `warmup` times untimed, then at least `runs` times (and for at least min_time_s); -> seconds each."""
    for _ in range(warmup):
        fn()
    lat: list[float] = []
    t_start = time.perf_counter()
    while len(lat) < runs or time.perf_counter() - t_start < min_time_s:
        t0 = time.perf_counter()
        fn()
        lat.append(time.perf_counter() - t0)
    return lat


def ort_runner(clf, xb: Sequence[np.ndarray], warm_batches: int = 2):
    """Model-only runner for `interleave`: `clf.predict` (a leuk_edge.edge.Classifier) over pre-cut batches `xb`.
    -> (run, warm): run() -> (images, per-call seconds) over all of xb; warm() the same over the first
    `warm_batches` (untimed warm-up: allocations, kernel choice)."""
    def over(bs):
        lat, n = [], 0
        for b in bs:
            t0 = time.perf_counter()
            n += len(clf.predict(b))
            lat.append(time.perf_counter() - t0)
        return n, lat

    return (lambda: over(xb)), (lambda: over(xb[:warm_batches]))


def intervals(t_start: float, stamps: Iterable[float]) -> list[float]:
    """Completion time stamps -> the gaps between them (the first from t_start): per-batch latency of a pipeline
    whose stages overlap."""
    out, prev = [], t_start
    for t in stamps:
        out.append(t - prev)
        prev = t
    return out


@dataclass
class Sample:
    """One timed run of a runner: images processed, wall and CPU seconds, per-batch latencies (seconds)."""
    images: int
    wall_s: float
    cpu_s: float
    batch_s: list = field(default_factory=list)

    @property
    def images_per_s(self) -> float:
        return self.images / self.wall_s if self.wall_s > 0 else 0.0


def run_timed(fn: Callable[[], tuple[int, list[float]]]) -> Sample:
    """fn() -> (images, per-batch seconds); wall and process CPU time measured around it."""
    c0, t0 = cpu_seconds(), time.perf_counter()
    n, lat = fn()
    return Sample(images=n, wall_s=time.perf_counter() - t0, cpu_s=cpu_seconds() - c0, batch_s=list(lat))


def interleave(runners: dict[str, Callable[[], tuple[int, list[float]]]], repeats: int,
               warmup: dict[str, Callable[[], object]] | None = None, on_round=None) -> dict[str, list[Sample]]:
    """Warm-up calls first (untimed), then `repeats` rounds, each running every runner once in turn, so load from
    other processes hits all of them alike. -> name -> samples."""
    for name, fn in (warmup or {}).items():
        fn()
    samples: dict[str, list[Sample]] = {k: [] for k in runners}
    for r in range(repeats):
        for name, fn in runners.items():
            samples[name].append(run_timed(fn))
        if on_round:
            on_round(r, samples)
    return samples


def summarize(samples: Sequence[Sample], batch_size: int | None = None) -> dict:
    """img/s (median and best over runs), per-batch latency p50/p95/mean over all batches of all runs (ms), CPU ms
    per image (median)."""
    lat = np.array([s for x in samples for s in x.batch_s], float) * 1000.0
    rates = [s.images_per_s for s in samples]
    out = {
        "runs": len(samples), "images_per_run": samples[0].images if samples else 0,
        "images_per_s": float(statistics.median(rates)) if rates else None,
        "images_per_s_best": float(max(rates)) if rates else None,
        "images_per_s_runs": rates,
        "batch_p50_ms": float(np.percentile(lat, 50)) if lat.size else None,
        "batch_p95_ms": float(np.percentile(lat, 95)) if lat.size else None,
        "batch_mean_ms": float(lat.mean()) if lat.size else None,
        "batches": int(lat.size),
        "cpu_ms_per_image": float(statistics.median(1000.0 * s.cpu_s / s.images for s in samples if s.images))
        if samples else None,
    }
    if batch_size:
        out["batch_size"] = batch_size
    return out


class ModelCalls:
    """Counts the model's session calls of a leuk_edge Classifier (its `infer`, which `infer_rgb` and `predict`
    go through) and keeps the crops of the first `keep` calls (for `model_ceiling`). Installed on the instance;
    `calls` is read before and after a measuring window."""

    def __init__(self, clf, keep: int = 0):
        self.clf, self.keep, self.calls, self.crops = clf, keep, 0, []
        infer, infer_rgb = clf.infer, clf.infer_rgb

        def counted(*a, **k):
            self.calls += 1
            return infer(*a, **k)

        def kept(images, *a, **k):
            if len(images) and len(self.crops) < self.keep:
                self.crops.append([np.array(im) for im in images])
            return infer_rgb(images, *a, **k)

        clf.infer, clf.infer_rgb = counted, kept


def model_ceiling(clf, crop_batches: Sequence[Sequence[np.ndarray]], rounds: int = 3) -> dict:
    """The model alone on the same cells as the stream: each frame's batch of crops, preprocessed beforehand,
    through `clf.infer` (one onnxruntime call per frame, as the stream makes). -> frames/s the model alone would
    allow, median and p5 (over every frame with cells, `rounds` passes after one warm-up pass)."""
    if not crop_batches:
        return {"fps_median": None, "fps_p5": None, "ms_median": None, "frames": 0}
    batches = [np.stack([clf.preprocess(c) for c in crops]) for crops in crop_batches]
    for b in batches[:3]:
        clf.infer(b)
    ms = []
    for _ in range(rounds):
        for b in batches:
            t0 = time.perf_counter()
            clf.infer(b)
            ms.append((time.perf_counter() - t0) * 1000)
    t = np.asarray(ms)
    return {"fps_median": round(1000.0 / float(np.median(t)), 1),
            "fps_p5": round(1000.0 / float(np.percentile(t, 95)), 1),
            "ms_median": round(float(np.median(t)), 2), "frames": len(batches)}


def fps_stats(frame_ms: Sequence[float]) -> dict:
    """Frames per second from per-frame wall times: the median frame, and p5 (the slowest 5 % of frames: the
    95th percentile of the frame time)."""
    t = np.asarray(frame_ms, np.float64)
    if not t.size:
        return {"fps_median": None, "fps_p5": None}
    return {"fps_median": round(1000.0 / float(np.median(t)), 1),
            "fps_p5": round(1000.0 / float(np.percentile(t, 95)), 1)}


def percentiles(seconds: Sequence[float], qs: Sequence[float] = (50, 95)) -> dict:
    """{"p50_ms": …, "p95_ms": …} from seconds."""
    a = np.asarray(seconds, float) * 1000.0
    return {f"p{q:g}_ms": float(np.percentile(a, q)) if a.size else None for q in qs}


# ---------------------------------------------------------------------------------------------------- machine

def _cpuinfo() -> dict:
    info: dict = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if ":" not in line:
                continue
            k, v = (s.strip() for s in line.split(":", 1))
            if k == "cpu MHz":
                info.setdefault("mhz", []).append(float(v))
            elif k in ("model name", "flags") and k not in info:
                info[k] = v
    except OSError:
        pass
    return info


def _lscpu() -> dict:
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10, env={**os.environ, "LC_ALL": "C"}
                              ).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    return {k.strip(): v.strip() for k, v in (line.split(":", 1) for line in text.splitlines() if ":" in line)}


def logical_cores() -> int:
    """CPUs this process may run on (affinity / cgroup cpuset), not the host's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


@dataclass
class CpuPeak:
    cores: int
    ghz: float
    ghz_source: str
    flops_per_cycle: int  # FP32, per core
    isa: str
    smt: int  # threads per core (1 = no SMT siblings among `cores`)
    measured_gemm_gflops: float | None = None  # a large FP32 GEMM actually run here (see measure_gemm_gflops)

    @property
    def estimate_gflops(self) -> float:
        return self.cores * self.ghz * self.flops_per_cycle

    @property
    def gflops(self) -> float:
        """The denominator for "% of peak": the clock-based estimate, or the measured GEMM rate when that is
        higher (the estimate's clock was then too low, e.g. a VM reporting its base clock)."""
        return max(self.estimate_gflops, self.measured_gemm_gflops or 0.0)

    def assumption(self) -> str:
        units = {64: "AVX-512, 2 FMA units: 2 x 16 lanes x 2", 32: "AVX2 + FMA, 2 FMA units: 2 x 8 lanes x 2",
                 16: "AVX without FMA: 8-lane add + 8-lane mul", 8: "SSE: 4-lane add + 4-lane mul"}
        text = (f"peak FP32 = {self.cores} cores (sched_getaffinity) x {self.ghz:.2f} GHz ({self.ghz_source}) x "
                f"{self.flops_per_cycle} FLOP/cycle ({self.isa}; {units.get(self.flops_per_cycle, '')}) = "
                f"{self.estimate_gflops:.0f} GFLOP/s")
        if self.measured_gemm_gflops:
            used = self.measured_gemm_gflops > self.estimate_gflops
            text += (f"; a 2048^3 FP32 GEMM (TensorFlow/oneDNN) ran at {self.measured_gemm_gflops:.0f} GFLOP/s here"
                     + (", above the estimate, so the GEMM rate is used as the peak" if used else ""))
        if self.ghz_source.startswith("/proc"):
            text += ("; /proc/cpuinfo gives the nominal clock (in a VM often the base clock): boost runs faster, so "
                     "shares of this peak can be overstated")
        if self.smt > 1:
            text += f"; {self.smt} threads per core: logical CPUs share FMA units, so this overstates the peak"
        return text

    def to_dict(self) -> dict:
        return {**asdict(self), "gflops": self.gflops, "assumption": self.assumption()}


def measure_gemm_gflops(n: int = 2048, seconds: float = 3.0) -> float | None:
    """Best FP32 GFLOP/s of n x n x n matmuls in TensorFlow (oneDNN, all cores): a practical peak that needs no
    clock or FMA-unit assumptions. None when TensorFlow is not installed."""
    try:
        import tensorflow as tf
    except ImportError:
        return None
    a = tf.random.normal((n, n))
    b = tf.random.normal((n, n))
    mm = tf.function(lambda x, y: tf.linalg.matmul(x, y))
    mm(a, b).numpy()  # trace + warm-up
    best, t_end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        t0 = time.perf_counter()
        mm(a, b).numpy()
        best = max(best, 2 * n ** 3 / (time.perf_counter() - t0) / 1e9)
    return best


def cpu_peak(measure: bool = False) -> CpuPeak:
    """Estimate of this process's peak FP32 FLOP/s from lscpu / /proc/cpuinfo: cores x GHz x FLOPs/cycle.

    GHz: lscpu's "CPU max MHz" when it has one (boost clock: an upper bound), else the highest /proc/cpuinfo
    "cpu MHz" (what a VM reports, often the base clock). FLOPs/cycle per core: AVX-512 with 2 FMA units 64,
    AVX2+FMA 32, AVX 16, else 8: an assumption (some AVX-512 parts have one 512-bit FMA unit, or split 512-bit ops).
    """
    ls, ci = _lscpu(), _cpuinfo()
    flags = set((ls.get("Flags") or ci.get("flags") or "").split())
    if "avx512f" in flags:
        fpc, isa = 64, "AVX-512F"
    elif {"avx2", "fma"} <= flags:
        fpc, isa = 32, "AVX2+FMA"
    elif "avx" in flags:
        fpc, isa = 16, "AVX"
    else:
        fpc, isa = 8, "SSE"
    ghz, src = 0.0, "unknown, 2.0 assumed"
    try:
        ghz, src = float(ls["CPU max MHz"]) / 1000.0, "lscpu CPU max MHz"
    except (KeyError, ValueError):
        if ci.get("mhz"):
            ghz, src = max(ci["mhz"]) / 1000.0, "/proc/cpuinfo cpu MHz"
    if ghz <= 0:
        ghz = 2.0
    try:
        smt = int(ls.get("Thread(s) per core", "1"))
    except ValueError:
        smt = 1
    return CpuPeak(cores=logical_cores(), ghz=ghz, ghz_source=src, flops_per_cycle=fpc, isa=isa, smt=smt,
                   measured_gemm_gflops=measure_gemm_gflops() if measure else None)


def machine_info(extra_modules: Sequence[str] = ("onnxruntime", "tensorflow", "keras", "tf2onnx", "onnx", "cv2",
                                                 "numpy")) -> dict:
    """Where the numbers came from: CPU model, cores, OS, Python and package versions (only modules that import),
    load average."""
    import importlib

    ci, ls = _cpuinfo(), _lscpu()
    info = {"date": time.strftime("%Y-%m-%d %H:%M"), "cpu": ci.get("model name") or ls.get("Model name")
            or platform.processor() or platform.machine(), "logical_cores": logical_cores(),
            "os_cpu_count": os.cpu_count(), "hypervisor": ls.get("Hypervisor vendor"),
            "platform": platform.platform(), "python": platform.python_version(),
            "loadavg": list(os.getloadavg()), "versions": {}}
    for m in extra_modules:
        try:
            info["versions"][m] = getattr(importlib.import_module(m), "__version__", "?")
        except Exception:  # noqa: BLE001 - not installed / broken: just not listed
            pass
    try:
        from leuk_edge import __version__

        info["versions"]["leuk_edge"] = __version__
    except Exception:  # noqa: BLE001
        pass
    return info


# ------------------------------------------------------------------------------------------------------ graph

MAC_OPS = ("Conv", "ConvInteger", "QLinearConv", "MatMul", "MatMulInteger", "QLinearMatMul", "Gemm")


def onnx_flops(path: str | Path, batch: int = 1) -> dict:
    """FLOPs of one forward pass at `batch` (default 1 = per image), counted from the ONNX graph: 2 x MACs of
    Conv (grouped/depthwise included: MACs = |Y| x Cin/group x kH x kW), MatMul and Gemm (and their integer /
    QLinear forms). Elementwise ops, pooling, BatchNorm, activations, Softmax etc. are ignored (cheap next to
    these). Shapes come from `onnx.shape_inference` on a copy whose input batch is fixed to `batch`.
    -> {"flops", "gflops", "by_op": {op: flops}, "nodes": counted, "uncounted": [names of MAC ops without shapes]}
    """
    import onnx
    from onnx import shape_inference

    model = onnx.load(str(path))
    for inp in model.graph.input:
        t = inp.type.tensor_type
        if t.HasField("shape") and len(t.shape.dim) > 0:
            t.shape.dim[0].ClearField("dim_param")
            t.shape.dim[0].dim_value = batch
    for out in model.graph.output:  # declared symbolic batch dims would only conflict with the inferred ones
        t = out.type.tensor_type
        if t.HasField("shape") and len(t.shape.dim) > 0:
            t.shape.dim[0].ClearField("dim_param")
            t.shape.dim[0].dim_value = batch
    inferred = shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    g = inferred.graph
    shapes: dict[str, list[int] | None] = {}

    def add(vi) -> None:
        t = vi.type.tensor_type
        if not t.HasField("shape"):
            return
        dims = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
        shapes[vi.name] = None if any(d is None for d in dims) else dims

    for vi in (*g.input, *g.value_info, *g.output):
        add(vi)
    for init in g.initializer:
        shapes[init.name] = list(init.dims)
    for node in g.node:  # Constant nodes carry weights in some exporters
        if node.op_type == "Constant" and node.attribute and node.attribute[0].HasField("t"):
            shapes[node.output[0]] = list(node.attribute[0].t.dims)

    def shape(name: str):
        return shapes.get(name)

    by_op: dict[str, int] = {}
    uncounted: list[str] = []
    counted = 0
    for node in g.node:
        op = node.op_type
        if op not in MAC_OPS:
            continue
        y = shape(node.output[0])
        macs = None
        if op in ("Conv", "ConvInteger", "QLinearConv"):
            w = shape(node.input[3 if op == "QLinearConv" else 1])
            if y and w:
                macs = int(np.prod(y, dtype=np.int64)) * int(np.prod(w[1:], dtype=np.int64))
        elif op in ("MatMul", "MatMulInteger", "QLinearMatMul"):
            a = shape(node.input[0])
            if y and a:
                macs = int(np.prod(y, dtype=np.int64)) * int(a[-1])
        elif op == "Gemm":
            a = shape(node.input[0])
            trans_a = next((at.i for at in node.attribute if at.name == "transA"), 0)
            if y and a:
                macs = int(np.prod(y, dtype=np.int64)) * int(a[0] if trans_a else a[1])
        if macs is None:
            uncounted.append(node.name or op)
            continue
        by_op[op] = by_op.get(op, 0) + 2 * macs
        counted += 1
    total = sum(by_op.values())
    return {"flops": total, "gflops": total / 1e9, "batch": batch, "by_op": by_op, "nodes": counted,
            "uncounted": uncounted,
            "counted_ops": "2 x MACs of Conv/MatMul/Gemm; elementwise, pooling, normalisation ignored"}


# ----------------------------------------------------------------------------------------------------- output

def fmt(v, spec: str = ".1f", none: str = "–") -> str:
    """format(v, spec), or `none` for None / NaN."""
    if v is None or (isinstance(v, float) and v != v):
        return none
    return format(v, spec)


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence], align: str | None = None) -> str:
    """A GitHub markdown table. `align`: one char per column, 'l' | 'r' | 'c' (default: first left, rest right).
    Cells are str()-ed; '|' inside a cell is escaped."""
    align = align or "l" + "r" * (len(headers) - 1)
    sep = {"l": "---", "r": "---:", "c": ":---:"}
    cell = lambda v: str(v).replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(cell(h) for h in headers) + " |",
             "|" + "|".join(sep[a] for a in align) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def _jsonable(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "to_dict"):
        return o.to_dict()
    return str(o)


def write_results(out_dir: str | Path, stem: str, markdown: str, data: dict) -> tuple[Path, Path]:
    """OUT/STEM.md and OUT/STEM.json (parents created). -> both paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    md, js = out_dir / f"{stem}.md", out_dir / f"{stem}.json"
    md.write_text(markdown if markdown.endswith("\n") else markdown + "\n")
    js.write_text(json.dumps(data, indent=2, default=_jsonable))
    return md, js


__all__ = [
    "RESULTS", "log", "write_cells", "preprocessed", "batches", "save_random_model", "save_run", "export_onnx",
    "artifact", "export_summary", "cpu_seconds", "time_calls", "ort_runner", "intervals", "Sample", "run_timed", "interleave",
    "summarize", "percentiles", "logical_cores", "CpuPeak", "cpu_peak", "machine_info", "MAC_OPS", "onnx_flops",
    "fmt", "markdown_table", "write_results",
]
