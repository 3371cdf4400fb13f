"""What the Model tab shows: the runner's view of the model, its parity reports and model card, its file hash."""

from __future__ import annotations

import json
from pathlib import Path

from .. import DISCLAIMER, __version__
from ..edge.model_files import card_path, parity_reports


def model_info(clf, sha256: str) -> dict:
    path = Path(clf.path)
    parity = []
    for p in parity_reports(path):
        try:
            parity.append({"file": p.name, "report": json.loads(p.read_text())})
        except (OSError, ValueError) as exc:
            parity.append({"file": p.name, "error": str(exc)})
    card = card_path(path) if card_path(path).is_file() else None
    extra = clf.info.extra
    return {
        "file": path.name, "sha256": sha256, "architecture": clf.info.architecture,
        "input": clf.info.input.to_dict(), "output": clf.info.output, "classes": list(clf.info.classes),
        "threshold": clf.threshold, "calibration": clf.calibration, "explanations": clf.has_cam,
        "providers": list(clf.providers), "source_sha256": extra.get("source_sha256"),
        "model_version": extra.get("leuk_edge_version"), "created": extra.get("created"),
        "runner_version": __version__, "parity": parity,
        "card": {"file": card.name, "text": card.read_text(errors="replace")} if card else None,
        "disclaimer": DISCLAIMER,
    }
