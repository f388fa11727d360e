"""The interchange types of the constants pipeline: what a reader produces and later stages consume.

A formula is either
- a :class:`Series`:  sum_{k >= start} term(k), with ``term`` a sympy expression in the symbol ``K``; or
- a :class:`ContinuedFraction`: a(0) + b(1)/(a(1) + b(2)/(a(2) + ...)), with ``a`` and ``b`` sympy
  expressions in the symbol ``N`` (a polynomial continued fraction, PCF, when both are polynomials).

A :class:`Reading` is one formula read out of one equation, with the value the equation states for it
(a sympy expression in ``pi`` or another constant), if it states one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import sympy as sp

K = sp.Symbol("k", integer=True)
N = sp.Symbol("n", integer=True)


@dataclass(frozen=True)
class Series:
    term: sp.Expr
    start: int = 0

    kind = "series"

    def __str__(self) -> str:
        return f"Sum({self.term}, (k, {self.start}, oo))"


@dataclass(frozen=True)
class ContinuedFraction:
    a: sp.Expr
    b: sp.Expr

    kind = "cf"

    def __str__(self) -> str:
        return f"PCF({self.a}, {self.b})"


Formula = Series | ContinuedFraction


@dataclass
class Reading:
    """One formula read from one equation, and the value the equation states for it (or None)."""

    formula: Formula
    stated_value: sp.Expr | None = None
    source: str = ""  # which back-end produced it ("latex", "llm", "sympy")
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
