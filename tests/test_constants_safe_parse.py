"""The whitelisting parser: accepted grammar, formula constructors, hostile and oversized input."""

from __future__ import annotations

import time

import pytest
import sympy as sp

from recurrences.constants.formula import ContinuedFraction, K, N, Series
from recurrences.constants.safe_parse import SafeParseError, parse_expr, parse_sympy_text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("pi/4", sp.pi / 4),
        ("8/pi", 8 / sp.pi),
        ("2/(pi-2)", 2 / (sp.pi - 2)),
        ("-28/9 + pi", sp.pi - sp.Rational(28, 9)),
        ("(2*pi + 8)/pi", (2 * sp.pi + 8) / sp.pi),
        ("2^3^2", sp.Integer(512)),
        ("2**-1", sp.Rational(1, 2)),
        ("-3**2", sp.Integer(-9)),
        ("1.5*k", sp.Rational(3, 2) * K),
        ("factorial(n)**3", sp.factorial(N) ** 3),
        ("binomial(2*k, k)", sp.binomial(2 * K, K)),
        ("RisingFactorial(1/2, k)", sp.rf(sp.Rational(1, 2), K)),
        ("rf(1/4,n)*ff(n,2)", sp.rf(sp.Rational(1, 4), N) * sp.ff(N, 2)),
        ("sqrt(2)*E + catalan + zeta(3)", sp.sqrt(2) * sp.E + sp.Catalan + sp.zeta(3)),
        ("Rational(3, 4)", sp.Rational(3, 4)),
        ("3!", sp.Integer(6)),
    ],
)
def test_parse_expr_accepts_the_grammar(text, expected):
    assert sp.simplify(parse_expr(text) - expected) == 0


def test_parse_expr_symbols_override():
    z = sp.Symbol("zz")
    assert parse_expr("x + 1", symbols={"x": z}) == z + 1


def test_parse_sympy_text_series_and_pcf():
    s = parse_sympy_text("Sum((-1)**n/(2*n + 1), (n, 0, oo))")
    assert isinstance(s, Series) and s.start == 0
    assert sp.simplify(s.term - (-1) ** K / (2 * K + 1)) == 0
    s = parse_sympy_text("Sum(1/((4*k+1)*(4*k+3)), (k, 2, oo))")
    assert isinstance(s, Series) and s.start == 2
    c = parse_sympy_text("PCF(2*n + 1 , n**2)")
    assert isinstance(c, ContinuedFraction)
    assert c.a == 2 * N + 1 and c.b == N**2
    c = parse_sympy_text("PCF(3*m + 1, m*(2 - m))")  # another variable is renamed to n
    assert sp.expand(c.b - N * (2 - N)) == 0
    v = parse_sympy_text("(75*pi + 256)/(256 - 75*pi)")
    assert isinstance(v, sp.Expr) and v.has(sp.pi)


@pytest.mark.parametrize(
    "text",
    [
        "__import__('os').system('echo hacked')",
        "__import__(os)",
        "os.system",
        "eval(1)",
        "lambda: 1",
        "[x for x in ()]",
        "getattr(pi, 'evalf')",
        "Symbol('x')",
        "pi.evalf()",
        "1; 2",
        "a = 1",
        "'pi'",
        "",
        "(1, 2)",
        "Sum(k, k)",
        "PCF(1, 2) + 1",
    ],
)
def test_hostile_or_malformed_text_is_refused(text):
    with pytest.raises(SafeParseError):
        parse_sympy_text(text)


def test_refusal_names_the_offender():
    with pytest.raises(SafeParseError, match="__import__"):
        parse_expr("__import__(os)")
    with pytest.raises(SafeParseError, match="unknown name 'foo'"):
        parse_expr("foo + 1")


@pytest.mark.parametrize(
    "text",
    [
        "9**9**9**9",
        "10**100000",
        "2**(10**9)",
        "factorial(10**7)",
        "binomial(10**9, 5)",
        "k**100000",
        "(" * 500 + "1" + ")" * 500,
        "-" * 1000 + "1",
        "1" * 1000,
        "1+" * 20000 + "1",
    ],
)
def test_size_limits_refuse_quickly(text):
    t = time.perf_counter()
    with pytest.raises(SafeParseError):
        parse_expr(text)
    assert time.perf_counter() - t < 2.0


def test_non_string_is_refused():
    with pytest.raises(SafeParseError, match="expected a string"):
        parse_expr(42)  # type: ignore[arg-type]
