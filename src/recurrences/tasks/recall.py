"""Multi-query associative recall (MQAR) with the semantics of the zoology generator (Arora et al., 2023).

For vocabulary size V, sequence length T and ``num_kv_pairs`` = K:

- keys are drawn without replacement from {1, ..., V/2 - 1}, values from {V/2, ..., V - 1};
- the sequence opens with the K pairs ``k_1 v_1 k_2 v_2 ... k_K v_K`` (2K tokens);
- the remaining ``space = (T - 2K) / 2`` slots of even offset after the context carry the queries:
  K distinct gaps g_i in {0, ..., space - 1} drawn without replacement with probability
  proportional to (g + 1)^(a - 1) (a = ``power_a`` = 0.01, a power law favouring short gaps); key k_i
  is placed at position 2K + 2 g_i;
- the target at a query position is the value paired with that key; every other position is
  IGNORE_INDEX (head "tagging", metric = accuracy over query positions);
- all other positions hold 0, or, with ``random_non_queries`` (the default, as in zoology), a token
  drawn uniformly from {0, ..., V - 1}.

Constraints (as in zoology): T even, V > T, 4K <= T.

Training batches pick one of ``train_configs`` = [(T, K), ...] per step; evaluation has one split per
entry of ``test_configs``, named ``len<T>_kv<K>``, each with ``eval_examples`` sequences.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from ._common import (
    EVAL_SALT,
    IGNORE_INDEX,
    TRAIN_SALT,
    check_float,
    check_int,
    np_rng,
    to_batch,
)
from .base import Batch, Task, TaskIO, register_task

__all__ = ["MQARTask", "mqar_example_arrays"]


def _distinct(rng: np.random.Generator, log_weights: np.ndarray, k: int) -> np.ndarray:
    """Per row, k distinct column indices drawn without replacement with probabilities proportional to
    exp(log_weights), in the order drawn (Gumbel top-k: sort log w + Gumbel noise, descending)."""
    scores = log_weights - np.log(-np.log(rng.random(log_weights.shape)))
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    # order the chosen k by their scores, so the result does not depend on argpartition's internals
    order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1, kind="stable")
    return np.take_along_axis(top, order, axis=1)


def mqar_example_arrays(
    rng: np.random.Generator,
    batch_size: int,
    seq_len: int,
    num_kv_pairs: int,
    vocab_size: int,
    power_a: float = 0.01,
    random_non_queries: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, targets), both (batch_size, seq_len) int64, with the semantics in the module docstring."""
    t, k, v = seq_len, num_kv_pairs, vocab_size
    context = 2 * k
    half = v // 2
    space = (t - context) // 2
    weights = power_a * np.arange(1, space + 1, dtype=np.float64) ** (power_a - 1)
    weights /= weights.sum()
    inputs = np.zeros((batch_size, t), dtype=np.int64)
    targets = np.full((batch_size, t), IGNORE_INDEX, dtype=np.int64)
    keys = 1 + np.stack([rng.choice(half - 1, size=k, replace=False) for _ in range(batch_size)])
    values = half + np.stack([rng.choice(v - half, size=k, replace=False) for _ in range(batch_size)])
    # weighted sampling without replacement = the k largest of log w + Gumbel noise
    gaps = _distinct(rng, np.broadcast_to(np.log(weights), (batch_size, space)), k)
    rows = np.arange(batch_size)[:, None]
    inputs[:, 0:context:2] = keys
    inputs[:, 1:context:2] = values
    positions = context + 2 * gaps
    inputs[rows, positions] = keys
    targets[rows, positions] = values
    if random_non_queries:
        noise = rng.integers(0, v, size=(batch_size, t))
        inputs = np.where(inputs == 0, noise, inputs)
    return inputs, targets


def _check_configs(name: str, configs: Any, vocab_size: int) -> tuple[tuple[int, int], ...]:
    if isinstance(configs, (str, bytes)) or not isinstance(configs, Sequence) or len(configs) == 0:
        raise TypeError(
            f"option {name!r} must be a non-empty list of (seq_len, num_kv_pairs) pairs, got {configs!r}"
        )
    out = []
    for i, pair in enumerate(configs):
        if isinstance(pair, (str, bytes)) or not isinstance(pair, Sequence) or len(pair) != 2:
            raise TypeError(f"option {name}[{i}] must be a pair (seq_len, num_kv_pairs), got {pair!r}")
        t = check_int(f"{name}[{i}] seq_len", pair[0], minimum=4)
        k = check_int(f"{name}[{i}] num_kv_pairs", pair[1], minimum=1)
        if t % 2:
            raise ValueError(f"option {name}[{i}]: seq_len must be even, got {t}")
        if 4 * k > t:
            raise ValueError(f"option {name}[{i}]: need 4 * num_kv_pairs <= seq_len, got ({t}, {k})")
        if vocab_size <= t:
            raise ValueError(
                f"option 'vocab_size' must exceed every seq_len in {name!r}: {vocab_size} <= {t}"
            )
        if k > vocab_size // 2 - 1:
            raise ValueError(f"option {name}[{i}]: num_kv_pairs {k} exceeds the {vocab_size // 2 - 1} keys")
        out.append((t, k))
    return tuple(out)


@register_task("mqar")
class MQARTask(Task):
    """Multi-query associative recall (zoology semantics): recall the value of each queried key."""

    name = "mqar"

    def __init__(
        self,
        vocab_size: int = 8192,
        train_configs: Sequence[Sequence[int]] = ((64, 4), (64, 8), (64, 16)),
        test_configs: Sequence[Sequence[int]] = ((64, 4), (64, 8), (64, 16), (128, 32), (256, 64)),
        eval_examples: int = 128,
        power_a: float = 0.01,
        random_non_queries: bool = True,
    ) -> None:
        self.vocab_size = check_int("vocab_size", vocab_size, minimum=4)
        self.train_configs = _check_configs("train_configs", train_configs, self.vocab_size)
        self.test_configs = _check_configs("test_configs", test_configs, self.vocab_size)
        names = [self._split_name(c) for c in self.test_configs]
        if len(set(names)) != len(names):
            raise ValueError(f"option 'test_configs' has duplicate entries: {list(self.test_configs)}")
        self.eval_examples = check_int("eval_examples", eval_examples, minimum=1)
        self.power_a = check_float("power_a", power_a, low=0.0, high=1.0)
        if not isinstance(random_non_queries, bool):
            raise TypeError(f"option 'random_non_queries' must be a bool, got {random_non_queries!r}")
        self.random_non_queries = random_non_queries
        self._cache: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]] = {}

    @staticmethod
    def _split_name(config: tuple[int, int]) -> str:
        return f"len{config[0]}_kv{config[1]}"

    @property
    def io(self) -> TaskIO:
        longest = max(t for t, _ in self.train_configs + self.test_configs)
        return TaskIO(
            input_kind="tokens",
            head="tagging",
            n_outputs=self.vocab_size,
            vocab_size=self.vocab_size,
            needs_causal=False,
            max_length=longest,
        )

    def config(self) -> dict[str, Any]:
        return {
            "vocab_size": self.vocab_size,
            "train_configs": [list(c) for c in self.train_configs],
            "test_configs": [list(c) for c in self.test_configs],
            "eval_examples": self.eval_examples,
            "power_a": self.power_a,
            "random_non_queries": self.random_non_queries,
        }

    def _arrays(self, rng, batch_size: int, config: tuple[int, int]):
        return mqar_example_arrays(
            rng, batch_size, config[0], config[1], self.vocab_size, self.power_a, self.random_non_queries
        )

    def train_batch(self, step: int, batch_size: int, seed: int) -> Batch:
        step = check_int("step", step, minimum=0)
        batch_size = check_int("batch_size", batch_size, minimum=1)
        rng = np_rng(seed, TRAIN_SALT, step)
        config = self.train_configs[int(rng.integers(len(self.train_configs)))]
        inputs, targets = self._arrays(rng, batch_size, config)
        return to_batch(inputs, targets, np.ones(inputs.shape, dtype=bool))

    def eval_splits(self) -> list[str]:
        return [self._split_name(c) for c in self.test_configs]

    def split_length(self, split: str) -> int | None:
        return self.test_configs[self._index(split)][0]

    def _index(self, split: str) -> int:
        splits = self.eval_splits()
        if split not in splits:
            raise KeyError(f"unknown split {split!r} for task 'mqar'; splits: {', '.join(splits)}")
        return splits.index(split)

    def eval_batches(self, split: str, batch_size: int, seed: int = 0) -> Iterator[Batch]:
        batch_size = check_int("batch_size", batch_size, minimum=1)
        i = self._index(split)
        key = (split, int(seed))
        if key not in self._cache:
            # salted by the config itself, so a split's data does not depend on its place in the list
            t, k = self.test_configs[i]
            self._cache[key] = self._arrays(np_rng(seed, EVAL_SALT, t, k), self.eval_examples, (t, k))
        inputs, targets = self._cache[key]
        for start in range(0, len(inputs), batch_size):
            x = inputs[start : start + batch_size]
            yield to_batch(x, targets[start : start + batch_size], np.ones(x.shape, dtype=bool))
