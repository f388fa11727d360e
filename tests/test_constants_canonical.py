"""Canonical PCF forms: invariant under inflation, with the value mapped back exactly."""

from __future__ import annotations

from fractions import Fraction

import mpmath as mp
import pytest
import sympy as sp

from recurrences.constants.canonical import CanonicalError, canonical_form, deflation_content
from recurrences.constants.evaluate import Walk, matmul, pcf_value, walk_product
from recurrences.constants.formula import N

BASE = [
    (2, N**2),
    (3 * N + 1, -2 * N**2 + N),
    (32 * N**2 + 64 * N + 38, -((4 * N + 1) ** 2) * (4 * N + 3) ** 2),
]


def _convergent(a, b, depth):
    w = Walk.of_pcf(a, b)
    m = matmul(w.initial, walk_product(w, 1, depth))
    return Fraction(int(m[1]), int(m[3]))


def _inflate(a, b, c):
    return sp.expand(c * a), sp.expand(c * c.subs(N, N - 1) * b)


@pytest.mark.parametrize("a,b", BASE)
def test_canonical_form_invariant_under_inflation(a, b):
    ref = canonical_form(a, b)
    for c in [
        sp.Integer(-3),
        2 * N + 1,
        sp.Integer(6) * (N + 2),
        -(N + 1) * (3 * N + 5),
        sp.Rational(1, 2) * (N + 3),
    ]:
        ai, bi = _inflate(a, b, c)
        can = canonical_form(ai, bi)
        assert (can.a, can.b) == (ref.a, ref.b), c
        # the value maps back exactly, already at every finite depth:
        # Möbius(T, p'_n/q'_n) = p_n/q_n of the canonical form = Möbius(T_ref, p_n/q_n of the original)
        for depth in (5, 30):
            v_inf, v_orig, v_can = (
                _convergent(ai, bi, depth),
                _convergent(a, b, depth),
                _convergent(can.a_expr, can.b_expr, depth),
            )
            assert can.map_value(v_inf) == v_can == ref.map_value(v_orig)
            assert can.unmap_value(v_can) == v_inf


def test_rational_function_inputs_are_inflated():
    can = canonical_form(N / 2 + 1, N**2 / (N + 1) / N)  # b = n/(n+1): inflate by 2(n+1)
    assert all(isinstance(x, int) for x in can.a + can.b)
    with mp.workdps(40):
        v = pcf_value(N / 2 + 1, N / (N + 1), 25).value
        w = pcf_value(can.a_expr, can.b_expr, 25).value
        assert abs(can.map_value(v) - w) < mp.mpf(10) ** -20


def test_sign_normalised():
    can = canonical_form(-(3 * N + 1), -2 * N**2 + N)
    assert can.a[-1] > 0 and can.transform[0] * can.transform[3] < 0


def test_matches_ramanujantools_deflate_all():
    from ramanujantools.pcf import PCF
    from sympy.abc import n

    for a, b in [(6 * N + 8, -4 * (N + 1) * (2 * N + 1)), (12, 36 * N**2)]:
        ours = canonical_form(a, b, fix_sign=False)
        theirs = PCF(sp.sympify(a).subs(N, n), sp.sympify(b).subs(N, n)).deflate_all()
        assert sp.expand(ours.a_expr.subs(N, n) - theirs.a_n) == 0
        assert sp.expand(ours.b_expr.subs(N, n) - theirs.b_n) == 0


def test_content_and_errors():
    assert deflation_content(4 * N + 2, 4 * (2 * N + 1) * (2 * N - 1)) == 4 * N + 2
    with pytest.raises(CanonicalError, match="pole"):
        canonical_form(1 / (N - 3), N)
    with pytest.raises(CanonicalError, match="zero"):
        canonical_form(N, 0)
