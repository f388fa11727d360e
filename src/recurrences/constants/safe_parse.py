"""A whitelisting parser for sympy-like text coming from outside (datasets, language models, users).

``sympy.sympify`` and ``sympy.parsing.sympy_parser.parse_expr`` call ``eval`` on (a transformed copy of)
their input, so they must never see outside text. This module tokenizes the text itself and builds the
expression by recursive descent over the grammar

    expr    := term (("+" | "-") term)*
    term    := unary (("*" | "/") unary)*
    unary   := ("+" | "-") unary | power
    power   := postfix (("**" | "^") unary)?          (right-associative)
    postfix := atom "!"*
    atom    := NUMBER | NAME | NAME "(" args ")" | "(" expr ("," expr)* ")"

Only whitelisted names are accepted (constants such as ``pi``, ``E``, ``oo``, ``catalan``; functions such as
``factorial``, ``binomial``, ``gamma``, ``rf``/``RisingFactorial``, ``ff``, ``sqrt``, ``zeta``; the formula
constructors ``Sum`` and ``PCF``; and symbols: single letters and a few Greek names). Sizes are bounded
(text length, token count, nesting depth, integer digits, exponent and factorial magnitudes), so that no
input can make the parser hang or exhaust memory: ``9**9**9**9`` is refused, not computed.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import sympy as sp

from recurrences.constants.formula import ContinuedFraction, Formula, K, N, Series

__all__ = [
    "SafeParseError",
    "parse_expr",
    "parse_sympy_text",
    "formula_from_expr",
    "MAX_TEXT",
    "MAX_DEPTH",
]

MAX_TEXT = 20_000  # characters
MAX_TOKENS = 5_000
MAX_DEPTH = 60  # nesting of parentheses / unary operators / powers
MAX_INT_DIGITS = 400  # digits of an integer literal
MAX_RESULT_DIGITS = 5_000  # digits of an exact number produced by a power of numbers
MAX_EXPONENT = 10_000  # |integer exponent| of a symbolic power
MAX_FACTORIAL_ARG = 5_000  # numeric argument of factorial-like functions


class SafeParseError(ValueError):
    """The text is not an accepted expression; the message says where and why."""


# ----------------------------------------------------------------------------------------- whitelist
_INT_SYMBOLS = {"k": K, "n": N}
for _c in "ijlmpqrstuvwxyz":
    _INT_SYMBOLS.setdefault(_c, sp.Symbol(_c, integer=True))
_GREEK = ("nu", "ell", "mu", "alpha", "beta", "lam", "lamda", "theta", "tau", "sigma", "rho")

CONSTANTS: dict[str, sp.Expr] = {
    "pi": sp.pi,
    "E": sp.E,
    "oo": sp.oo,
    "I": sp.I,
    "catalan": sp.Catalan,
    "Catalan": sp.Catalan,
    "G": sp.Catalan,
    "EulerGamma": sp.EulerGamma,
}


def _guard_integer_arg(name: str, args: tuple) -> None:
    for a in args:
        if isinstance(a, sp.Number) and abs(a) > MAX_FACTORIAL_ARG:
            raise SafeParseError(f"{name}: numeric argument {a} exceeds the limit {MAX_FACTORIAL_ARG}")


def _fn(name: str, f: Callable, nargs: tuple[int, ...], guard: bool = False) -> tuple:
    return (f, nargs, guard)


FUNCTIONS: dict[str, tuple] = {
    "factorial": _fn("factorial", sp.factorial, (1,), True),
    "factorial2": _fn("factorial2", sp.factorial2, (1,), True),
    "binomial": _fn("binomial", sp.binomial, (2,), True),
    "gamma": _fn("gamma", sp.gamma, (1,), True),
    "rf": _fn("rf", sp.rf, (2,), True),
    "RisingFactorial": _fn("RisingFactorial", sp.rf, (2,), True),
    "ff": _fn("ff", sp.ff, (2,), True),
    "FallingFactorial": _fn("FallingFactorial", sp.ff, (2,), True),
    "harmonic": _fn("harmonic", sp.harmonic, (1,), True),
    "sqrt": _fn("sqrt", sp.sqrt, (1,)),
    "zeta": _fn("zeta", sp.zeta, (1,), True),
    "exp": _fn("exp", sp.exp, (1,)),
    "log": _fn("log", sp.log, (1,)),
    "sin": _fn("sin", sp.sin, (1,)),
    "cos": _fn("cos", sp.cos, (1,)),
    "tan": _fn("tan", sp.tan, (1,)),
    "cot": _fn("cot", sp.cot, (1,)),
    "atan": _fn("atan", sp.atan, (1,)),
    "Abs": _fn("Abs", sp.Abs, (1,)),
    "Rational": _fn("Rational", None, (1, 2)),
    "Integer": _fn("Integer", None, (1,)),
}
_FORMULA_NAMES = ("Sum", "PCF")

_TOKEN = re.compile(
    r"\s*(?:(?P<num>\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)"
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<op>\*\*|[-+*/^(),!]))"
)


@dataclass(frozen=True)
class _Tok:
    kind: str  # "num" | "name" | "op" | "end"
    text: str
    pos: int


def _tokenize(text: str) -> list[_Tok]:
    if not isinstance(text, str):
        raise SafeParseError(f"text: expected a string, got {type(text).__name__}")
    if len(text) > MAX_TEXT:
        raise SafeParseError(f"text: {len(text)} characters exceed the limit {MAX_TEXT}")
    toks: list[_Tok] = []
    pos = 0
    stripped_end = len(text.rstrip())
    while pos < stripped_end:
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            ch = text[pos:].lstrip()[:1]
            where = pos + (len(text[pos:]) - len(text[pos:].lstrip()))
            raise SafeParseError(f"unexpected character {ch!r} at position {where} in {text[:80]!r}")
        kind = m.lastgroup or "op"
        toks.append(_Tok(kind, m.group(kind), m.start(kind)))
        if len(toks) > MAX_TOKENS:
            raise SafeParseError(f"text: more than {MAX_TOKENS} tokens")
        pos = m.end()
    toks.append(_Tok("end", "", len(text)))
    return toks


def _digits(x: sp.Expr) -> float:
    """log10 of the magnitude of an exact rational (0 for 0)."""
    if x == 0:
        return 0.0
    p, q = sp.fraction(sp.Rational(x))
    return max(len(str(abs(int(p)))), len(str(abs(int(q)))))


class _PCFMarker:
    def __init__(self, a: sp.Expr, b: sp.Expr) -> None:
        self.a, self.b = a, b


class _Parser:
    def __init__(self, text: str, symbols: Mapping[str, sp.Expr] | None, allow_formula: bool) -> None:
        self.text = text
        self.toks = _tokenize(text)
        self.i = 0
        self.depth = 0
        self.symbols = dict(symbols) if symbols is not None else None
        self.allow_formula = allow_formula

    # -- helpers
    def peek(self) -> _Tok:
        return self.toks[self.i]

    def take(self) -> _Tok:
        t = self.toks[self.i]
        self.i += 1
        return t

    def expect(self, op: str) -> None:
        t = self.take()
        if t.text != op or t.kind != "op":
            got = t.text or "end of text"
            raise SafeParseError(f"expected {op!r} at position {t.pos}, got {got!r} in {self.text[:80]!r}")

    def enter(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise SafeParseError(f"expression nested deeper than {MAX_DEPTH} levels")

    def leave(self) -> None:
        self.depth -= 1

    # -- grammar
    def parse(self):
        out = self.expr()
        t = self.peek()
        if t.kind != "end":
            raise SafeParseError(f"unexpected {t.text!r} at position {t.pos} in {self.text[:80]!r}")
        return out

    def expr(self):
        self.enter()
        left = self.term()
        while self.peek().kind == "op" and self.peek().text in ("+", "-"):
            op = self.take().text
            right = self.term()
            left = self._arith(left, right, op)
        self.leave()
        return left

    def term(self):
        left = self.unary()
        while self.peek().kind == "op" and self.peek().text in ("*", "/"):
            op = self.take().text
            right = self.unary()
            left = self._arith(left, right, op)
        return left

    def unary(self):
        t = self.peek()
        if t.kind == "op" and t.text in ("+", "-"):
            self.take()
            self.enter()
            v = self.unary()
            self.leave()
            return self._arith(sp.Integer(0), v, t.text)
        return self.power()

    def power(self):
        base = self.postfix()
        t = self.peek()
        if t.kind == "op" and t.text in ("**", "^"):
            self.take()
            self.enter()
            exp = self.unary()
            self.leave()
            return self._pow(base, exp, t.pos)
        return base

    def postfix(self):
        v = self.atom()
        while self.peek().kind == "op" and self.peek().text == "!":
            t = self.take()
            v = self._call("factorial", (self._expr(v, t.pos),), t.pos)
        return v

    def atom(self):
        t = self.take()
        if t.kind == "num":
            if len(t.text) > MAX_INT_DIGITS:
                raise SafeParseError(
                    f"number literal at position {t.pos} has more than {MAX_INT_DIGITS} digits"
                )
            return sp.Rational(t.text) if any(c in t.text for c in ".eE") else sp.Integer(t.text)
        if t.kind == "op" and t.text == "(":
            self.enter()
            items = [self.expr()]
            while self.peek().text == "," and self.peek().kind == "op":
                self.take()
                items.append(self.expr())
            self.expect(")")
            self.leave()
            return items[0] if len(items) == 1 else tuple(items)
        if t.kind == "name":
            if self.peek().kind == "op" and self.peek().text == "(":
                return self.call(t)
            return self.name(t)
        got = t.text or "end of text"
        raise SafeParseError(f"unexpected {got!r} at position {t.pos} in {self.text[:80]!r}")

    def call(self, t: _Tok):
        name = t.text
        if name not in FUNCTIONS and name not in _FORMULA_NAMES:
            raise SafeParseError(f"unknown function {name!r} at position {t.pos} (not on the whitelist)")
        self.take()  # "("
        self.enter()
        args = []
        if not (self.peek().kind == "op" and self.peek().text == ")"):
            args.append(self.expr())
            while self.peek().kind == "op" and self.peek().text == ",":
                self.take()
                args.append(self.expr())
        self.expect(")")
        self.leave()
        if name == "Sum":
            return self._sum(args, t.pos)
        if name == "PCF":
            if not self.allow_formula:
                raise SafeParseError("PCF(...) is only accepted where a formula is expected")
            if len(args) != 2:
                raise SafeParseError(f"PCF expects 2 arguments (a, b), got {len(args)}")
            return _PCFMarker(self._expr(args[0], t.pos), self._expr(args[1], t.pos))
        return self._call(name, tuple(self._expr(a, t.pos) for a in args), t.pos)

    def name(self, t: _Tok):
        name = t.text
        if self.symbols is not None and name in self.symbols:
            return self.symbols[name]
        if name in CONSTANTS:
            return CONSTANTS[name]
        if name in _INT_SYMBOLS:
            return _INT_SYMBOLS[name]
        if len(name) == 1 and name.isalpha():
            return sp.Symbol(name)
        if name in _GREEK:
            return sp.Symbol(name, integer=True)
        if name in FUNCTIONS or name in _FORMULA_NAMES:
            raise SafeParseError(f"function {name!r} at position {t.pos} used without arguments")
        raise SafeParseError(f"unknown name {name!r} at position {t.pos} (not on the whitelist)")

    # -- semantic actions with size guards
    def _expr(self, v, pos: int) -> sp.Expr:
        if isinstance(v, tuple):
            raise SafeParseError(f"unexpected tuple near position {pos}")
        return v

    def _arith(self, a, b, op: str):
        a, b = self._expr(a, 0), self._expr(b, 0)
        if isinstance(a, _PCFMarker) or isinstance(b, _PCFMarker):
            raise SafeParseError("PCF(...) cannot be combined arithmetically")
        if op == "+":
            return a + b
        if op == "-":
            return a - b
        if op == "*":
            return a * b
        if b == 0:
            raise SafeParseError("division by zero")
        return a / b

    def _pow(self, base, exp, pos: int):
        base, exp = self._expr(base, pos), self._expr(exp, pos)
        if isinstance(base, _PCFMarker) or isinstance(exp, _PCFMarker):
            raise SafeParseError("PCF(...) cannot be raised to a power")
        if exp.is_Number:
            if exp.is_Integer and abs(int(exp)) > MAX_EXPONENT:
                raise SafeParseError(f"exponent {exp} at position {pos} exceeds the limit {MAX_EXPONENT}")
            if base.is_Rational and exp.is_Rational:
                size = _digits(base) * abs(float(exp))
                if size > MAX_RESULT_DIGITS:
                    raise SafeParseError(
                        f"power at position {pos} would have about {size:.3g} digits (limit {MAX_RESULT_DIGITS})"
                    )
            if not exp.is_Rational and abs(float(exp)) > MAX_EXPONENT:
                raise SafeParseError(f"exponent {exp} at position {pos} exceeds the limit {MAX_EXPONENT}")
        if base == 0 and exp.is_Number and exp.is_negative:
            raise SafeParseError(f"zero raised to a negative power at position {pos}")
        return base**exp

    def _call(self, name: str, args: tuple, pos: int):
        f, nargs, guard = FUNCTIONS[name]
        if len(args) not in nargs:
            raise SafeParseError(
                f"{name} expects {' or '.join(map(str, nargs))} argument(s), got {len(args)}"
            )
        if guard:
            _guard_integer_arg(name, args)
        if name == "Rational":
            if not all(a.is_Rational for a in args):
                raise SafeParseError("Rational(...) expects rational numbers")
            if len(args) == 2 and args[1] == 0:
                raise SafeParseError("Rational(p, 0): division by zero")
            return sp.Rational(*args)
        if name == "Integer":
            if not args[0].is_Integer:
                raise SafeParseError("Integer(...) expects an integer")
            return args[0]
        if name == "sqrt" and args[0].is_Rational and _digits(args[0]) > MAX_RESULT_DIGITS:
            raise SafeParseError("sqrt argument too large")
        return f(*args)

    def _sum(self, args: list, pos: int):
        if len(args) != 2 or not isinstance(args[1], tuple) or len(args[1]) != 3:
            raise SafeParseError(f"Sum at position {pos} expects Sum(term, (var, start, end))")
        term = self._expr(args[0], pos)
        var, lo, hi = args[1]
        if not isinstance(var, sp.Symbol):
            raise SafeParseError(f"Sum at position {pos}: the summation variable must be a name, got {var}")
        if not (isinstance(lo, sp.Expr) and isinstance(hi, sp.Expr)):
            raise SafeParseError(f"Sum at position {pos}: bounds must be expressions")
        return sp.Sum(term, (var, lo, hi))


def parse_expr(text: str, symbols: Mapping[str, sp.Expr] | None = None) -> sp.Expr:
    """Parse ``text`` into a sympy expression through the whitelisting grammar (never ``eval``).

    ``symbols`` maps extra names to sympy objects (they take precedence over the built-in names). Raises
    :class:`SafeParseError` naming the offending token for anything outside the whitelist or the size limits.
    """
    out = _Parser(text, symbols, allow_formula=False).parse()
    if isinstance(out, tuple):
        raise SafeParseError(f"text: expected one expression, got a tuple of {len(out)} in {text[:80]!r}")
    return out


def formula_from_expr(expr) -> Formula | sp.Expr:
    """Turn a parsed ``Sum(term, (var, start, oo))`` into a :class:`Series`; other expressions pass through."""
    if isinstance(expr, _PCFMarker):
        free = (expr.a.free_symbols | expr.b.free_symbols) - {N}
        if len(free) == 1:
            (v,) = free
            expr = _PCFMarker(expr.a.subs(v, N), expr.b.subs(v, N))
        return ContinuedFraction(sp.expand(expr.a), sp.expand(expr.b))
    if isinstance(expr, sp.Sum):
        (var, lo, hi), *rest = expr.limits
        if rest:
            raise SafeParseError("nested Sum limits are not supported")
        if hi != sp.oo:
            raise SafeParseError(f"Sum: upper limit must be oo, got {hi}")
        if not lo.is_Integer:
            raise SafeParseError(f"Sum: lower limit must be an integer, got {lo}")
        return Series(expr.function.subs(var, K), int(lo))
    return expr


def parse_sympy_text(text: str) -> Formula | sp.Expr:
    """Parse a harvested ``sympy`` field or a claimed value.

    ``Sum(term, (k, start, oo))`` gives a :class:`Series` (the variable renamed to ``K``), ``PCF(a, b)`` a
    :class:`ContinuedFraction` (its single free symbol renamed to ``N``); anything else (``pi/4``,
    ``2/(pi - 2)``) is returned as a sympy expression.
    """
    out = _Parser(text, None, allow_formula=True).parse()
    if isinstance(out, tuple):
        raise SafeParseError(f"text: expected one expression, got a tuple of {len(out)} in {text[:80]!r}")
    return formula_from_expr(out)
