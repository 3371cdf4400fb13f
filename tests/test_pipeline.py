"""The training input pipeline: a fresh order and fresh augmentation every epoch, the same ones for the same seed."""

import numpy as np
import pytest


def _epochs(paths, seed, n_epochs=2):
    """Each epoch as a list of (image id, augmented pixels) in the order the model sees them."""
    import keras

    from leuk_edge.train.pipeline import image_dataset

    keras.utils.set_random_seed(seed)
    ids = list(range(len(paths)))  # labels double as image ids: they travel with the pixels
    ds = image_dataset(paths, ids, (32, 32), "area", batch_size=4, augment=True, shuffle=True, seed=seed,
                       cache=True)
    return [[(int(i), x) for xb, yb in ds for x, i in zip(xb.numpy(), yb.numpy())] for _ in range(n_epochs)]


@pytest.fixture(scope="module")
def cell_paths(synth_cnmc):
    return sorted(str(p) for p in (synth_cnmc / "training_data").rglob("*.bmp"))[:12]


def test_epochs_differ_in_order_and_augmentation(cell_paths):
    first, second = _epochs(cell_paths, seed=3)
    order = lambda epoch: [i for i, _ in epoch]  # noqa: E731
    assert sorted(order(first)) == sorted(order(second)) == list(range(len(cell_paths)))
    assert order(first) != order(second), "the second epoch replays the first epoch's order"
    px1, px2 = dict(first), dict(second)
    same = [i for i in px1 if np.array_equal(px1[i], px2[i])]
    assert not same, f"images {same} were augmented identically in both epochs"


def test_same_seed_same_batches(cell_paths):
    a, b = _epochs(cell_paths, seed=3), _epochs(cell_paths, seed=3)
    for ea, eb in zip(a, b):
        assert [i for i, _ in ea] == [i for i, _ in eb]
        assert all(np.array_equal(xa, xb) for (_, xa), (_, xb) in zip(ea, eb))
    c = _epochs(cell_paths, seed=4, n_epochs=1)
    assert [i for i, _ in c[0]] != [i for i, _ in a[0]]  # the seed does matter
