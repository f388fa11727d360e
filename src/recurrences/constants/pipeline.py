"""The pipeline core: read -> validate -> convert (+ canonical form) -> dynamics, resumable through the store.

Each stage is a plain function on one item returning a JSON-able dict with ``status`` ('ok' | 'failed')
and ``reason``; :func:`run_tasks` runs them with a time budget each (a forked worker process per item,
at most ``jobs`` at once, killed when it runs over; plus a cooperative :class:`Deadline` inside), so one
slow formula is recorded as timed out and the run goes on. :func:`run_pipeline` drives the stages over a
corpus and records every result in the :class:`Store` as soon as it arrives: a rerun skips every finished
stage.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import multiprocessing.connection
import os
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import mpmath as mp
import sympy as sp

from .canonical import CanonicalError, canonical_form
from .convert import ConversionError, series_to_pcf
from .dynamics import dynamics
from .evaluate import BudgetExceeded, Deadline, EvaluationError, evaluate_walk, walk_of
from .formula import ContinuedFraction, Series
from .identify import (
    apply_matrix,
    constant_name,
    identify_mobius,
    is_degenerate,
    mobius_expr,
    mobius_from_expr,
    normalise,
)
from .store import Store

EMBEDDED_CORPUS = "classic_pi.jsonl"


@dataclass
class Config:
    """Settings of a pipeline run."""

    constant: str = "pi"
    digits: int = 50  # verified digits required for validation
    budget: float = 30.0  # seconds per formula per stage
    depth: int = 4000  # dynamics depth N (L from 2N)
    jobs: int = 1  # worker processes; 0 runs in-process (cooperative deadline only)
    use_sympy_field: bool = False  # read formulas from the `sympy` field where present
    max_candidates: int = 6  # readings tried per equation
    progress: bool = True

    def __post_init__(self) -> None:
        self.constant = constant_name(self.constant)
        if self.digits < 10:
            raise ValueError(f"digits must be >= 10, got {self.digits}")
        if self.budget <= 0:
            raise ValueError(f"budget must be > 0 seconds, got {self.budget}")
        if self.depth < 10:
            raise ValueError(f"depth must be >= 10, got {self.depth}")
        if self.jobs < 0:
            raise ValueError(f"jobs must be >= 0, got {self.jobs}")


# ----------------------------------------------------------------------------------------------------
# parsing helpers (strings from outside go through the whitelisting parser only)


def parse_formula(text: str) -> Series | ContinuedFraction:
    """A formula from sympy-style text, e.g. 'PCF(2, (2*n+1)**2)' or 'Sum((-1)**k/(2*k+1), (k, 0, oo))'."""
    from .safe_parse import parse_sympy_text

    out = parse_sympy_text(text)
    if not isinstance(out, (Series, ContinuedFraction)):
        raise ValueError(f"formula text must be a Sum(...) or PCF(...), got {text!r}")
    return out


def parse_value(text: str | None) -> sp.Expr | None:
    """A value such as 'pi/4' or '8/(21*pi)' (None or '' -> None)."""
    if text is None or str(text).strip() in ("", "None"):
        return None
    from .safe_parse import parse_sympy_text

    out = parse_sympy_text(str(text))
    if isinstance(out, (Series, ContinuedFraction)):
        raise ValueError(f"value must be an expression, got the formula {text!r}")
    return sp.sympify(out)


def _short(exc: BaseException, n: int = 240) -> str:
    msg = f"{type(exc).__name__}: {exc}"
    return msg if len(msg) <= n else msg[: n - 3] + "..."


# ----------------------------------------------------------------------------------------------------
# stage functions (one item each; deadline is cooperative)


def read_row(row: dict, *, use_sympy_field: bool = False, deadline: Deadline | None = None) -> dict:
    """Stage 'read': candidate formulas of one corpus row, as sympy-style text with stated values."""
    cands: list[dict] = []
    if use_sympy_field and row.get("sympy"):
        f = parse_formula(row["sympy"])
        cands.append({"text": str(f), "stated": row.get("claimed_value"), "source": "sympy"})
        return {"status": "ok", "reason": "", "candidates": cands}
    latex = row.get("latex") or ""
    if not latex.strip():
        return {"status": "failed", "reason": "empty latex", "candidates": []}
    from .latex import read_latex

    readings = read_latex(latex)
    for r in readings:
        text = str(r.formula)
        try:
            parse_formula(text)  # what later stages will re-read must round-trip
        except ValueError as exc:
            return {
                "status": "failed",
                "reason": f"reading does not round-trip: {_short(exc)}",
                "candidates": [],
            }
        stated = None if r.stated_value is None else str(r.stated_value)
        cands.append({"text": text, "stated": stated, "source": r.source or "latex"})
    if not cands:
        return {"status": "failed", "reason": "no formula read from latex", "candidates": []}
    return {"status": "ok", "reason": "", "candidates": cands}


def _matches(mobius, value_digits: float, x: mp.mpf | str, target: str | None, constant: str) -> bool | None:
    """Whether the identified value equals the value ``target`` (None when there is no target)."""
    if target is None:
        return None
    try:
        expr = parse_value(target)
    except (ValueError, TypeError):
        return None
    if expr is None:
        return None
    m = mobius_from_expr(expr, constant)
    if m is not None and mobius is not None:
        return normalise(m) == normalise(tuple(mobius))
    # not a Möbius form (or nothing identified): compare numerically
    d = int(min(value_digits, 2000))
    with mp.workdps(d + 10):
        try:
            tv = mp.mpf(str(sp.N(expr, d + 10)))
        except (TypeError, ValueError):
            return None
        return bool(abs(tv - mp.mpf(x)) < mp.mpf(10) ** (-(d - 3)))


def validate_text(
    text: str,
    *,
    constant: str = "pi",
    digits: int = 50,
    target: str | None = None,
    deadline: Deadline | None = None,
) -> dict:
    """Stage 'validate' for one formula: evaluate to ``digits`` verified digits and identify as Möbius(c)."""
    deadline = deadline or Deadline(None)
    try:
        formula = parse_formula(text)
    except ValueError as exc:
        return {"status": "failed", "reason": "parse error", "detail": _short(exc)}
    walk = None
    ident = None
    # escalate: a relation with large coefficients needs more digits than the minimum to pass the ROI test
    for want in (digits, 2 * digits + 50, 4 * digits + 100):
        try:
            if walk is None:
                walk = walk_of(formula)
            ev = evaluate_walk(walk, want, deadline=deadline)
        except (EvaluationError, ConversionError) as exc:
            if ident is None and want == digits:
                return {"status": "failed", "reason": "not evaluable", "detail": _short(exc)}
            break
        out: dict[str, Any] = {
            "text": str(formula),
            "kind": formula.kind,
            "digits": round(min(ev.digits, 1e9), 2),
            "method": ev.method,
            "depth": ev.depth,
            "value": ev.as_str(),
        }
        if ev.digits < digits:
            out.update(status="failed", reason=f"fewer than {digits} verified digits")
            return out
        deadline.check()
        ident = identify_mobius(ev.value, ev.digits, constant)
        if ident is not None or ev.digits < want:
            break
    if ident is None:
        out.update(status="failed", reason=f"not identified as a Möbius transform of {constant}")
        out["matches_target"] = _matches(None, ev.digits, ev.value, target, constant)
        return out
    out.update(
        mobius=list(ident.mobius),
        limit=str(ident.expr()),
        roi=round(ident.roi, 3),
        pslq_digits=ident.digits_used,
        matches_target=_matches(ident.mobius, ev.digits, ev.value, target, constant),
    )
    if is_degenerate(ident.mobius):
        out.update(status="failed", reason="rational value (no constant)")
        return out
    out.update(status="ok", reason="")
    return out


def validate_candidates(
    candidates: list[dict],
    claimed: str | None,
    *,
    constant: str = "pi",
    digits: int = 50,
    max_candidates: int = 6,
    deadline: Deadline | None = None,
) -> dict:
    """Validate each candidate reading; keep the first that matches its stated (or claimed) value, else
    the first validated one, else the first failure."""
    deadline = deadline or Deadline(None)
    results = []
    for i, c in enumerate(candidates[:max_candidates]):
        target = c.get("stated") or claimed
        res = validate_text(c["text"], constant=constant, digits=digits, target=target, deadline=deadline)
        res["candidate"] = i
        res["source"] = c.get("source", "")
        if "value" in res:
            if target == claimed:
                res["matches_claim"] = res.get("matches_target")
            else:
                res["matches_claim"] = _matches(
                    res.get("mobius"), res["digits"], res["value"], claimed, constant
                )
        results.append(res)
        if res["status"] == "ok" and res.get("matches_target") is not False:
            return res
    ok = [r for r in results if r["status"] == "ok"]
    if ok:
        return ok[0]
    if not results:
        return {"status": "failed", "reason": "no candidates"}
    return results[0]


def convert_text(
    text: str, mobius: list[int] | None, *, constant: str = "pi", deadline: Deadline | None = None
) -> dict:
    """Stage 'convert': the formula's PCF (Euler's conversion for series), its canonical form, and the
    limits carried over: L_PCF from the formula's value, then L_canonical = Möbius(T, L_PCF)."""
    try:
        formula = parse_formula(text)
    except ValueError as exc:
        return {"status": "failed", "reason": "parse error", "detail": _short(exc)}
    out: dict[str, Any] = {}
    try:
        if isinstance(formula, Series):
            conv = series_to_pcf(formula)
            a, b = conv.a, conv.b
            m = conv.series_to_pcf_matrix()
            den = sp.ilcm(*[sp.Rational(x).q for x in m])
            t = [int(sp.Rational(x) * den) for x in m]
            pcf_limit = apply_matrix(tuple(t), tuple(mobius)) if mobius is not None else None
            out["euler"] = {
                "a": str(a),
                "b": str(sp.factor(b)),
                "initial": [str(x) for x in conv.initial],
                "start": conv.start,
            }
        else:
            a, b = formula.a, formula.b
            pcf_limit = tuple(mobius) if mobius is not None else None
        canon = canonical_form(a, b)
    except (ConversionError, CanonicalError, EvaluationError) as exc:
        return {
            "status": "failed",
            "reason": type(exc).__name__.replace("Error", " error").lower(),
            "detail": _short(exc),
        }
    canon_limit = apply_matrix(canon.transform, pcf_limit) if pcf_limit is not None else None
    out.update(
        status="ok",
        reason="",
        pcf={"a": str(a), "b": str(b)},
        pcf_limit=list(pcf_limit) if pcf_limit else None,
        canonical={"a": list(canon.a), "b": list(canon.b), "key": canon.key, "text": str(canon)},
        transform=list(canon.transform),
        canonical_limit=list(canon_limit) if canon_limit else None,
        canonical_value=str(mobius_expr(canon_limit, constant)) if canon_limit else None,
        degrees=list(canon.degrees),
        notes=list(canon.notes),
    )
    return out


def dynamics_task(a: list[int], b: list[int], depth: int, *, deadline: Deadline | None = None) -> dict:
    """Stage 'dynamics' for one canonical PCF: delta and r at ``depth`` with L from 2*depth."""
    from .canonical import _poly_expr

    try:
        d = dynamics(_poly_expr(a), _poly_expr(b), depth, deadline=deadline or Deadline(None))
    except EvaluationError as exc:
        return {"status": "failed", "reason": "not evaluable", "detail": _short(exc)}
    status = "ok" if d.delta is not None else "failed"
    return {"status": status, "reason": d.reason, "delta": d.delta, "rate": d.rate, "depth": d.depth}


# ----------------------------------------------------------------------------------------------------
# time-budgeted execution


_WARM: set[str] = set()
_SERIES = "Sum((-1)**k*factorial(k)/(binomial(2*k, k)*4**k), (k, 0, oo))"


def _prewarm(stage: str) -> None:
    """Exercise a stage's code once in the parent, so that forked workers inherit warm lazy imports and
    caches instead of paying for them on every task (an optimisation only: errors are ignored)."""
    if stage in _WARM:
        return
    _WARM.add(stage)
    try:
        if stage == "read-latex":
            read_row({"latex": r"\sum_{k=0}^{\infty} \frac{(-1)^k}{2k+1} = \frac{\pi}{4}"})
        elif stage == "read-sympy":
            read_row({"sympy": _SERIES}, use_sympy_field=True)
        elif stage == "validate":
            validate_text(_SERIES, digits=12, target="pi")
        elif stage == "convert":
            convert_text(_SERIES, [1, 0, 0, 1])
        elif stage == "dynamics":
            dynamics_task([1, 3], [0, 1, -2], 20)
    except Exception:
        pass


def _child(conn, fn: Callable, args: tuple, kwargs: dict, budget: float) -> None:
    try:
        res = fn(*args, deadline=Deadline(budget), **kwargs)
    except BudgetExceeded:
        res = {"status": "timeout", "reason": "timed out"}
    except Exception as exc:  # recorded, never fatal to the run
        res = {"status": "error", "reason": _short(exc)}
    try:
        conn.send(res)
    finally:
        conn.close()
        # leave at once: skip the interpreter's exit handlers (inherited from the parent), which can
        # take a noticeable time per task
        os._exit(0)


def run_tasks(
    tasks: Iterable[tuple[Any, Callable, tuple, dict]],
    on_result: Callable[[Any, dict, float], None],
    *,
    jobs: int = 1,
    budget: float = 30.0,
    total: int | None = None,
    progress: bool = False,
    desc: str = "",
    warm: str | None = None,
) -> None:
    """Run ``fn(*args, deadline=..., **kwargs)`` for each (key, fn, args, kwargs), each within ``budget``
    seconds; ``on_result(key, result, seconds)`` is called in the parent as results arrive.

    jobs >= 1: one forked process per task, at most ``jobs`` at a time; a task that overruns its budget
    (plus a 2 s grace for the cooperative deadline to fire) is killed and reported as
    {'status': 'timeout'}. jobs == 0: in-process, cooperative deadline only.
    """
    if warm is not None and jobs > 0:
        _prewarm(warm)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, desc=desc, unit="item", file=sys.stderr, leave=False)
    try:
        if jobs == 0:
            for key, fn, args, kwargs in tasks:
                t0 = time.monotonic()
                try:
                    res = fn(*args, deadline=Deadline(budget), **kwargs)
                except BudgetExceeded:
                    res = {"status": "timeout", "reason": "timed out"}
                except Exception as exc:
                    res = {"status": "error", "reason": _short(exc)}
                on_result(key, res, time.monotonic() - t0)
                if bar is not None:
                    bar.update(1)
            return
        ctx = multiprocessing.get_context("fork")
        it = iter(tasks)
        active: dict[Any, tuple] = {}  # conn -> (key, proc, t0)
        exhausted = False
        while True:
            while not exhausted and len(active) < jobs:
                item = next(it, None)
                if item is None:
                    exhausted = True
                    break
                key, fn, args, kwargs = item
                parent, child = ctx.Pipe(duplex=False)
                proc = ctx.Process(target=_child, args=(child, fn, args, kwargs, budget), daemon=True)
                proc.start()
                child.close()
                active[parent] = (key, proc, time.monotonic())
            if not active:
                break
            ready = multiprocessing.connection.wait(list(active), timeout=0.2)
            now = time.monotonic()
            for conn in list(active):
                key, proc, t0 = active[conn]
                res = None
                if conn in ready:
                    try:
                        res = conn.recv()
                    except EOFError:
                        proc.join(1)
                        res = {"status": "error", "reason": f"worker died (exit code {proc.exitcode})"}
                elif now - t0 > budget + 2.0:
                    proc.kill()
                    res = {"status": "timeout", "reason": "timed out"}
                if res is None:
                    continue
                conn.close()
                proc.join(5)
                if proc.is_alive():
                    proc.kill()
                    proc.join(5)
                del active[conn]
                on_result(key, res, now - t0)
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()


# ----------------------------------------------------------------------------------------------------
# corpus


def load_corpus(path: str | Path | None = None, *, constant: str = "pi") -> list[dict]:
    """Rows {name?, latex, sympy?, claimed_value, ...}: the embedded corpus when ``path`` is None, a JSONL
    file (harvested.jsonl format), or a .tex file / folder read through the harvester."""
    if path is None:
        text = resources.files("recurrences.constants.corpus").joinpath(EMBEDDED_CORPUS).read_text("utf-8")
        return _jsonl_rows(text, EMBEDDED_CORPUS)
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"corpus: no such file or folder: {p}")
    if p.is_file() and p.suffix in (".jsonl", ".json"):
        return _jsonl_rows(p.read_text("utf-8"), str(p))
    if p.is_dir() or p.suffix == ".tex":
        from . import harvest

        fn = getattr(harvest, "harvest_rows", None) or getattr(harvest, "harvest_path", None)
        if fn is None:
            raise RuntimeError(
                "corpus: the harvester (recurrences.constants.harvest) has no harvest_rows(path)"
            )
        rows = list(fn(p))
        return [r if isinstance(r, dict) else dict(r) for r in rows]
    raise ValueError(f"corpus must be a .jsonl file, a .tex file or a folder, got {p}")


def _jsonl_rows(text: str, where: str) -> list[dict]:
    rows = []
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"corpus {where}: line {i} is not JSON ({exc.msg})") from exc
        if not isinstance(row, dict) or not ("latex" in row or "sympy" in row):
            raise ValueError(f"corpus {where}: line {i} must be an object with 'latex' or 'sympy'")
        rows.append(row)
    return rows


def row_key(row: dict) -> str:
    keep = {
        k: row.get(k) for k in ("name", "arxiv_id", "file", "line", "row", "latex", "sympy", "claimed_value")
    }
    return hashlib.sha1(json.dumps(keep, sort_keys=True).encode()).hexdigest()


# ----------------------------------------------------------------------------------------------------
# the driver


def add_corpus(store: Store, rows: list[dict], constant: str) -> list[int]:
    ids = []
    for i, row in enumerate(rows):
        source = {k: row[k] for k in ("arxiv_id", "file", "line", "row") if k in row}
        ids.append(
            store.add_formula(
                row_key(row),
                name=str(row.get("name") or row.get("row", i)),
                source=source,
                latex=row.get("latex") or "",
                sympy=row.get("sympy"),
                claimed=row.get("claimed_value"),
                kind=row.get("kind"),
                constant=constant,
            )
        )
    return ids


def _run_stage(cfg: Config, name: str, tasks, done, total: int, *, warm: str | None) -> None:
    """One stage's work items through :func:`run_tasks` with the run's jobs, budget and progress settings."""
    run_tasks(
        tasks,
        done,
        jobs=cfg.jobs,
        budget=cfg.budget,
        total=total,
        progress=cfg.progress,
        desc=name,
        warm=warm,
    )


def stage_read(store: Store, cfg: Config) -> None:
    ids = store.pending("read", constant=cfg.constant)

    def tasks():
        for fid in ids:
            f = store.formula(fid)
            row = {"latex": f["latex"], "sympy": f["sympy"], "claimed_value": f["claimed"]}
            yield fid, read_row, (row,), {"use_sympy_field": cfg.use_sympy_field}

    def done(fid, res, secs):
        store.set_stage(fid, "read", res.pop("status"), res.pop("reason", ""), res, secs)

    warm = "read-sympy" if cfg.use_sympy_field else "read-latex"
    _run_stage(cfg, "read", tasks(), done, len(ids), warm=warm)


def stage_validate(store: Store, cfg: Config) -> None:
    ids = store.pending("validate", after="read", constant=cfg.constant)

    def tasks():
        for fid in ids:
            f = store.formula(fid)
            cands = store.stage(fid, "read")["result"].get("candidates", [])
            kw = {"constant": cfg.constant, "digits": cfg.digits, "max_candidates": cfg.max_candidates}
            yield fid, validate_candidates, (cands, f["claimed"]), kw

    def done(fid, res, secs):
        store.set_stage(fid, "validate", res.pop("status"), res.pop("reason", ""), res, secs)

    _run_stage(cfg, "validate", tasks(), done, len(ids), warm="validate")


def stage_convert(store: Store, cfg: Config) -> None:
    ids = store.pending("convert", after="validate", constant=cfg.constant)

    def tasks():
        for fid in ids:
            v = store.stage(fid, "validate")["result"]
            yield fid, convert_text, (v["text"], v.get("mobius")), {"constant": cfg.constant}

    def done(fid, res, secs):
        status, reason = res.pop("status"), res.pop("reason", "")
        if status == "ok":
            c = res["canonical"]
            pid = store.add_pcf(c["key"], c["a"], c["b"], res.get("canonical_limit"), cfg.constant)
            known = store.pcf(pid)["limit_mobius"]
            if (
                known is not None
                and res.get("canonical_limit") is not None
                and known != res["canonical_limit"]
            ):
                # equal PCFs must have equal limits: a wrong identification or conversion upstream of here
                status, reason = "failed", "canonical limit disagrees with other formulas of the same PCF"
            else:
                store.link(fid, pid, res["transform"])
                res["pcf_id"] = pid
        store.set_stage(fid, "convert", status, reason, res, secs)

    _run_stage(cfg, "convert", tasks(), done, len(ids), warm="convert")


def stage_dynamics(store: Store, cfg: Config) -> None:
    ids = store.pending_dynamics()

    def tasks():
        for pid in ids:
            p = store.pcf(pid)
            yield pid, dynamics_task, (p["a"], p["b"], cfg.depth), {}

    def done(pid, res, secs):
        store.set_dynamics(
            pid,
            res["status"],
            res.get("reason", ""),
            res.get("delta"),
            res.get("rate"),
            res.get("depth"),
            secs,
        )

    _run_stage(cfg, "dynamics", tasks(), done, len(ids), warm="dynamics")


STAGE_FUNCS = {
    "read": stage_read,
    "validate": stage_validate,
    "convert": stage_convert,
    "dynamics": stage_dynamics,
}


def run_pipeline(
    store: Store, rows: list[dict] | None, cfg: Config, *, stages: tuple[str, ...] = tuple(STAGE_FUNCS)
) -> dict:
    """Add ``rows`` (if given) and run the stages; finished stages are skipped. Returns the summary."""
    from .report import summary

    if rows is not None:
        add_corpus(store, rows, cfg.constant)
    store.set_meta("config", asdict(cfg))
    for name in stages:
        if name not in STAGE_FUNCS:
            raise ValueError(f"stage must be one of {list(STAGE_FUNCS)}, got {name!r}")
        STAGE_FUNCS[name](store, cfg)
    return summary(store)


__all__ = [
    "Config",
    "add_corpus",
    "convert_text",
    "dynamics_task",
    "load_corpus",
    "parse_formula",
    "parse_value",
    "read_row",
    "run_pipeline",
    "run_tasks",
    "validate_candidates",
    "validate_text",
]
