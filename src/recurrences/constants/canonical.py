"""Canonical form of a polynomial continued fraction (spec §1 step 7 and §6 item 4).

An *inflation* by a rational function c(n) maps PCF(a, b) to PCF(c(n) a(n), c(n) c(n-1) b(n)); every
tail T_k = a(k) + b(k+1)/(a(k+1) + ...) becomes c(k) T_k, so the value is multiplied by c(0). The canonical
form of PCF(a, b) is

1. inflate to integer polynomials: c = lcm of the denominators of a and b;
2. deflate fully: divide by the largest polynomial d(n) with d | a and d(n) d(n-1) | b (its integer part
   the largest k with k | a and k^2 | b; its polynomial part factor by factor: f can go if f | a, f | b
   and f(n-1) | b). Factors with f(0) = 0 are kept, so that the value map stays invertible;
3. fix the sign: the leading coefficient of a is made positive (an inflation by -1).

The cumulative transform is recorded as an integer matrix T with L_canonical = Möbius(T, L_original),
i.e. T = diag(c(0)/d(0) * sign, 1) up to scale, so a value maps back exactly.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from fractions import Fraction

import sympy as sp

from .evaluate import EvaluationError, RatFunc
from .formula import ContinuedFraction, N


class CanonicalError(ValueError):
    """The continued fraction has no canonical PCF form (poles at non-negative n, b = 0, ...)."""


def _poly_expr(coeffs: tuple[int, ...] | list[int]) -> sp.Expr:
    return sp.Add(*[int(c) * N**j for j, c in enumerate(coeffs)])


def _zz(coeffs: tuple[int, ...] | list[int]) -> sp.Poly:
    return sp.Poly(list(reversed([int(c) for c in coeffs])) or [0], N, domain="ZZ")


def _as_poly(expr: sp.Expr | sp.Poly) -> sp.Poly:
    if isinstance(expr, sp.Poly):
        return expr
    return sp.Poly(sp.expand(expr), N, domain="ZZ")


def _factor_dict(p: sp.Poly) -> tuple[int, dict[sp.Poly, int]]:
    content, factors = p.factor_list()
    return int(content), {f: int(m) for f, m in factors}


def _square_part(g: int) -> int:
    k = 1
    for prime, e in sp.factorint(abs(g)).items():
        k *= prime ** (e // 2)
    return k


def deflation_content(a: sp.Expr | sp.Poly, b: sp.Expr | sp.Poly) -> sp.Expr:
    """The largest d(n) with d | a, d(n) d(n-1) | b (integer polynomials a, b; factors with f(0)=0 kept)."""
    return _deflation_poly(_as_poly(a), _as_poly(b)).as_expr()


def _deflation_poly(a: sp.Poly, b: sp.Poly) -> sp.Poly:
    if b.is_zero:
        raise CanonicalError("b(n) is identically zero")
    one = sp.Poly(1, N, domain="ZZ")
    if a.is_zero:
        cb, _ = _factor_dict(b)
        return one * _square_part(cb)
    ca, fa = _factor_dict(a)
    cb, fb = _factor_dict(b)
    d = one * _square_part(math.gcd(ca * ca, cb))
    for f in list(fa):
        if f.degree() > 0 and f.eval(0) == 0:
            continue
        fm1 = f.shift(-1)
        while fa.get(f, 0) > 0 and fb.get(f, 0) > 0 and fb.get(fm1, 0) > 0:
            fa[f] -= 1
            fb[f] -= 1
            fb[fm1] -= 1
            d = d * f
    return d


@dataclass(frozen=True)
class CanonicalPCF:
    """A canonical PCF, integer coefficients lowest degree first, and the value map from the original."""

    a: tuple[int, ...]
    b: tuple[int, ...]
    transform: tuple[int, int, int, int] = (1, 0, 0, 1)  # L_canonical = Möbius(T, L_original)
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def a_expr(self) -> sp.Expr:
        return _poly_expr(self.a)

    @property
    def b_expr(self) -> sp.Expr:
        return _poly_expr(self.b)

    @property
    def key(self) -> str:
        return json.dumps([list(self.a), list(self.b)], separators=(",", ":"))

    @property
    def degrees(self) -> tuple[int, int]:
        return (len(self.a) - 1 if any(self.a) else -1, len(self.b) - 1)

    @property
    def formula(self) -> ContinuedFraction:
        return ContinuedFraction(self.a_expr, self.b_expr)

    def __str__(self) -> str:
        return f"PCF({self.a_expr}, {self.b_expr})"

    def map_value(self, value):
        """L_canonical from L_original (numbers or sympy expressions)."""
        t00, t01, t10, t11 = self.transform
        return (t00 * value + t01) / (t10 * value + t11)

    def unmap_value(self, value):
        """L_original from L_canonical (inverse Möbius)."""
        t00, t01, t10, t11 = self.transform
        return (t11 * value - t01) / (-t10 * value + t00)


def canonical_form(
    a: sp.Expr | int, b: sp.Expr | int, *, deflate: bool = True, fix_sign: bool = True
) -> CanonicalPCF:
    """The canonical form of PCF(a, b) with the transform that maps its value (see module docstring)."""
    try:
        ra = RatFunc.from_expr(a, N, name="a(n)")
        rb = RatFunc.from_expr(b, N, name="b(n)")
    except EvaluationError as exc:
        raise CanonicalError(str(exc)) from exc
    if not any(rb.num):
        raise CanonicalError("b(n) is identically zero")
    notes = []
    pa, qa, pb, qb = _zz(ra.num), _zz(ra.den), _zz(rb.num), _zz(rb.den)
    c = qa.lcm(qb)
    if c.LC() < 0:
        c = -c
    # poles at n >= 0 make the inflation (and the continued fraction) ill defined
    if c.degree() > 0:
        for r in c.ground_roots():
            if r.is_integer and r >= 0:
                raise CanonicalError(f"a(n) or b(n) has a pole at n = {r}")
    scale = Fraction(int(c.eval(0)))
    a1 = (c * pa).exquo(qa)
    b1 = (c * c.shift(-1) * pb).exquo(qb)
    if c.degree() > 0 or c.LC() != 1:
        notes.append(f"inflated by {c.as_expr()}")
    if deflate:
        d = _deflation_poly(a1, b1)
        if d.degree() > 0 or d.LC() != 1:
            a1 = a1.exquo(d)
            b1 = b1.exquo(d * d.shift(-1))
            scale /= Fraction(int(d.eval(0)))
            notes.append(f"deflated by {d.as_expr()}")
    ac = tuple(int(x) for x in reversed(a1.all_coeffs())) if not a1.is_zero else (0,)
    bc = tuple(int(x) for x in reversed(b1.all_coeffs()))
    if fix_sign:
        lead = next((x for x in reversed(ac) if x != 0), 0)
        if lead < 0:
            ac = tuple(-x for x in ac)
            scale = -scale
            notes.append("sign flipped")
    t = (scale.numerator, 0, 0, scale.denominator)
    return CanonicalPCF(ac, bc, t, tuple(notes))


def canonical_of(formula: ContinuedFraction) -> CanonicalPCF:
    if not isinstance(formula, ContinuedFraction):
        raise TypeError(f"formula must be a ContinuedFraction, got {type(formula).__name__}")
    return canonical_form(formula.a, formula.b)


__all__ = ["CanonicalError", "CanonicalPCF", "canonical_form", "canonical_of", "deflation_content"]
