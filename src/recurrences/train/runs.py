"""One run of the arena grid, self-contained (safe to call in a worker process).

``run_one`` computes the run's key from (model config, task name + config, train config, seed); a run
the store already has as finished is returned without training; anything else trains in
``root_dir/<key>`` (resuming from its checkpoint if one is there) and is recorded in the store.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recurrences.models.config import ModelConfig
from recurrences.tasks.base import Task, create_task

from .store import RunRecord, RunStore, run_key
from .trainer import TrainConfig, _task_identity, train

__all__ = ["RunSpec", "prepare_run", "resolve_model_config", "run_one"]

_IO_FIELDS = ("input_kind", "head", "n_outputs", "vocab_size", "n_features", "pooling")


def resolve_model_config(model_config: ModelConfig | dict[str, Any], task: Task) -> ModelConfig:
    """A full ModelConfig for ``task``: a ModelConfig is used as is; a dict without the io fields
    (e.g. ``{"mixer": "lion-s", "d_model": 64, "n_layers": 2}``) is completed from ``task.io``
    through :meth:`ModelConfig.for_task`; a dict with them is a full config."""
    if isinstance(model_config, ModelConfig):
        return model_config
    if not isinstance(model_config, dict):
        raise TypeError(f"model_config must be a ModelConfig or a dict, got {type(model_config).__name__}")
    if any(k in model_config for k in _IO_FIELDS):
        return ModelConfig.from_dict(model_config)
    opts = dict(model_config)
    if "mixer" not in opts:
        raise ValueError("model_config: a partial model config needs a 'mixer'")
    mixer = opts.pop("mixer")
    return ModelConfig.for_task(task.io, mixer=mixer, **opts)


@dataclass
class RunSpec:
    """Everything that defines a run, resolved: its key and the objects to train with."""

    key: str
    model_config: ModelConfig
    task: Task
    task_name: str
    task_config: dict[str, Any]
    train_config: TrainConfig
    seed: int


def prepare_run(
    model_config: ModelConfig | dict[str, Any],
    task_name: str,
    task_options: dict[str, Any] | None,
    train_config: TrainConfig | dict[str, Any],
    seed: int,
) -> RunSpec:
    """Build the task and configs of a run and compute its key (trains nothing)."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {seed!r}")
    task = create_task(task_name, **(task_options or {}))
    mc = resolve_model_config(model_config, task)
    tc = TrainConfig.from_dict(train_config) if isinstance(train_config, dict) else train_config
    if not isinstance(tc, TrainConfig):
        raise TypeError(f"train_config must be a TrainConfig or a dict, got {type(train_config).__name__}")
    tc = dataclasses.replace(tc, seed=seed)
    name, tcfg = _task_identity(task)
    if name != task_name:  # a task class without ``name``: the registry name identifies it
        name = task_name
    key = run_key(mc.to_dict(), name, tcfg, tc.to_dict(), seed)
    return RunSpec(key, mc, task, name, tcfg, tc, seed)


def run_one(
    model_config: ModelConfig | dict[str, Any],
    task_name: str,
    task_options: dict[str, Any] | None,
    train_config: TrainConfig | dict[str, Any],
    seed: int,
    *,
    store: RunStore | str | Path,
    root_dir: str | Path,
    progress: bool = True,
    device: str | None = None,
    raise_errors: bool = True,
) -> RunRecord:
    """Train (or fetch) one run and return its store record.

    A finished run is returned from the store untouched. Otherwise the run trains in
    ``root_dir/<key>`` (resuming from a checkpoint there) and ends finished, or failed with the
    error text (re-raised unless ``raise_errors=False``).
    """
    if not isinstance(store, RunStore):
        store = RunStore(store)
    spec = prepare_run(model_config, task_name, task_options, train_config, seed)
    rec = store.get(spec.key)
    if rec is not None and rec.status == "finished":
        return rec
    run_dir = Path(root_dir) / spec.key
    store.upsert_pending(
        spec.key,
        spec.model_config.to_dict(),
        spec.task_name,
        spec.task_config,
        spec.train_config.to_dict(),
        seed,
        run_dir,
    )
    try:
        train(
            spec.model_config,
            spec.task,
            spec.train_config,
            run_dir=run_dir,
            store=store,
            run_key=spec.key,
            progress=progress,
            device=device,
        )
    except Exception:
        if raise_errors:
            raise
    rec = store.get(spec.key)
    assert rec is not None
    return rec
