"""train/cam.py: the closed-form map that export converts vs independent computations (numpy CAM for a linear
head, autodiff Grad-CAM for a Dense-ReLU head), calibration by the temperature, and refusal of other heads."""

from __future__ import annotations

import numpy as np
import pytest

import tensorflow  # noqa: E402,F401  - the [train] extra; missing = an error, never a skip

SIZE = 32


def _model(head_units: int | None, seed: int = 0):
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    inp = keras.Input((SIZE, SIZE, 3), name="image")
    x = layers.MaxPooling2D(2)(layers.Conv2D(8, 3, padding="same", activation="relu")(inp))
    x = layers.Conv2D(12, 3, padding="same", activation="relu", name="last_conv")(x)
    x = layers.GlobalAveragePooling2D()(x)
    if head_units:
        x = layers.Dense(head_units, activation="relu")(layers.Dropout(0.3)(x))
    return keras.Model(inp, layers.Dense(1, activation="sigmoid", name="p_all")(x), name="leuk_cnn")


def _x(n=6, seed=1):
    return np.random.default_rng(seed).uniform(0, 1, (n, SIZE, SIZE, 3)).astype(np.float32)


def test_linear_head_map_is_the_exact_cam():
    """CAM (Zhou et al.): sum_c w_c A_c; its grid mean + bias is the logit. Computed here with numpy."""
    import keras

    from leuk_edge.train.graph import explain_model

    model, x, t = _model(None), _x(), 2.0
    a = np.asarray(keras.Model(model.inputs, model.get_layer("last_conv").output)(x), np.float64)
    w, b = (np.asarray(v, np.float64) for v in model.get_layer("p_all").get_weights())
    expected = np.einsum("nijc,c->nij", a, w[:, 0]) / t
    p, cam = (np.asarray(v) for v in explain_model(model, t)(x))
    np.testing.assert_allclose(cam, expected, atol=1e-5)
    logit = expected.mean(axis=(1, 2)) + b[0] / t
    np.testing.assert_allclose(p[:, 0], 1 / (1 + np.exp(-logit)), atol=1e-6)


def test_a_base_that_is_the_models_first_layer_is_fed_the_models_input():
    """A nested base (pooling="avg", as InceptionV3) that is the model's first layer — a Sequential model lists no
    InputLayer — receives the model's input; `layers[i - 1]` wrapped round to the head. Exact CAM in numpy."""
    import keras
    from keras import layers

    from leuk_edge.train.cam import reference
    from leuk_edge.train.graph import explain_model

    keras.utils.set_random_seed(2)
    inp = keras.Input((SIZE, SIZE, 3))
    a_out = layers.Conv2D(6, 3, padding="same", activation="relu", name="base_conv")(inp)
    base = keras.Model(inp, layers.GlobalAveragePooling2D()(a_out), name="base")
    model = keras.Sequential([keras.Input((SIZE, SIZE, 3)), base, layers.Dense(1, activation="sigmoid",
                                                                              name="p_all")], name="seq")
    assert model.layers[0] is base
    x, t = _x(4), 1.5
    a = np.asarray(keras.Model(base.inputs, base.get_layer("base_conv").output)(x), np.float64)
    w = np.asarray(model.get_layer("p_all").get_weights()[0], np.float64)
    expected = np.einsum("nijc,c->nij", a, w[:, 0]) / t
    p, cam = (np.asarray(v) for v in explain_model(model, t)(x))
    np.testing.assert_allclose(cam, expected, atol=1e-5)
    np.testing.assert_allclose(p[:, 0], reference(model, x, t, cam=False)[0], atol=1e-6)


def test_dense_relu_head_map_matches_autodiff_gradcam():
    from leuk_edge.train.cam import cam_metadata, reference
    from leuk_edge.train.graph import explain_model

    model, x, t = _model(5), _x(8), 1.7
    p, cam = (np.asarray(v) for v in explain_model(model, t)(x))
    p_ref, cam_ref = reference(model, x, t)
    assert np.abs(cam_ref).max() > 1e-3  # a map that says something, not all zeros
    np.testing.assert_allclose(cam, cam_ref, atol=1e-5 * max(1.0, np.abs(cam_ref).max()))
    np.testing.assert_allclose(p[:, 0], p_ref, atol=1e-6)
    # the calibrated output is the model's own sigmoid with its logit divided by T
    raw = np.asarray(model(x, training=False), np.float64)[:, 0]
    np.testing.assert_allclose(p_ref, 1 / (1 + np.exp(-np.log(raw / (1 - raw)) / t)), atol=1e-6)
    assert cam_metadata(model) == {**cam_metadata(model), "output": "cam", "grid": [16, 16], "method": "grad-cam"}


def test_without_cam_and_calibration_the_model_is_exported_as_is():
    from leuk_edge.train.graph import explain_model

    model = _model(None)
    assert explain_model(model, 1.0, cam=False) is model
    with pytest.raises(ValueError, match="temperature"):
        explain_model(model, 0.0)


def test_a_head_it_cannot_explain_is_refused():
    import keras
    from keras import layers

    from leuk_edge.train.cam import UnsupportedModelError, split_model

    inp = keras.Input((SIZE, SIZE, 3), name="image")
    x = layers.Flatten()(layers.Conv2D(4, 3)(inp))  # no global pooling: no feature grid to map
    model = keras.Model(inp, layers.Dense(1, activation="sigmoid", name="p_all")(x))
    with pytest.raises(UnsupportedModelError, match="global average pooling"):
        split_model(model)
    inp = keras.Input((SIZE, SIZE, 3), name="image")
    x = layers.Dense(4, activation="tanh")(layers.GlobalAveragePooling2D()(layers.Conv2D(4, 3)(inp)))
    with pytest.raises(UnsupportedModelError, match="cannot explain"):
        split_model(keras.Model(inp, layers.Dense(1, activation="sigmoid", name="p_all")(x)))


def test_overlay_shows_the_hot_spot():
    from leuk_edge.train.cam import overlay

    rgb = np.full((90, 90, 3), 128, np.uint8)
    cam = np.zeros((3, 3), np.float32)
    cam[2, 0] = 5.0  # bottom-left
    out = overlay(rgb, cam, "P(all) 0.91 -> all", size=96)
    assert out.shape == (96, 96, 3) and out.dtype == np.uint8
    hot, cold = out[80, 10].astype(int), out[40, 85].astype(int)
    assert hot[0] > cold[0] + 40  # red where the map is high (JET), unchanged grey-blue elsewhere


def test_renderer_returns_the_nucleus_it_drew():
    from leuk_edge.synth.cells import render_cnmc_cell, render_cnmc_image

    img, nuc = render_cnmc_cell(np.random.default_rng(3), "all")
    assert np.array_equal(img, render_cnmc_image(np.random.default_rng(3), "all"))  # same image, same draws
    assert nuc.dtype == bool and nuc.shape == img.shape[:2] and 0.02 < nuc.mean() < 0.5
    stained = img.max(axis=2) > 0
    assert stained[nuc].mean() > 0.99  # the nucleus lies on the cell, not on the black background
    nuclear = img[nuc].astype(float).mean(0)
    cytoplasm = img[stained & ~nuc].astype(float).mean(0)
    assert nuclear.sum() < cytoplasm.sum()  # and is the darker, purple part
