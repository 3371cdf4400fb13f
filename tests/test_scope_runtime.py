"""The scope gate at run time (edge.labels, Classifier.infer): a cell whose `ood` is over the model's scope threshold
is `other`; a model without the gate runs as before and says so; `--no-scope` switches the gate off."""

import numpy as np

from leuk_edge.edge.labels import OTHER, is_other, label_for
from leuk_edge.edge.model import Classifier
from tiny_models import make_tiny_cam_onnx, make_tiny_onnx


def test_label_rule_hand_made_cases():
    assert label_for(0.9, 0.5) == "all" and label_for(0.1, 0.5) == "hem"
    assert label_for(0.9, 0.5, ood=3.1, ood_threshold=3.0) == OTHER  # over the threshold: other, whatever P(all)
    assert label_for(0.1, 0.5, ood=3.1, ood_threshold=3.0) == OTHER
    assert label_for(0.9, 0.5, ood=3.0, ood_threshold=3.0) == "all"  # at the threshold: still in scope
    assert label_for(0.9, 0.5, ood=99.0, ood_threshold=None) == "all"  # no gate: no other
    assert list(is_other(np.array([1.0, 5.0]), 3.0)) == [False, True]
    assert list(is_other(np.array([1.0, 5.0]), None)) == [False, False]


def _cells() -> list[np.ndarray]:
    purple = np.zeros((32, 32, 3), np.uint8)
    purple[8:24, 8:24] = (120, 40, 160)  # a purple "cell" on black: a quarter of the image at green 40 -> ood 0.39
    green = np.full((32, 32, 3), (40, 200, 40), np.uint8)  # mean green 200/255 -> ood 7.84
    return [purple, green]


def test_ood_output_labels_the_out_of_scope_image_other(tmp_path):
    clf = Classifier(make_tiny_cam_onnx(tmp_path / "m.onnx", ood_threshold=3.0))
    out = clf.infer_rgb(_cells(), cam=True)
    assert np.allclose(out.ood, [10 * (40 / 255) * (16 * 16) / (32 * 32), 10 * 200 / 255], atol=1e-4)
    assert clf.labels(out)[1] == OTHER and clf.labels(out)[0] in ("all", "hem")
    assert out.cam.shape == (2, 4, 4) and clf.scope_note() is None
    assert clf.scope["fitted_on"] == "train" and clf.ood_threshold == 3.0
    # TTA averages the score over the 8 views: a uniform image keeps its score
    assert np.allclose(clf.infer_rgb(_cells(), tta=True).ood[1], out.ood[1], atol=1e-5)


def test_no_scope_switch_and_models_without_the_gate_run_with_a_note(tmp_path):
    off = Classifier(make_tiny_onnx(tmp_path / "g.onnx", ood_threshold=3.0), scope=False)
    out = off.infer_rgb(_cells())
    assert out.ood is None and OTHER not in off.labels(out) and "--no-scope" in off.scope_note()
    old = Classifier(make_tiny_onnx(tmp_path / "old.onnx"))
    out = old.infer_rgb(_cells())
    assert out.ood is None and not old.has_scope and "no scope gate" in old.scope_note()
    assert np.allclose(old.predict_rgb(_cells()), out.p_all)
