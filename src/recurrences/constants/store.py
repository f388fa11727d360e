"""SQLite store of formulas, their stage results, and canonical PCFs (many formulas to one PCF).

Tables
- ``formulas``: one row per input formula (its provenance, LaTeX, sympy text, claimed value, constant).
- ``stages``: (formula_id, stage) -> status ('ok' | 'failed' | 'timeout' | 'error'), reason, JSON result,
  seconds. A stage with a row is finished and is never redone on resume (``retry`` clears failures).
- ``pcfs``: canonical PCFs (integer coefficient lists, unique key), their canonical limit (a Möbius
  4-tuple), and the dynamics stage (delta, rate, depth, status, reason).
- ``links``: formula -> pcf with the transform T (L_canonical = Möbius(T, L_formula's PCF)).
Every write is its own committed transaction, so an interrupted run loses at most the item in flight.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS formulas (
    id INTEGER PRIMARY KEY,
    key TEXT UNIQUE NOT NULL,
    name TEXT, source TEXT, latex TEXT, sympy TEXT, claimed TEXT, kind TEXT, constant TEXT NOT NULL,
    created REAL
);
CREATE TABLE IF NOT EXISTS stages (
    formula_id INTEGER NOT NULL REFERENCES formulas(id) ON DELETE CASCADE,
    stage TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('ok', 'failed', 'timeout', 'error')),
    reason TEXT, result TEXT, seconds REAL, updated REAL,
    PRIMARY KEY (formula_id, stage)
);
CREATE TABLE IF NOT EXISTS pcfs (
    id INTEGER PRIMARY KEY,
    key TEXT UNIQUE NOT NULL,
    a TEXT NOT NULL, b TEXT NOT NULL, deg_a INTEGER, deg_b INTEGER,
    limit_mobius TEXT, constant TEXT,
    dyn_status TEXT CHECK (dyn_status IS NULL OR dyn_status IN ('ok', 'failed', 'timeout', 'error')),
    dyn_reason TEXT, delta REAL, rate REAL, depth INTEGER, dyn_seconds REAL
);
CREATE TABLE IF NOT EXISTS links (
    formula_id INTEGER PRIMARY KEY REFERENCES formulas(id) ON DELETE CASCADE,
    pcf_id INTEGER NOT NULL REFERENCES pcfs(id),
    transform TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
"""

STAGES = ("read", "validate", "convert")
STATUSES = ("ok", "failed", "timeout", "error")


class Store:
    """A SQLite-backed store; ``Store(path)`` creates the file and schema if needed (":memory:" works)."""

    def __init__(self, path: str | Path):
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, timeout=30)
        self.db.row_factory = sqlite3.Row
        try:
            self.db.execute("PRAGMA foreign_keys = ON")
            self.db.executescript(SCHEMA)
            self.db.commit()
        except sqlite3.DatabaseError as e:
            self.db.close()
            raise ValueError(f"formula store {self.path!r} is not a usable SQLite database ({e})") from None

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- formulas ------------------------------------------------------------------------------------
    def add_formula(
        self,
        key: str,
        *,
        name: str = "",
        source: dict | None = None,
        latex: str = "",
        sympy: str | None = None,
        claimed: str | None = None,
        kind: str | None = None,
        constant: str = "pi",
    ) -> int:
        """Insert a formula (idempotent on ``key``); return its id."""
        row = self.db.execute("SELECT id FROM formulas WHERE key = ?", (key,)).fetchone()
        if row is not None:
            return int(row["id"])
        cur = self.db.execute(
            "INSERT INTO formulas (key, name, source, latex, sympy, claimed, kind, constant, created)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (key, name, json.dumps(source or {}), latex, sympy, claimed, kind, constant, time.time()),
        )
        self.db.commit()
        return int(cur.lastrowid)

    def formula(self, formula_id: int) -> dict:
        row = self.db.execute("SELECT * FROM formulas WHERE id = ?", (formula_id,)).fetchone()
        if row is None:
            raise KeyError(f"no formula with id {formula_id}")
        out = dict(row)
        out["source"] = json.loads(out["source"] or "{}")
        return out

    def formula_ids(self, constant: str | None = None) -> list[int]:
        if constant is None:
            rows = self.db.execute("SELECT id FROM formulas ORDER BY id").fetchall()
        else:
            rows = self.db.execute(
                "SELECT id FROM formulas WHERE constant = ? ORDER BY id", (constant,)
            ).fetchall()
        return [int(r["id"]) for r in rows]

    # -- stages --------------------------------------------------------------------------------------
    def set_stage(
        self,
        formula_id: int,
        stage: str,
        status: str,
        reason: str = "",
        result: dict | None = None,
        seconds: float | None = None,
    ) -> None:
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
        self.db.execute(
            "INSERT OR REPLACE INTO stages (formula_id, stage, status, reason, result, seconds, updated)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (formula_id, stage, status, reason, json.dumps(result or {}), seconds, time.time()),
        )
        self.db.commit()

    def stage(self, formula_id: int, stage: str) -> dict | None:
        row = self.db.execute(
            "SELECT * FROM stages WHERE formula_id = ? AND stage = ?", (formula_id, stage)
        ).fetchone()
        if row is None:
            return None
        out = dict(row)
        out["result"] = json.loads(out["result"] or "{}")
        return out

    def pending(self, stage: str, *, after: str | None = None, constant: str | None = None) -> list[int]:
        """Formulas with no row for ``stage`` (and, if ``after`` is given, status 'ok' for that stage)."""
        q = "SELECT f.id FROM formulas f WHERE NOT EXISTS (SELECT 1 FROM stages s WHERE s.formula_id = f.id AND s.stage = ?)"
        args: list[Any] = [stage]
        if after is not None:
            q += " AND EXISTS (SELECT 1 FROM stages s WHERE s.formula_id = f.id AND s.stage = ? AND s.status = 'ok')"
            args.append(after)
        if constant is not None:
            q += " AND f.constant = ?"
            args.append(constant)
        q += " ORDER BY f.id"
        return [int(r[0]) for r in self.db.execute(q, args).fetchall()]

    def retry(self, statuses: tuple[str, ...] = ("failed", "timeout", "error")) -> int:
        """Forget stage results with these statuses (and the dynamics of PCFs); returns rows removed."""
        marks = ",".join("?" * len(statuses))
        n = self.db.execute(f"DELETE FROM stages WHERE status IN ({marks})", statuses).rowcount
        n += self.db.execute(
            f"UPDATE pcfs SET dyn_status = NULL WHERE dyn_status IN ({marks})", statuses
        ).rowcount
        self.db.commit()
        return n

    def stage_counts(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for r in self.db.execute("SELECT stage, status, COUNT(*) c FROM stages GROUP BY stage, status"):
            out.setdefault(r["stage"], {})[r["status"]] = int(r["c"])
        return out

    def reason_counts(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for r in self.db.execute(
            "SELECT stage, reason, COUNT(*) c FROM stages WHERE status != 'ok' GROUP BY stage, reason"
        ):
            out.setdefault(r["stage"], {})[r["reason"] or ""] = int(r["c"])
        return out

    # -- pcfs ------------------------------------------------------------------------------------------
    def add_pcf(
        self, key: str, a: list[int], b: list[int], limit_mobius: list[int] | None, constant: str
    ) -> int:
        row = self.db.execute("SELECT id FROM pcfs WHERE key = ?", (key,)).fetchone()
        if row is not None:
            return int(row["id"])
        cur = self.db.execute(
            "INSERT INTO pcfs (key, a, b, deg_a, deg_b, limit_mobius, constant) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                key,
                json.dumps(a),
                json.dumps(b),
                len(a) - 1 if any(a) else -1,
                len(b) - 1,
                json.dumps(limit_mobius) if limit_mobius is not None else None,
                constant,
            ),
        )
        self.db.commit()
        return int(cur.lastrowid)

    def pcf(self, pcf_id: int) -> dict:
        row = self.db.execute("SELECT * FROM pcfs WHERE id = ?", (pcf_id,)).fetchone()
        if row is None:
            raise KeyError(f"no pcf with id {pcf_id}")
        out = dict(row)
        out["a"], out["b"] = json.loads(out["a"]), json.loads(out["b"])
        out["limit_mobius"] = json.loads(out["limit_mobius"]) if out["limit_mobius"] else None
        return out

    def pcfs(self) -> list[dict]:
        return [self.pcf(int(r[0])) for r in self.db.execute("SELECT id FROM pcfs ORDER BY id")]

    def link(self, formula_id: int, pcf_id: int, transform: list[int]) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO links (formula_id, pcf_id, transform) VALUES (?, ?, ?)",
            (formula_id, pcf_id, json.dumps(transform)),
        )
        self.db.commit()

    def links(self) -> list[dict]:
        return [dict(r) for r in self.db.execute("SELECT * FROM links ORDER BY formula_id")]

    def pcf_formulas(self, pcf_id: int) -> list[int]:
        rows = self.db.execute("SELECT formula_id FROM links WHERE pcf_id = ? ORDER BY formula_id", (pcf_id,))
        return [int(r[0]) for r in rows]

    def pending_dynamics(self) -> list[int]:
        return [
            int(r[0]) for r in self.db.execute("SELECT id FROM pcfs WHERE dyn_status IS NULL ORDER BY id")
        ]

    def set_dynamics(
        self,
        pcf_id: int,
        status: str,
        reason: str = "",
        delta: float | None = None,
        rate: float | None = None,
        depth: int | None = None,
        seconds: float | None = None,
    ) -> None:
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
        self.db.execute(
            "UPDATE pcfs SET dyn_status = ?, dyn_reason = ?, delta = ?, rate = ?, depth = ?, dyn_seconds = ?"
            " WHERE id = ?",
            (status, reason, delta, rate, depth, seconds, pcf_id),
        )
        self.db.commit()

    # -- meta / integrity ------------------------------------------------------------------------------
    def set_meta(self, key: str, value: Any) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, json.dumps(value)))
        self.db.commit()

    def meta(self, key: str, default: Any = None) -> Any:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    def check_integrity(self) -> list[str]:
        """Problems found (empty when consistent): SQLite's own check, dangling links, stage order."""
        problems = []
        ok = self.db.execute("PRAGMA integrity_check").fetchone()[0]
        if ok != "ok":
            problems.append(f"sqlite integrity_check: {ok}")
        for r in self.db.execute("PRAGMA foreign_key_check"):
            problems.append(f"foreign key violation in {r[0]} row {r[1]}")
        q = (
            "SELECT l.formula_id FROM links l WHERE NOT EXISTS (SELECT 1 FROM stages s WHERE"
            " s.formula_id = l.formula_id AND s.stage = 'convert' AND s.status = 'ok')"
        )
        for r in self.db.execute(q):
            problems.append(f"formula {r[0]} linked to a PCF without a successful convert stage")
        q = (
            "SELECT s.formula_id, s.stage FROM stages s WHERE s.stage != 'read' AND NOT EXISTS (SELECT 1 FROM"
            " stages p WHERE p.formula_id = s.formula_id AND p.status = 'ok' AND p.stage ="
            " CASE s.stage WHEN 'validate' THEN 'read' ELSE 'validate' END)"
        )
        for r in self.db.execute(q):
            problems.append(f"formula {r[0]}: stage {r[1]} recorded without its predecessor")
        return problems


__all__ = ["STAGES", "STATUSES", "Store"]
