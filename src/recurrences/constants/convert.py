"""Convert a series to a polynomial continued fraction by Euler's rule (spec §1 step 6).

For S = sum_{k >= start} t(k), shift to start 0 and write the term ratio t(n+1)/t(n) = P(n)/Q(n) with
integer polynomials. The partial sums S_n = t(0) + ... + t(n) satisfy
S_{n+1} = (1 + r(n)) S_n - r(n) S_{n-1}; multiplied through by Q this is the PCF

    a(n) = P(n) + Q(n),     b(n) = -P(n) Q(n-1),

with initial-conditions matrix I = [[s0, q0 (s0 + s1)], [1, q0]] (s0 = t(0), s1 = t(1), q0 = Q(0)):
the last column of I . M(1) ... M(N) is proportional to (S_{N+1}, 1). So L_series = Möbius(I A^-1, L_PCF)
and L_PCF = Möbius(A I^-1, L_series) with A = [[1, a(0)], [0, 1]].

The ratio P/Q is found by an exact rational fit to the first values of t (a nullspace over the integers,
python-flint), which works for every hypergeometric term whatever form sympy gives it (factorials,
binomials, RisingFactorial, powers), and is checked on further values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import flint
import sympy as sp

from .formula import ContinuedFraction, K, N, Series


class ConversionError(ValueError):
    """The series cannot be converted (term ratio not rational, zero terms, ...)."""


class _NotExact(Exception):
    pass


def _eval_exact(expr: sp.Basic, var: sp.Symbol, k: int) -> Fraction:
    """The exact rational value of ``expr`` at var = k for the usual hypergeometric building blocks
    (much faster than ``subs``); raises _NotExact for anything else."""
    if expr is var:
        return Fraction(k)
    if expr.is_Rational:
        return Fraction(int(expr.p), int(expr.q))
    if expr.is_Add:
        return sum((_eval_exact(x, var, k) for x in expr.args), Fraction(0))
    if expr.is_Mul:
        out = Fraction(1)
        for x in expr.args:
            out *= _eval_exact(x, var, k)
        return out
    if expr.is_Pow:
        base, ex = expr.args
        e = _eval_exact(ex, var, k)
        if e.denominator != 1:
            raise _NotExact
        b = _eval_exact(base, var, k)
        if b == 0 and e < 0:
            raise ZeroDivisionError("0 to a negative power")
        if abs(e) > 100_000:
            raise _NotExact
        return b ** int(e)
    name = type(expr).__name__
    args = [_eval_exact(x, var, k) for x in expr.args]
    if name == "factorial" and args[0].denominator == 1 and args[0] >= 0:
        return Fraction(math.factorial(int(args[0])))
    if name == "factorial2" and args[0].denominator == 1 and args[0] >= -1:
        m, out = int(args[0]), 1
        while m > 1:
            out *= m
            m -= 2
        return Fraction(out)
    if name in ("RisingFactorial", "FallingFactorial") and args[1].denominator == 1 and args[1] >= 0:
        x, m = args[0], int(args[1])
        out = Fraction(1)
        for i in range(m):
            out *= x + i if name == "RisingFactorial" else x - i
        return out
    if name == "binomial" and args[1].denominator == 1:
        x, m = args[0], int(args[1])
        if m < 0:
            return Fraction(0)
        out = Fraction(1)
        for i in range(m):
            out = out * (x - i) / (i + 1)
        return out
    raise _NotExact


def _term_values(term: sp.Expr, var: sp.Symbol, start: int, count: int) -> list[Fraction]:
    out = []
    for i in range(start, start + count):
        try:
            out.append(_eval_exact(term, var, i))
            continue
        except _NotExact:
            pass
        except ZeroDivisionError as exc:
            raise ConversionError(f"term({i}) is undefined ({exc})") from exc
        v = term.subs(var, i)
        if not v.is_Rational:
            v = sp.nsimplify(sp.simplify(v)) if v.is_number else v
        if not (isinstance(v, sp.Basic) and v.is_Rational):
            raise ConversionError(f"term({i}) = {v} is not rational")
        out.append(Fraction(int(v.p), int(v.q)))
    return out


def fit_ratio(values: list[Fraction], max_degree: int = 14) -> tuple[list[int], list[int]]:
    """Find integer polynomials P, Q (lowest degree first) with values[n+1] * Q(n) = values[n] * P(n).

    Tries degrees 0..max_degree for both, using 2d+2 equations plus 8 checks; raises ConversionError
    when no rational function of degree <= max_degree fits.
    """
    if any(v == 0 for v in values[:-1]):
        raise ConversionError("a term vanishes inside the fitting window")
    ratios = [values[i + 1] / values[i] for i in range(len(values) - 1)]
    for d in range(max_degree + 1):
        n_eq = 2 * d + 2 + 8
        if n_eq > len(ratios):
            break
        rows = []
        for n in range(n_eq):
            r = ratios[n]
            powers = [n**j for j in range(d + 1)]
            # r(n) = P(n)/Q(n)  <=>  r.den * P(n) - r.num * Q(n) = 0
            rows.append([r.denominator * p for p in powers] + [-r.numerator * p for p in powers])
        mat = flint.fmpz_mat(rows)
        basis, nullity = mat.nullspace()
        if nullity == 0:
            continue
        if nullity > 1:
            continue  # P and Q share a common factor at this degree; a lower degree would have fitted
        vec = [int(basis[i, 0]) for i in range(2 * (d + 1))]
        g = 0
        for x in vec:
            g = math.gcd(g, x)
        vec = [x // g for x in vec]
        p, q = vec[: d + 1], vec[d + 1 :]
        if not any(q):
            continue
        while len(q) > 1 and q[-1] == 0:
            q.pop()
        if q[-1] < 0:
            p, q = [-x for x in p], [-x for x in q]
        while len(p) > 1 and p[-1] == 0:
            p.pop()
        return p, q
    raise ConversionError(f"term ratio is not a rational function of degree <= {max_degree}")


def _poly(coeffs: list[int], var: sp.Symbol) -> sp.Expr:
    return sp.Add(*[c * var**j for j, c in enumerate(coeffs)])


@dataclass
class EulerPCF:
    """The Euler continued fraction of a series, with the bookkeeping to map limits both ways."""

    a: sp.Expr  # a(n) = P(n) + Q(n), integer polynomial in N
    b: sp.Expr  # b(n) = -P(n) Q(n-1)
    initial: tuple[sp.Rational, sp.Rational, sp.Rational, sp.Rational]  # I = [[s0, q0(s0+s1)], [1, q0]]
    P: sp.Expr
    Q: sp.Expr
    start: int  # the series index that became n = 0

    @property
    def pcf(self) -> ContinuedFraction:
        return ContinuedFraction(self.a, self.b)

    def initial_integer(self) -> tuple[int, int, int, int]:
        """I scaled to integers (the walk is projective)."""
        den = sp.ilcm(*[sp.Rational(x).q for x in self.initial])
        return tuple(int(sp.Rational(x) * den) for x in self.initial)

    def series_to_pcf_matrix(self) -> sp.Matrix:
        """The matrix A I^-1 with L_PCF = Möbius(A I^-1, L_series)."""
        a0 = self.a.subs(N, 0)
        A = sp.Matrix([[1, a0], [0, 1]])
        s00, s01, s10, s11 = self.initial
        inv = sp.Matrix([[s11, -s01], [-s10, s00]])  # I^-1 up to the determinant (projective)
        return A * inv

    def pcf_limit(self, series_limit: sp.Expr) -> sp.Expr:
        """L_PCF = Möbius(A I^-1, L_series)."""
        m = self.series_to_pcf_matrix()
        return sp.simplify((m[0, 0] * series_limit + m[0, 1]) / (m[1, 0] * series_limit + m[1, 1]))


def term_ratio(series: Series, *, window: int = 48) -> tuple[list[int], list[int], int]:
    """(P, Q, start) for the series: t(start+n+1)/t(start+n) = P(n)/Q(n); leading zero terms skipped."""
    term = sp.sympify(series.term)
    free = term.free_symbols - {K}
    if free:
        # one free symbol other than K: treat it as the summation variable (upstream renames it)
        if len(free) == 1 and K not in term.free_symbols:
            term = term.subs(next(iter(free)), K)
        else:
            raise ConversionError(f"series term has free symbols {sorted(map(str, free))} besides k")
    start = int(series.start)
    for _bump in range(6):
        vals = _term_values(term, K, start, window)
        if vals[0] != 0:
            break
        start += 1
    else:
        raise ConversionError("the first terms of the series vanish")
    p, q = fit_ratio(vals)
    # check the fit further out
    more = _term_values(term, K, start + window, 4)
    seq = vals + more
    for n in range(len(vals) - 1, len(seq) - 1):
        pn = sum(c * n**j for j, c in enumerate(p))
        qn = sum(c * n**j for j, c in enumerate(q))
        if seq[n] * pn != seq[n + 1] * qn:
            raise ConversionError("term ratio is not rational (the fit fails beyond its window)")
    return p, q, start


def series_to_pcf(series: Series) -> EulerPCF:
    """Euler's conversion: the PCF whose convergents are the partial sums (spec §1 step 6)."""
    if not isinstance(series, Series):
        raise TypeError(f"series must be a Series, got {type(series).__name__}")
    p, q, start = term_ratio(series)
    P, Q = _poly(p, N), _poly(q, N)
    a = sp.expand(P + Q)
    b = sp.expand(-P * Q.subs(N, N - 1))
    if b == 0:
        raise ConversionError("b(n) = 0: the series terminates")
    term = sp.sympify(series.term)
    free = term.free_symbols - {K}
    if free and K not in term.free_symbols:
        term = term.subs(next(iter(free)), K)
    v0, v1 = _term_values(term, K, start, 2)
    s0, s1 = sp.Rational(v0.numerator, v0.denominator), sp.Rational(v1.numerator, v1.denominator)
    q0 = sp.Integer(q[0])
    if q0 == 0:
        raise ConversionError("Q(0) = 0: the term ratio has a pole at the start")
    initial = (s0, q0 * (s0 + s1), sp.Integer(1), q0)
    return EulerPCF(a, b, initial, P, Q, start)


__all__ = ["ConversionError", "EulerPCF", "fit_ratio", "series_to_pcf", "term_ratio"]
