"""The offline LaTeX reader: each construct on small snippets, stated values, macros, malformed input."""

from __future__ import annotations

import time

import mpmath as mp
import pytest
import sympy as sp

from recurrences.constants.formula import ContinuedFraction, K, N, Series
from recurrences.constants.latex import LatexReadError, read_latex, tokenize_latex
from recurrences.constants.macros import Macro, parse_macro_definitions

R = sp.Rational


def series_value(s: Series, dps: int = 30) -> mp.mpf:
    f = sp.lambdify(K, s.term, modules="mpmath")
    with mp.workdps(dps):
        return mp.nsum(lambda k: f(int(k)), [s.start, mp.inf])


def cf_value(c: ContinuedFraction, depth: int = 4000) -> mp.mpf:
    a = sp.lambdify(N, c.a, modules="mpmath")
    b = sp.lambdify(N, c.b, modules="mpmath")
    with mp.workdps(30):
        x = mp.mpf(a(depth))
        for n in range(depth, 0, -1):
            x = a(n - 1) + b(n) / x
        return x


def gap(value_fn, formula, stated, **kw) -> float:
    with mp.workdps(30):
        return float(abs(value_fn(formula, **kw) - mp.mpf(sp.N(stated, 35))))


def one(latex: str, **kw):
    rs = read_latex(latex, **kw)
    assert rs, f"no reading of {latex!r}"
    return rs[0]


def same(a, b) -> bool:
    return sp.simplify(sp.expand_func(a - b)) == 0


# ---------------------------------------------------------------------------------------------- series
@pytest.mark.parametrize(
    ("latex", "term", "start"),
    [
        (r"\sum_{k=0}^\infty \frac{(-1)^k}{2k+1} = \frac{\pi}{4}", (-1) ** K / (2 * K + 1), 0),
        (r"\sum_{n\geq 1} \dfrac{1}{n^2} = \frac{\pi^2}{6}", 1 / K**2, 1),
        (r"\sum_{n\ge1}\tfrac{1}{n(n+1)}", 1 / (K * (K + 1)), 1),
        (r"\sum_{n>0}\frac{1}{2^n}", R(1, 2) ** K, 1),
        (r"\sum\limits_{k = 0}^{+\infty} \frac{k!}{(2k+1)!!}", sp.factorial(K) / sp.factorial2(2 * K + 1), 0),
        (
            r"\sum_{k=0}^{\infty}\binom{2k}{k}\frac{1}{16^k(2k+1)}",
            sp.binomial(2 * K, K) / (16**K * (2 * K + 1)),
            0,
        ),
        (
            r"\sum_{n = 0}^\infty {{2n \choose n}^3 \over 2^{8n}} ( 6n + 1 )",
            sp.binomial(2 * K, K) ** 3 * (6 * K + 1) / 2 ** (8 * K),
            0,
        ),
        (
            r"\sum_{n=0}^\infty \frac{(\frac12)_n^3}{n!^3}(42n+5)\frac1{64^n}",
            sp.rf(R(1, 2), K) ** 3 * (42 * K + 5) / (sp.factorial(K) ** 3 * 64**K),
            0,
        ),
        (
            r"\sum_{k=0}^\infty \frac{( \frac{1}{2} ) ^3_k}{k!^3}",
            sp.rf(R(1, 2), K) ** 3 / sp.factorial(K) ** 3,
            0,
        ),
        (r"\sum_{k=0}^\infty \left( \frac{1}{4} \right)^k \cdot (k+1) \times 3", 3 * (K + 1) / 4**K, 0),
        (r"\sum_{k=0}^\infty \frac{2^321^2}{(k+1)^24096^k}", 3528 / ((K + 1) ** 2 * 4096**K), 0),
        (
            r"\sum_{k=0}^\infty\frac{(4k)!}{k!^4} 2^{-12k}",
            sp.factorial(4 * K) / sp.factorial(K) ** 4 / 2 ** (12 * K),
            0,
        ),
        (
            r"\sum_{k=0}^\infty \binom{4k}{k,k,k,k}\frac{1}{2^{12k}}",
            sp.factorial(4 * K) / sp.factorial(K) ** 4 / 2 ** (12 * K),
            0,
        ),
        (
            r"\sum_{k = 0}^\infty ( 25k - 3 ) / ( 2^k\binom{3k}k )",
            (25 * K - 3) / (2**K * sp.binomial(3 * K, K)),
            0,
        ),
        (r"\sum_{\nu = 0}^\infty\frac{ ( - 1 ) ^\nu}{2\nu + 1}", (-1) ** K / (2 * K + 1), 0),
        (
            r"\sum_{j=0}^\infty [ \begin{matrix} \frac12, 1 \\ \frac32, 2 \end{matrix} ]_j \frac{1}{4^j}",
            sp.rf(R(1, 2), K) * sp.rf(1, K) / (sp.rf(R(3, 2), K) * sp.rf(2, K) * 4**K),
            0,
        ),
        (
            r"\sum_{n=1}^\infty \frac{1}{(2n-1)^2(2n+1)^2 \cdots (2n+5)^2}",
            1 / ((2 * K - 1) * (2 * K + 1) * (2 * K + 3) * (2 * K + 5)) ** 2,
            1,
        ),
    ],
)
def test_series_constructs(latex, term, start):
    r = one(latex)
    assert isinstance(r.formula, Series)
    assert r.formula.start == start
    assert same(r.formula.term, term), (r.formula.term, term)


@pytest.mark.parametrize(
    ("latex", "value"),
    [
        (r"\frac{\pi}{4} = \sum_{k=0}^\infty \frac{(-1)^k}{2k+1}", sp.pi / 4),
        (r"\pi = 4 \sum_{k=0}^\infty \frac{(-1)^k}{2k+1}", sp.pi / 4),
        (
            r"\[ 9 + 2\sum_{n = 1}^{\infty}\frac{ ( 1 / 2 ) _{n}^{2}}{ ( n + 1 ) ! ( n + 2 ) !} = \frac{256}{9\pi}. \]",
            (256 / (9 * sp.pi) - 9) / 2,
        ),
        (
            r"\pi = \frac{22}{7} - 24\sum_{n = 2}^\infty \frac{ ( - 1 ) ^{n}}{ ( 2n + 1 ) ( 2n + 2 ) ( 2n + 3 ) }",
            (sp.Rational(22, 7) - sp.pi) / 24,
        ),
        (r"\sum_{k=1}^\infty \frac{1}{k^2} = \frac{\pi^2}{6}", sp.pi**2 / 6),
        (
            r"\frac{1}{\pi} = \frac{1}{16}\sum_{m = 0}^{\infty} \frac{ ( ( 2m ) ! ) ^3}{ ( m! ) ^6}\frac{42m + 5}{4096^m}",
            16 / sp.pi,
        ),
    ],
)
def test_stated_value_is_solved_through_the_equation(latex, value):
    r = one(latex)
    assert same(r.stated_value, value), r.stated_value


def test_series_value_matches_stated_numerically():
    r = one(r"\sum_{n=0}^\infty \frac{(\frac12)_n^3}{n!^3}(6n+1)\frac{1}{4^n} = \frac4\pi")
    assert gap(series_value, r.formula, r.stated_value) < 1e-20


def test_chained_equalities_and_several_formulas():
    rs = read_latex(
        r"\sum_{n = 0}^{\infty} \frac{ ( 2n ) !^3}{n!^6} \frac{1}{2^{8n}} ( 6n + 1 ) = \frac{4}{\pi} , "
        r"\sum_{n = 0}^{\infty} \frac{ ( 2n ) !^3}{n!^6} \frac{1}{2^{12n}} ( 42n + 5 ) = \frac{16}{\pi}"
    )
    assert len(rs) == 2
    assert same(rs[0].stated_value, 4 / sp.pi) and same(rs[1].stated_value, 16 / sp.pi)
    rs = read_latex(
        r"\sum_{k=0}^\infty \frac{1}{16^k}\binom{2k}{k}\frac{1}{2k+1} = \frac43\sum_{k=0}^\infty"
        r" \frac{(-1)^k}{2k+1} = \frac{\pi}{3}"
    )
    assert len(rs) == 2
    assert same(rs[1].stated_value, sp.pi / 4)


def test_two_sums_on_one_side_are_merged():
    r = one(
        r"\pi = 2 + 2 ( \sum_{j = 0}^{\infty} \frac{ ( - 1 ) ^j}{ ( 2j + 2 ) ( 2j + 3 ) } + "
        r"\sum_{j = 1}^{\infty} \frac{ ( - 1 ) ^{j-1}}{ ( 2j - 1 ) ( 2j ) } )"
    )
    assert isinstance(r.formula, Series) and r.formula.start == 0
    assert gap(series_value, r.formula, r.stated_value) < 1e-15


@pytest.mark.parametrize(
    "latex",
    [
        r"\frac{\pi}{4} = 1 - \frac{1}{3} + \frac{1}{5} - \frac{1}{7} + \cdots",
        r"\pi = 4 ( 1 - \frac{1}{3} + \frac{1}{5} - ... )",
        r"1 - \frac13 + \frac15 - \frac17 \pm \ldots = \frac{\pi}{4}",
        r"\frac{\pi}{4} = \frac{1}{1} - \frac{1}{3} + \frac{1}{5} + \dots + \frac{(-1)^{n-1}}{2n-1} + \dots",
        r"\frac{\pi}{4} = 1 - \frac{1}{3} + \frac{1}{5} - \frac{1}{7} + \text{etc.}",
    ],
)
def test_written_out_sum(latex):
    r = one(latex)
    assert isinstance(r.formula, Series)
    assert gap(series_value, r.formula, r.stated_value) < 1e-15


def test_written_out_sum_with_a_head():
    r = one(
        r"\pi - 3 = \frac{4}{2\cdot 3\cdot 4} - \frac{4}{4\cdot 5\cdot 6} + \frac{4}{6\cdot 7\cdot 8}"
        r" - \frac{4}{8\cdot 9\cdot 10} + \dots"
    )
    assert gap(series_value, r.formula, r.stated_value) < 1e-15


# ---------------------------------------------------------------------------------------- continued fractions
@pytest.mark.parametrize(
    ("latex", "a", "b"),
    [
        (r"\frac{4}{\pi} = 1 + \frac{1}{3 + \frac{4}{5 + \frac{9}{7 + \frac{16}{ ... }}}}", 2 * N + 1, N**2),
        (
            r"\frac{4}{\pi - 2} = 3 + {\cfrac{1 \cdot 3}{4 + \cfrac{3 \cdot 5}{4 + \cfrac{5 \cdot 7}{4 + \dotsb}}}}",
            sp.Integer(4),
            4 * N**2 - 1,
        ),
        (
            r"\pi + 3 = 6 + \cfrac{1^2}{6 + \cfrac{3^2}{6 + \cfrac{5^2}{6 + \ddots}}}",
            sp.Integer(6),
            (2 * N - 1) ** 2,
        ),
        (
            r"\frac{8}{4 - \pi} = 3^2 + \cfrac{1^2 3^2}{ ( 5^2 - 1^2 ) + \cfrac{3^2 5^2}{ ( 7^2 - 3^2 ) + "
            r"\cfrac{5^2 7^2}{ ( 9^2 - 5^2 ) + \cfrac{7^2 9^2}{ ( 11^2 - 7^2 ) + ... }}}}",
            16 * N + 8,
            ((2 * N - 1) * (2 * N + 1)) ** 2,
        ),
        (
            r"\frac{8}{ - 8 + 3 \pi} = 5 + \frac{5}{7 + \frac{12}{9 + \frac{21}{11 + \frac{32}{ ... }}}}",
            2 * N + 5,
            N * (N + 4),
        ),
        (r"\frac{4}{\pi} = 1 + \mathop{K}_{n=1}^{\infty} \frac{n^2}{2n+1}", 2 * N + 1, N**2),
    ],
)
def test_continued_fraction_fit(latex, a, b):
    r = one(latex)
    assert isinstance(r.formula, ContinuedFraction)
    assert sp.expand(r.formula.a - a) == 0 and sp.expand(r.formula.b - b) == 0, r.formula


def test_continued_fraction_stated_value_through_head():
    # written a(0) = 3 differs from the fitted a(0) = 4: the PCF value is the written value + 1
    r = one(
        r"\frac{4}{\pi - 2} = 3 + \cfrac{1 \cdot 3}{4 + \cfrac{3 \cdot 5}{4 + \cfrac{5 \cdot 7}{4 + \dotsb}}}"
    )
    assert same(r.stated_value, 4 / (sp.pi - 2) + 1)
    assert gap(cf_value, r.formula, r.stated_value, depth=20000) < 1e-6
    # the first level does not follow the pattern: kept as a Möbius head
    r = one(
        r"\frac{\pi}{2} - 1 = \cfrac{2}{3 + \cfrac{1 * 3}{4 + \cfrac{3 * 5}{4 + \cfrac{5 * 7}{4 + ... }}}}"
    )
    assert isinstance(r.formula, ContinuedFraction)
    assert gap(cf_value, r.formula, r.stated_value, depth=20000) < 1e-6


def test_continued_fraction_with_general_term():
    r = one(r"x = 1 + \cfrac{1}{3 + \cfrac{4}{5 + \cfrac{9}{ \dots + \cfrac{n^2}{2n+1 + \dots}}}}")
    assert sp.expand(r.formula.a - (2 * N + 1)) == 0 and sp.expand(r.formula.b - N**2) == 0


def test_genfrac_binomial_and_fraction():
    r = one(
        r"\sum_{k=0}^\infty \genfrac{(}{)}{0pt}{}{2k}{k} \genfrac{}{}{}{}{1}{16^k (2k+1)} = \frac{\pi}{3}"
    )
    assert same(r.formula.term, sp.binomial(2 * K, K) / (16**K * (2 * K + 1)))


# ---------------------------------------------------------------------------------------------------- macros
def test_default_abbreviations():
    r = one(r"\sum_{k = 0}^\infty\f{6k + 1}{256^k}\bi{2k}k^3 = & \f4{\pi},\tag{R4}")
    assert same(r.formula.term, (6 * K + 1) * sp.binomial(2 * K, K) ** 3 / 256**K)
    assert same(r.stated_value, 4 / sp.pi)


def test_paper_macros_from_preamble():
    pre = r"""\newcommand{\bn}[2]{\binom{#1}{#2}} \def\half{\frac{1}{2}} \newcommand\Sk{\sum_{k=0}^\infty}
    \renewcommand{\fr}[2]{\frac{#1}{#2}}"""
    macros = parse_macro_definitions(pre)
    assert macros["bn"] == Macro(2, r"\binom{#1}{#2}") and macros["half"].nargs == 0
    r = one(r"\Sk \fr{\bn{2k}{k}}{16^k} \half^k = \frac{1}{\pi}", macros=macros)
    assert same(r.formula.term, sp.binomial(2 * K, K) / 32**K)
    # a plain-string table works too
    r = one(r"\Sum \frac{1}{2^k} = \pi", macros={r"\Sum": r"\sum_{k=1}^\infty"})
    assert r.formula.start == 1


def test_recursive_macro_is_stopped():
    with pytest.raises(LatexReadError, match="macro expansion"):
        tokenize_latex(r"\loop", macros={"loop": Macro(0, r"\loop\loop")})


# ------------------------------------------------------------------------------------- malformed / hostile
@pytest.mark.parametrize(
    "latex",
    [
        r"\sum_{k=0}^\infty \frac{1}{k",  # unclosed brace
        r"\sum_{k=0}^{n} \frac{1}{k!} = e",  # finite sum
        r"\frac{\pi}{4} = \int_0^1 \frac{dx}{1+x^2}",
        r"\pi = 3.14159",
        r"I_0 = \frac{\pi}{4}",
        r"\frac{\pi}{4} = 1 + \frac{1}{2} + ...",  # too few terms to infer a pattern
    ],
)
def test_unreadable_equations_give_no_reading(latex):
    assert read_latex(latex) == []


def test_parse_errors_are_reported_in_notes_or_raised():
    with pytest.raises(LatexReadError, match="expected a string"):
        read_latex(None)  # type: ignore[arg-type]
    with pytest.raises(LatexReadError, match="exceed"):
        read_latex("x" * 30000)
    with pytest.raises(LatexReadError, match="environment name"):
        read_latex(r"\begin")


@pytest.mark.parametrize(
    "latex",
    [
        r"\sum_{k=0}^\infty 9^{9^{9^{9}}} = \pi",
        r"\sum_{k=0}^\infty \frac{1}{(10^{9})!} = \pi",
        r"\sum_{k=0}^\infty " + "{" * 400 + "1" + "}" * 400 + r" = \pi",
        r"\sum_{k=0}^\infty \frac{1}{k^{100000}} = \pi",
    ],
)
def test_hostile_latex_is_bounded(latex):
    t = time.perf_counter()
    assert read_latex(latex) == []
    assert time.perf_counter() - t < 3.0


def test_damaged_escapes_are_repaired():
    r = one("\\sum_{n = 0}^{\text{infty}}\\frac{1}{4^n} = \\frac{4}{3}\\pi")
    assert r.formula.start == 0 and same(r.formula.term, R(1, 4) ** K)


@pytest.mark.parametrize(
    ("latex", "message"),
    [
        (r"\sum_{k=0}^\infty \frac{1}{k", "expected"),
        (r"\pi = \sum_{k=0}^{n} \frac{1}{2^k}", "only infinite sums"),
        (r"\sum_{k=0}^\infty \frac{1}{(10^{9})!} = \pi", "factorial"),
        (r"\frac{\pi}{4} = 1 + \frac{1}{2} + ...", "general term"),
        (r"\pi = 3", "no infinite series"),
        (r"\sum^\infty \frac{1}{k^2} = \pi", "lower bound"),
    ],
)
def test_strict_mode_explains_what_failed(latex, message):
    with pytest.raises(LatexReadError, match=message):
        read_latex(latex, strict=True)


def test_readings_round_trip_through_the_safe_parser():
    from recurrences.constants.safe_parse import parse_sympy_text

    for latex in [
        r"\sum_{n=0}^\infty \frac{(\frac12)_n^3}{n!^3}(42n+5)\frac1{64^n} = \frac{16}\pi",
        r"\sum_{k=0}^\infty \frac{k!}{(2k+1)!!} = \frac{\pi}{2}",
        r"\frac{4}{\pi - 2} = 3 + \cfrac{1 \cdot 3}{4 + \cfrac{3 \cdot 5}{4 + \cfrac{5 \cdot 7}{4 + \dotsb}}}",
    ]:
        r = one(latex)
        back = parse_sympy_text(str(r.formula))
        assert type(back) is type(r.formula)
        assert same(parse_sympy_text(str(r.stated_value)), r.stated_value)
