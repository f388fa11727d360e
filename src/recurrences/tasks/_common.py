"""Shared helpers for the task modules: option checks, seeded numpy RNGs, batches, length buckets,
locating data files inside installed packages, and a base class for fixed-array classification data.

Randomness: every random draw comes from :func:`recurrences.tasks.base.generator` (a torch generator
seeded from ``(seed, *salt)``); where numpy is more convenient, :func:`np_rng` derives a numpy PCG64
generator from it, which is equally reproducible across machines.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .base import IGNORE_INDEX, Batch, Task, TaskIO, generator

# Salts that keep the streams of training batches, evaluation sets and data preparation apart.
TRAIN_SALT = 0x7A1
EVAL_SALT = 0xE7A
DATA_SALT = 0xDA7
VAL_SALT = 0x7A1D

DATA_EXTRA_HINT = "pip install 'recurrences[data]'"


# ----------------------------------------------------------------------------------------------- checks


def check_int(name: str, value: Any, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """``value`` as an int, or a ValueError/TypeError naming option ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"option {name!r} must be an integer, got {value!r}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"option {name!r} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"option {name!r} must be <= {maximum}, got {value}")
    return value


def check_float(name: str, value: Any, *, low: float, high: float, open_low: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"option {name!r} must be a number, got {value!r}")
    value = float(value)
    ok = (value > low if open_low else value >= low) and value < high
    if not ok or not np.isfinite(value):
        bracket = "(" if open_low else "["
        raise ValueError(f"option {name!r} must lie in {bracket}{low}, {high}), got {value}")
    return value


def check_length_range(name: str, value: Any, *, minimum: int = 1) -> tuple[int, int]:
    """A (low, high) pair of ints with ``minimum <= low <= high``."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 2:
        raise TypeError(f"option {name!r} must be a pair (low, high) of integers, got {value!r}")
    lo = check_int(f"{name}[0]", value[0], minimum=minimum)
    hi = check_int(f"{name}[1]", value[1], minimum=minimum)
    if hi < lo:
        raise ValueError(f"option {name!r} must be increasing (low <= high), got {tuple(value)!r}")
    return lo, hi


def check_choice(name: str, value: Any, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ValueError(f"option {name!r} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return value


# ------------------------------------------------------------------------------------------ randomness


def np_rng(seed: int, *salt: int) -> np.random.Generator:
    """A numpy generator derived from ``generator(seed, *salt)``."""
    g = generator(int(seed), *(int(s) for s in salt))
    s = int(torch.randint(0, 2**62, (1,), generator=g).item())
    return np.random.default_rng(s)


def epoch_indices(n: int, step: int, batch_size: int, seed: int) -> np.ndarray:
    """Indices of training batch ``step``: consecutive slices of per-epoch permutations of range(n).

    Position k = step * batch_size + i lies in epoch k // n; epoch e is permuted by
    ``generator(seed, TRAIN_SALT, e)``, so every example is seen once per epoch.
    """
    start = step * batch_size
    stop = start + batch_size
    out = []
    for epoch in range(start // n, (stop - 1) // n + 1):
        perm = torch.randperm(n, generator=generator(seed, TRAIN_SALT, epoch)).numpy()
        lo = max(start, epoch * n) - epoch * n
        hi = min(stop, (epoch + 1) * n) - epoch * n
        out.append(perm[lo:hi])
    return np.concatenate(out)


# ----------------------------------------------------------------------------------- lengths, padding


def length_buckets(lo: int, hi: int, width: int) -> list[tuple[int, int]]:
    """Split [lo, hi] into buckets whose upper ends are multiples of ``width`` (the last one ends at hi).

    ``length_buckets(41, 256, 32)`` -> [(41, 64), (65, 96), ..., (225, 256)].
    """
    buckets = []
    a = lo
    while a <= hi:
        b = min(hi, ((a - 1) // width + 1) * width)
        buckets.append((a, b))
        a = b + 1
    return buckets


def spread_lengths(lo: int, hi: int, n: int) -> np.ndarray:
    """``n`` lengths covering [lo, hi] as evenly as possible (deterministic)."""
    span = hi - lo + 1
    return lo + (np.arange(n) * span) // n


def to_batch(inputs: np.ndarray, targets: np.ndarray, mask: np.ndarray) -> Batch:
    x = torch.from_numpy(np.ascontiguousarray(inputs))
    x = x.to(torch.float32) if x.is_floating_point() else x.to(torch.int64)
    return Batch(
        x,
        torch.from_numpy(np.ascontiguousarray(targets)).to(torch.int64),
        torch.from_numpy(np.ascontiguousarray(mask)).to(torch.bool),
    )


# --------------------------------------------------------------------------------- package data files


def package_dir(package: str, *, purpose: str) -> Path:
    """The directory of an installed package, found without importing it.

    Raises ModuleNotFoundError with the install hint when the package is missing.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"{purpose} needs the optional package {package!r}, which is not installed; "
            f"install the data extra: {DATA_EXTRA_HINT}"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def package_file(package: str, relative: str, *, purpose: str) -> Path:
    path = package_dir(package, purpose=purpose) / relative
    if not path.is_file():
        raise FileNotFoundError(
            f"{purpose}: expected the data file {path} inside the installed package {package!r}; "
            f"this version of {package!r} does not ship it (reinstall with {DATA_EXTRA_HINT})"
        )
    return path


# ------------------------------------------------------------------ fixed-array classification tasks


class ArrayClassificationTask(Task):
    """Classification over fixed arrays of (possibly unequal-length) feature sequences.

    Subclasses set ``x_train`` (N, T, F) float32, ``len_train`` (N,), ``y_train`` (N,) and the same for
    test, plus ``n_classes``. Training batch ``step`` holds consecutive slices of per-epoch
    permutations (see :func:`epoch_indices`); the eval split ``"test"`` walks the test set in order.
    Batches are cut to the longest real length they contain; padding is on the right, masked out.
    """

    x_train: np.ndarray
    len_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    len_test: np.ndarray
    y_test: np.ndarray
    n_classes: int

    @property
    def io(self) -> TaskIO:
        return TaskIO(
            input_kind="features",
            head="classify",
            n_outputs=int(self.n_classes),
            n_features=int(self.x_train.shape[2]),
            pooling="last",
            max_length=int(max(self.len_train.max(), self.len_test.max())),
        )

    def _make(self, x: np.ndarray, lengths: np.ndarray, y: np.ndarray, idx: np.ndarray) -> Batch:
        t = int(lengths[idx].max())
        inputs = x[idx, :t]
        mask = np.arange(t)[None, :] < lengths[idx][:, None]
        return to_batch(inputs, y[idx], mask)

    def train_batch(self, step: int, batch_size: int, seed: int) -> Batch:
        step = check_int("step", step, minimum=0)
        batch_size = check_int("batch_size", batch_size, minimum=1)
        idx = epoch_indices(len(self.y_train), step, batch_size, seed)
        return self._make(self.x_train, self.len_train, self.y_train, idx)

    def eval_splits(self) -> list[str]:
        return ["test"]

    def eval_batches(self, split: str, batch_size: int, seed: int = 0) -> Iterator[Batch]:
        if split != "test":
            raise KeyError(f"unknown split {split!r} for task {self.name!r}; splits: {self.eval_splits()}")
        batch_size = check_int("batch_size", batch_size, minimum=1)
        n = len(self.y_test)
        for start in range(0, n, batch_size):
            idx = np.arange(start, min(n, start + batch_size))
            yield self._make(self.x_test, self.len_test, self.y_test, idx)


__all__ = [
    "IGNORE_INDEX",
    "TRAIN_SALT",
    "EVAL_SALT",
    "DATA_SALT",
    "VAL_SALT",
    "ArrayClassificationTask",
    "check_int",
    "check_float",
    "check_length_range",
    "check_choice",
    "np_rng",
    "epoch_indices",
    "length_buckets",
    "spread_lengths",
    "to_batch",
    "package_dir",
    "package_file",
]


# ------------------------------------------------------------------------ length-generalisation tasks


class LengthTask(Task):
    """Sequences of random lengths; trained on ``train_lengths``, scored on unseen ``test_lengths``.

    Evaluation splits: ``"train_len"`` (lengths spread over ``train_lengths``) and one split per bucket
    of unseen lengths, named ``len_<lo>_<hi>`` (buckets end on multiples of ``bucket_width``); each
    split holds ``eval_examples`` examples whose lengths cover the bucket evenly. ``score_splits`` are
    the unseen buckets, so the headline score is the mean accuracy over unseen lengths.

    Training batches draw a length per batch (``batch_lengths="batch"``, as in Deletang et al.) or per
    example (``"example"``, right-padded with a mask).

    Length curriculum (off by default): with ``curriculum_steps = S > 0`` the longest training length
    grows linearly from ``curriculum_start`` (default ``min(high, low + 7)``) at step 0 to the full
    ``train_lengths`` high at step S, and stays there: at step s lengths are drawn from
    [low, start + floor((high - start) * s / S)]. It is a function of the step alone, so resumed runs
    see the same batches. Evaluation never changes.

    Validation splits (off by default): ``val_examples = n > 0`` adds one split ``val_<lo>_<hi>`` per
    unseen bucket, ``n`` examples each, drawn from a stream independent of the test buckets. They are
    ``val_splits`` (for ``TrainConfig(select="best_val")``, the protocol of Deletang et al. and of the
    AUSSM paper: keep the evaluation that is best on validation lengths, report its test buckets) and
    never scored.

    Subclasses implement ``_generate(rng, lengths) -> (tokens (B, T) int64 padded with pad_id,
    lengths (B,), targets)`` with targets (B,) for "classify" and (B, T) for "tagging" (IGNORE_INDEX at
    padding), and set ``n_symbols``, ``n_classes``, ``head``.
    """

    head: str = "classify"
    n_symbols: int
    n_classes: int

    def __init__(
        self,
        train_lengths: Sequence[int] = (1, 40),
        test_lengths: Sequence[int] = (41, 256),
        bucket_width: int = 32,
        eval_examples: int = 128,
        batch_lengths: str = "batch",
        curriculum_steps: int = 0,
        curriculum_start: int | None = None,
        val_examples: int = 0,
    ) -> None:
        self.train_lengths = check_length_range("train_lengths", train_lengths)
        self.test_lengths = check_length_range("test_lengths", test_lengths)
        if self.test_lengths[0] <= self.train_lengths[1]:
            raise ValueError(
                f"option 'test_lengths' must start above the longest training length "
                f"(train_lengths={self.train_lengths}), got {self.test_lengths}"
            )
        self.bucket_width = check_int("bucket_width", bucket_width, minimum=1)
        self.eval_examples = check_int("eval_examples", eval_examples, minimum=1)
        self.batch_lengths = check_choice("batch_lengths", batch_lengths, ("batch", "example"))
        self.curriculum_steps = check_int("curriculum_steps", curriculum_steps, minimum=0)
        lo, hi = self.train_lengths
        if curriculum_start is not None and not self.curriculum_steps:
            raise ValueError("option 'curriculum_start' needs 'curriculum_steps' > 0 (the curriculum is off)")
        if curriculum_start is None:
            curriculum_start = min(hi, lo + 7)
        self.curriculum_start = check_int("curriculum_start", curriculum_start, minimum=lo, maximum=hi)
        self.val_examples = check_int("val_examples", val_examples, minimum=0)
        self._buckets = length_buckets(*self.test_lengths, self.bucket_width)
        self._cache: dict[tuple[str, int], tuple[np.ndarray, np.ndarray, Any]] = {}

    # -- to be provided by subclasses
    def _generate(
        self, rng: np.random.Generator, lengths: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        raise NotImplementedError

    def _extra_config(self) -> dict[str, Any]:
        return {}

    @property
    def pad_id(self) -> int:
        return self.n_symbols

    # -- contract
    @property
    def io(self) -> TaskIO:
        return TaskIO(
            input_kind="tokens",
            head=self.head,
            n_outputs=int(self.n_classes),
            vocab_size=int(self.n_symbols) + 1,
            pooling="last",
            needs_causal=False,
            max_length=max(self.train_lengths[1], self.test_lengths[1]),
        )

    def config(self) -> dict[str, Any]:
        return {
            "train_lengths": list(self.train_lengths),
            "test_lengths": list(self.test_lengths),
            "bucket_width": self.bucket_width,
            "eval_examples": self.eval_examples,
            "batch_lengths": self.batch_lengths,
            **(
                {"curriculum_steps": self.curriculum_steps, "curriculum_start": self.curriculum_start}
                if self.curriculum_steps
                else {}
            ),
            **({"val_examples": self.val_examples} if self.val_examples else {}),
            **self._extra_config(),
        }

    def _batch(self, tokens: np.ndarray, lengths: np.ndarray, targets: np.ndarray) -> Batch:
        t = int(lengths.max())
        mask = np.arange(t)[None, :] < lengths[:, None]
        if targets.ndim == 2:
            targets = targets[:, :t]
        return to_batch(tokens[:, :t], targets, mask)

    def train_batch(self, step: int, batch_size: int, seed: int) -> Batch:
        step = check_int("step", step, minimum=0)
        batch_size = check_int("batch_size", batch_size, minimum=1)
        rng = np_rng(seed, TRAIN_SALT, step)
        lo, hi = self.train_lengths[0], self.train_high(step)
        if self.batch_lengths == "batch":
            lengths = np.full(batch_size, int(rng.integers(lo, hi + 1)), dtype=np.int64)
        else:
            lengths = rng.integers(lo, hi + 1, size=batch_size).astype(np.int64)
        return self._batch(*self._generate(rng, lengths))

    def train_high(self, step: int) -> int:
        """The longest training length drawn at ``step`` (the curriculum's schedule; see the class doc)."""
        hi = self.train_lengths[1]
        if self.curriculum_steps and step < self.curriculum_steps:
            start = self.curriculum_start
            return start + ((hi - start) * int(step)) // self.curriculum_steps
        return hi

    def eval_splits(self) -> list[str]:
        return ["train_len", *self.score_splits, *self.val_splits]

    @property
    def score_splits(self) -> list[str]:
        return [f"len_{a:03d}_{b:03d}" for a, b in self._buckets]

    @property
    def val_splits(self) -> list[str]:
        return [f"val_{a:03d}_{b:03d}" for a, b in self._buckets] if self.val_examples else []

    def _range_of(self, split: str) -> tuple[int, tuple[int, int]]:
        splits = self.eval_splits()
        if split not in splits:
            raise KeyError(f"unknown split {split!r} for task {self.name!r}; splits: {', '.join(splits)}")
        i = splits.index(split)
        if i == 0:
            return i, self.train_lengths
        return i, self._buckets[(i - 1) % len(self._buckets)]

    def split_length(self, split: str) -> int | None:
        """The mean length of a split (None for validation splits: they are not plotted)."""
        _, (a, b) = self._range_of(split)
        return None if split.startswith("val_") else (a + b) // 2

    def _eval_data(self, split: str, seed: int):
        key = (split, int(seed))
        if key not in self._cache:
            i, (a, b) = self._range_of(split)
            val = split.startswith("val_")
            rng = np_rng(seed, VAL_SALT, i) if val else np_rng(seed, EVAL_SALT, i)
            n = self.val_examples if val else self.eval_examples
            lengths = spread_lengths(a, b, n).astype(np.int64)
            self._cache[key] = self._generate(rng, lengths)
        return self._cache[key]

    def eval_batches(self, split: str, batch_size: int, seed: int = 0) -> Iterator[Batch]:
        batch_size = check_int("batch_size", batch_size, minimum=1)
        tokens, lengths, targets = self._eval_data(split, seed)
        order = np.argsort(lengths, kind="stable")  # similar lengths together: little padding
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            yield self._batch(tokens[idx], lengths[idx], targets[idx])
