"""Masked-token prediction (MLM): head "tagging" over the vocabulary, scored only at masked positions.

Sources of sequences:
* ``source="markov"`` (default): a synthetic language, a sparse first-order Markov chain over ``n_symbols``
  symbols. Symbol s may be followed by ``branching`` successors only (chosen, with their probabilities, from
  ``language_seed``), so a masked symbol is pinned down far better by both neighbours than by the left one
  alone: a bidirectional model has the edge a masked-LM task should reward.
* ``source="text"``: windows of a character corpus (the ``text`` task's default corpus, or ``path=``).

Masking (BERT-style, simplified): each real position is masked independently with probability
``mask_prob`` (at least one per sequence); a masked input becomes the [MASK] id (= ``n_symbols``), and
its target is the original symbol. Every other target is ``IGNORE_INDEX``. Sequence lengths are drawn in
[``min_len``, ``seq_len``]; shorter sequences are right-padded (mask False, pad id 0, target ignored).
The metric is the accuracy over masked positions.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from ._common import EVAL_SALT, TRAIN_SALT, check_choice, check_float, check_int, np_rng
from .base import IGNORE_INDEX, Batch, Task, TaskIO, register_task

__all__ = ["MaskedTokenTask"]

SOURCES = ("markov", "text")


@register_task("mlm")
class MaskedTokenTask(Task):
    """Masked-token prediction on a synthetic Markov language (default) or a character corpus."""

    name = "mlm"
    metric = "accuracy"

    def __init__(
        self,
        source: str = "markov",
        seq_len: int = 64,
        min_len: int | None = None,
        mask_prob: float = 0.15,
        n_symbols: int = 32,
        branching: int = 2,
        language_seed: int = 0,
        path: str | None = None,
        n_eval: int = 512,
    ) -> None:
        self.source = check_choice("source", source, SOURCES)
        self.seq_len = check_int("seq_len", seq_len, minimum=1)
        self.min_len = self.seq_len if min_len is None else check_int("min_len", min_len, minimum=1)
        if self.min_len > self.seq_len:
            raise ValueError(f"option 'min_len' must be <= seq_len={self.seq_len}, got {self.min_len}")
        self.mask_prob = check_float("mask_prob", mask_prob, low=0.0, high=1.0)
        self.n_eval = check_int("n_eval", n_eval, minimum=1)
        self.language_seed = check_int("language_seed", language_seed, minimum=0)
        self.path = None if path is None else str(path)
        if self.source == "markov":
            if path is not None:
                raise ValueError("option 'path' is only used with source='text'")
            self.n_symbols = check_int("n_symbols", n_symbols, minimum=2)
            self.branching = check_int("branching", branching, minimum=1, maximum=self.n_symbols)
            rng = np.random.default_rng(self.language_seed)
            self.successors = np.stack(
                [
                    rng.choice(self.n_symbols, size=self.branching, replace=False)
                    for _ in range(self.n_symbols)
                ]
            )
            p = rng.dirichlet(np.full(self.branching, 2.0), size=self.n_symbols)
            self.cum = np.cumsum(p, axis=1)
            self.cum[:, -1] = 1.0
        else:
            from .text import CharLMTask

            lm = CharLMTask(path=path, seq_len=self.seq_len, val_fraction=0.1, eval_windows=None)
            self._lm = lm
            self.n_symbols = len(lm.vocab) + 1  # characters + the unknown-character id
            self.branching = 0

    # -- description -------------------------------------------------------------------------------
    @property
    def mask_id(self) -> int:
        return self.n_symbols

    @property
    def io(self) -> TaskIO:
        return TaskIO(
            input_kind="tokens",
            head="tagging",
            n_outputs=self.n_symbols,
            vocab_size=self.n_symbols + 1,
            needs_causal=False,
            max_length=self.seq_len,
        )

    def config(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "seq_len": self.seq_len,
            "min_len": self.min_len,
            "mask_prob": self.mask_prob,
            "n_symbols": self.n_symbols,
            "branching": self.branching,
            "language_seed": self.language_seed,
            "path": self.path,
            "n_eval": self.n_eval,
        }

    # -- sampling ------------------------------------------------------------------------------------
    def _symbols(self, rng: np.random.Generator, n: int, split: str) -> np.ndarray:
        """(n, seq_len) int64 symbol sequences."""
        L = self.seq_len
        if self.source == "markov":
            x = np.empty((n, L), dtype=np.int64)
            x[:, 0] = rng.integers(0, self.n_symbols, size=n)
            u = rng.random((n, L))
            for t in range(1, L):
                prev = x[:, t - 1]
                choice = (u[:, t, None] > self.cum[prev]).sum(1)
                x[:, t] = self.successors[prev, np.minimum(choice, self.branching - 1)]
            return x
        ids = (self._lm.train_ids if split == "train" else self._lm.val_ids).numpy()
        starts = rng.integers(0, len(ids) - L + 1, size=n)
        return ids[starts[:, None] + np.arange(L)[None, :]].astype(np.int64)

    def _batch(self, rng: np.random.Generator, n: int, split: str) -> Batch:
        x = self._symbols(rng, n, split)
        L = self.seq_len
        lengths = rng.integers(self.min_len, L + 1, size=n)
        real = np.arange(L)[None, :] < lengths[:, None]
        masked = (rng.random((n, L)) < self.mask_prob) & real
        forced = rng.integers(0, lengths)  # at least one masked position per sequence
        masked[np.arange(n), forced] = True
        inputs = np.where(masked, self.mask_id, np.where(real, x, 0))
        targets = np.where(masked, x, IGNORE_INDEX)
        return Batch(
            torch.from_numpy(inputs.astype(np.int64)),
            torch.from_numpy(targets.astype(np.int64)),
            torch.from_numpy(real),
        )

    def train_batch(self, step: int, batch_size: int, seed: int) -> Batch:
        step = check_int("step", step, minimum=0)
        batch_size = check_int("batch_size", batch_size, minimum=1)
        return self._batch(np_rng(seed, TRAIN_SALT, step), batch_size, "train")

    def eval_splits(self) -> list[str]:
        return ["val"]

    def split_length(self, split: str) -> int | None:
        self._check_split(split)
        return self.seq_len

    def _check_split(self, split: str) -> None:
        if split not in self.eval_splits():
            raise ValueError(f"unknown split {split!r}; expected one of {self.eval_splits()}")

    def eval_batches(self, split: str, batch_size: int, seed: int = 0) -> Iterator[Batch]:
        """The same ``n_eval`` sequences whatever ``seed`` (a function of the task config only)."""
        self._check_split(split)
        batch_size = check_int("batch_size", batch_size, minimum=1)
        full = self._batch(np_rng(self.language_seed, EVAL_SALT), self.n_eval, split)
        for s in range(0, self.n_eval, batch_size):
            yield Batch(
                full.inputs[s : s + batch_size],
                full.targets[s : s + batch_size],
                full.mask[s : s + batch_size],
            )

    def bayes_accuracy(self, batch: Batch) -> float:
        """Accuracy of the best predictor that sees both unmasked neighbours (markov source only): a
        reference point, argmax_s P(s | left) P(right | s) over masked positions whose neighbours are real
        and unmasked; other masked positions use whichever neighbour is available."""
        if self.source != "markov":
            raise ValueError("bayes_accuracy needs source='markov'")
        P = np.zeros((self.n_symbols, self.n_symbols))
        probs = np.diff(np.concatenate([np.zeros((self.n_symbols, 1)), self.cum], axis=1), axis=1)
        for s in range(self.n_symbols):
            P[s, self.successors[s]] = probs[s]
        x, y, m = batch.inputs.numpy(), batch.targets.numpy(), batch.mask.numpy()
        correct = total = 0
        for b, t in zip(*np.nonzero(y != IGNORE_INDEX)):
            score = np.ones(self.n_symbols)
            if t > 0 and x[b, t - 1] != self.mask_id:
                score = score * P[x[b, t - 1]]
            if t + 1 < x.shape[1] and m[b, t + 1] and x[b, t + 1] != self.mask_id:
                score = score * P[:, x[b, t + 1]]
            correct += int(np.argmax(score) == y[b, t])
            total += 1
        return correct / max(total, 1)
