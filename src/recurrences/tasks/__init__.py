"""Tasks: deterministic batches from a seed, with their model I/O and metric."""

from __future__ import annotations

from .base import IGNORE_INDEX, Batch, Task, TaskIO, available_tasks, create_task, register_task, task_spec

__all__ = [
    "IGNORE_INDEX",
    "Batch",
    "Task",
    "TaskIO",
    "available_tasks",
    "create_task",
    "register_task",
    "task_spec",
]
