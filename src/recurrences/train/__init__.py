"""Training: the trainer (with checkpoints and resume), the SQLite run store, single runs, DDP.

The arena, report, bench and CLI modules of this package build on these.
"""

from __future__ import annotations

from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .runs import RunSpec, prepare_run, resolve_model_config, run_one
from .store import RunRecord, RunStore, run_key
from .trainer import TrainConfig, TrainResult, evaluate, load_trained_model, lr_at, train

__all__ = [
    "CheckpointError",
    "RunRecord",
    "RunSpec",
    "RunStore",
    "TrainConfig",
    "TrainResult",
    "evaluate",
    "load_checkpoint",
    "load_trained_model",
    "lr_at",
    "prepare_run",
    "resolve_model_config",
    "run_key",
    "run_one",
    "save_checkpoint",
    "train",
]
