"""The run store: one SQLite file recording every run (config, status, results) and its metrics.

A run is (model config, task name + config, train config, seed); its key is the shortened sha256 of
the canonical JSON of those (:func:`run_key`). The database is opened in WAL mode with a busy
timeout, every write is one transaction (``BEGIN IMMEDIATE ... COMMIT``), and a connection is opened
per call, so several processes (arena workers) can write at once and a SIGKILLed writer leaves the
database intact (SQLite rolls back the unfinished transaction).
"""

from __future__ import annotations

import hashlib
import json
import math
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["RunStore", "RunRecord", "run_key", "STATUSES", "KEY_IGNORED_TRAIN_FIELDS"]

STATUSES = ("pending", "running", "finished", "failed")
# train-config fields that never change a run's result, left out of its key
KEY_IGNORED_TRAIN_FIELDS = ("threads", "log_every", "checkpoint_every")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    key TEXT PRIMARY KEY,
    model_config TEXT NOT NULL,
    task_name TEXT NOT NULL,
    task_config TEXT NOT NULL,
    train_config TEXT NOT NULL,
    seed INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'running', 'finished', 'failed')),
    n_params INTEGER,
    score REAL,
    final TEXT,
    started REAL,
    finished REAL,
    error TEXT,
    run_dir TEXT,
    steps_done INTEGER,
    seconds REAL,
    stopped_early INTEGER,
    created REAL
);
CREATE TABLE IF NOT EXISTS metrics (
    key TEXT NOT NULL,
    step INTEGER NOT NULL,
    split TEXT NOT NULL,
    name TEXT NOT NULL,
    value REAL,
    PRIMARY KEY (key, step, split, name)
);
CREATE INDEX IF NOT EXISTS runs_status ON runs(status);
CREATE INDEX IF NOT EXISTS runs_task ON runs(task_name);
"""


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


def run_key(
    model_cfg: dict[str, Any], task_name: str, task_cfg: dict[str, Any], train_cfg: dict[str, Any], seed: int
) -> str:
    """sha256 of the canonical JSON of the run, first 16 hex digits.

    Train-config fields that do not change the result (:data:`KEY_IGNORED_TRAIN_FIELDS`) are
    left out, so e.g. a different thread count finds the same finished run.
    """
    for name, d in (("model_cfg", model_cfg), ("task_cfg", task_cfg), ("train_cfg", train_cfg)):
        if not isinstance(d, dict):
            raise TypeError(f"run_key: {name} must be a dict (use .to_dict()), got {type(d).__name__}")
    if not isinstance(task_name, str) or not task_name:
        raise ValueError(f"run_key: task_name must be a non-empty str, got {task_name!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"run_key: seed must be an int, got {seed!r}")
    train = {k: v for k, v in train_cfg.items() if k not in KEY_IGNORED_TRAIN_FIELDS}
    payload = {"model": model_cfg, "task": task_name, "task_config": task_cfg, "train": train, "seed": seed}
    try:
        text = _canonical(payload)
    except (TypeError, ValueError) as e:
        raise TypeError(f"run_key: configs must be JSON-serialisable: {e}") from e
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


@dataclass
class RunRecord:
    """One row of the ``runs`` table, with the JSON columns decoded."""

    key: str
    model_config: dict[str, Any]
    task_name: str
    task_config: dict[str, Any]
    train_config: dict[str, Any]
    seed: int
    status: str
    n_params: int | None = None
    score: float | None = None
    final: dict[str, float] = field(default_factory=dict)
    started: float | None = None
    finished: float | None = None
    error: str | None = None
    run_dir: str | None = None
    steps_done: int | None = None
    seconds: float | None = None
    stopped_early: bool | None = None

    @property
    def mixer(self) -> str | None:
        return self.model_config.get("mixer")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _json_or_none(value: Any) -> str | None:
    return None if value is None else json.dumps(value, sort_keys=True, allow_nan=True)


def _num(x: Any) -> float | None:
    if x is None:
        return None
    x = float(x)
    return None if math.isnan(x) else x


def _is_busy(e: sqlite3.OperationalError) -> bool:
    msg = str(e).lower()
    return "locked" in msg or "busy" in msg


class RunStore:
    """SQLite run store at ``path`` (created with its tables if absent)."""

    FILTERS = ("key", "task_name", "seed", "status", "n_params", "run_dir")

    def __init__(self, path: str | Path, *, timeout: float = 60.0) -> None:
        self.path = Path(path)
        self.timeout = float(timeout)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with self._tx() as conn:
                for stmt in _SCHEMA.strip().split(";"):
                    if stmt.strip():
                        conn.execute(stmt)
        except sqlite3.DatabaseError as e:
            if isinstance(e, sqlite3.OperationalError) and _is_busy(e):
                why = f"stayed locked by another process for {self.timeout:g} s"
            else:
                why = "is not a usable SQLite database"
            raise ValueError(f"run store {str(self.path)!r} {why} ({e})") from None

    def __repr__(self) -> str:
        return f"RunStore({str(self.path)!r})"

    # -- connections -----------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        """A connection in WAL mode. Setting the journal mode can meet SQLITE_BUSY without SQLite's busy
        handler being called (another process creating the database, or closing the last connection and
        removing the WAL file while this one opens), so that step is retried here, up to ``timeout``."""
        deadline = time.monotonic() + self.timeout
        delay = 0.005
        while True:
            conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
            try:
                conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = NORMAL")
            except sqlite3.OperationalError as e:
                conn.close()
                if not _is_busy(e) or time.monotonic() + delay > deadline:
                    raise
                time.sleep(delay)
                delay = min(2 * delay, 0.25)
                continue
            except BaseException:
                conn.close()
                raise
            conn.row_factory = sqlite3.Row
            return conn

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: BEGIN IMMEDIATE (takes the write lock up front) ... COMMIT."""
        conn = self._connect()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        finally:
            conn.close()

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        conn = self._connect()
        try:
            yield conn
        finally:
            conn.close()

    # -- reads -----------------------------------------------------------------------------------
    @staticmethod
    def _record(row: sqlite3.Row) -> RunRecord:
        return RunRecord(
            key=row["key"],
            model_config=json.loads(row["model_config"]),
            task_name=row["task_name"],
            task_config=json.loads(row["task_config"]),
            train_config=json.loads(row["train_config"]),
            seed=int(row["seed"]),
            status=row["status"],
            n_params=row["n_params"],
            score=row["score"],
            final=json.loads(row["final"]) if row["final"] else {},
            started=row["started"],
            finished=row["finished"],
            error=row["error"],
            run_dir=row["run_dir"],
            steps_done=row["steps_done"],
            seconds=row["seconds"],
            stopped_early=None if row["stopped_early"] is None else bool(row["stopped_early"]),
        )

    def get(self, key: str) -> RunRecord | None:
        with self._read() as conn:
            row = conn.execute("SELECT * FROM runs WHERE key = ?", (key,)).fetchone()
        return None if row is None else self._record(row)

    def runs(self, **filters: Any) -> list[RunRecord]:
        """Runs matching every filter: columns (key, task_name, seed, status, n_params, run_dir) or
        ``mixer`` (the model config's mixer). A list/tuple value matches any of its items."""
        where, args = [], []
        for k, v in filters.items():
            if k == "mixer":
                col = "json_extract(model_config, '$.mixer')"
            elif k in self.FILTERS:
                col = k
            else:
                raise ValueError(
                    f"RunStore.runs: unknown filter {k!r}; expected one of {(*self.FILTERS, 'mixer')}"
                )
            if k == "status":
                for s in v if isinstance(v, (list, tuple, set)) else [v]:
                    if s not in STATUSES:
                        raise ValueError(f"RunStore.runs: status must be one of {STATUSES}, got {s!r}")
            if isinstance(v, (list, tuple, set)):
                vals = list(v)
                if not vals:
                    return []
                where.append(f"{col} IN ({', '.join('?' for _ in vals)})")
                args.extend(vals)
            else:
                where.append(f"{col} = ?")
                args.append(v)
        sql = (
            "SELECT * FROM runs"
            + (" WHERE " + " AND ".join(where) if where else "")
            + " ORDER BY created, key"
        )
        with self._read() as conn:
            rows = conn.execute(sql, args).fetchall()
        return [self._record(r) for r in rows]

    def metrics(self, key: str) -> list[dict[str, Any]]:
        """All metric rows of a run: dicts {step, split, name, value}, ordered by step."""
        with self._read() as conn:
            rows = conn.execute(
                "SELECT step, split, name, value FROM metrics WHERE key = ? ORDER BY step, split, name",
                (key,),
            ).fetchall()
        return [dict(r) for r in rows]

    # -- writes ----------------------------------------------------------------------------------
    def upsert_pending(
        self,
        key: str,
        model_config: dict[str, Any],
        task_name: str,
        task_config: dict[str, Any],
        train_config: dict[str, Any],
        seed: int,
        run_dir: str | Path | None = None,
    ) -> RunRecord:
        """Insert the run as pending, or reset an unfinished one to pending. A finished run is left alone."""
        now = time.time()
        with self._tx() as conn:
            row = conn.execute("SELECT status FROM runs WHERE key = ?", (key,)).fetchone()
            if row is None:
                conn.execute(
                    "INSERT INTO runs (key, model_config, task_name, task_config, train_config, seed, status, run_dir, created)"
                    " VALUES (?, ?, ?, ?, ?, ?, 'pending', ?, ?)",
                    (
                        key,
                        json.dumps(model_config, sort_keys=True),
                        task_name,
                        json.dumps(task_config, sort_keys=True),
                        json.dumps(train_config, sort_keys=True),
                        int(seed),
                        None if run_dir is None else str(run_dir),
                        now,
                    ),
                )
            elif row["status"] != "finished":
                conn.execute(
                    "UPDATE runs SET status = 'pending', error = NULL, run_dir = COALESCE(?, run_dir) WHERE key = ?",
                    (None if run_dir is None else str(run_dir), key),
                )
        rec = self.get(key)
        assert rec is not None
        return rec

    def _require(self, conn: sqlite3.Connection, key: str) -> None:
        if conn.execute("SELECT 1 FROM runs WHERE key = ?", (key,)).fetchone() is None:
            raise KeyError(f"RunStore: no run with key {key!r} (call upsert_pending first)")

    def mark_running(self, key: str) -> None:
        with self._tx() as conn:
            self._require(conn, key)
            conn.execute(
                "UPDATE runs SET status = 'running', started = COALESCE(started, ?), error = NULL WHERE key = ?",
                (time.time(), key),
            )

    def log_metrics(
        self,
        key: str,
        step: int,
        values: dict[str, float] | None = None,
        *,
        loss: float | None = None,
        lr: float | None = None,
        score: float | None = None,
        metric: str = "value",
    ) -> None:
        """Record ``values`` ({split: value} of ``metric``), and the training loss / lr (split "train")
        and headline score (split "score") at ``step``. Re-logging a (step, split, name) replaces it."""
        rows = [(key, int(step), str(split), metric, _num(v)) for split, v in (values or {}).items()]
        if loss is not None:
            rows.append((key, int(step), "train", "loss", _num(loss)))
        if lr is not None:
            rows.append((key, int(step), "train", "lr", _num(lr)))
        if score is not None:
            rows.append((key, int(step), "score", metric, _num(score)))
        if not rows:
            return
        with self._tx() as conn:
            conn.executemany(
                "INSERT OR REPLACE INTO metrics (key, step, split, name, value) VALUES (?, ?, ?, ?, ?)", rows
            )

    def finish(self, key: str, result: Any) -> None:
        """Mark finished with a :class:`~recurrences.train.TrainResult` (or a dict with its fields)."""
        r = result if isinstance(result, dict) else result.to_dict()
        with self._tx() as conn:
            self._require(conn, key)
            conn.execute(
                "UPDATE runs SET status = 'finished', n_params = ?, score = ?, final = ?, finished = ?, error = NULL,"
                " steps_done = ?, seconds = ?, stopped_early = ? WHERE key = ?",
                (
                    r.get("n_params"),
                    _num(r.get("score")),
                    _json_or_none(r.get("final", {})),
                    time.time(),
                    r.get("steps_done"),
                    _num(r.get("seconds")),
                    None if r.get("stopped_early") is None else int(bool(r.get("stopped_early"))),
                    key,
                ),
            )

    def fail(self, key: str, error: str | BaseException) -> None:
        text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        with self._tx() as conn:
            self._require(conn, key)
            conn.execute(
                "UPDATE runs SET status = 'failed', error = ?, finished = ? WHERE key = ?",
                (text, time.time(), key),
            )

    def integrity_check(self) -> str:
        """SQLite's ``PRAGMA integrity_check`` ("ok" when the file is intact)."""
        with self._read() as conn:
            return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
