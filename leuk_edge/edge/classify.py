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
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, Sequence

import cv2
import numpy as np

from .model import Classifier
from .preprocess import ImageReadError, decode_image, preprocess

ERROR_LABEL = "error"


@dataclass(frozen=True)
class Row:
    """One line of the classify table: `path,label,probability,error` (label is all | hem | error)."""

    path: str
    label: str
    probability: float | None = None  # P(all); None when the file could not be read
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.label != ERROR_LABEL

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class StageTimes:
    """Per-stage time accumulators of one run (seconds).

    `decode_s` sums over worker threads (CPU time spent in decode + preprocess, it overlaps inference);
    `infer_s` is onnxruntime time on the main thread; `wait_s` is how long inference waited for decoding
    (a pipeline stall: near zero when decoding keeps up); `wall_s` is the run's elapsed time.
    """

    images: int = 0
    errors: int = 0
    batches: int = 0
    decode_s: float = 0.0
    infer_s: float = 0.0
    wait_s: float = 0.0
    wall_s: float = 0.0

    @property
    def throughput(self) -> float:
        """Files per second, end to end (errors included: they were read too)."""
        return self.images / self.wall_s if self.wall_s > 0 else 0.0

    def ms_per_image(self, stage: str) -> float:
        return 1000.0 * getattr(self, f"{stage}_s") / self.images if self.images else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "images_per_s": self.throughput,
                "decode_ms_per_image": self.ms_per_image("decode"),
                "infer_ms_per_image": self.ms_per_image("infer")}


def default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def _short_reason(exc: BaseException) -> str:
    if isinstance(exc, ImageReadError):
        return str(exc)
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[-1][:160]}" if text else type(exc).__name__


@contextlib.contextmanager
def opencv_threads(n: int | None):
    """OpenCV's own thread pool would fight the decode workers and onnxruntime for the cores: use `n` inside."""
    if n is None:
        yield
        return
    before = cv2.getNumThreads()
    cv2.setNumThreads(n)
    try:
        yield
    finally:
        cv2.setNumThreads(before)


def classify_paths(
    classifier: Classifier,
    paths: Sequence[str | Path],
    batch_size: int = 8,
    workers: int | None = None,
    tta: bool = False,
    times: StageTimes | None = None,
    prefetch: int = 2,
) -> Iterator[Row]:
    """Yield one Row per path, in order. Unreadable files become `label="error"` rows; the run goes on.

    `prefetch` batches are decoded ahead of the one being inferred, into pre-allocated batch arrays.
    Pass a StageTimes to read the per-stage timings (it is updated as rows are produced, so it is valid
    after an interruption too).
    """
    if batch_size < 1:
        raise ValueError("batch size must be at least 1")
    paths = [Path(p) for p in paths]
    times = times if times is not None else StageTimes()
    workers = workers or default_workers()
    prefetch = max(1, prefetch)
    h, w = classifier.size
    resize = classifier.info.input.resize
    batches = [paths[i:i + batch_size] for i in range(0, len(paths), batch_size)]
    # One buffer per batch in flight (prefetch) + the one being inferred: never overwritten while in use.
    buffers = [np.empty((batch_size, h, w, 3), np.float32) for _ in range(min(prefetch + 1, len(batches)))]

    def load_into(buf: np.ndarray, i: int, path: Path) -> tuple[str | None, float]:
        t0 = time.perf_counter()
        try:
            preprocess(decode_image(path), h, w, resize, out=buf[i])  # straight into the batch array
            err = None
        except Exception as exc:  # noqa: BLE001 - any failure of one file is that file's error row
            err = _short_reason(exc)
        return err, time.perf_counter() - t0

    start = time.perf_counter()
    pending: deque[tuple[list[Path], np.ndarray, list[Future]]] = deque()
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="leuk-decode")

    def submit(k: int) -> None:
        buf = buffers[k % len(buffers)]
        pending.append((batches[k], buf, [pool.submit(load_into, buf, i, p) for i, p in enumerate(batches[k])]))

    try:
        with opencv_threads(1):
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
                results = [f.result() for f in futures]
                times.wait_s += time.perf_counter() - t0
                times.decode_s += sum(r[1] for r in results)
                good = [i for i, (err, _) in enumerate(results) if err is None]
                probs = np.zeros((0,), np.float32)
                if good:
                    x = buf[:len(batch)] if len(good) == len(batch) else buf[good]
                    t0 = time.perf_counter()
                    probs = classifier.predict(x, tta=tta)
                    times.infer_s += time.perf_counter() - t0
                    times.batches += 1
                by_index = dict(zip(good, probs.tolist()))
                for i, path in enumerate(batch):
                    err = results[i][0]
                    if err is None:
                        p = by_index[i]
                        row = Row(str(path), classifier.label(p), p)
                    else:
                        row = Row(str(path), ERROR_LABEL, None, err)
                        times.errors += 1
                    times.images += 1  # counted as handed out, so an interrupted run's totals match its rows
                    times.wall_s = time.perf_counter() - start
                    yield row
    finally:
        times.wall_s = time.perf_counter() - start
        pool.shutdown(wait=True, cancel_futures=True)
