"""The pipeline driver: validation against claimed values, time budgets, resuming after interruption."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from recurrences.constants import pipeline
from recurrences.constants.pipeline import Config, load_corpus, run_pipeline, run_tasks, validate_text
from recurrences.constants.store import Store

ROWS = [
    {"name": "leibniz", "latex": "", "sympy": "Sum((-1)**k/(2*k + 1), (k, 0, oo))", "claimed_value": "pi/4"},
    {"name": "rm", "latex": "", "sympy": "PCF(3*n + 1, -2*n**2 + n)", "claimed_value": "2/pi"},
    {
        "name": "euler",
        "latex": "",
        "sympy": "Sum(2**k*factorial(k)**2/factorial(2*k + 1), (k, 0, oo))",
        "claimed_value": "pi/2",
    },
    {
        "name": "euler2",
        "latex": "",
        "sympy": "Sum(2**k*factorial(k)**2/factorial(2*k + 1), (k, 1, oo))",
        "claimed_value": "pi/2 - 1",
    },
    {"name": "wrong", "latex": "", "sympy": "PCF(3*n + 1, -2*n**2 + n)", "claimed_value": "pi/2"},
    {"name": "zeta2", "latex": "", "sympy": "Sum(1/k**2, (k, 1, oo))", "claimed_value": "pi**2/6"},
]


def _cfg(**kw):
    base = {"jobs": 0, "depth": 100, "budget": 30.0, "use_sympy_field": True, "progress": False}
    base.update(kw)
    return Config(**base)


def test_validate_text_identifies_and_compares():
    r = validate_text("PCF(2*n + 1, n**2)", target="4/pi")
    assert r["status"] == "ok" and r["limit"] == "4/pi" and r["matches_target"] is True
    r = validate_text("PCF(2*n + 1, n**2)", target="pi/4")
    assert r["status"] == "ok" and r["matches_target"] is False
    assert validate_text("Sum(1/k**2, (k, 1, oo))")["status"] == "failed"  # pi^2/6 is no Möbius(pi)
    assert validate_text("Sum(1/2**k, (k, 0, oo))")["reason"] == "rational value (no constant)"
    assert validate_text("__import__('os')")["reason"] == "parse error"
    r = validate_text("Sum(1/factorial(k), (k, 0, oo))", constant="e")
    assert r["status"] == "ok" and r["limit"] == "E"


def test_run_counts_and_canonical_sharing(tmp_path):
    with Store(tmp_path / "s.sqlite") as st:
        s = run_pipeline(st, ROWS, _cfg())
        assert s["stages"]["validate"] == {"ok": 5, "failed": 1}
        assert s["claims"] == {"matched": 4, "differ": 1, "no_claim": 0}
        # rm and wrong are the same PCF; euler2 (the same series from k = 1) is the n -> n + 1 shift of
        # euler's Euler PCF, a different canonical form
        assert s["canonical_forms"] == 4
        assert s["formulas_per_form"] == {"1": 3, "2": 1}
        assert s["dynamics"] == {"ok": 4}
        assert st.check_integrity() == []
        # every formula's canonical limit agrees with its PCF's stored limit
        for link in st.links():
            conv = st.stage(link["formula_id"], "convert")["result"]
            assert st.pcf(link["pcf_id"])["limit_mobius"] == conv["canonical_limit"]


class _Interrupt(BaseException):
    pass


def test_resume_after_interruption(tmp_path, monkeypatch):
    calls = []
    interrupted_once: list[bool] = []
    real = pipeline.validate_candidates

    def flaky(*args, **kw):
        calls.append(args[0][0]["text"])
        if len(calls) == 3 and not interrupted_once:
            interrupted_once.append(True)
            raise _Interrupt  # like ^C in the middle of the stage (a BaseException, not caught per item)
        return real(*args, **kw)

    monkeypatch.setattr(pipeline, "validate_candidates", flaky)
    path = tmp_path / "s.sqlite"
    interrupted = False
    with Store(path) as st:
        try:
            run_pipeline(st, ROWS, _cfg())
        except _Interrupt:
            interrupted = True
    assert interrupted
    with Store(path) as st:
        assert st.stage_counts()["validate"] == {"ok": 2}
        assert "convert" not in st.stage_counts()
    calls.clear()
    with Store(path) as st:
        s = run_pipeline(st, ROWS, _cfg())
        assert len(calls) == len(ROWS) - 2  # the two finished validations were not redone
        assert s["stages"]["validate"] == {"ok": 5, "failed": 1}
        assert st.check_integrity() == []
    calls.clear()
    with Store(path) as st:
        run_pipeline(st, ROWS, _cfg())
        assert calls == []


def test_killed_worker_run_resumes(tmp_path):
    """Kill a CLI run in a subprocess once some results are stored; the rerun finishes only the rest."""
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("\n".join(json.dumps({**ROWS[1], "name": f"x{i}"}) for i in range(8)))
    db = tmp_path / "s.sqlite"
    cmd = [
        sys.executable,
        "-m",
        "recurrences.cli",
        "constants",
        "run",
        "--corpus",
        str(corpus),
        "--db",
        str(db),
        "--out",
        str(tmp_path / "out"),
        "--use-sympy-field",
        "--jobs",
        "1",
        "--depth",
        "50",
        "--no-progress",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import time

    t0 = time.time()
    while time.time() - t0 < 60:
        time.sleep(0.2)
        if db.exists():
            with Store(db) as st:
                if st.stage_counts().get("validate", {}).get("ok", 0) >= 2:
                    break
    proc.kill()
    proc.wait()
    with Store(db) as st:
        done = {fid for fid in st.formula_ids() if st.stage(fid, "validate")}
        before = {fid: st.stage(fid, "validate")["updated"] for fid in done}
        assert st.check_integrity() == []
    assert done
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    with Store(db) as st:
        for fid, t in before.items():
            assert st.stage(fid, "validate")["updated"] == t  # finished work kept, not redone
        assert sum(st.stage_counts()["validate"].values()) == len(st.formula_ids())


def _slow(*, deadline):
    import time

    time.sleep(30)
    return {"status": "ok"}


def _fast(x, *, deadline):
    return {"status": "ok", "x": x}


def test_time_budget_records_timeouts_and_goes_on():
    got = {}
    tasks = [(0, _fast, (1,), {}), (1, _slow, (), {}), (2, _fast, (2,), {})]
    run_tasks(tasks, lambda k, r, s: got.update({k: (r, s)}), jobs=2, budget=0.5)
    assert got[1][0]["status"] == "timeout" and got[1][1] < 10
    assert got[0][0] == {"status": "ok", "x": 1} and got[2][0]["x"] == 2


def test_slow_formula_times_out_in_the_pipeline(tmp_path):
    rows = [
        ROWS[1],
        {"name": "slow", "latex": "", "sympy": "Sum(1/(k**2 + 1), (k, 0, oo))", "claimed_value": "pi"},
    ]
    with Store(tmp_path / "s.sqlite") as st:
        # at 4000 digits the slowly converging series cannot finish in 1 s (cooperative deadline + kill)
        run_pipeline(st, rows, _cfg(jobs=1, budget=1.0, digits=4000), stages=("read", "validate"))
        ids = st.formula_ids()
        assert st.stage(ids[1], "validate")["status"] == "timeout"
        assert st.stage(ids[0], "validate")["status"] in ("ok", "failed", "timeout")


def test_embedded_corpus_loads_and_reads():
    rows = load_corpus()
    assert len(rows) >= 15 and all(r["latex"] and r["claimed_value"] for r in rows)
    names = " ".join(r["name"] for r in rows)
    for classic in ("Leibniz", "Nilakantha", "Brouncker", "Bailey-Borwein-Plouffe", "Ramanujan"):
        assert classic in names
    latex = pytest.importorskip("recurrences.constants.latex")
    read = sum(1 for r in rows if latex.read_latex(r["latex"]))
    assert read >= len(rows) - 2


def test_bad_corpus(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"latex": "x"}\nnot json\n')
    with pytest.raises(ValueError, match="line 2"):
        load_corpus(bad)
    with pytest.raises(FileNotFoundError):
        load_corpus(tmp_path / "missing.jsonl")
    with pytest.raises(ValueError, match="constant"):
        Config(constant="tau")


def test_tex_folder_corpus_through_the_harvester(tmp_path):
    pytest.importorskip("recurrences.constants.harvest")
    (tmp_path / "p.tex").write_text(
        "\\newcommand{\\bi}[2]{\\binom{#1}{#2}}\n"
        "\\begin{equation} \\sum_{k=0}^{\\infty} \\frac{(6k+1) \\bi{2k}{k}^3}{256^k} = \\frac{4}{\\pi} \\end{equation}\n"
        "and $x = \\sin(\\pi)$\n"
    )
    rows = load_corpus(tmp_path)
    assert len(rows) == 1 and rows[0]["line"] == 2
    with Store(tmp_path / "s.sqlite") as st:
        s = run_pipeline(st, rows, _cfg(use_sympy_field=False), stages=("read", "validate"))
        assert s["stages"]["validate"] == {"ok": 1} and s["equal_to_stated_or_claimed"] == 1
