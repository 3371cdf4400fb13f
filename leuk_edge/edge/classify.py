"""Classify image files: decode + preprocess on worker threads, batched onnxruntime inference, one Row per file.

    clf = Classifier("model.onnx", spinning=False)  # ORT threads sleep when idle: the decode threads need the cores
    times = StageTimes()
    for row in classify_paths(clf, expand_paths(["cells/"]).images, times=times):
        print(row.path, row.label, row.probability)

OpenCV and numpy release the GIL, so decoding batch k+1 on worker threads overlaps inference on batch k.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import cv2
import numpy as np

from .model import Classifier, Inference
from .preprocess import DEFAULT_MAX_PIXELS, ImageReadError, decode_bgr, resize_scale

ERROR_LABEL = "error"


@dataclass(frozen=True)
class Row:
    """One line of the classify table: `path,label,probability,ood,error` (label is all | hem | other | error)."""

    path: str
    label: str
    probability: float | None = None  # P(all); None when the file could not be read
    error: str = ""
    ood: float | None = None  # out-of-scope score; None for errors and models without a scope gate in use

    @property
    def ok(self) -> bool:
        return self.label != ERROR_LABEL

    def to_dict(self) -> dict:
        """The table's fields in the table's order."""
        return {k: getattr(self, k) for k in TABLE_FIELDS}


TABLE_FIELDS = ("path", "label", "probability", "ood", "error")  # the classify table's columns (docs/contracts.md)


STAGES = ("decode", "resize", "infer", "wait")


class WorkerCrash(RuntimeError):
    """A worker failed for a reason other than an unreadable file: a bug, not a data problem. Not a row."""


@dataclass
class StageTimes:
    """Per-stage time accumulators of one run (seconds).

    `decode_s` (read + decode to 8-bit BGR) and `resize_s` (resize + scale into the batch) sum over the worker
    threads, overlapping inference; `infer_s` is onnxruntime time on the main thread; `wait_s` is how long
    inference waited for the workers (a pipeline stall: near zero when decoding keeps up); `wall_s` is the run's
    elapsed time. Shares of wall time can add up to more than 100 %: the stages run at the same time.
    """

    images: int = 0
    errors: int = 0
    batches: int = 0
    decode_s: float = 0.0
    resize_s: float = 0.0
    infer_s: float = 0.0
    wait_s: float = 0.0
    wall_s: float = 0.0

    @property
    def throughput(self) -> float:
        """Files per second, end to end (errors included: they were read too)."""
        return self.images / self.wall_s if self.wall_s > 0 else 0.0

    def ms_per_image(self, stage: str) -> float:
        return 1000.0 * getattr(self, f"{stage}_s") / self.images if self.images else 0.0

    def share_of_wall(self, stage: str) -> float:
        return getattr(self, f"{stage}_s") / self.wall_s if self.wall_s > 0 else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "images_per_s": self.throughput,
                **{f"{s}_ms_per_image": self.ms_per_image(s) for s in STAGES},
                **{f"{s}_share_of_wall": self.share_of_wall(s) for s in STAGES}}


def available_cores() -> int:
    """CPUs this process may run on (affinity / cgroup cpuset), not the host's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def thread_split(cores: int | None = None) -> tuple[int, int]:
    """(decode workers, onnxruntime intra-op threads) for `cores` CPUs.

    Preprocessing a 450x450 BMP costs ~0.5 CPU-ms, the CNN at 256 ~3.3 CPU-ms and InceptionV3 ~30: one worker per
    four cores (at least one) keeps the batches ready, and onnxruntime gets every core, its idle threads sleeping
    (`spinning=False`) while a worker runs. benchmarks/bench_classify.py measures the grid on the machine at hand."""
    cores = cores or available_cores()
    return max(1, cores // 4), cores


def default_workers() -> int:
    return thread_split()[0]


def _short_reason(exc: BaseException) -> str:
    if isinstance(exc, ImageReadError):
        return str(exc)
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[-1][:160]}" if text else type(exc).__name__


_opencv_pinned: list[int] = []  # the thread count set by the first pipeline of this process
_opencv_lock = threading.Lock()


@contextlib.contextmanager
def opencv_threads(n: int | None):
    """OpenCV's own thread pool would fight the decode workers and onnxruntime for the cores: the first pipeline
    of the process sets its thread count to `n`, once, and nothing sets it back. The count is process-wide, so
    setting and restoring it per run would let one thread's run (a station upload) flip it under another's (the
    live stream) -- a context manager only so that the pipelines read `with opencv_threads(1): ...`."""
    if n is not None:
        with _opencv_lock:
            if not _opencv_pinned:
                cv2.setNumThreads(n)
                _opencv_pinned.append(n)
    yield


def scored(classifier: Classifier, out: Inference) -> list[tuple[str, float, float | None]]:
    """(label, P(all), ood) per image of one model call: the rows' fields (ood None without a scope gate)."""
    oods = out.ood.tolist() if out.ood is not None else [None] * len(out)
    return list(zip(classifier.labels(out), out.p_all.tolist(), oods))


def _result(future: Future, path: Path):
    try:
        return future.result()
    except Exception as exc:  # not an ImageReadError (that one is returned as a row): a bug, crash loudly
        raise WorkerCrash(f"unexpected {type(exc).__name__} while preprocessing {path}: {exc}") from exc


@dataclass
class _Decoder:
    """Decodes one file straight into its slot of a batch array (runs on the worker threads) -> (error reason or
    None, decode seconds, resize seconds)."""
    size: tuple[int, int]
    resize: str
    value_scale: float
    bit_depth: int | None
    max_pixels: int | None
    on_decoded: Callable[[int, np.ndarray], None] | None
    index: dict  # id(path) -> its index in the caller's list (the Path objects are the call's own: ids unique)

    def __call__(self, buf: np.ndarray, i: int, path: Path) -> tuple[str | None, float, float]:
        t0 = time.perf_counter()
        try:
            src = decode_bgr(path, self.bit_depth, self.max_pixels)
        except ImageReadError as exc:  # only a file that cannot be read/decoded is that file's error row
            return _short_reason(exc), time.perf_counter() - t0, 0.0
        if self.on_decoded is not None:
            self.on_decoded(self.index[id(path)], src)
        t1 = time.perf_counter()
        h, w = self.size
        resize_scale(src, h, w, self.resize, out=buf[i], value_scale=self.value_scale, swap_rb=True)
        return None, t1 - t0, time.perf_counter() - t1


def _decoded_batches(batches: list[list[Path]], buffers: list[np.ndarray], decode: _Decoder, workers: int,
                     prefetch: int, times: StageTimes) -> Iterator[tuple[list[Path], np.ndarray, list[tuple]]]:
    """Yield (paths, batch array, decode results) in order while the next `prefetch` batches decode on a thread
    pool. One buffer per batch in flight + the one being inferred: never overwritten while in use."""
    pending: deque[tuple[list[Path], np.ndarray, list[Future]]] = deque()
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="leuk-decode")

    def submit(k: int) -> None:
        buf = buffers[k % len(buffers)]
        pending.append((batches[k], buf, [pool.submit(decode, buf, i, p) for i, p in enumerate(batches[k])]))

    try:
        next_k = 0
        while next_k < min(prefetch, len(batches)):
            submit(next_k)
            next_k += 1
        while pending:
            batch, buf, futures = pending.popleft()
            if next_k < len(batches):  # keep the workers busy while this batch is inferred
                submit(next_k)
                next_k += 1
            t0 = time.perf_counter()
            results = [_result(f, p) for f, p in zip(futures, batch)]
            times.wait_s += time.perf_counter() - t0
            times.decode_s += sum(r[1] for r in results)
            times.resize_s += sum(r[2] for r in results)
            yield batch, buf, results
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _batch_rows(classifier: Classifier, batch: list[Path], buf: np.ndarray, results: list[tuple], tta: bool,
                times: StageTimes) -> list[Row]:
    """One model call over the batch's decoded images -> a Row per path (error rows for the undecodable)."""
    good = [i for i, r in enumerate(results) if r[0] is None]
    by_index = {}
    if good:
        x = buf[:len(batch)] if len(good) == len(batch) else buf[good]
        t0 = time.perf_counter()
        by_index = dict(zip(good, scored(classifier, classifier.infer(x, tta=tta))))
        times.infer_s += time.perf_counter() - t0
        times.batches += 1
    rows = []
    for i, path in enumerate(batch):
        if results[i][0] is None:
            label, p, ood = by_index[i]
            rows.append(Row(str(path), label, p, ood=ood))
        else:
            rows.append(Row(str(path), ERROR_LABEL, None, results[i][0]))
    return rows


def classify_paths(
    classifier: Classifier,
    paths: Sequence[str | Path],
    batch_size: int = 8,
    workers: int | None = None,
    tta: bool = False,
    times: StageTimes | None = None,
    prefetch: int = 2,
    bit_depth: int | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    on_decoded: Callable[[int, np.ndarray], None] | None = None,
) -> Iterator[Row]:
    """Yield one Row per path, in order. Files that cannot be read or decoded (or are over `max_pixels`) become
    `label="error"` rows and the run goes on; any other failure in a worker is a bug and raises WorkerCrash.

    `prefetch` batches are decoded ahead of the one being inferred, into pre-allocated batch arrays.
    Pass a StageTimes to read the per-stage timings (it is updated as rows are produced, so it is valid
    after an interruption too). `on_decoded(i, bgr)` is called on the worker thread with each decoded image (index
    into `paths`, BGR uint8, valid only during the call): the station keeps a small review copy from the one decode.
    """
    if batch_size < 1:
        raise ValueError("batch size must be at least 1")
    paths = [Path(p) for p in paths]
    times = times if times is not None else StageTimes()
    prefetch = max(1, prefetch)
    h, w = classifier.size
    batches = [paths[i:i + batch_size] for i in range(0, len(paths), batch_size)]
    buffers = [np.empty((batch_size, h, w, 3), np.float32) for _ in range(min(prefetch + 1, len(batches)))]
    decode = _Decoder((h, w), classifier.info.input.resize, classifier.info.input.value_scale, bit_depth,
                      max_pixels, on_decoded, {id(p): i for i, p in enumerate(paths)})
    start = time.perf_counter()
    try:
        with opencv_threads(1), contextlib.closing(_decoded_batches(
                batches, buffers, decode, workers or default_workers(), prefetch, times)) as decoded:
            for batch, buf, results in decoded:
                for row in _batch_rows(classifier, batch, buf, results, tta, times):
                    times.errors += not row.ok
                    times.images += 1  # counted as handed out, so an interrupted run's totals match its rows
                    times.wall_s = time.perf_counter() - start
                    yield row
    finally:
        times.wall_s = time.perf_counter() - start
