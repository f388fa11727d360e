"""The arena: config validation, grid planning, skip-finished / resume, leaderboard, SIGKILL fault test."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import torch

import recurrences.train.testing as toy  # registers _toy-ema, _toy-bimean and the _toy task
from recurrences.layers import base as layers_base
from recurrences.layers import register_mixer
from recurrences.train import RunStore, load_checkpoint
from recurrences.train.arena import (
    ArenaConfigError,
    available_presets,
    cell_key,
    load_config,
    load_preset,
    parse_config,
    plan,
    resolve_models,
    run_arena,
)
from recurrences.train.report import leaderboard, render_leaderboard

TINY_TRAIN = {"steps": 8, "batch_size": 8, "eval_every": 4, "warmup_steps": 2, "log_every": 2, "threads": 1}


def tiny_config(**over) -> dict:
    cfg = {
        "name": "tiny",
        "models": ["_toy-ema", "_toy-bimean"],
        "model": {"d_model": 8, "n_layers": 1, "n_heads": 1, "mlp_ratio": 1.0},
        "train": dict(TINY_TRAIN),
        "tasks": [
            {"name": "_toy", "options": {"n_eval": 16}},
            {"name": "_toy", "label": "toy-lm", "options": {"head": "lm", "n_eval": 16}},
        ],
    }
    cfg.update(over)
    return cfg


# -- configs ---------------------------------------------------------------------------------------
def test_presets_parse_and_name_no_family():
    assert {"quick", "standard", "full"} <= set(available_presets())
    for name in available_presets():
        cfg = load_preset(name)
        assert cfg.tasks, name
        # presets take every registered mixer: nothing in them names a family
        assert cfg.models == "all", name
    quick = load_preset("quick")
    names = {t.name for t in quick.tasks}
    assert {"parity", "modular_arithmetic", "digits", "ucr", "text"} <= names
    assert quick.seeds == 1 and quick.model["d_model"] <= 64 and quick.model["n_layers"] <= 2


@pytest.mark.parametrize(
    "change, needle",
    [
        ({"modles": "all"}, "unknown key 'modles'"),
        ({"seeds": "two"}, "seeds: expected an integer"),
        ({"models": ["no-such-mixer"]}, "unknown mixer 'no-such-mixer'"),
        ({"models": ["_toy-ema|nope"]}, "models[0]: unknown mixer 'nope'"),
        ({"mixer_options": {"nope": {}}}, "mixer_options.nope: unknown mixer 'nope'"),
        ({"tasks": [{"name": "no-such-task"}]}, "unknown task 'no-such-task'"),
        ({"tasks": [{"options": {}}]}, "missing key 'name'"),
        ({"tasks": []}, "at least one [[tasks]]"),
        ({"train": {"stepz": 3}}, "train: unknown key 'stepz'"),
        ({"train": {"steps": "many"}}, "train.steps: expected an integer"),
        ({"train": {"lr": True}}, "train.lr: expected a number"),
        ({"model": {"d_model": 8.5}}, "model.d_model: expected an integer"),
        ({"model": {"vocab_size": 3}}, "model: unknown key 'vocab_size'"),
        ({"tasks": [{"name": "_toy", "train": {"batch": 3}}]}, "tasks[0].train: unknown key 'batch'"),
        ({"tasks": [{"name": "_toy"}, {"name": "_toy"}]}, "duplicate task label"),
    ],
)
def test_bad_configs_name_the_field(change, needle):
    with pytest.raises(ArenaConfigError) as e:
        parse_config(tiny_config(**change), source="bad.toml")
    assert needle in str(e.value)
    assert "bad.toml" in str(e.value)


def test_unknown_names_list_the_known_ones():
    with pytest.raises(ArenaConfigError, match="known mixers: .*_toy-ema"):
        parse_config(tiny_config(models=["nope"]))
    with pytest.raises(ArenaConfigError, match="known tasks: .*parity"):
        parse_config(tiny_config(tasks=[{"name": "nope"}]))


def test_load_config_file_errors(tmp_path):
    with pytest.raises(ArenaConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("name = \n")
    with pytest.raises(ArenaConfigError, match="not valid TOML"):
        load_config(bad)


def test_bad_task_options_and_model_sizes_are_reported():
    cfg = parse_config(tiny_config(tasks=[{"name": "parity", "options": {"train_lengths": [1, 50]}}]))
    with pytest.raises(ArenaConfigError, match="parity"):
        plan(cfg)
    typo = {"name": "parity", "options": {"train_lengths": [1, 8], "curiculum_steps": 3}}
    with pytest.raises(ArenaConfigError) as e:
        plan(parse_config(tiny_config(tasks=[typo]), source="bad.toml"))
    msg = str(e.value)
    assert msg.startswith("bad.toml: task 'parity' options: unknown option(s) 'curiculum_steps'")
    assert "did you mean 'curriculum_steps'" in msg and "train_lengths': [1, 8]" not in msg
    cfg = parse_config(tiny_config(model={"d_model": 10, "n_heads": 3}))
    with pytest.raises(ArenaConfigError, match="d_model"):
        plan(cfg)


# -- planning ----------------------------------------------------------------------------------------
def test_plan_grid_filters_causal_and_scales_steps():
    cfg = parse_config(tiny_config(seeds=2))
    notes: list[str] = []
    cells = plan(cfg, log=notes.append)
    cls = [c for c in cells if c.task_label == "_toy"]
    lm = [c for c in cells if c.task_label == "toy-lm"]
    assert sorted({c.mixer for c in cls}) == ["_toy-bimean", "_toy-ema"]
    assert {c.mixer for c in lm} == {"_toy-ema"}  # the LM task needs a causal mixer
    assert any("_toy-bimean" in n for n in notes)
    assert len(cells) == 2 * 2 + 1 * 2 and {c.seed for c in cells} == {0, 1}
    scaled = plan(cfg, steps_scale=0.5, seeds=1, tasks=["toy-lm"])
    assert len(scaled) == 1 and scaled[0].train["steps"] == 4 and scaled[0].train["eval_every"] == 2
    hybrid = plan(cfg, models=["_toy-ema|_toy-bimean"], tasks=["_toy"], seeds=1)
    assert [c.mixer for c in hybrid] == ["_toy-ema|_toy-bimean"]
    with pytest.raises(ArenaConfigError, match="steps-scale"):
        plan(cfg, steps_scale=0)


def test_a_newly_registered_mixer_joins_the_arena():
    """A mixer registered anywhere is in the arena's "all" with no change to the arena."""
    name = f"_arena-test-{uuid.uuid4().hex[:8]}"
    register_mixer(name, toy.ToyEMA)
    try:
        assert name in resolve_models("all")
        assert name in resolve_models("all", needs_causal=True)
        cfg = parse_config(tiny_config(models="all"))
        cells = [c for c in plan(cfg) if c.mixer == name]
        assert {c.task_label for c in cells} == {"_toy", "toy-lm"}
    finally:
        layers_base._REGISTRY.pop(name, None)
    assert name not in resolve_models("all")


# -- running -----------------------------------------------------------------------------------------
def test_arena_runs_skips_finished_and_builds_leaderboard(tmp_path):
    cfg = parse_config(tiny_config())
    cells = plan(cfg)
    db = tmp_path / "runs.sqlite"
    res = run_arena(cells, db=db, out_dir=tmp_path, progress=False, log=lambda s: None)
    assert not res.failed
    assert len(res.keys) == len(cells) == 3
    assert res.keys == [cell_key(c) for c in cells]
    store = RunStore(db)
    recs = {k: store.get(k) for k in res.keys}
    assert all(r.status == "finished" and r.score is not None for r in recs.values())
    boards = leaderboard(db, keys=res.keys, labels=res.labels)
    assert [b.label for b in boards] == ["_toy", "toy-lm"]
    cls, lm = boards
    assert {r.mixer for r in cls.rows} == {"_toy-ema", "_toy-bimean"}
    assert [r.rank for r in cls.rows] == [1, 2] and cls.rows[0].mean >= cls.rows[1].mean
    assert [r.mixer for r in lm.rows] == ["_toy-ema"]
    for b in boards:
        for r in b.rows:
            assert r.n == 1 and r.std == 0.0 and r.n_params and r.n_params > 0 and r.seconds is not None
    text = render_leaderboard(boards)
    assert "accuracy (higher is better)" in text and "_toy-bimean" in text and "toy-lm" in text

    # a second arena over the same store trains nothing: finish times are unchanged
    msgs: list[str] = []
    again = run_arena(cells, db=db, out_dir=tmp_path, progress=False, log=msgs.append)
    assert again.keys == res.keys and not again.failed
    assert sum("already finished" in m for m in msgs) == len(cells)
    assert {k: store.get(k).finished for k in res.keys} == {k: r.finished for k, r in recs.items()}


def test_arena_resumes_an_interrupted_run(tmp_path, monkeypatch):
    cfg = parse_config(tiny_config(models=["_toy-ema"], tasks=[{"name": "_toy", "options": {"n_eval": 16}}]))
    (cell,) = plan(cfg)
    db = tmp_path / "runs.sqlite"
    # _toy's fail_at_step is not part of its config (nor of the run key): it simulates a crash at step 6
    crashing = type(cell)(**{**cell.__dict__, "task_options": {**cell.task_options, "fail_at_step": 6}})
    with pytest.raises(KeyboardInterrupt):
        run_arena([crashing], db=db, out_dir=tmp_path, progress=False, log=lambda s: None)
    key = cell_key(cell)
    assert RunStore(db).get(key).status != "finished"
    ckpt = load_checkpoint(tmp_path / "runs" / key)
    assert ckpt is not None and ckpt[1]["step"] == 4  # eval_every = 4: the last checkpoint before the crash

    steps: list[int] = []
    original = toy.ToyTask.train_batch

    def spy(self, step, batch_size, seed):
        steps.append(step)
        return original(self, step, batch_size, seed)

    monkeypatch.setattr(toy.ToyTask, "train_batch", spy)
    res = run_arena([cell], db=db, out_dir=tmp_path, progress=False, log=lambda s: None)
    assert not res.failed and res.keys == [key]
    assert steps[0] == 4 and steps[-1] == 7  # resumed from the checkpoint, not from step 0
    rec = RunStore(db).get(key)
    assert rec.status == "finished" and rec.steps_done == 8


def test_a_failing_run_does_not_stop_the_arena(tmp_path):
    cfg = parse_config(tiny_config(models=["_toy-ema"]))
    cells = plan(cfg, tasks=["_toy"])
    # a head the model config does not have: the trainer refuses the run, the arena goes on
    bad = type(cells[0])(**{**cells[0].__dict__, "task_options": {"head": "nonsense"}})
    res = run_arena(
        [bad, *cells], db=tmp_path / "db.sqlite", out_dir=tmp_path, progress=False, log=lambda s: None
    )
    assert len(res.failed) == 1 and res.failed[0][0] is bad and "head" in res.failed[0][1]
    assert len(res.keys) == 2 and RunStore(tmp_path / "db.sqlite").get(res.keys[1]).status == "finished"


FAULT_PLUGIN = '''
import os
from recurrences.tasks import register_task
from recurrences.train.testing import ToyTask

@register_task("_arena-fault-toy")
class FaultToy(ToyTask):
    """A _toy task that logs every training step it is asked for (pid, step) to $FAULT_LOG."""

    name = "_arena-fault-toy"

    def train_batch(self, step, batch_size, seed):
        with open(os.environ["FAULT_LOG"], "a") as f:
            f.write(f"{os.getpid()} {step}\\n")
        return super().train_batch(step, batch_size, seed)
'''

FAULT_CONFIG = """
name = "fault"
models = ["_toy-ema"]
seeds = 3
[model]
d_model = 8
n_layers = 1
n_heads = 1
[train]
steps = 200
batch_size = 8
eval_every = 100
checkpoint_every = 10
warmup_steps = 5
log_every = 10
threads = 1
[[tasks]]
name = "_arena-fault-toy"
options = { n_eval = 8, train_lengths = [8, 16] }
"""


@pytest.mark.slow
@pytest.mark.skipif(os.name != "posix", reason="SIGTERM handling is POSIX")
def test_sigterm_stops_the_workers_with_the_arena(tmp_path):
    """SIGTERM to a parallel arena stops its workers too: they must not train on as orphans (a restarted
    arena would then run the same runs twice, into the same run folders)."""
    (tmp_path / "fault_plugin.py").write_text(FAULT_PLUGIN)
    config = tmp_path / "fault.toml"
    config.write_text(FAULT_CONFIG.replace("steps = 200", "steps = 1000000"))
    out = tmp_path / "out"
    log = tmp_path / "steps.log"
    argv = [
        "arena",
        "--config",
        str(config),
        "--out",
        str(out),
        "--no-progress",
        "--no-report",
        "--jobs",
        "2",
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path]), "FAULT_LOG": str(log)}
    env["OMP_NUM_THREADS"] = "1"
    code = f"import sys, fault_plugin; from recurrences.cli import main; sys.exit(main({argv!r}))"
    # a new session, so that the signal reaches the arena alone, as from `kill PID`
    proc = subprocess.Popen(
        [sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.time() + 180  # the workers import torch first
        workers: set[str] = set()
        while time.time() < deadline and proc.poll() is None and len(workers) < 2:
            time.sleep(0.1)
            if log.exists():
                workers = {line.split()[0] for line in log.read_text().splitlines() if line.strip()}
        assert len(workers) == 2, proc.communicate(timeout=30)[0].decode(errors="replace")[-2000:]
        os.kill(proc.pid, signal.SIGTERM)
        proc.communicate(timeout=60)
        assert proc.returncode != 0
        time.sleep(0.5)  # a worker still training logs a step every few milliseconds
        n = len(log.read_text().splitlines())
        time.sleep(2.0)
        assert len(log.read_text().splitlines()) == n, "workers kept training after the arena was stopped"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=30)


@pytest.mark.slow
@pytest.mark.skipif(os.name != "posix", reason="SIGKILL is POSIX")
def test_sigkill_mid_run_then_restart(tmp_path, monkeypatch, capsys):
    """SIGKILL the arena while one run is finished and one is running; restarting it keeps the finished
    run, resumes the interrupted one from its checkpoint, and ends with an intact store and a full
    leaderboard. The first arena is a subprocess (so it can be killed); the restart runs in-process."""
    from recurrences.cli import main
    from recurrences.tasks import base as tasks_base

    (tmp_path / "fault_plugin.py").write_text(FAULT_PLUGIN)
    config = tmp_path / "fault.toml"
    config.write_text(FAULT_CONFIG)
    out = tmp_path / "out"
    db = out / "runs.sqlite"
    log = tmp_path / "steps.log"
    argv = ["arena", "--config", str(config), "--out", str(out), "--no-progress", "--no-report"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path]), "FAULT_LOG": str(log)}
    env["OMP_NUM_THREADS"] = "1"
    code = f"import sys, fault_plugin; from recurrences.cli import main; sys.exit(main({argv!r}))"
    proc = subprocess.Popen(
        [sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    victim, finished_before = None, {}
    deadline = time.time() + 120  # generous: the subprocess must import torch first
    try:
        while time.time() < deadline and proc.poll() is None:
            time.sleep(0.02)
            if not db.exists():
                continue
            try:
                runs = RunStore(db).runs()
            except Exception:  # the store is being created
                continue
            done = [r for r in runs if r.status == "finished"]
            running = [r for r in runs if r.status == "running"]
            if done and running and running[0].run_dir:
                ckpt = load_checkpoint(Path(running[0].run_dir))
                if ckpt is not None and 0 < ckpt[1]["step"] <= 150:
                    os.kill(proc.pid, signal.SIGKILL)
                    victim, finished_before = running[0].key, {r.key: r.finished for r in done}
                    break
    finally:
        if proc.poll() is None and victim is None:
            proc.kill()
        output = proc.communicate(timeout=60)[0].decode(errors="replace")
    assert victim is not None, (
        f"never saw one run finished and one running with a checkpoint:\n{output[-2000:]}"
    )
    assert proc.returncode == -signal.SIGKILL
    store = RunStore(db)
    assert store.integrity_check() == "ok"
    assert store.get(victim).status == "running"  # as the kill left it
    ckpt_step = load_checkpoint(Path(store.get(victim).run_dir))[1]["step"]
    n_lines = len(log.read_text().splitlines())

    monkeypatch.setenv("FAULT_LOG", str(log))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "fault_plugin", raising=False)
    try:
        __import__("fault_plugin")
        capsys.readouterr()
        assert main(argv) == 0
        printed = capsys.readouterr().out
    finally:
        tasks_base._REGISTRY.pop("_arena-fault-toy", None)
    assert store.integrity_check() == "ok"
    runs = store.runs()
    assert len(runs) == 3 and all(r.status == "finished" and r.steps_done == 200 for r in runs)
    # finished runs were not re-run
    assert {k: store.get(k).finished for k in finished_before} == finished_before
    # the interrupted run resumed from its checkpoint: the restart's first training step is that step
    new = [line.split() for line in log.read_text().splitlines()[n_lines:]]
    assert all(int(pid) == os.getpid() for pid, _ in new)
    assert int(new[0][1]) == ckpt_step > 0
    # the leaderboard is complete
    assert "== _arena-fault-toy: accuracy (higher is better) ==" in printed
    (board,) = leaderboard(db)
    assert len(board.rows) == 1 and board.rows[0].n == 3 and not board.unfinished


@pytest.mark.slow  # spawning workers means importing torch in each
def test_jobs_pool_runs_cells_in_workers(tmp_path):
    cfg = parse_config(
        tiny_config(models=["_toy-ema"], seeds=2, tasks=[{"name": "_toy", "options": {"n_eval": 8}}])
    )
    cells = plan(cfg, threads=1)
    res = run_arena(
        cells, db=tmp_path / "db.sqlite", out_dir=tmp_path, jobs=2, progress=False, log=lambda s: None
    )
    assert not res.failed and sorted(res.keys) == sorted(cell_key(c) for c in cells)
    assert all(RunStore(tmp_path / "db.sqlite").get(k).status == "finished" for k in res.keys)
    assert torch.get_num_threads() >= 1


def test_best_val_without_validation_splits_is_refused_before_anything_runs():
    cfg = parse_config(
        tiny_config(train={"steps": 2, "select": "best_val"}, tasks=[{"name": "parity"}]), source="sel.toml"
    )
    with pytest.raises(
        ArenaConfigError, match=r"sel.toml: task 'parity': train.select = 'best_val'.*val_examples"
    ):
        plan(cfg)
    ok = parse_config(
        tiny_config(
            train={"steps": 2, "select": "best_val"},
            tasks=[{"name": "parity", "options": {"val_examples": 4}}],
        )
    )
    assert plan(ok)
