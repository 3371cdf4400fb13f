"""Model-only benchmark: latency (p50/p95) and throughput per batch size, warm-up excluded."""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np

from .model import Classifier


@dataclass
class BatchBench:
    batch_size: int
    runs: int
    p50_ms: float
    p95_ms: float
    mean_ms: float
    images_per_s: float  # batch_size / mean latency


@dataclass
class BenchReport:
    model: str
    device: str
    providers: list[str]
    threads: int | str  # intra-op threads; "default" means onnxruntime's choice (one per physical core)
    input: list[int]  # [height, width, channels]
    warmup: int
    results: list[BatchBench] = field(default_factory=list)
    precision: dict = field(default_factory=dict)  # edge.precision.PrecisionChoice.to_dict(): which file ran

    def to_dict(self) -> dict:
        return asdict(self)


def session_threads(classifier: Classifier) -> int | str:
    n = classifier.session.get_session_options().intra_op_num_threads
    return n if n > 0 else f"default ({os.cpu_count()} logical cores)"


def bench_batch(classifier: Classifier, batch_size: int, runs: int = 20, warmup: int = 3,
                min_time_s: float = 0.0, seed: int = 0) -> BatchBench:
    """Time `runs` inferences of a random batch (after `warmup` untimed ones); keeps going until `min_time_s`."""
    if batch_size < 1 or runs < 1:
        raise ValueError("batch size and runs must be at least 1")
    h, w = classifier.size
    x = np.random.default_rng(seed).random((batch_size, h, w, 3), dtype=np.float32)
    sess, feed, out = classifier.session, {classifier.input_name: x}, [classifier.output_name]
    for _ in range(warmup):
        sess.run(out, feed)
    lat = []
    t_start = time.perf_counter()
    while len(lat) < runs or time.perf_counter() - t_start < min_time_s:
        t0 = time.perf_counter()
        sess.run(out, feed)
        lat.append(time.perf_counter() - t0)
    lat_ms = np.array(lat) * 1000.0
    mean = float(lat_ms.mean())
    return BatchBench(batch_size=batch_size, runs=len(lat), p50_ms=float(np.percentile(lat_ms, 50)),
                      p95_ms=float(np.percentile(lat_ms, 95)), mean_ms=mean,
                      images_per_s=1000.0 * batch_size / mean if mean > 0 else 0.0)


def bench_model(classifier: Classifier, batch_sizes: Sequence[int] = (1, 8, 32), runs: int = 20, warmup: int = 3,
                min_time_s: float = 0.0, device: str = "auto") -> BenchReport:
    h, w = classifier.size
    if device == "auto":
        device = f"auto ({classifier.providers[0]})"
    report = BenchReport(model=str(classifier.path), device=device, providers=list(classifier.providers),
                         threads=session_threads(classifier), input=[h, w, 3], warmup=warmup)
    for b in batch_sizes:
        report.results.append(bench_batch(classifier, int(b), runs=runs, warmup=warmup, min_time_s=min_time_s))
    return report


def render_bench(report: BenchReport, console) -> None:
    from rich.table import Table

    from .. import DISCLAIMER

    table = Table(title=f"leuk-edge bench  {report.model}", title_justify="left")
    for col in ("batch", "runs", "p50 ms", "p95 ms", "images/s"):
        table.add_column(col, justify="right")
    for r in report.results:
        table.add_row(str(r.batch_size), str(r.runs), f"{r.p50_ms:.2f}", f"{r.p95_ms:.2f}", f"{r.images_per_s:.1f}")
    console.print(table)
    if report.precision:
        console.print(f"precision {report.precision['used'].upper()} ({report.precision['reason']})",
                      highlight=False)
    console.print(f"device {report.device}; providers {', '.join(report.providers)}; intra-op threads "
                  f"{report.threads}; input {'x'.join(map(str, report.input))}; warm-up {report.warmup} runs "
                  "excluded", highlight=False)
    console.print(f"[dim]{DISCLAIMER}[/]", highlight=False)
