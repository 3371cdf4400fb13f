"""`classify --engine ray`: the local engine's decode/preprocess/predict, run by a Ray Data actor pool.

    files = list_inputs(["/shared/slides/", "s3://lab-archive/2026/"])
    for row in classify_ray(files.images, "model.onnx", RayOptions(actors=8)):
        ...

Pipeline: the listed paths -> `ray.data.from_items` -> `map_batches(ClassifyActor, ActorPoolStrategy)`. Each actor
holds ONE `Classifier` (its ONNX session is created once, from model bytes shipped through the object store, so
nodes need no copy of the model) and calls the edge functions the local engine calls: `load_image` (decode +
resize, with `--bit-depth`/`--max-pixels` and the metadata scale), `Classifier.predict`, `Classifier.label`,
`_short_reason` (same pixels, same labels, same error texts). Local paths (incl. shared storage mounted on every node) are decoded straight from the file like the local
engine; URIs (s3://, gs://, hdfs://, file://, whatever pyarrow.fs reads) are read as bytes through pyarrow and go
through the same `load_image` via a short-lived scratch copy.

Faults: actors get `max_restarts`/`max_task_retries` (a dead actor is replaced, its batch re-run); Ray Data emits
a re-run batch's output once, so every input file still yields exactly one row. `ray` is imported only inside the
functions that need it: importing this module does not require the [ray] extra.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from ..edge.classify import ERROR_LABEL, TABLE_FIELDS, Row, StageTimes, _short_reason, scored
from ..edge.files import FileList, expand_paths
from ..edge.model import Classifier
from ..edge.preprocess import DEFAULT_MAX_PIXELS, ImageReadError, is_image_file, load_image

MAX_RESTARTS = 4  # per actor: a poison input that kills the process every time must not loop forever
MAX_TASK_RETRIES = 4
TIMING_COLUMNS = ("_decode_s", "_infer_s")  # per-row share of the batch's stage times; dropped before writing
PROVIDER_COLUMN = "_provider"  # the execution provider the actor's session runs on; dropped before writing
INTERNAL_COLUMNS = (*TIMING_COLUMNS, PROVIDER_COLUMN)


class RayEngineError(ValueError):
    """Ray missing, cluster unreachable, or a bad engine option: one line for the CLI (exit 2)."""


@dataclass
class RayOptions:
    address: str | None = None  # None: RAY_ADDRESS if set, else a local Ray on this machine; or auto | ray://h:p
    actors: int | None = None  # None: one per CPU of the cluster (per GPU / gpus_per_actor with GPUs)
    gpus_per_actor: float = 0.0
    cpus_per_actor: float = 1.0
    batch_size: int = 8  # images per actor call = per inference batch
    device: str = "cpu"  # the device the actors run on (`actor_device`): never "auto", which each node would resolve
    tta: bool = False
    bit_depth: int | None = None  # as classify --bit-depth (None: detected)
    max_pixels: int | None = DEFAULT_MAX_PIXELS  # as classify --max-pixels (None: no limit)
    scope: bool = True  # as classify --scope/--no-scope: flag out-of-scope cells `other` when the model can


def actor_device(device: str, gpus_per_actor: float) -> str:
    """The device the actors run on: --device when named, else CUDA for GPU actors, else the CPU."""
    return device if device != "auto" else ("cuda" if gpus_per_actor > 0 else "cpu")


# ----------------------------------------------------------------------------------------------------- inputs

def is_uri(spec: str) -> bool:
    return "://" in spec


def _list_uri(spec: str, out: FileList) -> None:
    import pyarrow.fs as pafs

    try:
        fs, path = pafs.FileSystem.from_uri(spec)
        info = fs.get_file_info(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises many types for bad URIs / missing credentials
        raise RayEngineError(f"cannot open {spec}: {str(exc).splitlines()[0][:200]}") from None
    prefix = spec.split("://", 1)[0] + "://"
    if info.type == pafs.FileType.Directory:
        infos = [i for i in fs.get_file_info(pafs.FileSelector(path, recursive=True)) if i.type == pafs.FileType.File]
    elif info.type == pafs.FileType.File:
        infos = [info]
    else:
        out.missing.append(spec)
        return
    for i in infos:
        if is_image_file(i.path):
            out.images.append(prefix + i.path)
        else:
            out.skipped += 1


def list_inputs(specs: Sequence[str]) -> FileList:
    """Local specs exactly as the local engine lists them (`expand_paths`); URIs through pyarrow's filesystems.
    The image paths come back as strings, de-duplicated and sorted (the order the local engine writes)."""
    local = [s for s in specs if not is_uri(str(s))]
    out = expand_paths(local) if local else FileList()
    out.images = [str(p) for p in out.images]
    for spec in specs:
        if is_uri(str(spec)):
            _list_uri(str(spec), out)
    out.images = sorted(set(out.images))
    return out


def read_bytes(uri: str) -> bytes:
    import pyarrow.fs as pafs

    fs, path = pafs.FileSystem.from_uri(uri)
    with fs.open_input_stream(path) as fh:
        return fh.read()


@contextlib.contextmanager
def readable(path: str):
    """A local path as it is; a URI's bytes (through pyarrow) as a scratch copy, deleted right after."""
    if not is_uri(path):
        yield path
        return
    try:
        data = read_bytes(path)
    except Exception as exc:  # noqa: BLE001 - a file that cannot be fetched is that file's error row
        raise ImageReadError(f"cannot read file: {str(exc).splitlines()[0][:160]}") from None
    with tempfile.NamedTemporaryFile(suffix=Path(path).suffix, prefix="leuk-edge-") as tmp:
        tmp.write(data)
        tmp.flush()
        yield tmp.name


# ------------------------------------------------------------------------------------------------- one batch

def classify_batch(clf: Classifier, paths: Sequence[str], tta: bool = False, bit_depth: int | None = None,
                   max_pixels: int | None = DEFAULT_MAX_PIXELS) -> tuple[list[Row], float, float]:
    """The local engine's per-batch step: each file through `load_image` (the local engine's decode + resize,
    with its bit depth, pixel limit and the metadata scale) into one batch array, predict the readable ones, one
    Row per path (unreadable -> error row; any other failure is a bug and raises).
    -> (rows, decode+resize seconds, inference seconds)."""
    h, w = clf.size
    spec = clf.info.input
    buf = np.empty((len(paths), h, w, 3), np.float32)
    errors: dict[int, str] = {}
    t0 = time.perf_counter()
    for i, path in enumerate(paths):
        try:
            with readable(path) as local:
                load_image(local, h, w, spec.resize, bit_depth=bit_depth, max_pixels=max_pixels,
                           value_scale=spec.value_scale, out=buf[i])
        except ImageReadError as exc:  # as the local engine: only a file that cannot be read is its error row
            errors[i] = _short_reason(exc)
    t1 = time.perf_counter()
    good = [i for i in range(len(paths)) if i not in errors]
    by_index = dict(zip(good, scored(clf, clf.infer(buf[good], tta=tta)))) if good else {}
    t2 = time.perf_counter()
    rows = [Row(p, ERROR_LABEL, None, errors[i]) if i in errors else
            Row(p, by_index[i][0], by_index[i][1], ood=by_index[i][2]) for i, p in enumerate(paths)]
    return rows, t1 - t0, t2 - t1


def rows_table(rows: Sequence[Row], decode_s: float = 0.0, infer_s: float = 0.0, provider: str = ""):
    """Rows -> a pyarrow table with the classify contract's columns (+ the internal timing and provider columns)."""
    import pyarrow as pa

    n = max(1, len(rows))
    return pa.table({
        "path": pa.array([r.path for r in rows], pa.string()),
        "label": pa.array([r.label for r in rows], pa.string()),
        "probability": pa.array([r.probability for r in rows], pa.float64()),
        "ood": pa.array([r.ood for r in rows], pa.float64()),
        "error": pa.array([r.error for r in rows], pa.string()),
        TIMING_COLUMNS[0]: pa.array([decode_s / n] * len(rows), pa.float64()),
        TIMING_COLUMNS[1]: pa.array([infer_s / n] * len(rows), pa.float64()),
        PROVIDER_COLUMN: pa.array([provider] * len(rows), pa.string()),
    })


def table_rows(table) -> list[Row]:
    cols = {k: table.column(k).to_pylist() for k in TABLE_FIELDS}
    return [Row(p, lab, prob, err or "", ood) for p, lab, prob, ood, err in zip(*(cols[k] for k in TABLE_FIELDS))]


class ClassifyActor:
    """One per Ray actor: the ONNX session is made once, from the shipped model bytes; each call is one batch."""

    def __init__(self, model_bytes, model_name: str, device: str = "cpu", threads: int = 1, tta: bool = False,
                 bit_depth: int | None = None, max_pixels: int | None = DEFAULT_MAX_PIXELS, scope: bool = True):
        import cv2
        import ray

        if isinstance(model_bytes, ray.ObjectRef):  # shipped once through the object store (see classify_ray)
            model_bytes = ray.get(model_bytes)
        cv2.setNumThreads(1)  # one core per actor: OpenCV's pool would fight onnxruntime for it
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
        self.tta, self.bit_depth, self.max_pixels = tta, bit_depth, max_pixels
        with tempfile.TemporaryDirectory(prefix="leuk-edge-model-") as tmp:
            path = Path(tmp) / Path(model_name).name
            path.write_bytes(model_bytes)
            # onnxruntime holds the model in memory once the session exists: the scratch copy goes at once.
            self.clf = Classifier(path, device=device, threads=threads, spinning=False, scope=scope)

    def __call__(self, batch):
        rows, decode_s, infer_s = classify_batch(self.clf, batch.column("path").to_pylist(), self.tta,
                                                 self.bit_depth, self.max_pixels)
        return rows_table(rows, decode_s, infer_s, self.clf.providers[0])


# --------------------------------------------------------------------------------------------------- cluster

def import_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise RayEngineError("--engine ray needs Ray: pip install 'leuk-edge[ray]'") from None
    return ray


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def probe(address: str | None, timeout_s: float = 5.0) -> None:
    """Fail fast when the cluster's bootstrap port does not answer: `ray.init` itself retries for minutes."""
    import socket

    target = address or os.environ.get("RAY_ADDRESS")
    if target in (None, "local"):
        return  # a local Ray instance is started
    try:
        if target.startswith("ray://"):
            hostport = target[len("ray://"):]
        else:
            from ray._private.services import canonicalize_bootstrap_address

            hostport = canonicalize_bootstrap_address(target)  # resolves "auto" (env, last cluster on this node)
        if hostport:
            host, _, port = hostport.rpartition(":")
            socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except Exception as exc:  # noqa: BLE001 - ConnectionError, ValueError (bad format), OSError (refused, timeout)
        raise RayEngineError(f"cannot reach the Ray cluster at {target}: {_first_line(exc)}") from None


def connect(address: str | None) -> bool:
    """Join (or start) a Ray cluster unless this process already did. -> True when this call initialised Ray
    (the caller then shuts it down). An unreachable cluster is a RayEngineError (one line)."""
    ray = import_ray()
    if ray.is_initialized():
        return False
    probe(address)
    try:
        ray.init(address=address, include_dashboard=False, logging_level="ERROR", log_to_driver=False,
                 configure_logging=True)
    except Exception as exc:  # noqa: BLE001 - ConnectionError, RuntimeError, ValueError depending on the address
        where = address or os.environ.get("RAY_ADDRESS") or "a local Ray instance"
        raise RayEngineError(f"cannot reach the Ray cluster at {where}: {_first_line(exc)}") from None
    return True


def pool_size(opts: RayOptions) -> int:
    if opts.actors:
        return opts.actors
    ray = import_ray()
    res = ray.cluster_resources()
    if opts.gpus_per_actor > 0:
        return max(1, int(res.get("GPU", 0) // opts.gpus_per_actor))
    return max(1, int(res.get("CPU", 1) // max(opts.cpus_per_actor, 1e-9)))


def _quiet_data_context():
    import logging

    import ray.data

    # Ray Data logs each execution's start/finish on the driver; the CLI has its own progress bar and summary.
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # the CLI draws its own progress bar on stderr
    ctx.print_on_execution_start = False
    return ctx


def classify_ray(paths: Sequence[str], model: str | Path, opts: RayOptions | None = None,
                 times: StageTimes | None = None, actor_cls: type = ClassifyActor,
                 providers: set | None = None) -> Iterator[Row]:
    """Yield one Row per path (in completion order, not sorted). Ray must be connected (`connect`).
    `times` gets images/errors/wall and the summed decode/inference seconds of all actors; `providers` the
    execution providers the actors' sessions really ran on."""
    ray = import_ray()
    opts = opts or RayOptions()
    times = times if times is not None else StageTimes()
    if not paths:
        return
    _quiet_data_context()
    model = Path(model)
    n_actors = pool_size(opts)
    # The model goes into the object store once; this generator holds the reference for the whole run, so an actor
    # restarted after a crash can still fetch it (its constructor arguments stay alive).
    model_ref = ray.put(model.read_bytes())
    # Input blocks of at most ~8 batches (smooth progress; a dead actor re-runs little), and at least two per actor
    # when there are enough batches, so every actor gets work early.
    n_batches = -(-len(paths) // opts.batch_size)
    blocks = max(1, min(n_batches, 2 * n_actors), -(-n_batches // 8))
    ds = ray.data.from_items([{"path": str(p)} for p in paths], override_num_blocks=blocks)
    with warnings.catch_warnings():
        # Ray >= 2.60 flags max_restarts/max_task_retries passed this way as deprecated (removal planned for 2.64)
        # but offers no named parameter for them yet; they are Ray Data's documented actor fault-tolerance knobs.
        warnings.simplefilter("ignore", DeprecationWarning)
        ds = ds.map_batches(
            actor_cls, batch_size=opts.batch_size, batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=n_actors),
            fn_constructor_kwargs={"model_bytes": model_ref, "model_name": model.name, "device": opts.device,
                                   "threads": max(1, int(opts.cpus_per_actor)), "tta": opts.tta,
                                   "bit_depth": opts.bit_depth, "max_pixels": opts.max_pixels,
                                   "scope": opts.scope},
            num_cpus=opts.cpus_per_actor, num_gpus=opts.gpus_per_actor or None,
            max_restarts=MAX_RESTARTS, max_task_retries=MAX_TASK_RETRIES)
    start = time.perf_counter()
    try:
        for table in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
            times.decode_s += float(np.sum(table.column(TIMING_COLUMNS[0]).to_numpy()))
            times.infer_s += float(np.sum(table.column(TIMING_COLUMNS[1]).to_numpy()))
            times.batches += 1
            if providers is not None:
                providers.update(table.column(PROVIDER_COLUMN).to_pylist())
            for row in table_rows(table):
                times.images += 1
                times.errors += not row.ok
                times.wall_s = time.perf_counter() - start
                yield row
    finally:
        times.wall_s = time.perf_counter() - start
