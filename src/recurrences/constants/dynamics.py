"""Convergence dynamics of a PCF: the rate r and the irrationality measure delta (spec §2.1).

With p_N/q_N the N-th convergent (A . M(1) ... M(N), last column) and L approximated by the convergent
at depth 2N:

    r     = | ln|p_N/q_N - L| / N |                          (natural log; scales by k under a k-fold)
    delta = -(1 + ln|L - p_N/q_N| / ln q~_N),   q~_N = q_N / gcd(p_N, q_N).

Both are computed exactly from big integers: the products come from a binary-splitting product tree
(gmpy2), and |p_N/q_N - p_2N/q_2N| = |p_N q_2N - p_2N q_N| / (q_N q_2N) is taken as an integer before the
logarithm, so no floating-point precision has to be chosen. :func:`dynamics_reference` is the slow
reference: ramanujantools' ``PCF.limit``/``Limit.delta`` (used in tests at small depth and in the
benchmark at depth 4000).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import gmpy2
import sympy as sp

from .evaluate import NO_DEADLINE, Deadline, EvaluationError, Walk, log_abs_int, matmul, walk_product

DEFAULT_DEPTH = 4000


@dataclass
class Dynamics:
    delta: float | None
    rate: float | None
    depth: int
    reason: str = ""  # why delta or rate is missing

    def to_dict(self) -> dict:
        return asdict(self)


def dynamics_from_products(w_n, w_2n, depth: int) -> Dynamics:
    """delta and r from the walk matrices at depths N and 2N (4-tuples of integers)."""
    p1, q1, p2, q2 = w_n[1], w_n[3], w_2n[1], w_2n[3]
    if q1 == 0 or q2 == 0:
        return Dynamics(None, None, depth, "q_N = 0")
    num = p1 * q2 - p2 * q1
    if num == 0:
        return Dynamics(None, None, depth, "convergents at N and 2N are equal (terminating or rational)")
    log_err = log_abs_int(num) - log_abs_int(q1) - log_abs_int(q2)  # ln |p_N/q_N - L|
    rate = abs(log_err / depth)
    g = gmpy2.gcd(p1, q1)
    q_red = abs(q1 // g)
    if q_red <= 1:
        return Dynamics(None, round(rate, 5), depth, "reduced q_N = 1")
    delta = -(1.0 + log_err / log_abs_int(q_red))
    return Dynamics(round(delta, 5), round(rate, 5), depth)


def dynamics(
    a: sp.Expr | int,
    b: sp.Expr | int,
    depth: int = DEFAULT_DEPTH,
    *,
    deadline: Deadline = NO_DEADLINE,
    retries: int = 5,
) -> Dynamics:
    """delta and r of PCF(a, b) at ``depth`` with L from depth 2*depth (retry at depth + 100 on failure)."""
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    walk = Walk.of_pcf(a, b)
    last = None
    for attempt in range(retries + 1):
        d = depth + 100 * attempt
        w_n = matmul(walk.initial, walk_product(walk, 1, d, deadline))
        w_2n = matmul(w_n, walk_product(walk, d + 1, 2 * d, deadline))
        last = dynamics_from_products(w_n, w_2n, d)
        if last.delta is not None and math.isfinite(last.delta):
            return last
        if "terminating" in last.reason:
            return last
    assert last is not None
    return last


def dynamics_reference(a: sp.Expr | int, b: sp.Expr | int, depth: int) -> Dynamics:
    """The same quantities through ramanujantools 0.0.8 (``PCF.limit`` and ``Limit.delta``): slow reference.

    ramanujantools uses its own symbol ``n``; our ``N`` (an integer symbol) is substituted for it.
    """
    import mpmath as mp
    from ramanujantools.pcf import PCF
    from sympy.abc import n as rt_n

    from .formula import N

    pcf = PCF(sp.sympify(a).subs(N, rt_n), sp.sympify(b).subs(N, rt_n))
    lim_n, lim_2n = pcf.limit([depth, 2 * depth])
    p1, q1 = (int(x) for x in lim_n.as_rational().as_numer_denom())
    p2, q2 = (int(x) for x in lim_2n.as_rational().as_numer_denom())
    if q1 == 0 or q2 == 0:
        raise EvaluationError("q vanished")
    diff = abs(sp.Rational(p1, q1) - sp.Rational(p2, q2))
    if diff == 0:
        return Dynamics(None, None, depth, "equal convergents")
    with mp.workdps(int(-log_abs_int(diff.p) / math.log(10) + log_abs_int(diff.q) / math.log(10)) + 30):
        L = mp.mpf(p2) / q2
        delta = pcf.delta(depth, L)
        err = mp.fabs(mp.mpf(p1) / q1 - L)
        rate = abs(float(mp.log(err)) / depth)
    return Dynamics(round(float(delta), 5), round(rate, 5), depth)


__all__ = ["DEFAULT_DEPTH", "Dynamics", "dynamics", "dynamics_from_products", "dynamics_reference"]
