"""Which model file runs: `--precision auto|fp32|fp16|int8`.

`export` writes the variants beside the FP32 model, each with the parity report of its gate:
MODEL.onnx (+ MODEL.parity.json), MODEL.int8.onnx (+ MODEL.int8.parity.json), MODEL.fp16.onnx (+ …). A variant
runs only when its report says `"passed": true`; `auto` prefers INT8 where the model runs on the CPU (onnxruntime's
x86 integer kernels; OpenVINO too) and FP16 on a GPU, and falls back to FP32 — with the reason — otherwise.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from .providers import providers_for

PRECISIONS = ("auto", "fp32", "fp16", "int8")
VARIANTS = ("fp16", "int8")
_INTEGER_PROVIDERS = ("CPUExecutionProvider", "OpenVINOExecutionProvider")


class PrecisionError(ValueError):
    """An explicitly requested variant cannot be used (missing, or it did not pass its gate)."""


@dataclass(frozen=True)
class PrecisionChoice:
    requested: str
    used: str  # fp32 | fp16 | int8
    path: Path
    reason: str

    def to_dict(self) -> dict:
        return {**asdict(self), "path": str(self.path)}


def base_stem(model: Path) -> tuple[Path, str]:
    """MODEL.int8.onnx -> (MODEL.onnx, "int8"); MODEL.onnx -> (MODEL.onnx, "fp32")."""
    stem = model.name[: -len(".onnx")] if model.name.endswith(".onnx") else model.stem
    for v in VARIANTS:
        if stem.endswith("." + v):
            return model.with_name(stem[: -len(v) - 1] + ".onnx"), v
    return model, "fp32"


def sibling(model: Path, precision: str, suffix: str = ".onnx") -> Path:
    """MODEL.onnx -> MODEL.<precision>.onnx (or another suffix, e.g. ".parity.json"); fp32 -> MODEL<suffix>."""
    stem = model.name[: -len(".onnx")] if model.name.endswith(".onnx") else model.stem
    return model.with_name(stem + ("" if precision == "fp32" else f".{precision}") + suffix)


def card_path(model: Path) -> Path | None:
    """The model card of `model`: MODEL.card.md beside MODEL.onnx; a variant shares its FP32 model's card."""
    card = sibling(base_stem(Path(model))[0], "fp32", ".card.md")
    return card if card.is_file() else None


def parity_reports(model: Path) -> list[Path]:
    """The parity reports of a model's set that exist: MODEL.parity.json, then each variant's."""
    base = base_stem(Path(model))[0]
    return [r for r in (sibling(base, p, ".parity.json") for p in ("fp32", *VARIANTS)) if r.is_file()]


def gate_status(variant: Path) -> tuple[bool, str]:
    """(passed, why) from the parity report beside `variant` (X.onnx -> X.parity.json)."""
    report = sibling(variant, "fp32", ".parity.json")
    if not variant.is_file():
        return False, f"{variant.name} not found"
    if not report.is_file():
        return False, f"{variant.name} has no parity report ({report.name})"
    try:
        passed = json.loads(report.read_text(encoding="utf-8")).get("passed")
    except (OSError, ValueError, AttributeError):
        return False, f"{report.name} is not a readable parity report"
    if passed is True:
        return True, f"{report.name} says passed"
    return False, f"{variant.name} did not pass its parity gate ({report.name})"


def preferred_variant(device: str) -> str:
    """int8 where the model runs on the CPU (or OpenVINO), fp16 on a GPU provider."""
    return "int8" if providers_for(device)[0] in _INTEGER_PROVIDERS else "fp16"


def choose_precision(model: str | Path, precision: str = "auto", device: str = "auto") -> PrecisionChoice:
    """The model file to run for `precision` on `device`. A model given as a variant file (MODEL.int8.onnx) runs as
    given. `auto` never fails: it falls back to FP32 and says why; an explicit fp16/int8 that cannot be used is a
    PrecisionError (a usage error)."""
    if precision not in PRECISIONS:
        raise PrecisionError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    model = Path(model)
    base, given = base_stem(model)
    if given != "fp32":
        if precision not in ("auto", given):
            raise PrecisionError(f"{model.name} is the {given.upper()} variant; pass {base.name} for --precision "
                                 f"{precision}")
        return PrecisionChoice(precision, given, model, "variant file given")
    if precision == "fp32":
        return PrecisionChoice(precision, "fp32", model, "requested")
    want = preferred_variant(device) if precision == "auto" else precision
    candidate = sibling(model, want)
    ok, why = gate_status(candidate)
    if ok:
        return PrecisionChoice(precision, want, candidate, why)
    if precision == "auto":
        return PrecisionChoice(precision, "fp32", model, f"FP32: {why}")
    raise PrecisionError(f"--precision {precision}: {why}")
