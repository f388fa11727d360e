"""How many harvested pi formulas the offline LaTeX reader reads correctly, from the LaTeX alone.

For every row of ``harvested.jsonl`` with a non-empty ``latex`` (the ``sympy`` field is NOT used for reading):

1. ``read_latex(row.latex)`` gives readings (formula + the value the equation states for it);
2. a reading **validates** if its value, evaluated with big-integer walks (``evaluate.evaluate_formula``),
   is identified by PSLQ as a Möbius transform of pi (``identify.identify_mobius``, ROI >= 2);
3. it **agrees with its row** if its value equals the value the equation states (where it states one) and,
   where the row has a ``sympy`` formula, the canonical PCF of the reading equals the canonical PCF of that
   formula (series through Euler's conversion, ``convert.series_to_pcf``; ``canonical.canonical_form``).

A row counts as read if one of its readings validates and agrees. Usage::

    OMP_NUM_THREADS=1 python benchmarks/constants/read_harvested.py \
        --data ../shared/data/pi_formulas/harvested.jsonl --out benchmarks/constants/read_harvested.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import mpmath as mp
import sympy as sp

from recurrences.constants.formula import Series
from recurrences.constants.latex import LatexReadError, read_latex
from recurrences.constants.safe_parse import parse_sympy_text

DIGITS = 80
IDENTIFY_CAPS = (45, 60, 80, 120, 160)  # PSLQ precisions tried in turn (see check_reading)


def canonical_key(formula) -> str:
    from recurrences.constants.canonical import canonical_form
    from recurrences.constants.convert import series_to_pcf

    if isinstance(formula, Series):
        conv = series_to_pcf(formula)
        return canonical_form(conv.a, conv.b).key
    return canonical_form(formula.a, formula.b).key


def evaluate(formula, seconds: float, digits: int = DIGITS) -> tuple[mp.mpf, float]:
    from recurrences.constants.evaluate import Deadline, evaluate_formula

    ev = evaluate_formula(formula, digits, deadline=Deadline(seconds))
    return ev.value, ev.digits


def identify(value, digits: float):
    """PSLQ at a few capped precisions: mpmath.pslq can miss a relation when asked for a much tighter
    tolerance than needed, while large coefficients (pi/28449792000 - 14789/134221791453750) need more."""
    from recurrences.constants.identify import identify_mobius

    ident = None
    for cap in IDENTIFY_CAPS:
        if digits < cap - 10 and cap != IDENTIFY_CAPS[0]:
            break
        ident = identify_mobius(value, min(digits, cap), "pi")
        if ident is not None and not ident.rational:
            return ident
    return None


def check_reading(reading, row_key: str | None, seconds: float) -> tuple[bool, str]:
    f = reading.formula
    try:
        value, digits = evaluate(f, seconds)
    except Exception as e:  # noqa: BLE001 - any failure is a failed reading, reported by name
        return False, f"evaluation failed: {type(e).__name__}: {str(e)[:80]}"
    if digits < 15:
        return False, f"only {digits:.1f} digits"
    ident = identify(value, digits)
    if ident is None and digits >= DIGITS:  # large coefficients: one more try at higher precision
        try:
            value, digits = evaluate(f, seconds, 2 * DIGITS)
            ident = identify(value, digits)
        except Exception:  # noqa: BLE001
            ident = None
    if ident is None or ident.rational:
        return False, f"not identified as a Möbius transform of pi ({mp.nstr(value, 15)})"
    if reading.stated_value is not None:
        with mp.workdps(DIGITS + 10):
            try:
                stated = mp.mpf(sp.N(reading.stated_value, DIGITS + 10))
            except (TypeError, ValueError):
                return False, f"stated value {reading.stated_value} is not a number"
            tol = mp.mpf(10) ** (-min(digits, DIGITS) + 5)
            if abs(value - stated) > tol * max(1, abs(stated)):
                return False, f"value {mp.nstr(value, 12)} != stated {reading.stated_value}"
    if row_key is not None:
        try:
            key = canonical_key(f)
        except Exception as e:  # noqa: BLE001
            return False, f"canonical form failed: {e}"
        if key != row_key:
            return False, f"canonical PCF {key} differs from the row's {row_key}"
    return True, "ok"


def _same_number(stated, claimed: str | None) -> bool:
    if stated is None or not claimed:
        return False
    try:
        c = parse_sympy_text(claimed)
        return bool(abs(sp.N(stated - c, 30)) < 1e-20)
    except Exception:  # noqa: BLE001
        return False


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--data", default=str(Path(__file__).resolve().parents[3] / "shared/data/pi_formulas/harvested.jsonl")
    )
    ap.add_argument("--out", default=None, help="write the JSON result here")
    ap.add_argument("--rows", type=int, nargs="*", default=None, help="only these rows (debugging)")
    ap.add_argument("--seconds", type=float, default=10.0, help="evaluation budget per formula")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args(argv)
    path = Path(args.data)
    if not path.exists():
        print(f"--data: {path} does not exist", file=sys.stderr)
        return 2
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    t0 = time.time()
    results = []
    for row in rows:
        if not row.get("latex"):
            continue
        if args.rows is not None and row["row"] not in args.rows:
            continue
        row_key = None
        if row.get("sympy"):
            try:
                row_key = canonical_key(parse_sympy_text(row["sympy"]))
            except Exception:  # noqa: BLE001
                row_key = None
        entry = {
            "row": row["row"],
            "kind": row["kind"],
            "status": "no reading",
            "reason": "",
            "n_readings": 0,
        }
        try:
            readings = read_latex(row["latex"])
        except LatexReadError as e:
            readings = []
            entry["reason"] = f"LatexReadError: {e}"
        entry["n_readings"] = len(readings)
        reasons = []
        for i, r in enumerate(readings):
            ok, why = check_reading(r, row_key, args.seconds)
            if ok:
                entry.update(status="ok", formula=str(r.formula), stated=str(r.stated_value), which=i)
                entry["checked"] = ("stated " if r.stated_value is not None else "") + (
                    "sympy" if row_key else ""
                )
                entry["stated_equals_claimed"] = _same_number(r.stated_value, row.get("claimed_value"))
                break
            reasons.append(why)
            entry.update(status="failed", formula=str(r.formula), stated=str(r.stated_value))
        if entry["status"] != "ok" and reasons:
            entry["reason"] = " | ".join(reasons[:3])
        results.append(entry)
        if args.verbose or entry["status"] != "ok":
            print(
                f"{row['row']:4d} {entry['status']:10s} {entry.get('formula', '')[:90]}  {entry['reason'][:160]}"
            )
    n = len(results)
    ok = sum(e["status"] == "ok" for e in results)
    first = sum(e["status"] == "ok" and e.get("which") == 0 for e in results)
    summary = {
        "rows_with_latex": n,
        "read_ok": ok,
        "read_ok_fraction": round(ok / max(n, 1), 4),
        "ok_with_first_reading": first,
        "no_reading": sum(e["status"] == "no reading" for e in results),
        "ok_checked_against_stated_value": sum("stated" in e.get("checked", "") for e in results),
        "ok_checked_against_row_sympy": sum("sympy" in e.get("checked", "") for e in results),
        "ok_validated_only": sum(e.get("status") == "ok" and not e.get("checked") for e in results),
        "ok_stated_equals_claimed_value": sum(bool(e.get("stated_equals_claimed")) for e in results),
        "seconds": round(time.time() - t0, 1),
        "command": "OMP_NUM_THREADS=1 python benchmarks/constants/read_harvested.py "
        "--data ../shared/data/pi_formulas/harvested.jsonl --out benchmarks/constants/read_harvested.json",
        "criterion": "a reading validates (Möbius of pi by PSLQ, ROI>=2) and agrees: value == stated value, "
        "canonical PCF == canonical PCF of the row's sympy formula where present",
    }
    print(json.dumps(summary, indent=1))
    if args.out:
        out = Path(args.out)
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps({"summary": summary, "rows": results}, indent=1) + "\n")
        tmp.replace(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
