"""Data-parallel training with torch.distributed (DDP), used by :func:`recurrences.train.train`.

Launch the same script with ``torchrun --nproc_per_node N ...`` (or :func:`launch_local`): ``train()``
sees ``WORLD_SIZE > 1`` in the environment, joins the process group (gloo on CPU, nccl on CUDA),
wraps the model in DDP and gives rank r the rows [r*b, (r+1)*b) of every global batch (b =
batch_size / world_size; every rank builds the same global batch from the seed). The loss of rank r is

    L_r = W * sum_{targets of rank r} CE / (number of targets in the global batch)

so that DDP's gradient average (1/W) sum_r grad L_r equals the gradient of the global-batch mean CE
exactly, whatever the padding. Only rank 0 writes checkpoints, the store and the progress bar.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from recurrences.tasks.base import Batch

__all__ = ["DistContext", "dist_context", "shard_batch", "all_reduce_sum", "launch_local", "free_port"]


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialized_here: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    v = os.environ.get(name)
    if v is None or v == "":
        return default
    try:
        return int(v)
    except ValueError as e:
        raise ValueError(f"environment variable {name} must be an int, got {v!r}") from e


def dist_context(device: torch.device) -> DistContext:
    """Read RANK / WORLD_SIZE / LOCAL_RANK and join the process group if WORLD_SIZE > 1."""
    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        return DistContext()
    rank = _env_int("RANK", 0)
    local = _env_int("LOCAL_RANK", rank)
    here = False
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=rank, world_size=world)
        here = True
    return DistContext(dist.get_rank(), dist.get_world_size(), local, here)


def shard_batch(batch: Batch, ctx: DistContext, where: str = "batch_size") -> Batch:
    """Rank ``ctx.rank``'s contiguous slice of the rows of ``batch``."""
    if not ctx.enabled:
        return batch
    n = len(batch)
    if n % ctx.world_size:
        raise ValueError(
            f"{where}={n} must be divisible by the world size {ctx.world_size} for data-parallel training"
        )
    b = n // ctx.world_size
    s = slice(ctx.rank * b, (ctx.rank + 1) * b)
    return Batch(batch.inputs[s], batch.targets[s], batch.mask[s])


def all_reduce_sum(t: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    if ctx.enabled:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker(rank: int, world_size: int, port: int, target: Callable[..., Any], args: tuple) -> None:
    os.environ.update(
        {
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": str(world_size),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
        }
    )
    try:
        target(*args)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def launch_local(
    target: Callable[..., Any],
    world_size: int,
    *args: Any,
    port: int | None = None,
    start_method: str = "spawn",
) -> None:
    """Run ``target(*args)`` in ``world_size`` processes on this machine, as torchrun would
    (RANK/WORLD_SIZE/MASTER_* set). ``target`` must be a module-level (picklable) function.

    ``start_method="fork"`` skips re-importing torch in every child (much faster to start); it is
    safe on CPU when the children set ``torch.set_num_threads(1)`` first and CUDA is not initialised.
    """
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"launch_local: world_size must be a positive int, got {world_size!r}")
    if start_method not in ("spawn", "fork", "forkserver"):
        raise ValueError(
            f"launch_local: start_method must be 'spawn', 'fork' or 'forkserver', got {start_method!r}"
        )
    import torch.multiprocessing as mp

    mp.start_processes(
        _worker,
        args=(world_size, port or free_port(), target, args),
        nprocs=world_size,
        join=True,
        start_method=start_method,
    )
