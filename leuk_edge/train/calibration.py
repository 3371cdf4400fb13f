"""Temperature scaling of P(all) and the calibration figures (ECE, Brier, NLL). numpy/scipy/scikit-learn only.

The model's sigmoid output P is left as it is; the calibrated probability is sigmoid(logit(P) / T), with T fitted
on the validation split by minimising its cross-entropy (Guo et al., 2017) against Platt's targets. T > 1 softens an
over-confident model, T < 1 sharpens an under-confident one; T = 1 is the identity (older runs without a fitted T).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import expit, logit
from sklearn.metrics import brier_score_loss, log_loss

# float32 sigmoid outputs saturate near 0 and 1; clipping keeps logit(P) finite (|logit| <= ~16.1).
EPS = 1e-7
ECE_BINS = 15
T_BOUNDS = (0.05, 20.0)  # a fitted T outside this range means the validation split cannot support calibration


def to_logit(p) -> np.ndarray:
    """logit(P) in float64, P clipped to [EPS, 1 - EPS]."""
    return logit(np.clip(np.asarray(p, np.float64).ravel(), EPS, 1 - EPS))


def apply_temperature(p, temperature: float) -> np.ndarray:
    """Calibrated P(all) = sigmoid(logit(P) / T)."""
    return expit(to_logit(p) / float(temperature))


def nll(y_true, prob) -> float:
    """Mean negative log-likelihood (binary cross-entropy) with P clipped like `to_logit`."""
    prob = np.clip(np.asarray(prob, np.float64).ravel(), EPS, 1 - EPS)
    return float(log_loss(np.asarray(y_true).astype(int), prob, labels=[0, 1]))


def brier(y_true, prob) -> float:
    """Mean squared error of P(all) against the 0/1 label."""
    return float(brier_score_loss(np.asarray(y_true).astype(int), np.asarray(prob, np.float64).ravel(),
                                  pos_label=1))


def reliability_bins(y_true, prob, n_bins: int = ECE_BINS) -> dict:
    """Equal-width bins of P(all) over [0, 1] (the last bin includes 1.0): per bin its count, mean P(all) and the
    observed fraction of `all` (None for an empty bin)."""
    y = np.asarray(y_true, np.float64).ravel()
    p = np.asarray(prob, np.float64).ravel()
    idx = np.minimum((p * n_bins).astype(int), n_bins - 1)
    count = np.bincount(idx, minlength=n_bins)
    p_sum = np.bincount(idx, weights=p, minlength=n_bins)
    y_sum = np.bincount(idx, weights=y, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p, frac = p_sum / count, y_sum / count
    return {"edges": np.linspace(0.0, 1.0, n_bins + 1), "count": count, "mean_p": mean_p, "fraction_all": frac}


def ece(y_true, prob, n_bins: int = ECE_BINS) -> float:
    """Expected calibration error: sum over bins of (bin share) x |observed fraction of all - mean P(all)|."""
    b = reliability_bins(y_true, prob, n_bins)
    n = b["count"].sum()
    if n == 0:
        return 0.0
    full = b["count"] > 0
    return float(np.sum(b["count"][full] / n * np.abs(b["fraction_all"][full] - b["mean_p"][full])))


def platt_targets(y) -> np.ndarray:
    """Platt's (1999) targets for a sigmoid fit, as scikit-learn's sigmoid calibration uses them:
    (N+ + 1) / (N+ + 2) for an `all` cell and 1 / (N- + 2) for a `hem` cell instead of 1 and 0. With hard 0/1
    targets a validation split the model separates at P = 0.5 has no minimum: the NLL keeps falling as T -> 0,
    the search stops at its lower bound and every calibrated P is 0 or 1 (on a 72-cell split: test NLL 1.01
    against 0.19 with these targets). They also keep a small split from claiming more certainty than it holds."""
    y = np.asarray(y).astype(int).ravel()
    n_pos, n_neg = int(y.sum()), int(len(y) - y.sum())
    return np.where(y == 1, (n_pos + 1.0) / (n_pos + 2.0), 1.0 / (n_neg + 2.0))


def fit_temperature(y_val, p_val) -> float:
    """The T minimising the validation cross-entropy of sigmoid(logit(P) / T) against Platt's targets
    (`platt_targets`; bounded 1-D search over log T). Returns 1.0 when the split cannot support a fit (empty or
    one class only) or when no T in the bounds does better than T = 1."""
    y = np.asarray(y_val).astype(int).ravel()
    if len(y) == 0 or len(np.unique(y)) < 2:
        return 1.0
    z = to_logit(p_val)
    target = platt_targets(y)

    def loss(log_t: float) -> float:
        q = np.clip(expit(z / np.exp(log_t)), EPS, 1 - EPS)
        return float(-np.mean(target * np.log(q) + (1 - target) * np.log1p(-q)))

    res = minimize_scalar(loss, bounds=tuple(np.log(T_BOUNDS)), method="bounded", options={"xatol": 1e-6})
    t = float(np.exp(res.x))
    # the search is bounded; never return a T that is worse than leaving the model alone
    return t if loss(res.x) <= loss(0.0) else 1.0


def calibration_figures(y_true, p_raw, temperature: float = 1.0) -> dict:
    """ECE, Brier and NLL of the calibrated probabilities, and the same three before calibration."""
    p_cal = apply_temperature(p_raw, temperature)

    def figures(p):
        return {"ece": ece(y_true, p), "brier": brier(y_true, p), "nll": nll(y_true, p)}

    return {**figures(p_cal), "uncalibrated": figures(np.asarray(p_raw, np.float64))}


def calibration_entry(temperature: float) -> dict:
    """config.json's (and the ONNX metadata's) record of the calibration."""
    return {"method": "temperature", "temperature": float(temperature), "fitted_on": "val"}


def calibration_of(config: dict) -> dict | None:
    """A run's config.json calibration entry, checked (ValueError, one line); None for runs written before
    calibration existed. Every reader (evaluate, export, the demo) goes through this one rule."""
    entry = config.get("calibration")
    if entry is None:
        return None
    if not isinstance(entry, dict) or entry.get("method") != "temperature":
        raise ValueError(f"calibration must be {{\"method\": \"temperature\", ...}}, got {entry!r}")
    try:
        t = float(entry["temperature"])
    except (KeyError, TypeError, ValueError):
        raise ValueError("calibration has no numeric temperature") from None
    if not (math.isfinite(t) and t > 0):
        raise ValueError(f"calibration temperature must be a positive number, got {t}")
    return {"method": "temperature", "temperature": t, "fitted_on": str(entry.get("fitted_on", "val"))}


def temperature_of(config: dict) -> float:
    """T from a run's config.json (checked by `calibration_of`); 1.0 for runs without calibration."""
    entry = calibration_of(config)
    return entry["temperature"] if entry else 1.0
