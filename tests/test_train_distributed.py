"""DDP (gloo, 2 processes on this machine): the data-parallel run equals a single-process run."""

from __future__ import annotations

import pytest
import torch

import recurrences.train.testing  # noqa: F401  (registers the toy mixers and task)
from recurrences.models import ModelConfig
from recurrences.tasks import create_task
from recurrences.tasks.base import Batch
from recurrences.train import TrainConfig, load_checkpoint, train
from recurrences.train.distributed import DistContext, launch_local, shard_batch
from recurrences.train.testing import ddp_train_worker


def test_shard_batch_slices_rows_by_rank():
    b = Batch(torch.arange(12).reshape(6, 2), torch.arange(6), torch.ones(6, 2, dtype=torch.bool))
    parts = [shard_batch(b, DistContext(rank=r, world_size=3)) for r in range(3)]
    assert torch.equal(torch.cat([p.inputs for p in parts]), b.inputs)
    assert [p.targets.tolist() for p in parts] == [[0, 1], [2, 3], [4, 5]]
    assert shard_batch(b, DistContext()) is b
    with pytest.raises(ValueError, match="divisible by the world size 4"):
        shard_batch(b, DistContext(rank=0, world_size=4))


def test_ddp_two_processes_equal_single_process(tmp_path):
    # tagging with padding: ranks see different numbers of real targets, which the loss scaling handles
    task_options = {"head": "tagging", "train_lengths": [1, 8]}
    task = create_task("_toy", **task_options)
    mc = ModelConfig.for_task(task.io, mixer="_toy-ema", d_model=8, n_layers=1, n_heads=2, mlp_ratio=1.0)
    tc = TrainConfig(
        steps=4, batch_size=8, lr=1e-2, warmup_steps=1, eval_every=2, log_every=1, eval_batch_size=8
    )
    single = train(mc, task, tc, run_dir=tmp_path / "single", progress=False, device="cpu")

    # fork: the children reuse the imported torch instead of importing it again (they set 1 thread)
    launch_local(
        ddp_train_worker,
        2,
        str(tmp_path / "ddp"),
        mc.to_dict(),
        task_options,
        tc.to_dict(),
        7,
        start_method="fork",
    )

    (ws, _meta_s), (wd, meta_d) = load_checkpoint(tmp_path / "single"), load_checkpoint(tmp_path / "ddp")
    keys = [k for k in ws if k.startswith("model.")]
    assert keys
    for k in keys:
        torch.testing.assert_close(wd[k], ws[k], rtol=1e-5, atol=1e-6)
    ddp = meta_d["result"]
    assert ddp["steps_done"] == single.steps_done == 4
    for h_s, h_d in zip(single.history, ddp["history"]):
        assert h_s["step"] == h_d["step"]
        assert h_d["loss"] == pytest.approx(h_s["loss"], rel=1e-5)
    assert ddp["final"] == pytest.approx(single.final)  # evaluation sharded over ranks, then summed
    assert "divisible by the world size 2" in (tmp_path / "ddp" / "bad_batch.txt").read_text()
