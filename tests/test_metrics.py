"""Metrics agree with scikit-learn and with hand computation; the threshold comes from val."""

import numpy as np
import pytest
from sklearn import metrics as skm

from leuk_edge.train.metrics import choose_threshold, compute_metrics


def test_hand_made_case():
    # 4 hem, 6 all; at 0.5: hem -> 3 correct (1 fp); all -> 4 correct (2 fn)
    y = [0, 0, 0, 0, 1, 1, 1, 1, 1, 1]
    p = [0.1, 0.2, 0.4, 0.7, 0.9, 0.8, 0.6, 0.55, 0.3, 0.45]
    m = compute_metrics(y, p, 0.5)
    assert m["confusion_matrix"] == [[3, 1], [2, 4]]
    assert m["n"] == 10
    assert m["accuracy"] == pytest.approx(0.7)
    assert m["balanced_accuracy"] == pytest.approx((3 / 4 + 4 / 6) / 2)
    assert m["precision"] == {"hem": pytest.approx(3 / 5), "all": pytest.approx(4 / 5)}
    assert m["recall"] == {"hem": pytest.approx(3 / 4), "all": pytest.approx(4 / 6)}
    f1_hem, f1_all = 2 * 0.6 * 0.75 / 1.35, 2 * 0.8 * (4 / 6) / (0.8 + 4 / 6)
    assert m["weighted_f1"] == pytest.approx((4 * f1_hem + 6 * f1_all) / 10)
    assert m["weighted_f1"] == pytest.approx(skm.f1_score(y, np.array(p) >= 0.5, average="weighted"))
    # AUC by pair counting: hem/all pairs where all scores higher
    pairs = [(a > h) + 0.5 * (a == h) for h in p[:4] for a in p[4:]]
    assert m["roc_auc"] == pytest.approx(sum(pairs) / 24)


def test_one_class_has_no_auc():
    m = compute_metrics([1, 1, 1], [0.9, 0.2, 0.7], 0.5)
    assert m["roc_auc"] is None and m["confusion_matrix"] == [[0, 0], [1, 2]]


def test_threshold_maximises_balanced_accuracy():
    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(200), np.ones(400)]
    p = np.r_[rng.normal(0.3, 0.1, 200), rng.normal(0.7, 0.1, 400)].clip(0, 1)
    t = choose_threshold(y, p)
    best = compute_metrics(y, p, t)["balanced_accuracy"]
    for other in np.linspace(0.05, 0.95, 19):
        assert best >= compute_metrics(y, p, other)["balanced_accuracy"] - 1e-12


def test_val_optimal_threshold_is_neither_half_nor_test_optimal():
    # val: every hem scores above 0.5, every all from 0.70 -> only a cut between 0.65 and 0.70 separates them
    y_val, p_val = [0, 0, 0, 1, 1, 1], [0.55, 0.60, 0.65, 0.70, 0.80, 0.90]
    # test: the classes sit lower -> a cut between 0.20 and 0.30 would separate them
    y_test, p_test = [0, 0, 0, 1, 1, 1], [0.10, 0.15, 0.20, 0.30, 0.35, 0.40]
    t_val, t_test = choose_threshold(y_val, p_val), choose_threshold(y_test, p_test)
    assert t_val == pytest.approx(0.675) and t_test == pytest.approx(0.25)
    assert compute_metrics(y_val, p_val, t_val)["balanced_accuracy"] == 1.0
    assert compute_metrics(y_val, p_val, 0.5)["balanced_accuracy"] == 0.5
    # applied to test, the val threshold calls every cell hem: the test split never moves it
    assert compute_metrics(y_test, p_test, t_val)["confusion_matrix"] == [[3, 0], [3, 0]]


def test_threshold_lies_midway_between_val_scores_not_on_one():
    # The best split of these val scores is between 0.4 and 0.6: a threshold ON a val score (0.6, roc_curve's
    # own threshold) leaves that image's decision to rounding (INT8, FP16), so it must be the midpoint 0.5.
    y, p = [0, 0, 1, 1], [0.2, 0.4, 0.6, 0.8]
    t = choose_threshold(y, p)
    assert t == pytest.approx(0.5)
    assert compute_metrics(y, p, t)["balanced_accuracy"] == 1.0
