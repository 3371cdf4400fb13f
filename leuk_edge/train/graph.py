"""The graph `export` converts: the model's own layers, one forward pass, outputs [p_all, cam?, ood?].

Built on train.cam (the calibrated P(all) and the class-activation map from the last feature maps) and
train.scope (the out-of-scope score from the scope's sources): the one module that knows both, so neither of them
imports the other.
"""

from __future__ import annotations

import numpy as np

from .cam import camhead_class, split_model
from .scope import scope_layer, source_model


def explain_model(model, temperature: float = 1.0, cam: bool = True, scope=None):
    """The graph to export: image -> [P(all) calibrated by `temperature`, cam] (or P(all) alone, cam=False), and
    with `scope` (train.scope.ScopeStats) the out-of-scope score `ood` (N,) from the same forward pass: the scope
    taps' maps and the last maps pooled (and through the head's own Dense layers), then the layers' distances.

    With cam=False, temperature 1 and no scope the model itself is returned (nothing to add)."""
    import keras

    if temperature <= 0 or not np.isfinite(temperature):
        raise ValueError(f"temperature must be a positive number, got {temperature}")
    if not cam and temperature == 1.0 and scope is None:
        return model
    parts = split_model(model)
    features = parts.features
    if scope is not None:  # the scope's sources come out of the same forward pass as the last maps
        features = source_model(model, scope.names)
        a = features.outputs[-2]  # [maps..., last maps, penultimate]
    else:
        a = features.outputs[0]
    p, m = camhead_class()(parts.head, parts.p_all, temperature, name="cam_head")(a)
    outputs = [keras.layers.Identity(name="p_all")(p)]
    if cam:
        outputs.append(keras.layers.Identity(name="cam")(m))
    if scope is not None:
        outputs.append(scope_layer(scope, name="ood")(features.outputs))
    return keras.Model(features.inputs, outputs, name=f"{model.name}_explained")
