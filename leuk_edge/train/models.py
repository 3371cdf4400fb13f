"""Pure model builders (keras-io style). Inputs are NHWC RGB float32 in [0, 1] (the edge preprocessing);
outputs are one sigmoid = P(all)."""

from __future__ import annotations

from .quiet import import_tensorflow

import_tensorflow()  # keras imports TensorFlow: do it first, without the load-time C++ log lines
import keras  # noqa: E402
from keras import layers  # noqa: E402

CNN_SIZE = 256
INCEPTION_SIZE = 224
DEFAULT_SIZE = {"cnn": CNN_SIZE, "inception": INCEPTION_SIZE}
ARCHITECTURE = {"cnn": "cnn", "inception": "inception_v3"}  # CLI name -> metadata name
# How each architecture's inputs are resized at the edge. Cells are downscaled from 450 px, where INTER_AREA
# avoids aliasing of the chromatin texture.
RESIZE = {"cnn": "area", "inception": "area"}


def build_cnn(input_shape=(CNN_SIZE, CNN_SIZE, 3), dropout: float = 0.4) -> keras.Model:
    """A CNN from scratch: five conv/BN/pool blocks, global pooling, a small dense head.

    Widths stay modest so a 256x256 cell runs at ~100 img/s on two CPU cores: the stream mode classifies
    several cells per frame in real time.
    """
    inputs = keras.Input(shape=input_shape, name="image")
    x = inputs
    for filters in (16, 32, 64, 128, 192):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        # momentum 0.9 for short runs; the moving statistics are replaced before every validation anyway
        # (PreciseBN, batchnorm.py): left to themselves they kept the start variance 1 and collapsed inference
        x = layers.BatchNormalization(momentum=0.9)(x)
        x = layers.Activation("relu")(x)
        x = layers.MaxPooling2D(2)(x)
    x = layers.Conv2D(256, 3, padding="same", activation="relu")(x)
    # Global pooling keeps the head small and works at any --image-size.
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(dropout)(x)
    x = layers.Dense(64, activation="relu")(x)
    x = layers.Dropout(dropout)(x)
    outputs = layers.Dense(1, activation="sigmoid", name="p_all")(x)
    return keras.Model(inputs, outputs, name="leuk_cnn")


def build_inception(input_shape=(INCEPTION_SIZE, INCEPTION_SIZE, 3), weights=None,
                    dropout: float = 0.3) -> tuple[keras.Model, keras.Model]:
    """InceptionV3 (ImageNet weights, average pooling) + a sigmoid head. Returns (model, base).

    `weights`: None, or a path to a local weights file / "imagenet" (resolved by the caller, see weights.py).
    The [0, 1] input is mapped to InceptionV3's [-1, 1] inside the model, so the edge contract stays x/255.
    """
    inputs = keras.Input(shape=input_shape, name="image")
    x = layers.Rescaling(2.0, offset=-1.0, name="to_inception_range")(inputs)
    base = keras.applications.InceptionV3(include_top=False, weights=weights, input_shape=input_shape,
                                          pooling="avg")
    if weights is None:
        # Random base: its BatchNorm statistics start at mean 0 / variance 1 and must be learnt. At Keras' default
        # momentum 0.99 a short run's moving averages barely move and validation sees a near-constant predictor
        # (val AUC 0.53 vs 0.99 at 0.9 on the demo data); 0.9 settles fast, as in the CNN.
        for layer in base.layers:
            if isinstance(layer, layers.BatchNormalization):
                layer.momentum = 0.9
    x = base(x)
    x = layers.Dropout(dropout)(x)
    outputs = layers.Dense(1, activation="sigmoid", name="p_all")(x)
    return keras.Model(inputs, outputs, name="leuk_inception_v3"), base


def unfreeze_top(base: keras.Model, from_layer: str = "mixed9") -> None:
    """Fine-tune the top inception blocks (mixed9, mixed10); BatchNorm stays frozen, as keras-io advises,
    so small batches do not wreck the ImageNet statistics."""
    base.trainable = True
    trainable = False
    for layer in base.layers:
        if layer.name == from_layer:
            trainable = True
        layer.trainable = trainable and not isinstance(layer, layers.BatchNormalization)


def build(model: str, image_size: int | None = None, weights=None):
    """-> (model, base or None). `model` is 'cnn' or 'inception'."""
    size = image_size or DEFAULT_SIZE[model]
    if model == "cnn":
        return build_cnn((size, size, 3)), None
    if model == "inception":
        return build_inception((size, size, 3), weights=weights)
    raise ValueError(f"unknown model {model!r}; choose cnn or inception")
