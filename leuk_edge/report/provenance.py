"""What the report says about the model and its training run: the model card beside the model, the metadata
(threshold, calibration, CAM), the parity report, and a run's metrics.json / config.json / reliability.png."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from pathlib import Path

from ..edge.model_files import card_path, report_path

def _json(path: Path) -> dict | None:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


@dataclass
class ModelFacts:
    path: str
    metadata: dict = field(default_factory=dict)
    has_cam: bool = False
    card: str | None = None          # Markdown text
    card_file: str | None = None
    parity: dict | None = None

    @classmethod
    def of(cls, classifier) -> ModelFacts:
        info = classifier.info
        meta = {"architecture": info.architecture, "threshold": info.threshold,
                "input": f"{info.input.height}x{info.input.width} {info.input.color} ({info.input.resize} resize)",
                **{k: v for k, v in info.extra.items() if k not in ("card",)}}
        path = Path(classifier.path)
        card = card_path(path) if card_path(path).is_file() else None
        return cls(str(path), meta, classifier.has_cam, card.read_text(encoding="utf-8") if card else None,
                   str(card) if card else None, _json(report_path(path)))


@dataclass
class RunFacts:
    path: str
    metrics: dict = field(default_factory=dict)
    calibration: dict | None = None
    reliability_uri: str | None = None

    @classmethod
    def of(cls, run: str | Path) -> RunFacts:
        run = Path(run)
        if not run.is_dir():
            raise ValueError(f"--run {run} is not a training run folder")
        metrics = _json(run / "metrics.json")
        if metrics is None:
            raise ValueError(f"--run {run} has no readable metrics.json")
        config = _json(run / "config.json") or {}
        rel = run / "reliability.png"
        uri = "data:image/png;base64," + base64.b64encode(rel.read_bytes()).decode("ascii") if rel.is_file() else None
        return cls(str(run), metrics, config.get("calibration"), uri)
