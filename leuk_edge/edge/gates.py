"""The gates a model file must pass, in one place: `export` judges by them and `--precision auto` trusts a variant
only when its report shows exactly these (no heavy imports: the CLI reads option defaults from here).
"""

from __future__ import annotations

# FP32 against Keras: identical tensors, and file to probability through both input pipelines.
DEFAULT_ATOL = 1e-4
# P(all) through FP16 weights and activations moves by up to ~1e-2 on confident heads; 2e-2 still flags real breakage
# (overflow, a wrong cast) without failing on rounding.
FP16_ATOL = 2e-2
# INT8 outputs legitimately move by a few hundredths: only its decisions at the threshold are compared.
INT8_MIN_AGREEMENT = 0.98
# Agreement is a fraction: with fewer images one flipped decision already breaks a 0.98 gate by chance. A variant
# gated on fewer images is made and reported, but `--precision auto` does not run it.
MIN_GATE_IMAGES = 100
# A variant's `cam` maps (logit units) may be drawn only when they differ from the FP32 model's by at most this
# fraction of the FP32 map's largest |value| (at least this much absolute): 2 % of the colour scale, about 5 of a
# colour map's 256 levels. Otherwise overlays come from the FP32 model, whose maps are gated against Keras.
VARIANT_CAM_RTOL = 0.02
# The scope score `ood` (standardised Mahalanobis distances summed over the taps, float32 in the graph) against the
# NumPy reference from the run's scope.npz: |difference| <= OOD_RTOL x max(1, |reference|) per cell.
OOD_RTOL = 1e-3
# A variant's in/out-of-scope decisions (ood against the scope threshold) must agree with the FP32 model's this often.
VARIANT_OOD_MIN_AGREEMENT = 0.98


def variant_gate(precision: str) -> tuple[float | None, float | None]:
    """(atol, min_agreement) a file of this `precision` (its metadata's) is judged by against its FP32 model; an
    FP32 file checked against another FP32 file gets the FP32 tolerance."""
    if precision == "int8":
        return None, INT8_MIN_AGREEMENT
    if precision == "fp16":
        return FP16_ATOL, None
    return DEFAULT_ATOL, None


def cam_tolerance(scale: float, rtol: float) -> float:
    """The largest allowed |difference| of two `cam` maps whose reference's largest |value| is `scale`."""
    return rtol * max(1.0, scale)


def gate_shortfall(report: dict, precision: str) -> str | None:
    """Why a variant's gate report is weaker than the export's own gate for its precision (criterion, tolerance,
    image count, real images), or None when it is the export's gate."""
    atol, min_agreement = variant_gate(precision)
    crit = str(report.get("criterion", ""))
    if min_agreement is not None:
        got = report.get("min_agreement")
        if "decision_agreement" not in crit or not isinstance(got, (int, float)) or got < min_agreement:
            return f"its gate was not the export's (decision agreement >= {min_agreement:g}; it used {got})"
    if atol is not None:
        got = report.get("atol")
        if "max_abs_diff" not in crit or not isinstance(got, (int, float)) or got > atol:
            return f"its gate was not the export's (atol <= {atol:g}; it used {got})"
    n = report.get("n")
    if not isinstance(n, int) or n < MIN_GATE_IMAGES:
        return f"it was gated on {n} images, fewer than the {MIN_GATE_IMAGES} auto needs"
    if report.get("images") in (None, "synthetic"):
        return "it was gated on synthetic cells, not real images"
    return None
