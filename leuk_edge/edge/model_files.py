"""The names of an exported model's file set, in one place (export writes them, the edge reads them).

    MODEL.onnx            the FP32 model              MODEL.parity.json         its gate report
    MODEL.fp16.onnx       the FP16 variant            MODEL.fp16.parity.json    its gate report (against MODEL.onnx)
    MODEL.int8.onnx       the INT8 variant            MODEL.int8.parity.json    ...
    MODEL.failed.onnx     a candidate that failed     MODEL.int8.failed.onnx    a variant that failed
    MODEL.card.md         the model card (variants share it)
    MODEL.manifest.json   every file above that the export wrote, with its SHA-256 -- written last
"""

from __future__ import annotations

from pathlib import Path

VARIANTS = ("fp16", "int8")  # the reduced-precision variants an export can make
MANIFEST_SCHEMA = 1  # MODEL.manifest.json: {"schema_version", "model", "keras", "keras_sha256", "files": {name: sha}}


def sibling(model: str | Path, suffix: str) -> Path:
    """MODEL.onnx -> MODEL<suffix> beside it (suffix e.g. ".parity.json", ".int8.onnx", ".failed.onnx")."""
    p = Path(model)
    stem = p.name[:-len(".onnx")] if p.name.endswith(".onnx") else p.name
    return p.with_name(stem + suffix)


def base_of(model: str | Path) -> tuple[Path, str]:
    """MODEL.int8.onnx -> (MODEL.onnx, "int8"); MODEL.onnx -> (MODEL.onnx, "fp32")."""
    model = Path(model)
    stem = model.name[:-len(".onnx")] if model.name.endswith(".onnx") else model.stem
    for v in VARIANTS:
        if stem.endswith("." + v):
            return model.with_name(stem[:-len(v) - 1] + ".onnx"), v
    return model, "fp32"


def variant_path(model: str | Path, precision: str) -> Path:
    """MODEL.onnx -> MODEL.int8.onnx / MODEL.fp16.onnx; "fp32" -> MODEL.onnx itself."""
    return Path(model) if precision == "fp32" else sibling(model, f".{precision}.onnx")


def report_path(model: str | Path) -> Path:
    """X.onnx -> X.parity.json (beside it)."""
    return sibling(model, ".parity.json")


def failed_path(model: str | Path) -> Path:
    """X.onnx -> X.failed.onnx: a name nothing loads by accident."""
    return sibling(model, ".failed.onnx")


def card_path(model: str | Path) -> Path:
    """The model card of a model's set: MODEL.card.md (a variant shares its FP32 model's card). It may not exist."""
    return sibling(base_of(model)[0], ".card.md")


def manifest_path(model: str | Path) -> Path:
    """MODEL.manifest.json: what the export of this set wrote, with every file's SHA-256."""
    return sibling(base_of(model)[0], ".manifest.json")


def parity_reports(model: str | Path) -> list[Path]:
    """The gate reports of a model's set that exist: MODEL.parity.json, then each variant's."""
    base = base_of(model)[0]
    return [r for r in (report_path(variant_path(base, p)) for p in ("fp32", *VARIANTS)) if r.is_file()]
