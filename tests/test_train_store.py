"""RunStore: keys, lifecycle, filters, metrics, concurrent writers, surviving a SIGKILL."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import pytest

import recurrences.train.store as store_module
from recurrences.train.store import RunStore, run_key


def _key(**over):
    args = {
        "model_cfg": {"mixer": "m", "d_model": 8},
        "task_name": "t",
        "task_cfg": {"n": 1},
        "train_cfg": {"lr": 0.1},
        "seed": 0,
    }
    args.update(over)
    return run_key(**args)


def test_run_key_is_canonical_and_sensitive():
    k = _key()
    assert len(k) == 16 and int(k, 16) >= 0
    assert _key(model_cfg={"d_model": 8, "mixer": "m"}) == k  # key order does not matter
    assert _key(seed=1) != k
    assert _key(task_cfg={"n": 2}) != k
    assert _key(train_cfg={"lr": 0.2}) != k
    assert _key(task_name="u") != k
    # fields that cannot change the result are left out
    assert _key(train_cfg={"lr": 0.1, "threads": 4, "log_every": 3, "checkpoint_every": 9}) == k
    with pytest.raises(TypeError, match="model_cfg"):
        run_key("x", "t", {}, {}, 0)
    with pytest.raises(TypeError, match="seed"):
        _key(seed="0")


def _pending(store, key="k1", mixer="m", task="t", seed=0):
    return store.upsert_pending(key, {"mixer": mixer}, task, {"n": 1}, {"lr": 0.1}, seed, "/tmp/r")


def test_lifecycle(tmp_path):
    s = RunStore(tmp_path / "a" / "runs.db")
    assert s.get("k1") is None
    rec = _pending(s)
    assert rec.status == "pending" and rec.model_config == {"mixer": "m"} and rec.run_dir == "/tmp/r"
    s.mark_running("k1")
    assert s.get("k1").status == "running" and s.get("k1").started is not None
    s.log_metrics("k1", 10, {"val": 0.5}, loss=1.25, lr=0.01, score=0.5, metric="accuracy")
    s.log_metrics("k1", 10, {"val": 0.75}, metric="accuracy")  # replaces
    s.fail("k1", RuntimeError("boom"))
    assert s.get("k1").status == "failed" and s.get("k1").error == "RuntimeError: boom"
    _pending(s)  # a failed run may be retried
    assert s.get("k1").status == "pending" and s.get("k1").error is None
    s.mark_running("k1")
    s.finish(
        "k1",
        {
            "final": {"val": 0.75},
            "score": 0.75,
            "n_params": 123,
            "steps_done": 10,
            "seconds": 1.5,
            "stopped_early": True,
        },
    )
    rec = s.get("k1")
    assert (rec.status, rec.score, rec.final, rec.n_params, rec.stopped_early) == (
        "finished",
        0.75,
        {"val": 0.75},
        123,
        True,
    )
    _pending(s)  # a finished run is never reset
    assert s.get("k1").status == "finished"
    m = s.metrics("k1")
    assert {(r["split"], r["name"], r["value"]) for r in m} == {
        ("val", "accuracy", 0.75),
        ("train", "loss", 1.25),
        ("train", "lr", 0.01),
        ("score", "accuracy", 0.5),
    }
    with pytest.raises(KeyError, match="no run"):
        s.mark_running("nope")
    assert s.integrity_check() == "ok"
    assert sqlite3.connect(tmp_path / "a" / "runs.db").execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_filters(tmp_path):
    s = RunStore(tmp_path / "runs.db")
    _pending(s, "a", mixer="x", task="t1", seed=0)
    _pending(s, "b", mixer="y", task="t1", seed=1)
    _pending(s, "c", mixer="x", task="t2", seed=1)
    s.mark_running("c")
    assert [r.key for r in s.runs()] == ["a", "b", "c"]
    assert [r.key for r in s.runs(mixer="x")] == ["a", "c"]
    assert [r.key for r in s.runs(task_name="t1", seed=1)] == ["b"]
    assert [r.key for r in s.runs(status=["pending"])] == ["a", "b"]
    assert s.runs(status=[]) == []
    with pytest.raises(ValueError, match="unknown filter"):
        s.runs(colour="red")
    with pytest.raises(ValueError, match="status"):
        s.runs(status="done")


_WRITER = textwrap.dedent(
    """
    import importlib.util, sys
    # load store.py by path: it needs only the standard library (the package would import torch)
    spec = importlib.util.spec_from_file_location("store", sys.argv[4])
    mod = sys.modules["store"] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    s = mod.RunStore(sys.argv[1])
    key = sys.argv[2]
    s.upsert_pending(key, {"mixer": "m"}, "t", {}, {}, 0)
    s.mark_running(key)
    print("ready", flush=True)
    step = 0
    while True:
        step += 1
        s.log_metrics(key, step, {"a": step * 0.5, "b": 1.0}, loss=1.0 / step)
        if step == int(sys.argv[3]):
            break
    """
)


def _writer(db, key, n):
    src = store_module.__file__
    return subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(db), key, str(n), src], stdout=subprocess.PIPE, text=True
    )


def test_concurrent_writers(tmp_path):
    db = tmp_path / "runs.db"
    RunStore(db)
    procs = [_writer(db, f"w{i}", 40) for i in range(2)]
    for p in procs:
        assert p.wait(timeout=60) == 0
    s = RunStore(db)
    for i in range(2):
        assert len(s.metrics(f"w{i}")) == 40 * 3
    assert s.integrity_check() == "ok"


class _BusyOnce:
    """A sqlite3 connection whose journal-mode pragma fails with 'database is locked' the first n times
    (SQLite can return SQLITE_BUSY there without calling its busy handler)."""

    fails = 0

    def __init__(self, conn):
        self._conn = conn

    def execute(self, sql, *args):
        if "journal_mode" in sql and _BusyOnce.fails > 0:
            _BusyOnce.fails -= 1
            raise sqlite3.OperationalError("database is locked")
        return self._conn.execute(sql, *args)

    def __getattr__(self, name):
        return getattr(self._conn, name)

    def __setattr__(self, name, value):
        if name == "_conn":
            object.__setattr__(self, name, value)
        else:
            setattr(self._conn, name, value)


def test_a_busy_journal_mode_switch_is_retried(tmp_path, monkeypatch):
    real = sqlite3.connect
    monkeypatch.setattr(store_module.sqlite3, "connect", lambda *a, **k: _BusyOnce(real(*a, **k)))
    _BusyOnce.fails = 3
    s = RunStore(tmp_path / "runs.db")  # used to fail: "not a usable SQLite database (database is locked)"
    assert _BusyOnce.fails == 0 and s.integrity_check() == "ok"
    _BusyOnce.fails = 10**6  # locked for good: a clear error once the timeout has passed
    with pytest.raises(ValueError, match="stayed locked by another process for 0.2 s"):
        RunStore(tmp_path / "runs.db", timeout=0.2)


def test_sigkill_mid_run_leaves_the_database_intact(tmp_path):
    db = tmp_path / "runs.db"
    p = _writer(db, "victim", 10**9)
    assert p.stdout.readline().strip() == "ready"
    time.sleep(0.3)
    os.kill(p.pid, signal.SIGKILL)
    p.wait(timeout=10)
    s = RunStore(db)
    assert s.integrity_check() == "ok"
    rows = s.metrics("victim")
    assert rows and len(rows) % 3 == 0  # whole transactions only
    assert s.get("victim").status == "running"
    s.fail("victim", "killed")  # and it is still writable
    assert s.get("victim").status == "failed"
