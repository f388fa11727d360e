"""Exact evaluation of continued fractions and series with big integers.

A polynomial continued fraction (PCF) a(0) + b(1)/(a(1) + b(2)/(a(2) + ...)) is the walk

    W_N = W_0 . M(1) M(2) ... M(N),     M(n) = [[0, b(n)], [1, a(n)]],

and its N-th convergent is the ratio of the last column, W_N[0][1] / W_N[1][1] = p_N / q_N. For the PCF
itself W_0 = A = [[1, a(0)], [0, 1]]; a series converted by Euler's rule (see :mod:`.convert`) uses its
initial-conditions matrix instead. When a(n), b(n) are rational functions the step is scaled to an
integer matrix, which leaves every ratio unchanged (the walk is projective).

The product M(lo) ... M(hi) is taken by binary splitting (a product tree) over gmpy2 integers, so depth
10^5 costs a few big multiplications. The value is evaluated to ``digits`` verified digits: depths are
doubled until the convergents at N and 2N agree to that many digits ("verified digits" = the digits
where successive depths agree). Sub-exponentially converging walks (Leibniz, Brouncker, ...) gain only a
fraction of a digit per doubling; for them the convergents are extrapolated by Richardson's rule in
h = 1/j (and h = j^(-1/2)) on the even subsequence u(j) = p_{2j}/q_{2j}, and two extrapolations over
different point sets must agree.

A :class:`Deadline` gives every formula a cooperative time budget: the loops check it and raise
:class:`BudgetExceeded`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from fractions import Fraction

import gmpy2
import mpmath as mp
import sympy as sp
from gmpy2 import mpz

from .formula import ContinuedFraction, N, Series

Mat = tuple  # (m00, m01, m10, m11), integers


class BudgetExceeded(RuntimeError):
    """Raised when a formula runs over its time budget."""


class EvaluationError(ValueError):
    """The formula cannot be evaluated (not a PCF, vanishing denominator, no convergence...)."""


@dataclass
class Deadline:
    """A cooperative time budget: ``check()`` raises :class:`BudgetExceeded` once ``seconds`` have passed."""

    seconds: float | None = None
    start: float = 0.0

    def __post_init__(self) -> None:
        self.start = time.monotonic()

    def remaining(self) -> float:
        if self.seconds is None:
            return math.inf
        return self.seconds - (time.monotonic() - self.start)

    def check(self) -> None:
        if self.seconds is not None and time.monotonic() - self.start > self.seconds:
            raise BudgetExceeded(f"time budget of {self.seconds:g} s exceeded")


NO_DEADLINE = Deadline(None)


# ----------------------------------------------------------------------------------------------------
# rational functions with integer coefficients


@dataclass(frozen=True)
class RatFunc:
    """num(n) / den(n) with integer coefficient lists (lowest degree first)."""

    num: tuple[int, ...]
    den: tuple[int, ...] = (1,)

    @staticmethod
    def from_expr(expr: sp.Expr | int, symbol: sp.Symbol = N, *, name: str = "expression") -> RatFunc:
        """Read a rational function of ``symbol`` with rational coefficients; raise if it is not one."""
        expr = sp.sympify(expr)
        free = expr.free_symbols - {symbol}
        if free:
            raise EvaluationError(f"{name} has free symbols {sorted(map(str, free))} besides {symbol}")
        if not expr.is_rational_function(symbol):
            raise EvaluationError(f"{name} = {expr} is not a rational function of {symbol}")
        try:
            if expr.is_polynomial(symbol):
                pn, pd = sp.Poly(expr, symbol, domain="QQ"), sp.Poly(1, symbol, domain="QQ")
            else:
                num, den = sp.fraction(sp.together(expr))
                pn, pd = sp.Poly(num, symbol, domain="QQ"), sp.Poly(den, symbol, domain="QQ")
                g = pn.gcd(pd)
                pn, pd = pn.exquo(g), pd.exquo(g)
        except (sp.PolynomialError, sp.CoercionFailed) as exc:  # e.g. irrational coefficients
            raise EvaluationError(f"{name} = {expr} has non-rational coefficients") from exc
        cn = [Fraction(int(c.p), int(c.q)) for c in reversed(pn.all_coeffs())]
        cd = [Fraction(int(c.p), int(c.q)) for c in reversed(pd.all_coeffs())]
        lcm = 1
        for c in cn + cd:
            lcm = lcm * c.denominator // math.gcd(lcm, c.denominator)
        return RatFunc(tuple(int(c * lcm) for c in cn), tuple(int(c * lcm) for c in cd))

    @property
    def is_polynomial(self) -> bool:
        return len(self.den) == 1

    def __call__(self, n: int) -> tuple[int, int]:
        return horner(self.num, n), horner(self.den, n)


def horner(coeffs: tuple[int, ...] | list[int], x: int) -> int:
    acc = 0
    for c in reversed(coeffs):
        acc = acc * x + c
    return acc


# ----------------------------------------------------------------------------------------------------
# walks


@dataclass(frozen=True)
class Walk:
    """W_0 . M(1) ... M(N) with M(n) = [[0, b(n)], [1, a(n)]] scaled to integers; W_0 integer (projective)."""

    a: RatFunc
    b: RatFunc
    initial: Mat

    def step(self, n: int) -> Mat:
        pa, qa = self.a(n)
        pb, qb = self.b(n)
        return (mpz(0), mpz(pb * qa), mpz(qa * qb), mpz(pa * qb))

    @staticmethod
    def of_pcf(a: sp.Expr | int, b: sp.Expr | int, initial: Mat | None = None) -> Walk:
        """The walk of PCF(a, b); by default W_0 = A = [[1, a(0)], [0, 1]] (scaled to integers)."""
        ra = RatFunc.from_expr(a, N, name="a(n)")
        rb = RatFunc.from_expr(b, N, name="b(n)")
        if not any(rb.num):
            raise EvaluationError("b(n) is identically zero: not a continued fraction")
        if initial is None:
            pa0, qa0 = ra(0)
            if qa0 == 0:
                raise EvaluationError("a(0) has a pole")
            initial = (qa0, pa0, 0, qa0)
        return Walk(ra, rb, tuple(mpz(x) for x in initial))


def matmul(x: Mat, y: Mat) -> Mat:
    a, b, c, d = x
    e, f, g, h = y
    return (a * e + b * g, a * f + b * h, c * e + d * g, c * f + d * h)


def walk_product(walk: Walk, lo: int, hi: int, deadline: Deadline = NO_DEADLINE) -> Mat:
    """M(lo) M(lo+1) ... M(hi) by binary splitting (identity when hi < lo)."""
    if hi < lo:
        return (mpz(1), mpz(0), mpz(0), mpz(1))
    if hi - lo < 24:
        acc = walk.step(lo)
        for n in range(lo + 1, hi + 1):
            acc = matmul(acc, walk.step(n))
        return acc
    deadline.check()
    mid = (lo + hi) // 2
    return matmul(walk_product(walk, lo, mid, deadline), walk_product(walk, mid + 1, hi, deadline))


def convergents(walk: Walk, depth: int, deadline: Deadline = NO_DEADLINE) -> list[tuple[int, int]]:
    """[(p_n, q_n) for n = 1..depth], the last column of W_0 M(1)...M(n), computed sequentially."""
    x0, x1, y0, y1 = walk.initial
    out = []
    for n in range(1, depth + 1):
        m00, m01, m10, m11 = walk.step(n)
        x0, x1 = x0 * m00 + x1 * m10, x0 * m01 + x1 * m11
        y0, y1 = y0 * m00 + y1 * m10, y0 * m01 + y1 * m11
        out.append((x1, y1))
        if n % 512 == 0:
            deadline.check()
    return out


def log10_abs_int(x: int) -> float:
    """log10|x| for a big integer x != 0, without overflow."""
    x = abs(int(x))
    bl = x.bit_length()
    if bl <= 1000:
        return math.log10(x)
    shift = bl - 60
    return math.log10(x >> shift) + shift * math.log10(2)


def log_abs_int(x: int) -> float:
    return log10_abs_int(x) * math.log(10)


def ratio_to_mpf(p: int, q: int) -> mp.mpf:
    return mp.mpf(int(p)) / mp.mpf(int(q))


def agreement_digits(p1: int, q1: int, p2: int, q2: int) -> float:
    """-log10 |p1/q1 - p2/q2| (inf when equal), exactly."""
    num = p1 * q2 - p2 * q1
    if num == 0:
        return math.inf
    return -(log10_abs_int(num) - log10_abs_int(q1) - log10_abs_int(q2))


# ----------------------------------------------------------------------------------------------------
# evaluation


@dataclass
class Evaluation:
    """A value known to ``digits`` verified decimal digits (absolute), and how it was obtained."""

    value: mp.mpf
    digits: float
    depth: int
    method: str  # "exact" (convergents agree), "richardson", "terminating"

    def as_str(self, extra: int = 5) -> str:
        d = int(min(self.digits, 10**6)) + extra
        return mp.nstr(self.value, max(d, 15), min_fixed=-math.inf, max_fixed=math.inf)


def evaluate_walk(
    walk: Walk,
    digits: int = 50,
    *,
    deadline: Deadline = NO_DEADLINE,
    start_depth: int = 64,
    max_depth: int = 1 << 18,
    richardson: bool = True,
) -> Evaluation:
    """The limit of the walk's convergents to at least ``digits`` verified digits (if reachable).

    Doubles N while the convergents at N and 2N agree to fewer than ``digits + 5`` digits. If the gain
    per doubling shows sub-exponential convergence, switches to Richardson extrapolation. Returns the
    best evaluation found; ``digits`` of the result may be below the request (the caller decides).
    """
    if digits < 1:
        raise ValueError(f"digits must be >= 1, got {digits}")
    target = digits + 5
    depth = start_depth
    w0 = walk.initial
    prod = matmul(w0, walk_product(walk, 1, depth, deadline))
    history: list[float] = []
    best: Evaluation | None = None
    while True:
        deadline.check()
        prod2 = matmul(prod, walk_product(walk, depth + 1, 2 * depth, deadline))
        p1, q1, p2, q2 = prod[1], prod[3], prod2[1], prod2[3]
        if q2 == 0 or q1 == 0:
            raise EvaluationError(f"denominator q_n vanished near depth {depth}")
        agree = agreement_digits(p1, q1, p2, q2)
        if agree == math.inf and _is_terminating(walk, 2 * depth):
            with mp.workdps(target + 10):
                return Evaluation(ratio_to_mpf(p2, q2), math.inf, 2 * depth, "terminating")
        history.append(agree)
        if agree >= target or agree == math.inf:
            with mp.workdps(int(min(agree, 10**6)) + 10 if agree != math.inf else target + 10):
                return Evaluation(ratio_to_mpf(p2, q2), agree, 2 * depth, "exact")
        with mp.workdps(max(int(agree), 1) + 10):
            cand = Evaluation(ratio_to_mpf(p2, q2), max(agree, 0.0), 2 * depth, "exact")
        if best is None or cand.digits > best.digits:
            best = cand
        # sub-exponential: digits grow by less than a third per doubling (exponential ones double)
        slow = (
            len(history) >= 3 and history[-1] < 1.33 * max(history[-2], 1.0) and history[-1] < 3 * target / 4
        )
        if richardson and slow:
            try:
                rich = evaluate_richardson(walk, digits, deadline=deadline)
            except EvaluationError:
                rich = None
            if rich is not None and rich.digits > best.digits:
                best = rich
            if best.digits >= target or 4 * depth > max_depth or agree < 0.5 * target:
                return best
        if 4 * depth > max_depth:
            return best
        prod, depth = prod2, 2 * depth


def _is_terminating(walk: Walk, depth: int) -> bool:
    """True if b(n) vanishes for some 1 <= n <= depth (the continued fraction is finite)."""
    return any(horner(walk.b.num, n) == 0 for n in range(1, min(depth, 4096) + 1))


def richardson_weights_integer(js: list[int]) -> list[tuple[int, int]]:
    """Lagrange weights at h = 0 for nodes h_i = 1/j_i (consecutive integers j_i), as (numerator,
    denominator) integer pairs; sum_i w_i = 1.

    w_i = prod_{l != i} h_l / (h_l - h_i) = prod_{l != i} j_i / (j_i - j_l)
        = j_i^(k-1) / ((-1)^(k-1-i) i! (k-1-i)!).
    The fractions are not reduced (a gcd of 10^5-bit numbers per weight would dominate the cost).
    """
    k = len(js)
    j0 = js[0]
    if js != list(range(j0, j0 + k)):
        raise ValueError("js must be consecutive integers")
    out = []
    den = mpz(math.factorial(k - 1))  # i = 0: 0! (k-1)!
    for i, j in enumerate(js):
        if i > 0:
            den = den * i // (k - i)  # i! (k-1-i)! from (i-1)! (k-i)!
        sign = -1 if (k - 1 - i) % 2 else 1
        out.append((mpz(j) ** (k - 1), sign * den))
    return out


def _extrapolate(us: list[mp.mpf], js: list[int], gamma: float, weights=None) -> mp.mpf:
    if gamma == 1:
        ws = weights if weights is not None else richardson_weights_integer(js)
        return mp.fsum(mp.mpf(int(n)) / int(d) * u for (n, d), u in zip(ws, us))
    hs = [mp.mpf(j) ** (-mp.mpf(gamma)) for j in js]
    tot = mp.mpf(0)
    for i, u in enumerate(us):
        w = mp.mpf(1)
        for h_idx, h in enumerate(hs):
            if h_idx != i:
                w *= h / (h - hs[i])
        tot += w * u
    return tot


def _log10_weights(ws: list[tuple[int, int]]) -> float:
    return max(log10_abs_int(n) - log10_abs_int(d) for n, d in ws)


def evaluate_richardson(
    walk: Walk, digits: int = 50, *, deadline: Deadline = NO_DEADLINE, max_points: int = 20000
) -> Evaluation:
    """Richardson extrapolation of u(j) = p_{2j}/q_{2j} to j -> oo, for s(n) = L + sum_m c_m n^(-m*gamma).

    Tries gamma = 1 (integer powers) and gamma = 1/2; the verified digits are where the extrapolations
    over j in [K+1, 2K] and over j in [K'+1, 2K'] (K' ~ 0.8 K) agree. The working precision covers the
    size of the weights (about K digits), so the cancellation in sum_i w_i u(j_i) loses nothing.
    """
    best: Evaluation | None = None
    seq: list[tuple[int, int]] = []
    for gamma in (1, 0.5):
        if gamma == 1:
            k = int(math.ceil(1.1 * (digits + 10))) + 10
        else:
            k = min(int(math.ceil(2.2 * (digits + 10))) + 10, 240)  # general weights cost O(k^2)
        k = min(k, max_points)
        for _attempt in range(3):
            n_max = 4 * k
            if len(seq) < n_max:
                seq = seq + convergents_from(walk, seq, n_max, deadline)
            k2 = max(int(0.8 * k), 2)
            js1 = list(range(k + 1, 2 * k + 1))
            js2 = list(range(k2 + 1, 2 * k2 + 1))
            if gamma == 1:
                w1, w2 = richardson_weights_integer(js1), richardson_weights_integer(js2)
                weight_digits = int(_log10_weights(w1)) + 2 * int(math.log10(k) + 1) + 10
            else:
                w1 = w2 = None
                weight_digits = int(1.2 * k) + 10
            deadline.check()
            with mp.workdps(digits + weight_digits + 20):
                if any(seq[2 * j - 1][1] == 0 for j in range(k2 + 1, 2 * k + 1)):
                    raise EvaluationError("a denominator vanished during extrapolation")
                u = {j: ratio_to_mpf(*seq[2 * j - 1]) for j in range(k2 + 1, 2 * k + 1)}
                deadline.check()
                r1 = _extrapolate([u[j] for j in js1], js1, gamma, w1)
                r2 = _extrapolate([u[j] for j in js2], js2, gamma, w2)
                diff = abs(r1 - r2)
                agree = float(-mp.log10(diff)) if diff != 0 else float(digits + weight_digits)
                agree = min(agree, float(digits + weight_digits)) - 1.0  # r1 vs r2 bounds r2; margin
            with mp.workdps(max(int(agree), 1) + 10):
                cand = Evaluation(+r1, max(agree, 0.0), n_max, f"richardson(gamma={gamma:g},K={k})")
            if best is None or cand.digits > best.digits:
                best = cand
            if cand.digits >= digits + 5 or k >= max_points or (gamma != 1 and k >= 240):
                break
            if cand.digits < 5:  # extrapolation in this variable is not working at all
                break
            k = min(int(1.5 * k), max_points if gamma == 1 else 240)
        if best is not None and best.digits >= digits + 5:
            break
    assert best is not None
    return best


def convergents_from(
    walk: Walk, done: list[tuple[int, int]], depth: int, deadline: Deadline = NO_DEADLINE
) -> list[tuple[int, int]]:
    """The convergents after ``done`` (a prefix computed before) up to ``depth``: continues the walk."""
    if not done:
        return convergents(walk, depth, deadline)
    # restart from the state at len(done): the last two columns are (p_{m-1}, q_{m-1}), (p_m, q_m)
    m = len(done)
    if m == 1:
        return convergents(walk, depth, deadline)[1:]
    (x0, y0), (x1, y1) = done[-2], done[-1]
    out = []
    for n in range(m + 1, depth + 1):
        m00, m01, m10, m11 = walk.step(n)
        x0, x1 = x0 * m00 + x1 * m10, x0 * m01 + x1 * m11
        y0, y1 = y0 * m00 + y1 * m10, y0 * m01 + y1 * m11
        out.append((x1, y1))
        if n % 512 == 0:
            deadline.check()
    return out


# ----------------------------------------------------------------------------------------------------
# formulas


def walk_of(formula: Series | ContinuedFraction) -> Walk:
    """The walk whose convergents tend to the formula's value (series through Euler's conversion)."""
    if isinstance(formula, ContinuedFraction):
        return Walk.of_pcf(formula.a, formula.b)
    if isinstance(formula, Series):
        from .convert import series_to_pcf

        conv = series_to_pcf(formula)
        ini = conv.initial_integer()
        return Walk.of_pcf(conv.a, conv.b, initial=ini)
    raise TypeError(f"formula must be a Series or ContinuedFraction, got {type(formula).__name__}")


def evaluate_formula(
    formula: Series | ContinuedFraction, digits: int = 50, *, deadline: Deadline = NO_DEADLINE, **kw
) -> Evaluation:
    """The value of a series or continued fraction to ``digits`` verified digits (best effort)."""
    return evaluate_walk(walk_of(formula), digits, deadline=deadline, **kw)


def pcf_value(a: sp.Expr | int, b: sp.Expr | int, digits: int = 50, **kw) -> Evaluation:
    return evaluate_walk(Walk.of_pcf(a, b), digits, **kw)


__all__ = [
    "BudgetExceeded",
    "Deadline",
    "Evaluation",
    "EvaluationError",
    "RatFunc",
    "Walk",
    "agreement_digits",
    "convergents",
    "evaluate_formula",
    "evaluate_richardson",
    "evaluate_walk",
    "log_abs_int",
    "log10_abs_int",
    "matmul",
    "pcf_value",
    "walk_of",
    "walk_product",
]

_ = gmpy2  # gmpy2 supplies mpz (fast big-integer products)
