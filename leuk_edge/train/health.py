"""A trained model's health: the signs of a model that is broken in inference mode, said out loud.

Three checks, each from numbers the run already has, written to metrics.json as `health` (docs/contracts.md):
  batchnorm    P(all) in inference mode (moving statistics) vs in training mode (each batch's own statistics,
               Dropout off) on training cells: a large gap means the moving statistics do not fit the weights
               and every later number (temperature, threshold, val metrics) describes a broken model;
  temperature  the fitted T at a bound of its search: the validation split cannot support calibration, or the
               outputs carry no usable signal (a collapsed model drives T to its upper bound);
  spread       the standard deviation of P(all) over validation cells, raw and calibrated: near 0 the model
               gives every cell the same answer, and a threshold chosen inside that sliver means nothing.
`warnings` holds one line per failed check; an empty list is a healthy run.
"""

from __future__ import annotations

import math

import numpy as np

from .calibration import T_BOUNDS

# mean |P_inference - P_batch statistics| over training cells above which inference mode is called broken.
# Measured on issue 18's case (CNN, 256 px, 288 cells): 0.03 with PreciseBN; with the moving averages 0.12 after one
# epoch (every val cell at P 0.40-0.41) and 0.19 after four (first-layer variance still 3x too large).
GAP_MAX = 0.1
# standard deviation of P(all) over the validation cells below which the outputs are said not to spread (the
# collapsed CNN: 0.002 raw, 0.0001 calibrated; a working one: 0.3-0.45).
SPREAD_MIN = 0.05
HEALTH_IMAGES = 256  # training cells the batchnorm check runs on (two forward passes each)


def batchnorm_check(p_inference, p_batch) -> dict:
    p_inf, p_bat = (np.asarray(p, np.float64).ravel() for p in (p_inference, p_batch))
    gap = float(np.mean(np.abs(p_inf - p_bat))) if len(p_inf) else None
    return {"images": len(p_inf), "mean_abs_diff": gap, "max": GAP_MAX}


def temperature_check(temperature: float) -> dict:
    lo, hi = T_BOUNDS
    at = bool(math.isclose(temperature, lo, rel_tol=1e-3) or math.isclose(temperature, hi, rel_tol=1e-3))
    return {"value": float(temperature), "bounds": [lo, hi], "at_bound": at}


def spread_check(p_val_raw, p_val_calibrated) -> dict:
    raw, cal = (np.asarray(p, np.float64).ravel() for p in (p_val_raw, p_val_calibrated))
    return {"val_std": float(raw.std()) if len(raw) else None,
            "val_calibrated_std": float(cal.std()) if len(cal) else None, "min": SPREAD_MIN}


def warnings_of(checks: dict) -> list[str]:
    """One line per failed check (the wording the console, the model card and export repeat)."""
    out = []
    bn = checks.get("batchnorm") or {}
    if bn.get("mean_abs_diff") is not None and bn["mean_abs_diff"] > GAP_MAX:
        out.append(f"inference mode disagrees with training mode on the training cells: mean |P(all) difference| "
                   f"{bn['mean_abs_diff']:.3f} > {GAP_MAX} (BatchNorm moving statistics do not fit the weights)")
    t = checks.get("temperature") or {}
    if t.get("at_bound"):
        out.append(f"temperature T = {t['value']:g} stopped at a bound of its search {t['bounds']}: the "
                   "validation outputs cannot be calibrated")
    s = checks.get("spread") or {}
    for key, what in (("val_std", "raw"), ("val_calibrated_std", "calibrated")):
        if s.get(key) is not None and s[key] < SPREAD_MIN:
            out.append(f"{what} P(all) does not spread over the validation cells: standard deviation "
                       f"{s[key]:.4f} < {SPREAD_MIN} (the model gives every cell nearly the same answer)")
    return out


def assess(p_train_inference, p_train_batch, temperature: float, p_val_raw, p_val_calibrated) -> dict:
    """metrics.json's `health` entry: the three checks and their warnings."""
    checks = {"batchnorm": batchnorm_check(p_train_inference, p_train_batch),
              "temperature": temperature_check(temperature),
              "spread": spread_check(p_val_raw, p_val_calibrated)}
    return {"warnings": warnings_of(checks), **checks}


def health_warnings(metrics: dict | None) -> list[str] | None:
    """A run's health warnings from its metrics.json (None: a run written before the checks existed)."""
    health = (metrics or {}).get("health")
    if not isinstance(health, dict):
        return None
    return [str(w) for w in health.get("warnings") or []]
