"""Tiny mixers and a tiny task for testing the model/trainer/arena machinery (like ``torch.testing``).

Importing this module registers:

- mixer ``"_toy-ema"`` (causal): u = W_in x;  h_t = a * h_{t-1} + (1 - a) * u_t  per channel with
  a = sigmoid(theta) in (0, 1);  y_t = W_out (h_t * silu(W_g x_t)). Padded positions keep the state
  (a_t = 1, b_t = 0) so they never change what follows. Computed by a plain loop (it is a test tool).
- mixer ``"_toy-bimean"`` (bidirectional): y_t = W_v x_t + W_m mean_{s real} x_s.
- task ``"_toy"``: small deterministic batches for every head/input kind (see :class:`ToyTask`).

None of this is imported by the library itself; tests, examples and worker processes import it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recurrences.layers.base import Mixer, check_step_input, register_mixer
from recurrences.tasks.base import IGNORE_INDEX, Batch, Task, TaskIO, generator, register_task

__all__ = ["ToyEMA", "ToyBiMean", "ToyTask"]


@register_mixer("_toy-ema", family="toy")
class ToyEMA(Mixer):
    """Toy causal mixer: a per-channel exponential moving average with a gate."""

    causal = True
    forms = ("reference",)

    def __init__(
        self, d_model: int, n_heads: int = 1, *, form: str = "auto", init_decay: float = 0.9
    ) -> None:
        super().__init__(d_model, n_heads, form=form)
        self.w_in = nn.Linear(d_model, d_model, bias=False)
        self.w_g = nn.Linear(d_model, d_model, bias=False)
        self.w_out = nn.Linear(d_model, d_model, bias=False)
        logit = torch.log(torch.tensor(init_decay) / (1 - torch.tensor(init_decay)))
        self.theta = nn.Parameter(torch.full((d_model,), float(logit)) + 0.5 * torch.randn(d_model))

    def _forward(self, x: Tensor, *, mask: Tensor | None, state: Any, return_state: bool):
        B, T, D = x.shape
        a = torch.sigmoid(self.theta).to(x.dtype)
        u = self.w_in(x)
        h = x.new_zeros(B, D) if state is None else self._check_state(state, B)
        hs = []
        for t in range(T):
            h_new = a * h + (1 - a) * u[:, t]
            h = h_new if mask is None else torch.where(mask[:, t, None], h_new, h)
            hs.append(h)
        states = torch.stack(hs, 1) if hs else x.new_zeros(B, 0, D)
        y = self.w_out(states * F.silu(self.w_g(x)))
        return (y, h) if return_state else y

    def _check_state(self, state: Any, batch_size: int) -> Tensor:
        want = (batch_size, self.d_model)
        if not isinstance(state, Tensor) or state.shape != want:
            got = tuple(state.shape) if isinstance(state, Tensor) else type(state).__name__
            raise ValueError(f"ToyEMA: state must be a tensor of shape {want}, got {got}")
        return state

    def init_state(self, batch_size: int, device=None, dtype=None) -> Tensor:
        return torch.zeros(batch_size, self.d_model, device=device, dtype=dtype or self.theta.dtype)

    def step(self, x_t: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        check_step_input("ToyEMA.step", x_t, self.d_model, like=self.w_in.weight)
        state = self._check_state(state, x_t.shape[0])
        a = torch.sigmoid(self.theta).to(x_t.dtype)
        h = a * state + (1 - a) * self.w_in(x_t)
        return self.w_out(h * F.silu(self.w_g(x_t))), h


@register_mixer("_toy-bimean", family="toy")
class ToyBiMean(Mixer):
    """Toy bidirectional mixer: each position sees the mean of all real positions."""

    causal = False
    forms = ("reference",)

    def __init__(self, d_model: int, n_heads: int = 1, *, form: str = "auto") -> None:
        super().__init__(d_model, n_heads, form=form)
        self.w_v = nn.Linear(d_model, d_model, bias=False)
        self.w_m = nn.Linear(d_model, d_model, bias=False)

    def _forward(self, x: Tensor, *, mask: Tensor | None, state: Any, return_state: bool):
        if mask is None:
            mean = x.mean(1, keepdim=True)
        else:
            m = mask[..., None].to(x.dtype)
            mean = (torch.where(mask[..., None], x, 0) * m).sum(1, keepdim=True) / m.sum(
                1, keepdim=True
            ).clamp_min(1)
        return self.w_v(x) + self.w_m(mean)


@register_task("_toy")
class ToyTask(Task):
    """A tiny deterministic task for every head and input kind.

    - ``classify``: label = the first token (tokens) or [first feature of position 0 > 0] (features).
    - ``tagging``: target_t = input token t (tokens) or [x_t0 > 0] (features).
    - ``lm``: sequences counting up mod ``vocab`` from a random start; predict the next token.
    Lengths are drawn uniformly in ``train_lengths`` (padding on the right to the longest row);
    the eval splits are ``"short"`` (train lengths) and ``"long"`` (``test_lengths``), ``n_eval``
    examples each. ``metric`` may be "bpc" for an lm.
    """

    name = "_toy"

    def __init__(
        self,
        head: str = "classify",
        input_kind: str = "tokens",
        vocab: int = 4,
        n_features: int = 3,
        train_lengths: tuple[int, int] | list[int] = (2, 8),
        test_lengths: tuple[int, int] | list[int] = (9, 12),
        n_eval: int = 32,
        metric: str = "accuracy",
        fail_at_step: int | None = None,
    ) -> None:
        self.head = head
        self.input_kind = input_kind
        self.vocab = int(vocab)
        self.n_features = int(n_features)
        self.train_lengths = tuple(train_lengths)
        self.test_lengths = tuple(test_lengths)
        self.n_eval = int(n_eval)
        self.metric = metric
        # a test hook: raise KeyboardInterrupt the first time this training step is requested
        self.fail_at_step = fail_at_step

    @property
    def io(self) -> TaskIO:
        n_out = self.vocab if self.input_kind == "tokens" else 2
        return TaskIO(
            input_kind=self.input_kind,
            head=self.head,
            n_outputs=n_out,
            vocab_size=self.vocab if self.input_kind == "tokens" else None,
            n_features=self.n_features if self.input_kind == "features" else None,
            needs_causal=self.head == "lm",
            max_length=max(self.train_lengths[1], self.test_lengths[1]) + 1,
        )

    def config(self) -> dict[str, Any]:
        return {
            "head": self.head,
            "input_kind": self.input_kind,
            "vocab": self.vocab,
            "n_features": self.n_features,
            "train_lengths": list(self.train_lengths),
            "test_lengths": list(self.test_lengths),
            "n_eval": self.n_eval,
            "metric": self.metric,
        }

    def _make(self, g: torch.Generator, n: int, lengths: tuple[int, int]) -> Batch:
        lo, hi = lengths
        lens = torch.randint(lo, hi + 1, (n,), generator=g)
        T = int(lens.max())
        mask = torch.arange(T)[None, :] < lens[:, None]
        if self.head == "lm":
            start = torch.randint(0, self.vocab, (n, 1), generator=g)
            seq = (start + torch.arange(T + 1)[None, :]) % self.vocab
            inputs, targets = seq[:, :-1].clone(), seq[:, 1:].clone()
            inputs[~mask] = 0
            targets[~mask] = IGNORE_INDEX
            return Batch(inputs, targets, mask)
        if self.input_kind == "tokens":
            inputs = torch.randint(0, self.vocab, (n, T), generator=g)
            inputs[~mask] = 0
            if self.head == "classify":
                targets = inputs[:, 0].clone()
            else:
                targets = inputs.clone()
                targets[~mask] = IGNORE_INDEX
        else:
            inputs = torch.randn(n, T, self.n_features, generator=g)
            inputs[~mask] = 0.0
            if self.head == "classify":
                targets = (inputs[:, 0, 0] > 0).long()
            else:
                targets = (inputs[..., 0] > 0).long()
                targets[~mask] = IGNORE_INDEX
        return Batch(inputs, targets, mask)

    def train_batch(self, step: int, batch_size: int, seed: int) -> Batch:
        if self.fail_at_step is not None and step == self.fail_at_step:
            self.fail_at_step = None
            raise KeyboardInterrupt(f"_toy: simulated crash at step {step}")
        return self._make(generator(seed, 1, step), batch_size, self.train_lengths)

    def eval_splits(self) -> list[str]:
        return ["short", "long"]

    def eval_batches(self, split: str, batch_size: int, seed: int = 0) -> Iterator[Batch]:
        if split not in ("short", "long"):
            raise KeyError(f"_toy: unknown split {split!r}")
        lengths = self.train_lengths if split == "short" else self.test_lengths
        done = 0
        i = 0
        while done < self.n_eval:
            n = min(batch_size, self.n_eval - done)
            yield self._make(generator(seed, 2, 0 if split == "short" else 1, i), n, lengths)
            done += n
            i += 1

    def split_length(self, split: str) -> int | None:
        return self.train_lengths[1] if split == "short" else self.test_lengths[1]


def ddp_train_worker(
    run_dir: str, model_config: dict, task_options: dict, train_config: dict, bad_batch_size: int = 0
):
    """A DDP worker for tests (start with :func:`recurrences.train.distributed.launch_local`): trains the
    toy task into ``run_dir`` (rank 0 writes it); then, if ``bad_batch_size``, checks that a batch size
    the world size does not divide is refused, writing the error text to ``run_dir/bad_batch.txt``."""
    import os
    from pathlib import Path

    import torch

    from recurrences.tasks import create_task

    from .trainer import train

    torch.set_num_threads(1)
    task = create_task("_toy", **task_options)
    train(model_config, task, train_config, run_dir=run_dir, progress=False, device="cpu")
    if bad_batch_size:
        try:
            train(
                model_config,
                task,
                {**train_config, "batch_size": bad_batch_size},
                progress=False,
                device="cpu",
            )
        except ValueError as e:
            if os.environ.get("RANK") == "0":
                Path(run_dir, "bad_batch.txt").write_text(str(e))
