"""The one rule for reading a training run's metrics.json (docs/contracts.md): only `val`, `test` and
`all_labelled` are evaluated splits; every other key (`health`, `scope`, ...) describes the run. Here, at the ground
floor, so that training (which writes the file) and the report (which reads it, edge-only) share it."""

from __future__ import annotations

SPLITS = ("val", "test", "all_labelled")


def split_metrics(metrics: dict) -> dict:
    """The per-split entries of a metrics.json, in file order."""
    return {k: v for k, v in metrics.items() if k in SPLITS and isinstance(v, dict)}
