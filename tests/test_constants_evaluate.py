"""Exact evaluation: the product tree equals the sequential recurrence; values reach verified digits."""

from __future__ import annotations

import mpmath as mp
import pytest
import sympy as sp

from recurrences.constants.evaluate import (
    BudgetExceeded,
    Deadline,
    EvaluationError,
    RatFunc,
    Walk,
    convergents,
    evaluate_formula,
    evaluate_walk,
    matmul,
    walk_product,
)
from recurrences.constants.formula import ContinuedFraction, K, N, Series


def _sequential_pq(a, b, depth):
    """Reference: p_n = a(n) p_{n-1} + b(n) p_{n-2} with Fractions, p_{-1}=1, p_0=a(0), q_{-1}=0, q_0=1."""
    from fractions import Fraction

    fa = lambda n: Fraction(str(sp.sympify(a).subs(N, n)))  # noqa: E731
    fb = lambda n: Fraction(str(sp.sympify(b).subs(N, n)))  # noqa: E731
    p_prev, p = Fraction(1), fa(0)
    q_prev, q = Fraction(0), Fraction(1)
    for n in range(1, depth + 1):
        p_prev, p = p, fa(n) * p + fb(n) * p_prev
        q_prev, q = q, fa(n) * q + fb(n) * q_prev
    return p / q


@pytest.mark.parametrize("depth", [1, 7, 63, 100])
@pytest.mark.parametrize(
    "a,b",
    [(2, N**2), (3 * N + 1, -2 * N**2 + N), (N + sp.Rational(1, 2), N**2 / 3), ((N + 1) / (N + 2), 2 * N)],
)
def test_product_tree_equals_sequential(a, b, depth):
    w = Walk.of_pcf(a, b)
    prod = matmul(w.initial, walk_product(w, 1, depth))
    seq = convergents(w, depth)[-1]
    assert prod[1] * seq[1] == prod[3] * seq[0]  # same ratio
    from fractions import Fraction

    assert Fraction(int(prod[1]), int(prod[3])) == _sequential_pq(a, b, depth)


def test_values_of_classic_formulas():
    cases = [
        (ContinuedFraction(3 * N + 1, -2 * N**2 + N), lambda: 2 / mp.pi),  # exponential convergence
        (ContinuedFraction(sp.Integer(2), (2 * N - 1) ** 2), lambda: 1 + 4 / mp.pi),  # Brouncker (a(0) = 2)
        (Series((-1) ** K / (2 * K + 1)), lambda: mp.pi / 4),  # Leibniz: Richardson
        (Series(2**K * sp.factorial(K) ** 2 / sp.factorial(2 * K + 1)), lambda: mp.pi / 2),
        (Series(1 / K**2, 1), lambda: mp.pi**2 / 6),  # monotone 1/n convergence
    ]
    for f, expected in cases:
        ev = evaluate_formula(f, 50)
        assert ev.digits >= 50, (f, ev)
        with mp.workdps(60):
            assert abs(ev.value - expected()) < mp.mpf(10) ** (-48), f


def test_verified_digits_are_honest():
    # the half-integer expansion of Bauer's series needs gamma = 1/2; whatever is claimed must hold
    f = Series((-1) ** K * (4 * K + 1) * sp.binomial(2 * K, K) ** 3 / 64**K)
    ev = evaluate_formula(f, 30)
    with mp.workdps(80):
        err = abs(ev.value - 2 / mp.pi)
        assert err < mp.mpf(10) ** (-(min(ev.digits, 70) - 1))


def test_terminating_continued_fraction():
    ev = evaluate_walk(Walk.of_pcf(1, 1 - N), 20)  # b(1) = 0: the value is a(0) = 1
    assert ev.method == "terminating" and ev.value == 1


def test_deadline():
    w = Walk.of_pcf(2, N**2)
    with pytest.raises(BudgetExceeded):
        evaluate_walk(w, 20000, deadline=Deadline(0.05))


def test_bad_input():
    with pytest.raises(EvaluationError, match="b\\(n\\)"):
        Walk.of_pcf(1, 0)
    with pytest.raises(EvaluationError, match="not a rational function"):
        RatFunc.from_expr(sp.factorial(N), N, name="a(n)")
    with pytest.raises(EvaluationError, match="free symbols"):
        RatFunc.from_expr(N + sp.Symbol("z"), N, name="a(n)")
    with pytest.raises(ValueError, match="digits"):
        evaluate_walk(Walk.of_pcf(1, 1), 0)
