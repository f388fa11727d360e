"""Character-level language modelling (head "lm", metric bits per character, causal models only).

Corpus: by default CPython's own ``pydoc_data.topics`` (the language reference's help topics, always
installed): the values of ``topics`` joined by newlines in sorted key order. ``path=`` reads any UTF-8
text file instead.

Vocabulary: the sorted set of the corpus's characters, plus one unknown-character id (the last);
it is stored in ``config()["vocab"]`` so that the task can be rebuilt exactly (``vocab=`` given
explicitly is used as is; characters outside it map to the unknown id).

Split: the first ``1 - val_fraction`` of the characters train, the rest is split ``"val"``.
Training batch ``step`` takes random windows of ``seq_len + 1`` characters from (seed, step);
inputs are characters c_t..c_{t+L-1} and targets c_{t+1}..c_{t+L} (every position scored).
Evaluation uses fixed, non-overlapping windows spread evenly over the validation text.
The score is bpc = mean cross-entropy in nats / ln 2.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ._common import TRAIN_SALT, check_float, check_int, np_rng
from .base import Batch, Task, TaskIO, register_task

__all__ = ["CharLMTask", "default_corpus"]


@lru_cache(maxsize=1)
def default_corpus() -> str:
    """CPython's pydoc topics, joined in sorted key order."""
    from pydoc_data.topics import topics

    return "\n".join(topics[k] for k in sorted(topics))


def _read_text(path: str) -> str:
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise FileNotFoundError(f"option 'path': cannot read the text file {p}: {e}") from e
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise ValueError(f"option 'path': {p}, line {line}: not valid UTF-8 ({e.reason})") from None


@register_task("text")
class CharLMTask(Task):
    """Character-level language modelling on pydoc topics (default) or any text file (path=)."""

    name = "text"
    metric = "bpc"

    def __init__(
        self,
        path: str | None = None,
        seq_len: int = 256,
        val_fraction: float = 0.1,
        eval_windows: int | None = 64,
        vocab: str | None = None,
        corpus_sha256: str | None = None,
    ) -> None:
        if path is not None and not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"option 'path' must be a file path or None, got {path!r}")
        self.path = None if path is None else str(path)
        self.seq_len = check_int("seq_len", seq_len, minimum=1)
        self.val_fraction = check_float("val_fraction", val_fraction, low=0.0, high=1.0)
        self.eval_windows = (
            None if eval_windows is None else check_int("eval_windows", eval_windows, minimum=1)
        )
        text = default_corpus() if self.path is None else _read_text(self.path)
        self.corpus_sha256 = hashlib.sha256(text.encode("utf-8")).hexdigest()
        if corpus_sha256 is not None and corpus_sha256 != self.corpus_sha256:
            raise ValueError(
                f"option 'corpus_sha256': the corpus {self.path or 'pydoc_data.topics'} has sha256 "
                f"{self.corpus_sha256}, not the expected {corpus_sha256} (the text changed)"
            )
        if vocab is None:
            vocab = "".join(sorted(set(text)))
        if not isinstance(vocab, str) or not vocab or len(set(vocab)) != len(vocab):
            raise ValueError("option 'vocab' must be a non-empty string of distinct characters")
        self.vocab = vocab
        self.unk_id = len(vocab)
        index = {c: i for i, c in enumerate(vocab)}
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        uniq, inverse = np.unique(codes, return_inverse=True)
        mapped = np.array([index.get(chr(int(u)), self.unk_id) for u in uniq], dtype=np.int64)
        ids = mapped[inverse].reshape(-1) if len(codes) else np.zeros(0, dtype=np.int64)
        n_val = int(round(len(ids) * self.val_fraction))
        self.train_ids = torch.from_numpy(ids[: len(ids) - n_val].copy())
        self.val_ids = torch.from_numpy(ids[len(ids) - n_val :].copy())
        for split, part in (("train", self.train_ids), ("val", self.val_ids)):
            if len(part) < self.seq_len + 1:
                raise ValueError(
                    f"option 'seq_len': {self.seq_len} is too long for the {split} part of the corpus "
                    f"({len(part)} characters; it needs seq_len + 1)"
                )

    @property
    def io(self) -> TaskIO:
        n = len(self.vocab) + 1
        return TaskIO(
            input_kind="tokens",
            head="lm",
            n_outputs=n,
            vocab_size=n,
            needs_causal=True,
            max_length=self.seq_len,
        )

    def config(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "seq_len": self.seq_len,
            "val_fraction": self.val_fraction,
            "eval_windows": self.eval_windows,
            "vocab": self.vocab,
            "corpus_sha256": self.corpus_sha256,
        }

    def decode(self, ids) -> str:
        """Token ids back to text (the unknown id becomes U+FFFD)."""
        return "".join(
            self.vocab[i] if 0 <= i < len(self.vocab) else "\ufffd" for i in torch.as_tensor(ids).tolist()
        )

    def encode(self, text: str) -> torch.Tensor:
        index = {c: i for i, c in enumerate(self.vocab)}
        return torch.tensor([index.get(c, self.unk_id) for c in text], dtype=torch.int64)

    def _windows(self, ids: torch.Tensor, starts: np.ndarray) -> Batch:
        offsets = torch.arange(self.seq_len + 1)
        chunk = ids[torch.from_numpy(starts).to(torch.int64)[:, None] + offsets[None, :]]
        return Batch(
            chunk[:, :-1].contiguous(),
            chunk[:, 1:].contiguous(),
            torch.ones(len(starts), self.seq_len, dtype=torch.bool),
        )

    def train_batch(self, step: int, batch_size: int, seed: int) -> Batch:
        step = check_int("step", step, minimum=0)
        batch_size = check_int("batch_size", batch_size, minimum=1)
        rng = np_rng(seed, TRAIN_SALT, step)
        starts = rng.integers(0, len(self.train_ids) - self.seq_len, size=batch_size)
        return self._windows(self.train_ids, starts)

    def eval_splits(self) -> list[str]:
        return ["val"]

    def split_length(self, split: str) -> int | None:
        self._check_split(split)
        return self.seq_len

    def _check_split(self, split: str) -> None:
        if split != "val":
            raise KeyError(f"unknown split {split!r} for task 'text'; splits: val")

    def eval_starts(self) -> np.ndarray:
        """Start offsets of the fixed evaluation windows (non-overlapping, spread over the val text)."""
        n_fit = (len(self.val_ids) - 1) // self.seq_len
        n = n_fit if self.eval_windows is None else min(n_fit, self.eval_windows)
        slots = (np.arange(n) * n_fit) // n  # evenly spaced slot indices among the n_fit slots
        return slots.astype(np.int64) * self.seq_len

    def eval_batches(self, split: str, batch_size: int, seed: int = 0) -> Iterator[Batch]:
        self._check_split(split)
        batch_size = check_int("batch_size", batch_size, minimum=1)
        starts = self.eval_starts()
        for s in range(0, len(starts), batch_size):
            yield self._windows(self.val_ids, starts[s : s + batch_size])
