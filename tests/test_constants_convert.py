"""Euler's series -> PCF conversion: the worked examples of the spec and the limit transfer."""

from __future__ import annotations

import mpmath as mp
import pytest
import sympy as sp

from recurrences.constants.convert import ConversionError, fit_ratio, series_to_pcf
from recurrences.constants.evaluate import evaluate_formula
from recurrences.constants.formula import ContinuedFraction, K, N, Series


@pytest.mark.parametrize(
    "term,series_value,a,b,pcf_value",
    [
        ((-1) ** K / (2 * K + 1), sp.pi / 4, 2, (2 * N + 1) ** 2, sp.pi / (4 - sp.pi)),
        (
            2**K * sp.factorial(K) ** 2 / sp.factorial(2 * K + 1),
            sp.pi / 2,
            3 * N + 4,
            -(2 * N + 1) * (N + 1),
            sp.pi / (sp.pi - 2),
        ),
        (
            1 / ((4 * K + 1) * (4 * K + 3)),
            sp.pi / 8,
            32 * N**2 + 64 * N + 38,
            -((4 * N + 1) ** 2) * (4 * N + 3) ** 2,
            9 * sp.pi / (3 * sp.pi - 8),
        ),
    ],
)
def test_worked_conversions(term, series_value, a, b, pcf_value):
    conv = series_to_pcf(Series(term))
    assert sp.expand(conv.a - a) == 0
    assert sp.expand(conv.b - b) == 0
    assert sp.simplify(conv.pcf_limit(series_value) - pcf_value) == 0
    # and the PCF itself evaluates to that value
    ev = evaluate_formula(ContinuedFraction(conv.a, conv.b), 30)
    with mp.workdps(40):
        assert abs(ev.value - mp.mpf(str(sp.N(pcf_value, 40)))) < mp.mpf(10) ** -28


def test_partial_sums_are_the_convergents():
    from fractions import Fraction

    from recurrences.constants.evaluate import Walk, convergents

    term = (3 * K + 1) / ((K + 2) * 5**K)
    conv = series_to_pcf(Series(term, 1))
    w = Walk.of_pcf(conv.a, conv.b, initial=conv.initial_integer())
    seq = convergents(w, 6)
    partial = Fraction(0)
    for k in range(1, 9):
        partial += Fraction(str(term.subs(K, k)))
        if k >= 3:
            p, q = seq[k - 3]
            assert Fraction(int(p), int(q)) == partial


def test_leading_zero_terms_are_skipped():
    conv = series_to_pcf(Series(K * (K - 1) / 3**K, 0))  # t(0) = t(1) = 0
    assert conv.start == 2


def test_fit_ratio_finds_rational_ratio():
    from fractions import Fraction

    vals = [Fraction(1, (2 * k + 1) * 4**k) for k in range(40)]
    p, q = fit_ratio(vals)
    for n in range(10):
        pn = sum(c * n**j for j, c in enumerate(p))
        qn = sum(c * n**j for j, c in enumerate(q))
        assert vals[n + 1] * qn == vals[n] * pn


def test_non_hypergeometric_terms_are_refused():
    with pytest.raises(ConversionError):
        series_to_pcf(Series(sp.harmonic(K) / 2**K, 1))
    with pytest.raises(TypeError, match="Series"):
        series_to_pcf(ContinuedFraction(N, N))
