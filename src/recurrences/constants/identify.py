"""Identify a number as a Möbius transform of a constant, x = (alpha c + beta) / (gamma c + delta).

PSLQ (mpmath.pslq) looks for an integer relation among [x c, x, c, 1]; a relation
m0 x c + m1 x + m2 c + m3 = 0 gives x = -(m2 c + m3) / (m0 c + m1), so every Möbius transform of c with
integer coefficients is covered (spec §1 step 5). A relation is accepted only if its *return on
investment* is at least ``min_roi``:

    ROI = (binary precision used) / (number of nonzero coefficients + total bit length of the coefficients),

which rejects the "garbage" relations PSLQ always finds at its precision limit (for a random x the ROI
is about 1). A found relation is re-checked at the full precision of x. If nothing is found, PSLQ is
retried at lower precision (up to ``attempts`` times, with upstream's step-down schedule).

Möbius values are integer 4-tuples (alpha, beta, gamma, delta), normalised to gcd 1 with the first
nonzero of (gamma, delta) positive.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import mpmath as mp
import sympy as sp

Mobius = tuple[int, int, int, int]

CONSTANTS: dict[str, tuple[sp.Expr, str]] = {
    # name -> (sympy value, LaTeX)
    "pi": (sp.pi, r"\pi"),
    "e": (sp.E, "e"),
    "zeta3": (sp.zeta(3), r"\zeta(3)"),
    "catalan": (sp.Catalan, "G"),
}
ALIASES = {"zeta(3)": "zeta3", "g": "catalan", "G": "catalan", "Catalan": "catalan", "E": "e"}


def constant_name(name: str) -> str:
    """Canonical name of a supported constant ('pi', 'e', 'zeta3', 'catalan')."""
    key = ALIASES.get(name, name)
    key = ALIASES.get(key.lower(), key.lower()) if key not in CONSTANTS else key
    if key not in CONSTANTS:
        raise ValueError(f"constant must be one of {sorted(CONSTANTS)} (or zeta(3), G), got {name!r}")
    return key


def constant_symbol(name: str) -> sp.Expr:
    return CONSTANTS[constant_name(name)][0]


def constant_value(name: str) -> mp.mpf:
    """The constant at the current mpmath precision."""
    key = constant_name(name)
    if key == "pi":
        return +mp.pi
    if key == "e":
        return +mp.e
    if key == "zeta3":
        return mp.zeta(3)
    return +mp.catalan


def normalise(m: tuple[int, ...]) -> Mobius:
    """Projective normal form of an integer Möbius tuple: gcd 1, first nonzero of (gamma, delta) > 0."""
    al, be, ga, de = (int(x) for x in m)
    g = math.gcd(math.gcd(al, be), math.gcd(ga, de))
    if g == 0:
        raise ValueError("Möbius tuple is all zero")
    al, be, ga, de = al // g, be // g, ga // g, de // g
    lead = ga if ga != 0 else de
    if lead < 0:
        al, be, ga, de = -al, -be, -ga, -de
    return (al, be, ga, de)


def is_degenerate(m: Mobius) -> bool:
    """True when the transform does not involve the constant (alpha delta - beta gamma = 0)."""
    return m[0] * m[3] - m[1] * m[2] == 0


def mobius_value(m: Mobius, constant: str = "pi") -> mp.mpf:
    c = constant_value(constant)
    return (m[0] * c + m[1]) / (m[2] * c + m[3])


def mobius_expr(m: Mobius, constant: str = "pi") -> sp.Expr:
    c = constant_symbol(constant)
    return (m[0] * c + m[1]) / (m[2] * c + m[3])


def mobius_from_expr(expr: sp.Expr, constant: str = "pi") -> Mobius | None:
    """(alpha, beta, gamma, delta) if ``expr`` is (alpha c + beta)/(gamma c + delta) with rationals, else None."""
    c = constant_symbol(constant)
    x = sp.Dummy("x")
    e = sp.sympify(expr).subs(c, x)
    if e.free_symbols - {x}:
        return None
    num, den = sp.fraction(sp.cancel(sp.together(e)))
    try:
        pn, pd = sp.Poly(num, x, domain="QQ"), sp.Poly(den, x, domain="QQ")
    except (sp.PolynomialError, sp.CoercionFailed):
        return None
    if pn.degree() > 1 or pd.degree() > 1:
        return None
    cn = [pn.coeff_monomial(x), pn.coeff_monomial(1)]
    cd = [pd.coeff_monomial(x), pd.coeff_monomial(1)]
    vals = [sp.Rational(v) for v in cn + cd]
    lcm = sp.ilcm(*[v.q for v in vals])
    return normalise(tuple(int(v * lcm) for v in vals))


def apply_matrix(t: tuple[int, int, int, int], m: Mobius) -> Mobius:
    """Möbius(T, x) for x = Möbius(m): the product T . [[alpha, beta], [gamma, delta]], normalised."""
    t00, t01, t10, t11 = t
    al, be, ga, de = m
    return normalise((t00 * al + t01 * ga, t00 * be + t01 * de, t10 * al + t11 * ga, t10 * be + t11 * de))


def roi(relation: list[int], digits: float) -> float:
    """Return on investment of an integer relation found at ``digits`` decimal digits."""
    nonzero = sum(1 for c in relation if c != 0)
    bits = sum(abs(int(c)).bit_length() for c in relation)
    return digits * math.log2(10) / max(nonzero + bits, 1)


@dataclass
class Identification:
    mobius: Mobius  # x = (alpha c + beta)/(gamma c + delta)
    relation: list[int]  # the PSLQ relation on [x c, x, c, 1]
    roi: float
    digits_used: int
    residual_digits: float  # -log10 |x - mobius value| at the precision of x
    constant: str = "pi"

    @property
    def rational(self) -> bool:
        return is_degenerate(self.mobius)

    def expr(self) -> sp.Expr:
        return mobius_expr(self.mobius, self.constant)


def _step_down(d: int) -> int:
    for bound, step in ((10000, 5000), (1000, 800), (300, 100), (100, 50), (50, 20), (10, 10)):
        if d >= bound:
            return d - step
    return d - 1


def identify_mobius(
    x: mp.mpf | str,
    digits: float,
    constant: str = "pi",
    *,
    min_roi: float = 2.0,
    attempts: int = 3,
    max_digits: int = 400,
) -> Identification | None:
    """Find integers with x = (alpha c + beta)/(gamma c + delta), or None.

    ``digits``: how many decimal digits of x are correct. PSLQ works at min(digits - 1, max_digits).
    """
    if not math.isfinite(digits) or digits > 10**6:
        digits = max_digits + 1
    if digits < 8:
        return None
    use = int(min(digits - 1, max_digits))
    full = int(min(digits, 10**5))
    for _ in range(attempts):
        if use < 8:
            return None
        with mp.workdps(use + 10):
            xv = mp.mpf(x)
            c = constant_value(constant)
            vec = [xv * c, xv, c, mp.mpf(1)]
            with mp.workdps(use):
                try:
                    # default tolerance 2^(-0.75 prec): the residual of a true relation grows with the size
                    # of its coefficients, so a tolerance at full precision would miss it
                    rel = mp.pslq(vec, maxcoeff=10 ** max(use // 2, 4), maxsteps=20000)
                except (ValueError, ZeroDivisionError):
                    rel = None
        if rel is not None:
            rel = [int(r) for r in rel]
            score = roi(rel, use)
            m0, m1, m2, m3 = rel
            if score >= min_roi and (m0 != 0 or m1 != 0):
                mob = normalise((-m2, -m3, m0, m1))
                if is_degenerate(mob):  # a rational number: write it as (0, p, 0, q)
                    r = sp.Rational(mob[0], mob[2]) if mob[2] != 0 else sp.Rational(mob[1], mob[3])
                    mob = normalise((0, int(r.p), 0, int(r.q)))
                with mp.workdps(full + 10):
                    den = mob[2] * constant_value(constant) + mob[3]
                    if den != 0:
                        resid = abs(mp.mpf(x) - (mob[0] * constant_value(constant) + mob[1]) / den)
                        rd = float(-mp.log10(resid)) if resid != 0 else float(full)
                    else:
                        rd = 0.0
                # the relation must hold to (nearly) all digits we have, not just those PSLQ used
                if rd >= min(full, 10**5) - 5 or rd >= use - 2:
                    return Identification(mob, rel, score, use, rd, constant_name(constant))
        use = _step_down(use)
    return None


def same_value(m1: Mobius, m2: Mobius) -> bool:
    return normalise(m1) == normalise(m2)


__all__ = [
    "CONSTANTS",
    "Identification",
    "Mobius",
    "apply_matrix",
    "constant_name",
    "constant_symbol",
    "constant_value",
    "identify_mobius",
    "is_degenerate",
    "mobius_expr",
    "mobius_from_expr",
    "mobius_value",
    "normalise",
    "roi",
    "same_value",
]
