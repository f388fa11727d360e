"""Benchmark: delta and r at depth N (L from 2N) by our product tree vs ramanujantools' PCF.delta, and
the time to evaluate Brouncker's continued fraction 4/pi = 1 + 1^2/(2 + 3^2/(2 + ...)) to D digits.

Both delta computations run side by side in the same process on the same PCFs; the speed-up is the
ratio of their times (ramanujantools 0.0.8 ``PCF(a, b).delta(N)``, which also takes L from depth 2N).

    python benchmarks/constants/bench_dynamics.py --depth 4000 --digits 10000 --out benchmarks/constants/results.json
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time

import mpmath as mp
import sympy as sp

from recurrences.constants.dynamics import dynamics
from recurrences.constants.evaluate import Walk, evaluate_richardson
from recurrences.constants.formula import N

# canonical forms of classic pi formulas (from the embedded corpus), of increasing degree
PCFS = [
    ("2", "n**2"),
    ("3*n + 1", "-2*n**2 + n"),
    ("2*n + 1", "n**2"),
    ("32*n**2 + 64*n + 38", "-(4*n + 1)**2*(4*n + 3)**2"),
    ("16*n**3 + 36*n**2 + 22*n + 3", "8*n**3*(2*n + 1)**3*(4*n - 3)*(4*n + 5)"),
    ("240*n**4 + 736*n**3 + 792*n**2 + 336*n + 39", "-32*n**3*(2*n + 1)**3*(6*n - 5)*(6*n + 7)"),
]


def _expr(text: str) -> sp.Expr:
    # fixed benchmark strings written above (not outside input): built through the whitelisting parser
    from recurrences.constants.safe_parse import parse_expr

    return parse_expr(text).subs(sp.Symbol("n"), N)


def bench_delta(depth: int, repeat: int) -> list[dict]:
    from ramanujantools.pcf import PCF
    from sympy.abc import n as rt_n

    rows = []
    for a_txt, b_txt in PCFS:
        a, b = _expr(a_txt), _expr(b_txt)
        ours = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            d = dynamics(a, b, depth)
            ours.append(time.perf_counter() - t0)
        pcf = PCF(a.subs(N, rt_n), b.subs(N, rt_n))
        t0 = time.perf_counter()
        ref = float(pcf.delta(depth))
        t_ref = time.perf_counter() - t0
        t_ours = min(ours)
        rows.append(
            {
                "a": a_txt,
                "b": b_txt,
                "delta_ours": d.delta,
                "rate_ours": d.rate,
                "delta_ramanujantools": round(ref, 5),
                "seconds_ours": round(t_ours, 4),
                "seconds_ramanujantools": round(t_ref, 4),
                "speedup": round(t_ref / t_ours, 1),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


def bench_brouncker(digits: int) -> dict:
    walk = Walk.of_pcf(2, (2 * N - 1) ** 2, initial=(1, 1, 0, 1))  # a(0) = 1 as written
    t0 = time.perf_counter()
    ev = evaluate_richardson(walk, digits, max_points=10 * digits + 100)
    secs = time.perf_counter() - t0
    with mp.workdps(digits + 50):
        err = abs(ev.value - 4 / mp.pi)
        true_digits = float(-mp.log10(err)) if err else math.inf
    out = {
        "digits_requested": digits,
        "digits_verified": round(ev.digits, 1),
        "digits_true": round(true_digits, 1),
        "method": ev.method,
        "depth": ev.depth,
        "seconds": round(secs, 2),
    }
    print(json.dumps(out), flush=True)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--depth", type=int, default=4000)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--digits", type=int, nargs="*", default=[1000, 10000])
    p.add_argument("--out", default=None)
    args = p.parse_args()
    rows = bench_delta(args.depth, args.repeat)
    speedups = [r["speedup"] for r in rows]
    brouncker = [bench_brouncker(d) for d in args.digits]
    doc = {
        "command": "python " + " ".join(sys.argv),
        "machine": platform.platform(),
        "python": platform.python_version(),
        "depth": args.depth,
        "delta": rows,
        "speedup_geometric_mean": round(math.exp(statistics.fmean(math.log(s) for s in speedups)), 1),
        "speedup_min": min(speedups),
        "brouncker": brouncker,
    }
    print(json.dumps({k: doc[k] for k in ("speedup_geometric_mean", "speedup_min")}))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(doc, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
