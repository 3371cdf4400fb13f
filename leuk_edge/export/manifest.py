"""MODEL.manifest.json: the export's list of the files it committed, with each file's SHA-256, written last.

A set without its manifest was cut short mid-commit (or not written by `export`); a file whose bytes differ from
its manifest entry was changed afterwards (a copied MODEL.onnx beside an old variant, a report rewritten by
`leuk-edge parity`). `edge.precision` reads it before it trusts a variant.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable

from .. import __version__
from ..edge.files import sha256_file
from ..edge.model_files import MANIFEST_SCHEMA, manifest_path


def write_manifest(model: Path, keras_path: Path | None, files: Iterable[Path]) -> Path:
    """Write MODEL.manifest.json for the committed `files` (atomically: a temp file renamed into place)."""
    path = manifest_path(model)
    body = {"schema_version": MANIFEST_SCHEMA, "model": Path(model).name,
            "keras": str(keras_path) if keras_path else None,
            "keras_sha256": sha256_file(keras_path) if keras_path else None, "leuk_edge_version": __version__,
            "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "files": {Path(f).name: sha256_file(f) for f in sorted(files, key=lambda f: Path(f).name)}}
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(body, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path
