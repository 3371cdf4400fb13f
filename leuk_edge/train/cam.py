"""Class-activation maps of the "all" logit, Keras side: the graph that `export` converts, and the reference.

Both architectures end in global average pooling -> a small head -> `Dense(1, sigmoid, name="p_all")`. With
A the last feature maps (N, h, w, C), g = mean_hw(A) and z the "all" logit (pre-sigmoid), the map is

    cam[n, i, j] = sum_c alpha[n, c] * A[n, i, j, c],   alpha = dz/dg

For InceptionV3's linear head alpha is the dense kernel (the exact CAM of Zhou et al.; mean_ij cam + bias = z);
for the CNN's Dense-ReLU head it is Grad-CAM's channel weight (Selvaraju et al., here not divided by h*w and not
rectified, so both architectures share one scale: logit units). Calibration divides z by the temperature T, so
the map is of z / T and P(all) = sigmoid(z / T).

Two independent implementations:
  `camhead_class`  - alpha in closed form (backprop through the Dense chain by hand) as one Keras layer with
                     outputs [p_all, cam]: what `train.graph.explain_model` puts in the graph tf2onnx converts
                     (no Lambda, no gradient op in ONNX);
  `reference`      - the original model's own layers, z with its p_all kernel in float64 and alpha by autodiff
                     (tf.GradientTape): what the parity gate compares the ONNX outputs against.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

HEAD = "p_all"


@dataclass
class CamParts:
    """The pieces of a leuk-edge model the maps are built from."""
    features: object  # keras.Model: image -> last feature maps (N, h, w, C)
    head: list  # Dense layers between the pooling and p_all (Dropout is the identity at inference)
    p_all: object  # the final Dense(1, sigmoid)

    @property
    def grid(self) -> tuple[int, int]:
        shape = self.features.outputs[0].shape
        return int(shape[1]), int(shape[2])


class UnsupportedModelError(ValueError):
    """The model does not end in global average pooling -> Dense head -> p_all (export it with --no-cam)."""


def _is_gap(layer) -> bool:
    import keras

    return isinstance(layer, keras.layers.GlobalAveragePooling2D)


def gap_index(model) -> int:
    """Index of the global average pooling: a layer of the model (the CNN) or a nested base model built with
    pooling="avg" whose last layer it is (InceptionV3)."""
    for i, layer in enumerate(model.layers):
        if _is_gap(layer) or (hasattr(layer, "layers") and layer.layers and _is_gap(layer.layers[-1])):
            return i
    raise UnsupportedModelError(f"model '{model.name}' has no global average pooling before its head")


def feature_maps(model, taps=(), name: str = "cam_features"):
    """image -> [the maps of each tap layer..., the last feature maps (N, h, w, C)], one forward pass.

    `taps`: layer names of the model, or "base/layer" inside a nested base model. A nested base is re-called up
    to its pooling on the tensor it receives in the outer model: the previous layer's output, or the model's
    input when the base comes first (a Sequential model lists no InputLayer, and layers[-1] would be the head)."""
    import keras

    i = gap_index(model)
    layer = model.layers[i]
    if _is_gap(layer):
        outs = [model.get_layer(t).output for t in taps] + [layer.input]
        return keras.Model(model.inputs[0], outs, name=name)
    inner_taps = [layer.get_layer(t.split("/", 1)[1]).output for t in taps]
    last = layer.layers[-1].input
    inner = keras.Model(layer.inputs, inner_taps + [last] if taps else last)
    fed = model.layers[i - 1].output if i > 0 else model.inputs[0]
    outs = inner(fed)
    return keras.Model(model.inputs[0], list(outs) if taps else outs, name=name)


def split_model(model) -> CamParts:
    """Find the last feature maps and the head (the layers between the global pooling and p_all)."""
    import keras

    layers = model.layers
    i = gap_index(model)
    features = feature_maps(model)
    head = []
    for layer in layers[i + 1:]:
        if layer.name == HEAD:
            break
        if isinstance(layer, keras.layers.Dropout):
            continue
        if isinstance(layer, keras.layers.Dense) and _activation(layer) in ("relu", "linear"):
            head.append(layer)
            continue
        raise UnsupportedModelError(f"cannot explain a head with layer '{layer.name}' ({type(layer).__name__})")
    else:
        raise UnsupportedModelError(f"model '{model.name}' has no '{HEAD}' layer")
    p_all = model.get_layer(HEAD)
    if int(p_all.units) != 1 or _activation(p_all) != "sigmoid":
        raise UnsupportedModelError(f"'{HEAD}' must be Dense(1, activation='sigmoid')")
    return CamParts(features, head, p_all)


def _activation(layer) -> str:
    return getattr(layer.activation, "__name__", str(layer.activation))


def camhead_class():
    """The Keras layer computing [p_all, cam] from the feature maps (a class built lazily: keras imports late)."""
    import keras
    from keras import ops

    class CamHead(keras.layers.Layer):
        """A -> (sigmoid(z / T), cam of z / T) with alpha = dz/dg in closed form. Uses the head's own weights."""

        def __init__(self, head, p_all, temperature: float, **kwargs):
            super().__init__(**kwargs)
            self.dense = [*head, p_all]
            self.inv_t = 1.0 / float(temperature)

        def call(self, a):
            g = ops.mean(a, axis=(1, 2))
            x, gates = g, []
            for layer in self.dense:  # forward pass, keeping which ReLU units are open
                pre = ops.matmul(x, layer.kernel) + layer.bias
                if layer is self.dense[-1]:
                    x = pre
                elif _activation(layer) == "relu":
                    x = ops.relu(pre)
                    # ReLU's derivative 1[pre > 0] as sign(relu(pre)): no boolean Cast in the graph, which the
                    # FP16 converter would leave typed float32 inside a float16 graph.
                    gates.append(ops.sign(x))
                else:
                    gates.append(None)
                    x = pre
            z = x * self.inv_t  # (N, 1)
            delta = ops.transpose(self.dense[-1].kernel) * self.inv_t  # dz/d(input of p_all), (1, units)
            for layer, gate in zip(reversed(self.dense[:-1]), reversed(gates)):  # backward pass by hand
                if gate is not None:
                    delta = delta * gate
                delta = ops.matmul(delta, ops.transpose(layer.kernel))
            alpha = ops.broadcast_to(delta, ops.shape(g)) if len(self.dense) == 1 else delta  # (N, C)
            cam = ops.sum(a * alpha[:, None, None, :], axis=-1)
            return ops.sigmoid(z), cam

    return CamHead


def reference(model, x: np.ndarray, temperature: float = 1.0, cam: bool = True, batch: int = 16):
    """The original model's own computation, independently of `camhead_class`: (P(all) calibrated, cam or None).

    z = the p_all layer's kernel applied in float64 to its input (no sigmoid round trip, so no precision lost on
    confident cells); cam = sum_c (dz/dg_c) A_c with the gradient from tf.GradientTape through the head."""
    import keras
    import tensorflow as tf

    parts = split_model(model)
    w = np.asarray(parts.p_all.kernel, np.float64)
    b = np.asarray(parts.p_all.bias, np.float64)
    head_in = keras.Model(model.inputs, parts.p_all.input)
    ps, cams = [], []
    for i in range(0, len(x), batch):
        xb = np.asarray(x[i:i + batch], np.float32)
        z = np.asarray(head_in(xb, training=False), np.float64) @ w + b
        ps.append(1.0 / (1.0 + np.exp(-z[:, 0] / temperature)))
        if cam:
            a = tf.convert_to_tensor(parts.features(xb, training=False))
            with tf.GradientTape() as tape:
                tape.watch(a)
                h = tf.reduce_mean(a, axis=(1, 2))
                for layer in parts.head:
                    h = layer(h, training=False)
                pre = tf.matmul(h, parts.p_all.kernel) + parts.p_all.bias  # z: p_all before its sigmoid
            grad = tape.gradient(pre, a).numpy()  # dz/dA[i, j, c] = (1/hw) dz/dg_c at every (i, j)
            alpha = grad.sum(axis=(1, 2)) / temperature  # = dz/dg / T
            cams.append(np.einsum("nijc,nc->nij", a.numpy().astype(np.float64), alpha))
    p = np.concatenate(ps).astype(np.float32)
    return p, (np.concatenate(cams).astype(np.float32) if cam else None)


def cam_metadata(model) -> dict:
    """The metadata's `cam` entry for the map `train.graph.explain_model` adds to this model."""
    parts = split_model(model)
    return {"output": "cam", "grid": list(parts.grid),
            "method": "cam" if not parts.head else "grad-cam",
            "map": "sum_c alpha_c A_c of the last feature maps A, alpha = d(logit/T)/d(pooled A); logit units, "
                   "not rectified (positive: evidence for all)"}


def overlay(rgb: np.ndarray, cam: np.ndarray, caption: str, size: int = 256) -> np.ndarray:
    """A heat map of `cam` (its positive part: pass -cam to show the evidence for hem) on the cell, with a
    caption in the corner; RGB uint8 size x size."""
    import cv2

    from ..edge.explain import draw_overlay  # the one overlay drawing, also used by classify --cam and the station

    base = cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(draw_overlay(base, cam, None, caption, positive_only=True), cv2.COLOR_BGR2RGB)
