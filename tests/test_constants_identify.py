"""Möbius identification by PSLQ with the ROI filter."""

from __future__ import annotations

import random

import mpmath as mp
import pytest
import sympy as sp

from recurrences.constants.identify import (
    apply_matrix,
    constant_name,
    identify_mobius,
    is_degenerate,
    mobius_from_expr,
    normalise,
    roi,
)


@pytest.mark.parametrize("m", [(1, 0, 0, 4), (0, 4, 1, 0), (9, 0, 3, -8), (3, 7, 5, -16), (-71, 5, 12, 33)])
def test_known_mobius_transforms_are_identified(m):
    with mp.workdps(80):
        x = (m[0] * mp.pi + m[1]) / (m[2] * mp.pi + m[3])
        ident = identify_mobius(x, 75)
    assert ident is not None and ident.mobius == normalise(m)
    assert ident.roi >= 2


@pytest.mark.parametrize("digits,count", [(30, 10), (60, 6), (120, 2)])
def test_random_numbers_are_not_identified(digits, count):
    rng = random.Random(digits)
    with mp.workdps(digits + 10):
        for _ in range(count):
            x = mp.mpf(rng.getrandbits(400)) / mp.mpf(2) ** 400 + rng.randint(-5, 5)
            assert identify_mobius(x, digits) is None


def test_low_precision_garbage_is_rejected_by_roi():
    # at 20 digits, a Möbius transform with large coefficients is indistinguishable from noise
    with mp.workdps(30):
        x = (12345 * mp.pi + 67891) / (23456 * mp.pi - 98765)
        assert identify_mobius(x, 20) is None
        assert identify_mobius(x, 28) is None or identify_mobius(x, 28).mobius == normalise(
            (12345, 67891, 23456, -98765)
        )


def test_roi_formula():
    assert roi([1, -4, 0, 0], 50) == pytest.approx(50 * 3.321928 / (2 + 1 + 3), rel=1e-5)


def test_rational_values_are_flagged():
    with mp.workdps(60):
        ident = identify_mobius(mp.mpf(22) / 7, 55)
    assert ident is not None and ident.rational and ident.mobius == (0, 22, 0, 7)


@pytest.mark.parametrize(
    "name,value",
    [
        ("e", lambda: 1 / (mp.e - 2)),
        ("zeta3", lambda: 2 * mp.zeta(3) + 1),
        ("catalan", lambda: mp.catalan / 3),
    ],
)
def test_other_constants(name, value):
    with mp.workdps(70):
        ident = identify_mobius(value(), 65, name)
        assert ident is not None and not ident.rational
        assert identify_mobius(value(), 65, "pi") is None


def test_mobius_from_expr_and_apply():
    assert mobius_from_expr(sp.pi / 4) == (1, 0, 0, 4)
    assert mobius_from_expr(sp.Rational(11, 84) - sp.pi / 24) == (-7, 22, 0, 168)
    assert mobius_from_expr(8 / (21 * sp.pi)) == (0, 8, 21, 0)
    assert mobius_from_expr(sp.pi**2) is None
    # Möbius([[1,0],[-1,1]], pi/4) = pi/(4 - pi)
    assert apply_matrix((1, 0, -1, 1), (1, 0, 0, 4)) == normalise((1, 0, -1, 4))
    assert is_degenerate((2, 4, 1, 2))
    with pytest.raises(ValueError, match="constant"):
        constant_name("tau")
