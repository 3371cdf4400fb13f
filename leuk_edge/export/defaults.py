"""Defaults of the export gates and the names of the files an export writes.

No heavy imports (no TensorFlow, onnx or onnxruntime): the CLI reads its option defaults from here at start-up.
"""

from __future__ import annotations

from pathlib import Path

DEFAULT_OPSET = 17  # per-channel QDQ needs >= 13; 17 is supported by every onnxruntime >= 1.14

# FP32 gate: Keras vs ONNX on identical tensors, and file to probability through both input pipelines.
DEFAULT_ATOL = 1e-4
DEFAULT_N = 20
DEFAULT_BATCH_SIZES = (1, 5)
PARITY_SEED = 0

# P(all) through FP16 weights and activations moves by up to ~1e-2 on confident heads; 2e-2 still flags real breakage
# (overflow, a wrong cast) without failing on rounding.
FP16_ATOL = 2e-2
INT8_MIN_AGREEMENT = 0.98
# Agreement is a fraction: with fewer images one flipped decision already breaks a 0.98 gate by chance. Variants
# are checked on at least this many images unless a count is given explicitly.
MIN_AGREEMENT_N = 100

DEFAULT_CALIB_SIZE = 64
CALIB_SEED = 1000  # synthetic calibration cells differ from the parity cells (seed PARITY_SEED)


def variant_gate(precision: str) -> tuple[float | None, float | None]:
    """(atol, min_agreement) a variant of this `precision` (its metadata's) is judged by against its FP32 model.

    INT8 outputs legitimately move by a few hundredths, so only its decisions at the threshold are compared; an
    FP32 file checked against another FP32 file gets the FP32 tolerance."""
    if precision == "int8":
        return None, INT8_MIN_AGREEMENT
    if precision == "fp16":
        return FP16_ATOL, None
    return DEFAULT_ATOL, None


def onnx_sibling(onnx_path: str | Path, suffix: str) -> Path:
    """MODEL.onnx -> MODEL<suffix> beside it (suffix e.g. ".parity.json", ".int8.onnx", ".failed.onnx")."""
    p = Path(onnx_path)
    stem = p.name[:-len(".onnx")] if p.name.endswith(".onnx") else p.name
    return p.with_name(stem + suffix)
