"""The Task contract and registry.

A task yields :class:`Batch` objects deterministically from a seed (same seed, same batches, on any
machine), and declares what a model needs to consume it (:class:`TaskIO`) and how it is scored.

Conventions:
- ``inputs``: (B, T) int64 token ids for ``input_kind == "tokens"``, (B, T, F) float32 for "features".
- ``mask``: (B, T) bool, True at real positions. Padding is on the right.
- ``targets``: (B,) int64 for ``head == "classify"``; (B, T) int64 for "tagging" and "lm", with
  ``IGNORE_INDEX`` (-100) wherever there is nothing to predict (padding, unscored positions).
- ``metric`` is "accuracy" (higher is better) or "bpc" (bits per character, lower is better).
- Evaluation splits are named; ``score_splits`` are the ones averaged into the headline score
  (for length generalisation: the buckets of unseen lengths).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from recurrences._registry import bad_options, load_package_modules, unknown_name

IGNORE_INDEX = -100

__all__ = [
    "IGNORE_INDEX",
    "Batch",
    "TaskIO",
    "Task",
    "register_task",
    "create_task",
    "available_tasks",
    "task_spec",
]


@dataclass
class Batch:
    inputs: Tensor
    targets: Tensor
    mask: Tensor

    def to(self, device) -> Batch:
        return Batch(self.inputs.to(device), self.targets.to(device), self.mask.to(device))

    def __len__(self) -> int:
        return int(self.inputs.shape[0])


@dataclass(frozen=True)
class TaskIO:
    """What a model must look like to consume a task."""

    input_kind: str  # "tokens" | "features"
    head: str  # "classify" | "tagging" | "lm"
    n_outputs: int  # classes (classify/tagging) or vocabulary size (lm)
    vocab_size: int | None = None  # tokens
    n_features: int | None = None  # features
    pooling: str = "last"  # classify: "last" | "mean" over real positions
    needs_causal: bool = False  # True where a bidirectional mixer would see the answer (LM)
    max_length: int | None = None  # longest sequence the task will ever produce


class Task:
    """Base class. Subclasses fill ``io``, ``metric`` and implement the batch methods."""

    name: str = ""
    metric: str = "accuracy"  # or "bpc"

    @property
    def io(self) -> TaskIO:
        raise NotImplementedError

    @property
    def higher_is_better(self) -> bool:
        return self.metric != "bpc"

    def config(self) -> dict[str, Any]:
        """The options this task was created with (JSON-serialisable; part of a run's key)."""
        raise NotImplementedError

    def train_batch(self, step: int, batch_size: int, seed: int) -> Batch:
        """The training batch for ``step``: a pure function of (step, batch_size, seed, config)."""
        raise NotImplementedError

    def eval_splits(self) -> list[str]:
        raise NotImplementedError

    @property
    def score_splits(self) -> list[str]:
        return self.eval_splits()

    @property
    def val_splits(self) -> list[str]:
        """Evaluation splits kept apart for model selection (``TrainConfig.select="best_val"``): the
        run reports the evaluation whose mean over these is best. Never part of ``score_splits``."""
        return []

    def eval_batches(self, split: str, batch_size: int, seed: int = 0) -> Iterator[Batch]:
        """Deterministic evaluation batches of ``split`` (the same whatever the training seed)."""
        raise NotImplementedError

    def split_length(self, split: str) -> int | None:
        """The sequence length a split stands for (for plots of accuracy against length), if any."""
        return None


@dataclass(frozen=True)
class TaskSpec:
    name: str
    factory: Callable[..., Task]
    defaults: dict[str, Any] = field(default_factory=dict)
    description: str = ""


_REGISTRY: dict[str, TaskSpec] = {}


def _load_builtins() -> None:
    load_package_modules("recurrences.tasks")


def register_task(
    name: str, factory: Callable[..., Task] | None = None, *, defaults=None, description: str = ""
):
    def deco(f):
        if name in _REGISTRY and _REGISTRY[name].factory is not f:
            raise ValueError(f"task name {name!r} is already registered")
        _REGISTRY[name] = TaskSpec(
            name, f, dict(defaults or {}), description or (f.__doc__ or "").strip().split("\n")[0]
        )
        return f

    return deco(factory) if factory is not None else deco


def available_tasks() -> list[str]:
    _load_builtins()
    return sorted(_REGISTRY)


def task_spec(name: str) -> TaskSpec:
    _load_builtins()
    if not isinstance(name, str) or name not in _REGISTRY:
        raise unknown_name("task", name, _REGISTRY)
    return _REGISTRY[name]


def create_task(name: str, **options: Any) -> Task:
    """``create_task("parity", train_lengths=(1, 40), test_lengths=(41, 256))``."""
    spec = task_spec(name)
    try:
        return spec.factory(**{**spec.defaults, **options})
    except TypeError as e:
        raise bad_options("task", name, spec.factory, options, e) from e


def generator(seed: int, *salt: int) -> torch.Generator:
    """A CPU torch.Generator seeded from (seed, *salt) — the one source of randomness for batches."""
    g = torch.Generator()
    h = seed & 0xFFFFFFFF
    for s in salt:
        h = (h * 1_000_003 + (s & 0xFFFFFFFF) + 0x9E3779B9) & 0xFFFFFFFFFFFF
    g.manual_seed(h)
    return g
