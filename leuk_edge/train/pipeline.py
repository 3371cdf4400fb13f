"""tf.data input pipeline: file paths -> the edge's own preprocessing -> (augmented) batches.

The decode/resize/scale step is `leuk_edge.edge.preprocess.load_image` wrapped in `tf.numpy_function`, so the
training pixels are bit-identical to what `classify`/`stream` feed the ONNX model.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..edge.preprocess import ImageReadError, load_image
from .quiet import import_tensorflow
from .stain_augment import StainJitter, jitter_stain

tf = import_tensorflow()  # the first TensorFlow import of a training process: without its load-time log noise


def _loader(height: int, width: int, resize: str):
    def load(path: bytes) -> np.ndarray:
        try:
            return load_image(path.decode(), height, width, resize)
        except ImageReadError:
            # Unreadable files are filtered out before training (data.py lists them); a file that breaks later
            # (e.g. deleted mid-run) becomes a black image rather than killing a long fit.
            return np.zeros((height, width, 3), np.float32)

    return load


def build_augmenter(seed: int = 0) -> tf.keras.Sequential:
    """Training-only augmentation: flips, zoom 0.2, shear 0.2 (the original notebook's), plus 90-degree
    rotations because a cell on a slide has no orientation. Fill with black, like the C-NMC background."""
    import keras
    from keras import layers

    return keras.Sequential([
        layers.RandomFlip("horizontal_and_vertical", seed=seed),
        layers.RandomZoom(0.2, fill_mode="constant", fill_value=0.0, seed=seed + 1),
        layers.RandomShear(x_factor=0.2, y_factor=0.2, fill_mode="constant", fill_value=0.0, seed=seed + 2),
    ], name="augment")


def _rot90(x, seed):
    k = tf.random.stateless_uniform((), seed=seed, minval=0, maxval=4, dtype=tf.int32)
    return tf.image.rot90(x, k)


def _per_image(x, seed, stain: StainJitter):
    """The per-image random steps: a 90-degree rotation, then the stain colour jitter (its own seed, folded from
    the image's, so switching the jitter off leaves the rotations as they were)."""
    x = _rot90(x, seed)
    return jitter_stain(x, tf.random.experimental.stateless_fold_in(seed, 1), stain)


def image_dataset(paths: Sequence[str], labels: Sequence[int] | None = None, size: tuple[int, int] = (256, 256),
                  resize: str = "area", batch_size: int = 32, augment: bool = False, shuffle: bool = False,
                  seed: int = 0, cache: bool = False, stain: StainJitter | None = None) -> tf.data.Dataset:
    """Batches of (x, y) (or x when labels is None); x is NHWC float32 in [0, 1].

    Order: decode -> cache -> shuffle -> rot90 -> batch -> augment. The cache holds decoded pixels only, so the
    shuffle and every random transform after it are drawn afresh each epoch; all of them are seeded from `seed`,
    so a run is reproducible while its epochs differ. `stain` (augment only): the colour jitter, default HED."""
    h, w = size
    paths = [str(p) for p in paths]
    ds = tf.data.Dataset.from_tensor_slices(paths)
    if labels is not None:
        ds = tf.data.Dataset.zip((ds, tf.data.Dataset.from_tensor_slices(np.asarray(labels, np.float32))))
    else:
        ds = ds.map(lambda p: (p, tf.constant(0.0)))
    load = _loader(h, w, resize)

    def decode(p, y):
        x = tf.numpy_function(load, [p], tf.float32, stateful=False)
        x.set_shape((h, w, 3))
        return x, y

    ds = ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if cache:
        ds = ds.cache()  # before the shuffle: a cache after it would replay the first epoch's order forever
    if shuffle:
        ds = ds.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
    if augment:
        # One stateless seed pair per image from a seeded stream that is redrawn every epoch (a counter would
        # restart each epoch and repeat the same rotations).
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        stain = stain or StainJitter()
        ds = tf.data.Dataset.zip((ds, seeds)).map(lambda xy, s: (_per_image(xy[0], s, stain), xy[1]),
                                                  num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(batch_size)
    if augment:
        augmenter = build_augmenter(seed)
        # Sequential on purpose: the Keras layers draw from a seed generator whose state advances per call, so
        # a fixed call order is what makes `--seed` reproduce the augmented pixels.
        ds = ds.map(lambda x, y: (augmenter(x, training=True), y))
    if labels is None:
        ds = ds.map(lambda x, y: x)
    return ds.prefetch(tf.data.AUTOTUNE)
