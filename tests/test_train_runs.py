"""run_one: train once, never re-run a finished run, resume an interrupted one, record failures."""

from __future__ import annotations

import pytest
import torch

import recurrences.train.testing  # noqa: F401  (registers the toy mixers and task)
from recurrences.models import ModelConfig
from recurrences.train import RunStore, TrainConfig, load_checkpoint, prepare_run, run_one

SIZES = {"mixer": "_toy-ema", "d_model": 8, "n_layers": 1, "n_heads": 2, "mlp_ratio": 1.0}
TC = TrainConfig(
    steps=6, batch_size=8, lr=1e-2, warmup_steps=1, eval_every=3, log_every=3, eval_batch_size=16
)


def test_run_once_then_from_the_store(tmp_path):
    store = RunStore(tmp_path / "runs.db")
    rec = run_one(
        SIZES, "_toy", {"head": "tagging"}, TC, 3, store=store, root_dir=tmp_path / "runs", progress=False
    )
    assert rec.status == "finished" and rec.seed == 3 and rec.train_config["seed"] == 3
    assert (
        rec.model_config["head"] == "tagging" and rec.model_config["vocab_size"] == 4
    )  # completed from task.io
    assert rec.run_dir == str(tmp_path / "runs" / rec.key) and load_checkpoint(rec.run_dir)[1]["finished"]
    assert set(rec.final) == {"short", "long"} and rec.steps_done == 6
    # fail_at_step is not part of the task's config: same key, and a finished run is not trained again
    again = run_one(SIZES, "_toy", {"head": "tagging", "fail_at_step": 0}, TC, 3, store=str(tmp_path / "runs.db"),
                    root_dir=tmp_path / "runs", progress=False)  # fmt: skip
    assert again == rec
    spec = prepare_run(SIZES, "_toy", {"head": "tagging"}, TC, 3)
    assert spec.key == rec.key and isinstance(spec.model_config, ModelConfig)
    assert prepare_run(SIZES, "_toy", {"head": "tagging"}, TC, 4).key != rec.key


def test_interrupted_run_resumes_to_the_same_weights(tmp_path):
    opts = {"head": "classify"}
    ref = run_one(
        SIZES, "_toy", opts, TC, 0, store=tmp_path / "a.db", root_dir=tmp_path / "a", progress=False
    )
    store = RunStore(tmp_path / "b.db")
    with pytest.raises(KeyboardInterrupt):
        run_one(
            SIZES,
            "_toy",
            {**opts, "fail_at_step": 4},
            TC,
            0,
            store=store,
            root_dir=tmp_path / "b",
            progress=False,
        )
    [failed] = store.runs()
    assert failed.status == "failed" and failed.key == ref.key
    assert load_checkpoint(failed.run_dir)[1]["step"] == 3
    done = run_one(SIZES, "_toy", opts, TC, 0, store=store, root_dir=tmp_path / "b", progress=False)
    assert done.status == "finished" and done.final == ref.final and done.score == ref.score
    wa, wb = load_checkpoint(ref.run_dir)[0], load_checkpoint(done.run_dir)[0]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_failures_are_recorded(tmp_path):
    store = RunStore(tmp_path / "runs.db")
    bad = {**SIZES, "mixer_options": {"no_such_option": 1}}
    with pytest.raises(TypeError, match="no_such_option"):
        run_one(bad, "_toy", {}, TC, 0, store=store, root_dir=tmp_path, progress=False)
    rec = run_one(bad, "_toy", {}, TC, 0, store=store, root_dir=tmp_path, progress=False, raise_errors=False)
    assert rec.status == "failed" and "no_such_option" in rec.error
    with pytest.raises(ValueError, match="needs a 'mixer'"):
        run_one({"d_model": 8}, "_toy", {}, TC, 0, store=store, root_dir=tmp_path, progress=False)
    with pytest.raises(KeyError, match="unknown task"):
        run_one(SIZES, "_no_such_task", {}, TC, 0, store=store, root_dir=tmp_path, progress=False)


def _train_forever(db, root, steps):
    torch.set_num_threads(1)
    tc = TrainConfig(steps=steps, batch_size=8, lr=1e-2, warmup_steps=1, eval_every=0, checkpoint_every=1)
    run_one(SIZES, "_toy", {"head": "classify"}, tc, 0, store=db, root_dir=root, progress=False)


def test_sigkill_during_training_then_resume(tmp_path):
    import multiprocessing as mp
    import os
    import signal
    import time

    steps = 40
    ctx = mp.get_context("fork")  # the child reuses this process's imports
    p = ctx.Process(target=_train_forever, args=(str(tmp_path / "b.db"), str(tmp_path / "b"), steps))
    p.start()
    deadline = time.time() + 60
    while time.time() < deadline:
        ck = list((tmp_path / "b").glob("*/checkpoint.json"))
        if ck and load_checkpoint(ck[0].parent)[1]["step"] >= 3:
            break
        time.sleep(0.02)
    os.kill(p.pid, signal.SIGKILL)  # mid-step or mid-write: whatever it was doing
    p.join(10)
    store = RunStore(tmp_path / "b.db")
    assert store.integrity_check() == "ok"
    [rec] = store.runs()
    assert rec.status == "running"  # killed: nobody could mark it
    killed_at = load_checkpoint(rec.run_dir)[1]["step"]
    assert 3 <= killed_at < steps
    _train_forever(str(tmp_path / "b.db"), str(tmp_path / "b"), steps)  # resumes
    _train_forever(str(tmp_path / "a.db"), str(tmp_path / "a"), steps)  # uninterrupted
    done, ref = RunStore(tmp_path / "b.db").runs()[0], RunStore(tmp_path / "a.db").runs()[0]
    assert done.status == "finished" and done.final == ref.final
    wa, wb = load_checkpoint(ref.run_dir)[0], load_checkpoint(done.run_dir)[0]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
