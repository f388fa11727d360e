"""delta and r from the product tree equal ramanujantools' reference at the same depth."""

from __future__ import annotations

import pytest

from recurrences.constants.dynamics import dynamics, dynamics_reference
from recurrences.constants.formula import N


@pytest.mark.parametrize(
    "a,b", [(2, N**2), (3 * N + 1, -2 * N**2 + N), (2 * N + 1, N**2), (5 * N**2 + 3 * N + 1, -(N**4))]
)
@pytest.mark.parametrize("depth", [7, 63])
def test_fast_equals_reference(a, b, depth):
    fast = dynamics(a, b, depth)
    ref = dynamics_reference(a, b, depth)
    assert fast.delta == pytest.approx(ref.delta, abs=2e-5)
    assert fast.rate == pytest.approx(ref.rate, abs=2e-5)


def test_known_clusters():
    assert dynamics(2, N**2, 400).delta == pytest.approx(-1.0, abs=0.05)  # Brouncker type
    assert dynamics(3 * N + 1, -2 * N**2 + N, 400).delta == pytest.approx(-0.65, abs=0.03)
    assert dynamics(2, N**2, 400).rate < 0.05  # sub-exponential


def test_rate_is_stable_in_depth():
    # r is an exponential rate per step: it hardly moves between depth N and 2N
    d1 = dynamics(3 * N + 1, -2 * N**2 + N, 300)
    d2 = dynamics(3 * N + 1, -2 * N**2 + N, 600)
    assert abs(d2.rate - d1.rate) < 0.05


def test_terminating_and_bad_depth():
    d = dynamics(1, 1 - N, 50)
    assert d.delta is None and d.reason
    with pytest.raises(ValueError, match="depth"):
        dynamics(2, N**2, 0)
