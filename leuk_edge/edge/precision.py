"""Which model file runs: `--precision auto|fp32|fp16|int8` (classify, bench, stream, serve).

`export` writes the variants beside the FP32 model, each with the report of its gate against it, and writes
MODEL.manifest.json last (every file's SHA-256; names in `edge.model_files`). A variant is used only when it is
bound to this FP32 file:
  - the manifest exists and MODEL.onnx, the variant and its report are the bytes it lists (nothing copied in,
    rewritten or left over from a commit cut short), and
  - the report says passed and names this MODEL.onnx's SHA-256 as its reference and the variant's as its model.
`auto` asks more -- that the gate was the export's own for that precision (`edge.gates.gate_shortfall`: FP16 by
atol, INT8 by decision agreement, on >= 100 real images) and ran on the execution provider that will run the
variant -- and prefers INT8 where the model runs on the CPU (onnxruntime's x86 integer kernels; OpenVINO too) and
FP16 on a GPU. Otherwise it runs FP32, and `reason` says why in one line. An explicit `fp16`/`int8` needs the
binding only (a usage error without it); its reason says when auto would not have chosen it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from .files import sha256_file
from .gates import gate_shortfall
from .model_files import base_of, manifest_path, report_path, variant_path
from .providers import provider_of

PRECISIONS = ("auto", "fp32", "fp16", "int8")  # the --precision choices
_INTEGER_PROVIDERS = ("CPUExecutionProvider", "OpenVINOExecutionProvider")


class PrecisionError(ValueError):
    """An explicitly requested variant cannot be used (missing, not passed, or not bound to this model)."""


@dataclass(frozen=True)
class PrecisionChoice:
    requested: str
    used: str  # fp32 | fp16 | int8
    path: Path
    reason: str

    def to_dict(self) -> dict:
        return {**asdict(self), "path": str(self.path)}


def read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def bound_report(base: Path, precision: str) -> tuple[dict | None, str]:
    """(the variant's gate report, "") when MODEL.<precision>.onnx is bound to `base` (see the module doc), else
    (None, why not) in one line."""
    variant = variant_path(base, precision)
    report_file = report_path(variant)
    if not variant.is_file():
        return None, f"{variant.name} not found"
    if not report_file.is_file():
        return None, f"{variant.name} has no parity report ({report_file.name})"
    report = read_json(report_file)
    if report is None:
        return None, f"{report_file.name} is not a readable parity report"
    if report.get("passed") is not True:
        return None, f"{variant.name} did not pass its parity gate ({report_file.name})"
    manifest = read_json(manifest_path(base))
    if manifest is None or not isinstance(manifest.get("files"), dict):
        return None, (f"no export manifest ({manifest_path(base).name}): the set is incomplete or was not written "
                      "by `leuk-edge export`")
    sha = {}
    for f in (base, variant, report_file):
        sha[f] = sha256_file(f)
        listed = manifest["files"].get(f.name)
        if listed != sha[f]:
            how = "not in" if listed is None else "its SHA-256 differs from"
            return None, f"{f.name} is not the file the export wrote ({how} {manifest_path(base).name})"
    if report.get("reference_sha256") != sha[base] or report.get("model_sha256") != sha[variant]:
        return None, f"{report_file.name} does not name the SHA-256 of {base.name} and {variant.name}"
    return report, ""


def auto_shortfall(report: dict, precision: str, provider: str) -> str | None:
    """Why `auto` does not run a bound variant: its gate was weaker than the export's, or ran on another execution
    provider than the one that would run it. None when auto may."""
    why = gate_shortfall(report, precision)
    if why is None and report.get("device") != provider:
        why = f"it was gated on {report.get('device')}, and would run on {provider}"
    return why


def preferred_variant(device: str) -> str:
    """int8 where the model runs on the CPU (or OpenVINO), fp16 on a GPU provider."""
    return "int8" if provider_of(device) in _INTEGER_PROVIDERS else "fp16"


def choose_precision(model: str | Path, precision: str = "auto", device: str = "auto") -> PrecisionChoice:
    """The model file to run for `precision` on `device` (which need not exist on this machine: a Ray driver
    chooses for its actors). A model given as a variant file (MODEL.int8.onnx) runs as given. `auto` never fails: it falls back to FP32 and says why; an explicit fp16/int8 that cannot be used is a
    PrecisionError (a usage error)."""
    if precision not in PRECISIONS:
        raise PrecisionError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    model = Path(model)
    base, given = base_of(model)
    if given != "fp32":
        if precision not in ("auto", given):
            raise PrecisionError(f"{model.name} is the {given.upper()} variant; pass {base.name} for --precision "
                                 f"{precision}")
        return PrecisionChoice(precision, given, model, "variant file given")
    if precision == "fp32":
        return PrecisionChoice(precision, "fp32", model, "requested")
    want = preferred_variant(device) if precision == "auto" else precision
    candidate = variant_path(model, want)
    report, why = bound_report(model, want)
    if report is not None:
        short = auto_shortfall(report, want, provider_of(device))
        if short is None:
            return PrecisionChoice(precision, want, candidate,
                                   f"{report_path(candidate).name}: passed the export's {want.upper()} gate on "
                                   f"{report.get('n')} images on {report.get('device')}")
        if precision != "auto":
            return PrecisionChoice(precision, want, candidate, f"requested (auto would not run it: {short})")
        why = short
    if precision == "auto":
        return PrecisionChoice(precision, "fp32", model, f"FP32: {want.upper()} {candidate.name} not used: {why}")
    raise PrecisionError(f"--precision {precision}: {why}")


def overlay_source(model: str | Path) -> Path:
    """The file whose `cam` maps may be drawn for a run of `model`: the model itself when its maps are gated (FP32:
    against Keras by export; a variant: when its own report, naming its SHA-256, says its cam check passed), else
    its FP32 model."""
    model = Path(model)
    base, precision = base_of(model)
    if precision == "fp32":
        return model
    report = read_json(report_path(model)) or {}
    cam = report.get("cam")
    if isinstance(cam, dict) and cam.get("gated") is True and cam.get("passed") is True \
            and model.is_file() and report.get("model_sha256") == sha256_file(model):
        return model
    return base


def overlay_classifier(clf):
    """The Classifier whose maps are drawn for runs of `clf` (see `overlay_source`): `clf` itself, or its FP32
    model opened on the CPU (overlays are a post-pass over few images)."""
    from .model import Classifier

    source = overlay_source(clf.path)
    if source == Path(clf.path):
        return clf
    return Classifier(source, device="cpu", spinning=False)
