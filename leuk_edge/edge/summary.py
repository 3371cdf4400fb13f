"""The classify summary: counts, the fraction of blasts with its Wilson interval, throughput per stage; and the
one blast-fraction rule every summary uses (all / (all + hem): `other` and errors are never in it)."""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable

from .. import DISCLAIMER
from .classify import ERROR_LABEL, STAGES, Row, StageTimes
from .labels import OTHER


def wilson_interval(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion k/n (95 % by default); (0, 1) when n == 0."""
    if n <= 0:
        return 0.0, 1.0
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def blast_fraction(n_all: int, n_hem: int) -> float | None:
    """The share of blasts among the cells the model classed (all + hem): `other` (out of scope) and unreadable
    files are never in it. None when nothing was classed."""
    n = n_all + n_hem
    return n_all / n if n else None


def blast_interval(n_all: int, n_hem: int) -> tuple[float, float]:
    """The 95 % Wilson interval of `blast_fraction`, over n = all + hem counted cells."""
    return wilson_interval(n_all, n_all + n_hem)


def scope_entry(classifier) -> dict:
    """The summaries' `scope`: whether out-of-scope cells were flagged `other` in this run, at which threshold,
    by which method, and the one-line note when they were not."""
    scope = getattr(classifier, "scope", None) or {}
    threshold = getattr(classifier, "ood_threshold", None)
    return {"used": threshold is not None, "threshold": threshold, "method": scope.get("method"),
            "note": classifier.scope_note() if hasattr(classifier, "scope_note") else None}


@dataclass
class ClassifySummary:
    """What one `classify` run did; `add(row)` as rows arrive, so a partial (interrupted) run summarises too."""

    counts: Counter = field(default_factory=Counter)
    skipped: int = 0
    interrupted: bool = False
    stopped_by: str = ""  # "interrupted" (Ctrl-C) | "terminated" (SIGTERM) when `interrupted`
    providers: list[str] = field(default_factory=list)
    threads: int | str | None = None
    workers: int | None = None  # decode/resize threads
    batch_size: int | None = None
    tta: bool = False
    times: StageTimes = field(default_factory=StageTimes)
    model: str = ""
    out: str = ""
    precision: dict = field(default_factory=dict)  # edge.precision.PrecisionChoice.to_dict(): which model ran, why
    scope: dict = field(default_factory=dict)  # scope_entry(classifier): was `other` flagged in this run
    first_error: str = ""  # "path: reason" of the first error row

    def add(self, row: Row) -> None:
        self.counts[row.label] += 1
        if not row.ok and not self.first_error:
            self.first_error = f"{row.path}: {row.error}"

    def extend(self, rows: Iterable[Row]) -> None:
        for r in rows:
            self.add(r)

    @property
    def images(self) -> int:
        return sum(self.counts.values())

    @property
    def errors(self) -> int:
        return self.counts[ERROR_LABEL]

    @property
    def classified(self) -> int:
        """Files the model labelled: all + hem + other."""
        return self.images - self.errors

    @property
    def blast_fraction(self) -> float | None:
        return blast_fraction(self.counts["all"], self.counts["hem"])

    @property
    def blast_interval(self) -> tuple[float, float]:
        return blast_interval(self.counts["all"], self.counts["hem"])

    def to_dict(self) -> dict:
        lo, hi = self.blast_interval
        return {
            "images": self.images, "all": self.counts["all"], "hem": self.counts["hem"],
            "other": self.counts[OTHER], "errors": self.errors,
            "skipped": self.skipped, "blast_fraction": self.blast_fraction, "blast_fraction_ci95": [lo, hi],
            "interrupted": self.interrupted, "stopped_by": self.stopped_by, "providers": self.providers,
            "threads": self.threads, "workers": self.workers,
            "batch_size": self.batch_size, "tta": self.tta, "times": self.times.to_dict(), "model": self.model,
            "precision": self.precision, "scope": self.scope, "out": self.out, "disclaimer": DISCLAIMER,
        }


def write_summary(summary: ClassifySummary, path) -> None:
    """The summary as JSON (`classify --summary FILE`)."""
    from pathlib import Path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary.to_dict(), indent=2) + "\n", encoding="utf-8")


def _pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def blast_fraction_text(fraction: float | None, lo: float, hi: float) -> str:
    """The summaries' blast-fraction line: fraction with its 95 % Wilson interval."""
    if fraction is None:
        return "n/a (nothing classified)"
    return f"{_pct(fraction)}  (95 % Wilson CI {_pct(lo)} - {_pct(hi)})"


def render_summary(summary: ClassifySummary, console) -> None:
    """A rich table on `console` (stderr in the CLI), followed by the disclaimer."""
    from rich.table import Table

    t = summary.times
    title = "leuk-edge classify" + (f" ({summary.stopped_by or 'interrupted'})" if summary.interrupted else "")
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column("what", style="bold")
    table.add_column("value")
    table.add_row("images", str(summary.images) + (f"  ({summary.skipped} non-image files skipped)"
                                                    if summary.skipped else ""))
    table.add_row("all (blast)", str(summary.counts["all"]))
    table.add_row("hem (normal)", str(summary.counts["hem"]))
    in_use = summary.scope.get("used")
    table.add_row("other (out of scope)", str(summary.counts[OTHER]) if in_use or summary.counts[OTHER]
                  else "[dim]not flagged: no scope gate in use[/]")
    table.add_row("errors", f"[red]{summary.errors}[/]" if summary.errors else "0")
    table.add_row("blast fraction", blast_fraction_text(summary.blast_fraction, *summary.blast_interval))
    table.add_row("throughput", f"{t.throughput:.1f} images/s  ({t.wall_s:.2f} s wall)")
    notes = {"decode": "read + decode, worker threads", "resize": "resize + scale into the batch, worker threads",
             "infer": f"onnxruntime, batch {summary.batch_size}" + (", TTA x8" if summary.tta else ""),
             "wait": "inference waiting for the workers"}
    for stage in STAGES:
        table.add_row(stage, f"{t.ms_per_image(stage):.2f} ms/image  {100 * t.share_of_wall(stage):5.1f} % of wall  "
                             f"[dim]({notes[stage]})[/]")
    prec = summary.precision
    if prec:
        table.add_row("precision", f"{prec['used'].upper()}  [dim]({prec['reason']})[/]")
    table.add_row("providers", ", ".join(summary.providers) or "?")
    if summary.threads:
        table.add_row("threads", f"{summary.threads} onnxruntime intra-op"
                                 + (f", {summary.workers} decode/resize" if summary.workers else ""))
    if summary.out:
        table.add_row("table", summary.out)
    console.print(table)
    console.print(f"[dim]{DISCLAIMER}[/]", highlight=False)
