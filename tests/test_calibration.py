"""Temperature scaling and the calibration figures, checked against hand computation."""

import math

import numpy as np
import pytest

from leuk_edge.train.calibration import (apply_temperature, brier, calibration_figures, ece, fit_temperature, nll,
                                         reliability_bins, temperature_of)

# 6 cells; with 15 bins of width 1/15: 0.10, 0.12 -> bin 1; 0.50 -> bin 7; 0.90, 0.92 -> bin 13; 0.95 -> bin 14
Y = [0, 1, 1, 1, 0, 1]
P = [0.10, 0.12, 0.90, 0.92, 0.95, 0.50]


def test_ece_by_hand():
    # bin 1: mean P 0.11, 1 of 2 all -> |0.5 - 0.11| = 0.39, weight 2/6
    # bin 13: mean P 0.91, 2 of 2 all -> 0.09, weight 2/6; bin 14: P 0.95, hem -> 0.95; bin 7: P 0.5, all -> 0.5
    assert ece(Y, P) == pytest.approx((2 * 0.39 + 2 * 0.09 + 0.95 + 0.50) / 6)
    bins = reliability_bins(Y, P)
    assert bins["count"].tolist() == [0, 2, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 2, 1]
    assert ece([1, 0], [1.0, 0.0]) == 0.0  # P = 1.0 lands in the last bin, perfectly calibrated


def test_brier_and_nll_by_hand():
    sq = [0.1 ** 2, 0.88 ** 2, 0.1 ** 2, 0.08 ** 2, 0.95 ** 2, 0.5 ** 2]
    assert brier(Y, P) == pytest.approx(sum(sq) / 6)
    logs = [math.log(0.9), math.log(0.12), math.log(0.9), math.log(0.92), math.log(0.05), math.log(0.5)]
    assert nll(Y, P) == pytest.approx(-sum(logs) / 6)


def test_apply_temperature_is_sigmoid_of_scaled_logit():
    p = np.array([0.2, 0.5, 0.9])
    for t in (0.5, 1.0, 3.0):
        expected = [1 / (1 + math.exp(-math.log(v / (1 - v)) / t)) for v in p]
        assert apply_temperature(p, t) == pytest.approx(expected)
    assert apply_temperature([1.0, 0.0], 2.0).tolist() == pytest.approx([1 / (1 + math.sqrt(1e-7 / (1 - 1e-7))),
                                                                         1 / (1 + math.sqrt((1 - 1e-7) / 1e-7))])


def test_temperature_softens_an_over_confident_model():
    # true P(all) = sigmoid(z); the "model" reports sigmoid(3 z): three times too sure of itself
    rng = np.random.default_rng(0)
    z = rng.normal(0, 1.5, 4000)
    y = (rng.random(4000) < 1 / (1 + np.exp(-z))).astype(int)
    p_model = 1 / (1 + np.exp(-3 * z))
    t = fit_temperature(y, p_model)
    assert t == pytest.approx(3.0, rel=0.1)
    p_cal = apply_temperature(p_model, t)
    assert nll(y, p_cal) < nll(y, p_model) - 0.1
    assert ece(y, p_cal) < ece(y, p_model) / 2
    figs = calibration_figures(y, p_model, t)
    assert figs["nll"] == pytest.approx(nll(y, p_cal)) and figs["uncalibrated"]["ece"] == pytest.approx(ece(y, p_model))


def test_a_calibrated_model_keeps_t_near_one_and_old_runs_mean_t_one():
    rng = np.random.default_rng(1)
    z = rng.normal(0, 2, 4000)
    y = (rng.random(4000) < 1 / (1 + np.exp(-z))).astype(int)
    assert fit_temperature(y, 1 / (1 + np.exp(-z))) == pytest.approx(1.0, abs=0.1)
    assert fit_temperature([1, 1, 1], [0.2, 0.9, 0.7]) == 1.0  # one class: nothing to fit
    assert temperature_of({}) == 1.0
    assert temperature_of({"calibration": {"method": "temperature", "temperature": 2.5, "fitted_on": "val"}}) == 2.5


def test_a_runs_calibration_entry_is_checked_wherever_it_is_read():
    """evaluate and export read config.json's calibration through one rule: a negative temperature (which would
    flip every probability) or an entry without its method is refused, not applied; old runs mean T = 1."""
    from leuk_edge.train.calibration import temperature_of

    assert temperature_of({}) == 1.0
    assert temperature_of({"calibration": {"method": "temperature", "temperature": 2.5, "fitted_on": "val"}}) == 2.5
    for bad in ({"method": "temperature", "temperature": -1}, {"temperature": 2}, {"method": "temperature"},
                {"method": "temperature", "temperature": float("nan")}, "T=2"):
        with pytest.raises(ValueError, match="calibration"):
            temperature_of({"calibration": bad})


def test_a_separated_validation_split_still_gets_a_finite_temperature():
    """With 0/1 targets a split the model separates at 0.5 has no NLL minimum (it keeps falling as T -> 0): the
    search stopped at its bound 0.05 and every calibrated P became 0 or 1. Platt's targets, here (1+1)/(1+2) = 2/3
    and 1/(1+2) = 1/3, have one: sigmoid(logit(0.9) / T) = 2/3, i.e. T = ln 9 / ln 2."""
    from leuk_edge.train.calibration import T_BOUNDS

    t = fit_temperature([1, 0], [0.9, 0.1])
    assert t == pytest.approx(math.log(9) / math.log(2), rel=1e-4)
    assert T_BOUNDS[0] < t < T_BOUNDS[1]
    # four cells, all separated: targets 3/4 for all, 1/4 for hem; logits +-ln 19 -> T = ln 19 / ln 3
    assert fit_temperature([1, 1, 0, 0], [0.95, 0.95, 0.05, 0.05]) == pytest.approx(math.log(19) / math.log(3),
                                                                                      rel=1e-4)
