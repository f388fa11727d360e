r"""The default, offline and deterministic LaTeX reader: one equation in, a list of :class:`Reading` out.

Pipeline for one equation:

1. **Tokenize** (with macro expansion: the paper's ``\newcommand``/``\def`` macros passed in, plus a small
   table of common abbreviations such as ``\f`` = ``\frac``, ``\bi`` = ``\binom``). Spacing, labels, tags
   and ``\left``/``\right`` are dropped; ``\text{infty}`` reads as ``\infty`` and ``\text{etc.}`` as dots.
2. **Split** into statements at top-level ``,`` ``;`` ``\quad`` and ``\text{and}``, gluing ``align`` lines
   that continue with ``=``; each statement into sides at top-level ``=``.
3. **Parse** each side by recursive descent into a small tree: ``\frac``/``\dfrac``/``\tfrac``/``\cfrac``,
   ``{a \over b}``, ``\binom``/``{n \choose k}`` (and multinomials ``\binom{4k}{k,k,k,k}``), ``n!``, ``n!!``,
   Pochhammer symbols ``(x)_n``, generalized hypergeometric term brackets ``[a..; b..]_k`` (``\hyp``),
   powers (a bare superscript takes one character, as in TeX: ``2^321^2`` = 2^3 * 21^2), implicit
   multiplication, ``\cdot``/``\times``/``*``, ``/``, ``\sum`` with bounds (``\sum_{k=0}^\infty``,
   ``\sum_{n\ge 1}``), ``\mathop{K}_{n=1}^\infty \frac{b(n)}{a(n)}``, and dots.
4. **Interpret**: an infinite sum becomes a :class:`Series`; a sum written out term by term with dots
   (``1 - 1/3 + 1/5 - ...``) is read by fitting sign * p(k)/q(k) with low-degree polynomials p, q to the
   written terms (each fit checked on at least one further written term); a continued fraction written out
   with dots, a_0 + b_1/(a_1 + b_2/(a_2 + ...)), is read by fitting a(n) and b(n) as polynomials to the
   written partial denominators and numerators (factor by factor when they are written as products, e.g.
   ``1*3, 3*5, 5*7`` gives (2n-1)(2n+1)). Written heads that do not follow the pattern (a different a(0),
   a few leading terms) are kept as an exact Möbius transform between the formula and the written value.
5. **State**: a side that is a number involving a constant (pi, e, ...) is the stated value; the value of
   the formula itself is solved from the equation (``9 + 2*S = 256/(9 pi)`` gives S = (256/(9 pi) - 9)/2).

Nothing here calls ``eval``; sympy objects are built directly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import sympy as sp

from recurrences.constants.formula import ContinuedFraction, K, N, Reading, Series
from recurrences.constants.macros import (
    DEFAULT_MACROS,
    Macro,
    merge_macros,
    read_group,
    split_macro_definitions,
)

__all__ = ["LatexReadError", "read_latex", "tokenize_latex"]

MAX_LATEX = 20_000
MAX_EXPANSIONS = 2_000
MAX_DEPTH = 120
MAX_EXPONENT = 10_000
MAX_FACTORIAL = 2_000
MAX_DIGITS = 5_000


class LatexReadError(ValueError):
    """Malformed or unsupported LaTeX; the message says what and where."""


# ----------------------------------------------------------------------------------------------- tokens
@dataclass(frozen=True)
class Tok:
    kind: str  # "cmd" | "num" | "letter" | "op" | "dots" | "sep" | "end"
    text: str

    def is_op(self, *ops: str) -> bool:
        return self.kind == "op" and self.text in ops

    def is_cmd(self, *names: str) -> bool:
        return self.kind == "cmd" and self.text in names


_DOTS_CMDS = {
    "dots",
    "cdots",
    "ldots",
    "dotsb",
    "dotsm",
    "dotsc",
    "dotsi",
    "dotso",
    "ddots",
    "hdots",
    "cdotp",
}
_SPACING = {
    ",",
    ";",
    ":",
    "!",
    " ",
    "quad",
    "qquad",
    "displaystyle",
    "textstyle",
    "scriptstyle",
    "limits",
    "nolimits",
    "nonumber",
    "notag",
    "left",
    "right",
    "big",
    "Big",
    "bigg",
    "Bigg",
    "bigl",
    "bigr",
    "Bigl",
    "Bigr",
    "biggl",
    "biggr",
    "Biggl",
    "Biggr",
    "bigm",
    "Bigm",
    "middle",
    "allowbreak",
    "nobreak",
    "relax",
    "medskip",
    "smallskip",
    "bigskip",
    "footnotesize",
    "small",
    "scriptsize",
    "normalsize",
    "large",
    "Large",
    "centering",
    "noindent",
    "enspace",
    "thinspace",
    "negthinspace",
    "hfill",
    "hfil",
    "mathstrut",
    "strut",
    "mathpunct",
    "mathord",
    "mathrel",
    "mathbin",
    "mathopen",
    "mathclose",
    "phantom",
    "left.",
    "vphantom",
}
_DROP_WITH_ARG = {
    "label",
    "tag",
    "hspace",
    "vspace",
    "cite",
    "ref",
    "eqref",
    "mbox*",
    "phantom",
    "vphantom",
    "hphantom",
    "footnote",
    "color",
}
_TEXT_CMDS = {
    "text",
    "textrm",
    "mathrm",
    "mbox",
    "textbf",
    "mathbf",
    "textit",
    "mathit",
    "rm",
    "hbox",
    "operatorname",
    "operatorname*",
    "mathsf",
    "textsf",
    "mathbb",
    "boldsymbol",
    "bm",
    "mathcal",
}
_OUTER_ENVS = {
    "equation",
    "equation*",
    "align",
    "align*",
    "aligned",
    "split",
    "gather",
    "gather*",
    "gathered",
    "multline",
    "multline*",
    "eqnarray",
    "eqnarray*",
    "alignat",
    "alignat*",
    "alignedat",
    "displaymath",
    "math",
    "flalign",
    "flalign*",
    "subequations",
    "dmath",
    "dmath*",
}
_GREEK = {
    "alpha",
    "beta",
    "gamma",
    "delta",
    "epsilon",
    "varepsilon",
    "zeta",
    "eta",
    "theta",
    "iota",
    "kappa",
    "lambda",
    "mu",
    "nu",
    "xi",
    "rho",
    "sigma",
    "tau",
    "upsilon",
    "phi",
    "varphi",
    "chi",
    "psi",
    "omega",
    "ell",
    "imath",
    "jmath",
}
_FUNCS = {
    "sin": sp.sin,
    "cos": sp.cos,
    "tan": sp.tan,
    "cot": sp.cot,
    "log": sp.log,
    "ln": sp.log,
    "exp": sp.exp,
    "arctan": sp.atan,
    "Gamma": sp.gamma,
    "zeta": sp.zeta,
}
_FRAC = {"frac", "dfrac", "tfrac", "cfrac", "sfrac", "nicefrac"}
_BINOM = {"binom", "dbinom", "tbinom"}
_KNOWN = (
    _DOTS_CMDS
    | _SPACING
    | _DROP_WITH_ARG
    | _TEXT_CMDS
    | _GREEK
    | set(_FUNCS)
    | _FRAC
    | _BINOM
    | {
        "pi",
        "infty",
        "sum",
        "cdot",
        "times",
        "ast",
        "over",
        "choose",
        "sqrt",
        "begin",
        "end",
        "lim",
        "pm",
        "mp",
        "geq",
        "ge",
        "geqslant",
        "leq",
        "le",
        "leqslant",
        "to",
        "rightarrow",
        "longrightarrow",
        "approx",
        "equiv",
        "hyp",
        "genfrac",
        "mathop",
        "Kop",
        "K",
        "{",
        "}",
        "\\",
        "lbrack",
        "rbrack",
        "lbrace",
        "rbrace",
        "langle",
        "rangle",
        "lfloor",
        "rfloor",
        "lceil",
        "rceil",
        "prod",
        "int",
        "Pi",
        "varpi",
        "Catalan",
        "mathrm",
        "cr",
        "newline",
        "hline",
        "|",
        "vert",
        "mid",
        "colon",
        "ne",
        "neq",
    }
)
_TEXT_WORDS_DOTS = re.compile(r"^\s*(etc\.?|\.\.\.)\s*$")


def _repair(text: str) -> str:
    # Escapes damaged by a JSON/Python round trip: "\t" (tab) + "ext" was "\text", form feed + "rac" "\frac"...
    text = re.sub(r"\t(?=[A-Za-z])", r"\\t", text)
    text = re.sub(r"\x0c(?=[A-Za-z])", r"\\f", text)
    text = re.sub(r"\x08(?=[A-Za-z])", r"\\b", text)
    text = re.sub(r"\r(?=[A-Za-z])", r"\\r", text)
    text = re.sub(r"\x0b(?=[A-Za-z])", r"\\v", text)
    text = re.sub(r"\x07(?=[A-Za-z])", r"\\a", text)
    # comments: an unescaped % to the end of the line
    text = re.sub(r"(?<!\\)%[^\n]*", "", text)
    return text


_TOKEN_RE = re.compile(
    r"(?P<cmd>\\(?:[A-Za-z]+\*?|.))|(?P<dots>\.\.+|…)|(?P<num>\d+(?:\.\d+)?)|(?P<letter>[A-Za-z])"
    r"|(?P<ws>\s+)|(?P<op>.)",
    re.S,
)


def _read_braced(text: str, i: int) -> tuple[str, int] | None:
    """(content, index after) of the balanced ``{...}`` at text[i], after any whitespace."""
    while i < len(text) and text[i].isspace():
        i += 1
    return read_group(text, i)


def tokenize_latex(text: str, macros: dict[str, Macro] | None = None) -> list[Tok]:
    """Tokens of one LaTeX math fragment, with macros expanded and typesetting noise removed."""
    if not isinstance(text, str):
        raise LatexReadError(f"latex: expected a string, got {type(text).__name__}")
    if len(text) > MAX_LATEX:
        raise LatexReadError(f"latex: {len(text)} characters exceed the limit {MAX_LATEX}")
    table = merge_macros(DEFAULT_MACROS, macros)
    budget = [MAX_EXPANSIONS]
    return _tokenize(_repair(text), table, budget)


def _tokenize(text: str, table: dict[str, Macro], budget: list[int], depth: int = 0) -> list[Tok]:
    if depth > 40:
        raise LatexReadError("macro expansion nested deeper than 40 levels (recursive macro?)")
    out: list[Tok] = []
    i = 0
    n = len(text)
    while i < n:
        m = _TOKEN_RE.match(text, i)
        assert m is not None
        kind = m.lastgroup
        s = m.group(kind)
        i = m.end()
        if kind == "ws":
            continue
        if kind == "dots":
            out.append(Tok("dots", "..."))
            continue
        if kind == "num":
            out.append(Tok("num", s))
            continue
        if kind == "letter":
            out.append(Tok("letter", s))
            continue
        if kind == "op":
            if s in "&'":
                if s == "'":
                    out.append(Tok("op", "'"))
                continue
            if s == "~":
                continue
            if s == "$":
                continue
            if s == "." and out and out[-1].kind == "op" and out[-1].text == ".":
                continue
            out.append(Tok("op", s))
            continue
        # command
        name = s[1:]
        if name in table and name not in ("\\",):
            budget[0] -= 1
            if budget[0] < 0:
                raise LatexReadError(f"macro expansion exceeded {MAX_EXPANSIONS} steps (recursive macro?)")
            mac = table[name]
            body = mac.body
            for a in range(1, mac.nargs + 1):
                g = _read_braced(text, i)
                if g is not None:
                    arg, i = g
                else:
                    j = i
                    while j < n and text[j].isspace():
                        j += 1
                    if j >= n:
                        raise LatexReadError(f"macro \\{name} expects {mac.nargs} argument(s)")
                    if text[j] == "\\":
                        mm = re.match(r"\\(?:[A-Za-z]+|.)", text[j:])
                        arg, i = mm.group(0), j + mm.end()  # type: ignore[union-attr]
                    else:
                        arg, i = text[j], j + 1
                body = body.replace(f"#{a}", " " + arg + " ")
            out.extend(_tokenize(body + " ", table, budget, depth + 1))
            continue
        if name in _DROP_WITH_ARG:
            while i < n and text[i] == "[":
                close = text.find("]", i)
                i = close + 1 if close > 0 else n
            g = _read_braced(text, i)
            if g is not None:
                i = g[1]
            continue
        if name in ("left", "right"):
            j = i
            while j < n and text[j].isspace():
                j += 1
            if j < n and text[j] == ".":
                i = j + 1
            continue
        if name in _SPACING:
            if name in ("quad", "qquad"):
                out.append(Tok("sep", name))
            continue
        if name in ("\\", "cr", "newline"):
            # optional spacing argument \\[2mm]
            j = i
            while j < n and text[j].isspace():
                j += 1
            if j < n and text[j] == "[":
                close = text.find("]", j)
                if close > 0 and close - j < 20:
                    i = close + 1
            out.append(Tok("cmd", "\\"))
            continue
        if name in _TEXT_CMDS or name in ("text*",):
            g = _read_braced(text, i)
            if g is None:
                continue
            content, i = g
            if "$" in content:
                inner = re.findall(r"\$([^$]*)\$", content)
                for part in inner:
                    out.extend(_tokenize(part, table, budget, depth + 1))
                continue
            word = content.strip()
            if word in ("infty", "\\infty"):
                out.append(Tok("cmd", "infty"))
            elif _TEXT_WORDS_DOTS.match(word):
                out.append(Tok("dots", "..."))
            elif re.fullmatch(r"[A-Za-z]", word):
                out.append(Tok("letter", word))
            elif word in ("K",):
                out.append(Tok("cmd", "K"))
            elif re.search(r"[A-Za-z]{2,}", word):
                out.append(Tok("sep", word))
            continue
        if name in _DOTS_CMDS:
            out.append(Tok("dots", "..."))
            continue
        if name in ("pm", "mp"):
            out.append(Tok("op", "+"))
            continue
        if name in ("cdot", "times", "ast"):
            out.append(Tok("op", "*"))
            continue
        if name in ("{", "lbrace"):
            out.append(Tok("op", "("))
            continue
        if name in ("}", "rbrace"):
            out.append(Tok("op", ")"))
            continue
        if name in ("lbrack", "langle", "lfloor", "lceil"):
            out.append(Tok("op", "["))
            continue
        if name in ("rbrack", "rangle", "rfloor", "rceil"):
            out.append(Tok("op", "]"))
            continue
        if name in ("to", "rightarrow", "longrightarrow", "approx", "equiv"):
            out.append(Tok("op", "="))
            continue
        if name == "begin" or name == "end":
            g = _read_braced(text, i)
            if g is None:
                raise LatexReadError(f"\\{name} without an environment name")
            env, i = g[0].strip(), g[1]
            if env in _OUTER_ENVS:
                if name == "begin" and env.startswith("alignat"):
                    g2 = _read_braced(text, i)
                    if g2 is not None:
                        i = g2[1]
                continue
            if name == "begin" and env == "array":
                g2 = _read_braced(text, i)
                if g2 is not None:
                    i = g2[1]
            out.append(Tok("cmd", f"{name}:{env}"))
            continue
        out.append(Tok("cmd", name))
    return out


# ------------------------------------------------------------------------------------------------ tree
# Nodes are tuples: ("num", int|Rational) ("sym", name) ("const", expr) ("add", [(sign, node)])
# ("mul", [node | ("inv", node)]) ("div", a, b) ("pow", a, b) ("fact", a) ("fact2", a) ("poch", a, n)
# ("binom", a, b) ("multinom", top, [parts]) ("func", name, arg) ("sum", var, lo, hi, body)
# ("hyp", [a], [b], idx) ("kcf", var, lo, b, a) ("dots",) ("paren", node) ("sqrt", a, idx)


class _Parser:
    def __init__(self, toks: list[Tok]) -> None:
        self.toks = toks + [Tok("end", "")]
        self.i = 0
        self.depth = 0

    def peek(self, k: int = 0) -> Tok:
        return self.toks[min(self.i + k, len(self.toks) - 1)]

    def take(self) -> Tok:
        t = self.toks[self.i]
        if t.kind != "end":
            self.i += 1
        return t

    def fail(self, what: str) -> LatexReadError:
        ctx = " ".join(t.text for t in self.toks[max(0, self.i - 4) : self.i + 4])
        return LatexReadError(f"{what} near '{ctx}'")

    def enter(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise LatexReadError(f"LaTeX nested deeper than {MAX_DEPTH} levels")

    def parse_side(self):
        node = self.expr()
        if self.peek().kind != "end":
            raise self.fail(f"unexpected {self.peek().text!r}")
        return node

    _STOP_OPS = (")", "]", "}", "=", ",", ";")

    def expr(self):
        self.enter()
        terms: list = []
        sign = 1
        pending = False
        while True:
            t = self.peek()
            if t.is_op("+"):
                self.take()
                pending = True
                continue
            if t.is_op("-"):
                self.take()
                sign = -sign
                pending = True
                continue
            if (
                t.kind == "end"
                or t.kind == "sep"
                or t.is_op(*self._STOP_OPS)
                or t.is_cmd("over", "choose", "\\")
            ):
                break
            if t.is_cmd("end:matrix", "end:array", "end:pmatrix", "end:bmatrix"):
                break
            if terms and not pending and t.kind != "dots":
                raise self.fail("missing operator")
            if t.kind == "dots":
                self.take()
                terms.append((sign, ("dots",)))
            else:
                terms.append((sign, self.term()))
            sign, pending = 1, False
        self.depth -= 1
        if not terms:
            raise self.fail("empty expression")
        if len(terms) == 1 and terms[0][0] == 1:
            return terms[0][1]
        return ("add", terms)

    def _starts_factor(self, t: Tok) -> bool:
        if t.kind in ("num", "letter"):
            return True
        if t.kind == "op":
            return t.text in ("(", "[", "{", "|")
        if t.kind == "cmd":
            return t.text not in (
                "over",
                "choose",
                "\\",
                "end:matrix",
                "end:array",
            ) and not t.text.startswith("end:")
        return False

    def term(self):
        factors: list = []
        while True:
            t = self.peek()
            if t.is_op("*"):
                self.take()
                continue
            if t.is_op("/"):
                self.take()
                if self.peek().is_op("-"):
                    self.take()
                    factors.append(("num", -1))
                factors.append(("inv", self.factor()))
                continue
            if t.is_cmd("sum"):
                factors.append(self.sum_node())
                break
            if t.is_cmd("prod", "int"):
                raise self.fail(f"\\{t.text} is not supported")
            if t.is_cmd("lim"):
                self.take()
                if self.peek().is_op("_"):
                    self.take()
                    self._raw_arg_tokens()
                continue
            if t.is_cmd("mathop", "Kop", "K"):
                node = self.kcf_node()
                if node is not None:
                    factors.append(node)
                    break
                continue
            if self._starts_factor(t):
                factors.append(self.factor())
                continue
            if t.kind == "dots" and len(factors) >= 2 and self._starts_factor(self.peek(1)):
                self.take()
                last = self.factor()
                factors = factors[:-2] + [("dprod", factors[-2], factors[-1], last)]
                continue
            break
        if not factors:
            raise self.fail("expected a term")
        return factors[0] if len(factors) == 1 else ("mul", factors)

    # -- arguments
    def group_until_close(self, close: str):
        node = self.expr()
        if self.peek().is_cmd("over", "choose"):
            kind = self.take().text
            other = self.expr()
            node = ("div", node, other) if kind == "over" else ("binom", node, other)
        if not self.peek().is_op(close):
            raise self.fail(f"expected {close!r}")
        self.take()
        return node

    def arg(self):
        """A macro argument: a braced group or a single token (one digit of a number)."""
        t = self.peek()
        if t.is_op("{"):
            self.take()
            return self.group_until_close("}")
        if t.kind == "num":
            self.take()
            if len(t.text) > 1 and "." not in t.text:
                self.toks.insert(self.i, Tok("num", t.text[1:]))
                return ("num", int(t.text[0]))
            return ("num", sp.Rational(t.text))
        if t.kind == "letter":
            self.take()
            return ("sym", t.text)
        if t.kind == "cmd":
            return self.atom()
        if t.is_op("-"):
            self.take()
            return ("add", [(-1, self.arg())])
        raise self.fail("expected an argument")

    def script_arg(self):
        return self.arg()

    def arg_list(self) -> list:
        """A braced comma-separated list (multinomial, hypergeometric parameters)."""
        if not self.peek().is_op("{"):
            return [self.arg()]
        self.take()
        items = []
        while True:
            while self.peek().is_cmd("\\"):
                self.take()
            items.append(self.expr())
            if self.peek().is_op(","):
                self.take()
                continue
            break
        if not self.peek().is_op("}"):
            raise self.fail("expected '}'")
        self.take()
        return items

    # -- factor
    def factor(self):
        self.enter()
        node = self.atom()
        while True:
            t = self.peek()
            if t.is_op("!"):
                self.take()
                if self.peek().is_op("!"):
                    self.take()
                    node = ("fact2", node)
                else:
                    node = ("fact", node)
                continue
            if t.is_op("^"):
                self.take()
                node = ("pow", node, self.script_arg())
                continue
            if t.is_op("_"):
                self.take()
                sub = self.script_arg()
                node = self._subscript(node, sub)
                continue
            if t.is_op("'"):
                self.take()
                if node[0] == "sym":
                    node = ("sym", node[1] + "'")
                continue
            break
        self.depth -= 1
        return node

    def _subscript(self, node, sub):
        if node[0] == "pow":  # (x)^3_k
            return ("pow", self._subscript(node[1], sub), node[2])
        if node[0] == "paren":
            return ("poch", node[1], sub)
        if node[0] == "hyp":
            return ("hyp", node[1], node[2], sub)
        if node[0] == "sym":
            return ("sym", f"{node[1]}_{_node_text(sub)}")
        if node[0] == "num":
            return ("sym", f"{node[1]}_{_node_text(sub)}")
        return ("sym", f"sub_{_node_text(node)}_{_node_text(sub)}")

    def atom(self):
        t = self.take()
        if t.kind == "num":
            return ("num", sp.Rational(t.text) if "." in t.text else int(t.text))
        if t.kind == "letter":
            return ("sym", t.text)
        if t.kind == "dots":
            return ("dots",)
        if t.kind == "op":
            if t.text == "(":
                return ("paren", self.group_until_close(")"))
            if t.text == "[":
                if self.peek().is_cmd("begin:matrix", "begin:array", "begin:pmatrix"):
                    return self.matrix_hyp()
                return ("paren", self.group_until_close("]"))
            if t.text == "{":
                return ("paren", self.group_until_close("}"))
            if t.text == "|":
                inner = self.expr()
                if not self.peek().is_op("|"):
                    raise self.fail("expected '|'")
                self.take()
                return ("func", "Abs", inner)
            raise self.fail(f"unexpected {t.text!r}")
        if t.kind == "cmd":
            name = t.text
            if name in _FRAC:
                if self.peek().is_op("["):
                    while not self.take().is_op("]"):
                        if self.peek().kind == "end":
                            raise self.fail("unclosed optional argument")
                a = self.arg()
                b = self.arg()
                return ("div", a, b)
            if name in _BINOM:
                a = self.arg()
                parts = self.arg_list()
                return ("binom", a, parts[0]) if len(parts) == 1 else ("multinom", a, parts)
            if name == "genfrac":
                _left, _right, thick, _style = (
                    self.raw_group(),
                    self.raw_group(),
                    self.raw_group(),
                    self.raw_group(),
                )
                a, b = self.arg(), self.arg()
                return ("binom", a, b) if thick.strip().startswith("0") else ("div", a, b)
            if name == "sqrt":
                idx = None
                if self.peek().is_op("["):
                    self.take()
                    idx = self.group_until_close("]")
                return ("sqrt", self.arg(), idx)
            if name in ("pi", "Pi", "varpi"):
                return ("const", sp.pi)
            if name == "infty":
                return ("const", sp.oo)
            if name == "Catalan":
                return ("const", sp.Catalan)
            if name in _FUNCS:
                if name == "zeta" and not self.peek().is_op("("):
                    return ("sym", "zeta")
                return ("func", name, self.factor())
            if name in _GREEK:
                return ("sym", name)
            if name == "hyp":
                self.raw_group()
                top = self.arg_list()
                bottom = self.arg_list()
                return ("hyp", top, bottom, None)
            if name in ("sum",):
                raise self.fail("\\sum in an unexpected position")
            if name.startswith("begin:") or name.startswith("end:"):
                raise self.fail(f"unsupported environment {name.split(':', 1)[1]!r}")
            return ("sym", "\\" + name)
        raise self.fail("unexpected end of input")

    def raw_group(self) -> str:
        return "".join(t.text for t in self._raw_arg_tokens())

    def matrix_hyp(self):
        self.take()  # begin:matrix
        top = self._comma_row()
        if not self.peek().is_cmd("\\"):
            raise self.fail("expected two rows in the bracket")
        self.take()
        bottom = self._comma_row()
        if not self.peek().kind == "cmd" or not self.peek().text.startswith("end:"):
            raise self.fail("expected \\end{matrix}")
        self.take()
        if not self.peek().is_op("]"):
            raise self.fail("expected ']'")
        self.take()
        return ("hyp", top, bottom, None)

    def _comma_row(self) -> list:
        items = [self.expr()]
        while self.peek().is_op(","):
            self.take()
            items.append(self.expr())
        return items

    def _bounds(self):
        lo_toks = hi = None
        for _ in range(2):
            if self.peek().is_op("_"):
                self.take()
                lo_toks = self._raw_arg_tokens()
            elif self.peek().is_op("^"):
                self.take()
                hi = self.script_arg()
        return lo_toks, hi

    def _raw_arg_tokens(self) -> list[Tok]:
        if not self.peek().is_op("{"):
            return [self.take()]
        self.take()
        depth, out = 1, []
        while True:
            t = self.take()
            if t.kind == "end":
                raise self.fail("unclosed '{'")
            if t.is_op("{"):
                depth += 1
            elif t.is_op("}"):
                depth -= 1
                if depth == 0:
                    return out
            out.append(t)

    def _var_lo(self, toks: list[Tok] | None):
        if not toks:
            raise self.fail("summation without a lower bound")
        for j, t in enumerate(toks):
            strict = t.is_op(">")
            if t.is_op("=") or t.is_cmd("geq", "ge", "geqslant") or strict:
                var_toks, rest = toks[:j], toks[j + 1 :]
                if rest and rest[0].is_op("="):
                    rest = rest[1:]
                var = _Parser(var_toks).parse_side()
                lo = _Parser(rest).parse_side()
                if var[0] != "sym":
                    raise self.fail("summation variable must be a name")
                return var[1], lo, strict
        raise self.fail("summation lower bound must be written 'k = a' or 'k \\geq a'")

    def sum_node(self):
        self.take()
        lo_toks, hi = self._bounds()
        var, lo, strict = self._var_lo(lo_toks)
        if strict:
            lo = ("add", [(1, lo), (1, ("num", 1))])
        body = self.term()
        return ("sum", var, lo, hi, body)

    def kcf_node(self):
        t = self.take()
        if t.text == "mathop":
            content = self.raw_group()
            if content.strip() not in ("K", "\\mathrm{K}", "mathrmK"):
                return ("sym", "\\mathop")
        lo_toks, hi = self._bounds()
        var, lo, strict = self._var_lo(lo_toks)
        if strict:
            lo = ("add", [(1, lo), (1, ("num", 1))])
        body = self.factor()
        if body[0] != "div":
            raise self.fail("K notation must be followed by a fraction b(n)/a(n)")
        return ("kcf", var, lo, body[1], body[2])


def _node_text(node) -> str:
    if node[0] in ("num", "sym"):
        return str(node[1])
    return re.sub(r"\W+", "", str(node))[:20]


# ------------------------------------------------------------------------------------------ splitting
_OPENERS = ("(", "[", "{")
_CLOSERS = (")", "]", "}")


def _depths(toks: list[Tok]) -> list[int]:
    d, out = 0, []
    for t in toks:
        if t.kind == "op" and t.text in _CLOSERS or t.kind == "cmd" and t.text.startswith("end:"):
            d = max(0, d - 1)
        out.append(d)
        if t.kind == "op" and t.text in _OPENERS or t.kind == "cmd" and t.text.startswith("begin:"):
            d += 1
    return out


def _split(toks: list[Tok], is_sep) -> list[list[Tok]]:
    parts: list[list[Tok]] = [[]]
    for t, d in zip(toks, _depths(toks)):
        if d == 0 and is_sep(t):
            parts.append([])
        else:
            parts[-1].append(t)
    return parts


_BINOPS = ("=", "+", "-", "*", "/")


def _statements(toks: list[Tok]) -> list[list[Tok]]:
    lines = [ln for ln in _split(toks, lambda t: t.is_cmd("\\")) if ln]
    glued: list[list[Tok]] = []
    for ln in lines:
        if glued and (
            ln[0].kind == "op"
            and ln[0].text in _BINOPS
            or glued[-1][-1].kind == "op"
            and glued[-1][-1].text in _BINOPS
        ):
            glued[-1] = glued[-1] + ln
        else:
            glued.append(ln)
    out: list[list[Tok]] = []
    for ln in glued:
        out.extend(s for s in _split(ln, lambda t: t.kind == "sep" or t.is_op(",", ";")) if s)
    return out


def _clean_side(side: list[Tok]) -> list[Tok]:
    side = [t for t in side if not t.is_op(".", ":")]
    # unknown commands standing alone at either end of a side are typesetting macros (\hsx, \virgule)
    while (
        side
        and side[0].kind == "cmd"
        and side[0].text not in _KNOWN
        and not side[0].text.startswith(("begin:", "end:"))
    ):
        side = side[1:]
    while (
        side
        and side[-1].kind == "cmd"
        and side[-1].text not in _KNOWN
        and not side[-1].text.startswith(("begin:", "end:"))
    ):
        side = side[:-1]
    return side


# ------------------------------------------------------------------------------------------ interpret
_INT_NAMES = set("ijklmnpqrstuvwxyz") | {"nu", "ell", "mu", "l"}


def _symbol(name: str) -> sp.Expr:
    if name == "e":
        return sp.E
    if name == "k":
        return K
    if name == "n":
        return N
    if name in _INT_NAMES:
        return sp.Symbol(name, integer=True)
    return sp.Symbol(name)


@dataclass
class _CFData:
    a: sp.Expr
    b: sp.Expr
    head: sp.Matrix  # written value = Möbius(head, PCF value)
    notes: list[str] = field(default_factory=list)


@dataclass
class _SeriesData:
    term: sp.Expr
    start: int
    notes: list[str] = field(default_factory=list)


def _check_size(x: sp.Expr) -> sp.Expr:
    if x.is_Rational and x != 0:
        p, q = sp.fraction(x)
        if len(str(abs(int(p)))) > MAX_DIGITS or len(str(abs(int(q)))) > MAX_DIGITS:
            raise LatexReadError("number too large")
    return x


def _fit_poly(points: list[tuple[int, sp.Expr]], *, max_deg: int = 6, min_spare: int = 1) -> sp.Expr | None:
    """Lowest-degree polynomial in N through ``points``, fitted on the first deg+1 and checked on the rest
    (at least ``min_spare`` of them)."""
    if any(not (v.is_Rational) for _, v in points):
        return None
    for d in range(0, max_deg + 1):
        if len(points) < d + 1 + min_spare:
            break
        base = points[: d + 1]
        poly = sp.expand(sp.interpolate([(sp.Integer(x), y) for x, y in base], N)) if d > 0 else base[0][1]
        poly = sp.Integer(poly) if isinstance(poly, int) else sp.sympify(poly)
        if all(poly.subs(N, x) == y for x, y in points):
            return sp.expand(poly)
    return None


def _factor_shape(node):
    """Factors of a written product (a pow counts as base and fixed exponent) for factor-wise fitting."""
    node = _unwrap(node)
    if node[0] == "mul" and all(f[0] != "inv" for f in node[1]):
        out = []
        for f in node[1]:
            out.extend(_factor_shape(f))
        return out
    if node[0] == "pow" and _unwrap(node[2])[0] == "num":
        return [("pow", node[1], _unwrap(node[2])[1])]
    return [("one", node, 1)]


def _unwrap(node):
    while node[0] == "paren":
        node = node[1]
    return node


def _contains_dots(node) -> bool:
    if node[0] == "dots":
        return True
    for c in node[1:]:
        if isinstance(c, tuple) and c and isinstance(c[0], str) and _contains_dots(c):
            return True
        if isinstance(c, list):
            for it in c:
                if isinstance(it, tuple) and len(it) == 2 and isinstance(it[0], int):
                    if _contains_dots(it[1]):
                        return True
                elif isinstance(it, tuple) and it and isinstance(it[0], str) and _contains_dots(it):
                    return True
    return False


class _Interp:
    def __init__(self) -> None:
        self.placeholders: dict[sp.Symbol, _CFData | _SeriesData] = {}

    def new(self, data) -> sp.Symbol:
        s = sp.Symbol(f"__formula{len(self.placeholders)}")
        self.placeholders[s] = data
        return s

    # -- generic evaluation
    def ev(self, node) -> sp.Expr:
        kind = node[0]
        if kind == "num":
            return sp.Integer(node[1]) if isinstance(node[1], int) else node[1]
        if kind == "sym":
            return _symbol(node[1])
        if kind == "const":
            return node[1]
        if kind == "paren":
            return self.ev(node[1])
        if kind == "add":
            cf = self.try_cf(node)
            if cf is not None:
                return cf
            if any(t[0] == "dots" for _, t in node[1]):
                return self.dots_series(node)
            return sp.Add(*[s * self.ev(t) for s, t in node[1]])
        if kind == "mul":
            out = sp.Integer(1)
            for f in node[1]:
                if f[0] == "inv":
                    den = self.ev(f[1])
                    if den == 0:
                        raise LatexReadError("division by zero")
                    out = out / den
                else:
                    out = out * self.ev(f)
            return out
        if kind == "div":
            cf = self.try_cf(node)
            if cf is not None:
                return cf
            num, den = self.ev(node[1]), self.ev(node[2])
            if den == 0:
                raise LatexReadError("division by zero")
            return num / den
        if kind == "pow":
            base, ex = self.ev(node[1]), self.ev(node[2])
            if ex.is_Number and abs(ex) > MAX_EXPONENT:
                raise LatexReadError(f"exponent {ex} exceeds the limit {MAX_EXPONENT}")
            if base.is_Rational and ex.is_Rational and base != 0:
                p, q = sp.fraction(base)
                if max(len(str(abs(int(p)))), len(str(abs(int(q))))) * abs(float(ex)) > MAX_DIGITS:
                    raise LatexReadError("power too large")
            if base == 0 and ex.is_Number and ex.is_negative:
                raise LatexReadError("zero to a negative power")
            return base**ex
        if kind in ("fact", "fact2"):
            x = self.ev(node[1])
            if x.is_Number and abs(x) > MAX_FACTORIAL:
                raise LatexReadError(f"factorial of {x} exceeds the limit {MAX_FACTORIAL}")
            return sp.factorial(x) if kind == "fact" else sp.factorial2(x)
        if kind == "poch":
            x, n = self.ev(node[1]), self.ev(node[2])
            if n.is_Number and abs(n) > MAX_FACTORIAL:
                raise LatexReadError("Pochhammer index too large")
            return sp.rf(x, n)
        if kind == "binom":
            a, b = self.ev(node[1]), self.ev(node[2])
            if a.is_Number and abs(a) > MAX_FACTORIAL:
                raise LatexReadError("binomial argument too large")
            return sp.binomial(a, b)
        if kind == "multinom":
            top = self.ev(node[1])
            parts = [self.ev(p) for p in node[2]]
            if sp.simplify(sum(parts) - top) != 0:
                raise LatexReadError("multinomial: the lower entries must add up to the upper one")
            out = sp.factorial(top)
            for p in parts:
                out = out / sp.factorial(p)
            return out
        if kind == "func":
            f = sp.Abs if node[1] == "Abs" else _FUNCS[node[1]]
            return f(self.ev(node[2]))
        if kind == "sqrt":
            x = self.ev(node[1])
            return sp.sqrt(x) if node[2] is None else x ** (1 / self.ev(node[2]))
        if kind == "hyp":
            if node[3] is None:
                raise LatexReadError("hypergeometric bracket without an index")
            idx = self.ev(node[3])
            out = sp.Integer(1)
            for a in node[1]:
                out = out * sp.rf(self.ev(a), idx)
            for b in node[2]:
                out = out / sp.rf(self.ev(b), idx)
            return out
        if kind == "sum":
            return self.sum_series(node)
        if kind == "kcf":
            return self.k_cf(node)
        if kind == "dots":
            raise LatexReadError("dots outside a written-out sum or continued fraction")
        if kind == "inv":
            return 1 / self.ev(node[1])
        if kind == "dprod":
            return self.dots_product(node)
        raise LatexReadError(f"cannot interpret {kind}")

    # -- infinite sums
    def sum_series(self, node) -> sp.Symbol:
        _, var, lo_n, hi_n, body = node
        hi = self.ev(hi_n) if hi_n is not None else sp.oo
        if hi != sp.oo:
            raise LatexReadError(f"only infinite sums are read (upper bound {hi})")
        lo = self.ev(lo_n)
        if not lo.is_Integer:
            raise LatexReadError(f"the lower bound of the sum must be an integer, got {lo}")
        v = _symbol(var)
        term = self.ev(body)
        notes = []
        if term.free_symbols & set(self.placeholders):
            raise LatexReadError("nested formulas inside a sum are not supported")
        free = term.free_symbols
        if v not in free:
            others = [s for s in free if not s.name.startswith("__")]
            if len(others) == 1:
                notes.append(f"summand uses {others[0]} instead of the index {v}; read as the index")
                v = others[0]
        term = term.subs(v, K)
        if term.free_symbols - {K}:
            raise LatexReadError(
                f"the summand has unknown symbols {sorted(map(str, term.free_symbols - {K}))}"
            )
        return self.new(_SeriesData(term, int(lo), notes))

    # -- written-out products: (2n-1)^2 (2n+1)^2 ... (2n+9)^2
    def dots_product(self, node) -> sp.Expr:
        def split(nd):
            nd = _unwrap(nd)
            if nd[0] == "pow" and _unwrap(nd[2])[0] == "num":
                return self.ev(nd[1]), self.ev(nd[2])
            return self.ev(nd), sp.Integer(1)

        (b0, e0), (b1, e1), (bl, el) = split(node[1]), split(node[2]), split(node[3])
        if not (e0 == e1 == el):
            raise LatexReadError("written-out product: the factors have different exponents")
        step = sp.expand(b1 - b0)
        if step == 0 or step.free_symbols:
            raise LatexReadError("written-out product: factors must differ by a constant step")
        count = sp.simplify((bl - b0) / step)
        if not (count.is_Integer and 1 <= count <= 1000):
            raise LatexReadError("written-out product: the last factor does not continue the pattern")
        return sp.Mul(*[(b0 + j * step) ** e0 for j in range(int(count) + 1)])

    # -- written-out sums: 1 - 1/3 + 1/5 - ...
    def dots_series(self, node) -> sp.Symbol:
        terms = node[1]
        first_dots = next(i for i, (_, t) in enumerate(terms) if t[0] == "dots")
        written = terms[:first_dots]
        after = [(s, t) for s, t in terms[first_dots + 1 :] if t[0] != "dots"]
        vals = [(s, t, s * self.ev(t)) for s, t in written]
        general = []
        for s, t in after:
            try:
                g = s * self.ev(t)
            except LatexReadError:
                continue
            if g.free_symbols:
                general.append(g)
        for drop in range(0, 3):
            pat = vals[drop:]
            if len(pat) < 2:
                break
            if any(v.free_symbols for _, _, v in pat):
                break
            offset = sp.Add(*[v for _, _, v in vals[:drop]])
            if len(general) == 1 and len(general[0].free_symbols) == 1:
                (gv,) = general[0].free_symbols
                g = general[0]
                for s0 in range(-1, 4):
                    try:
                        ok = all(sp.simplify(g.subs(gv, s0 + i) - v) == 0 for i, (_, _, v) in enumerate(pat))
                    except Exception:  # noqa: BLE001 - an undefined term (1/0) means no match
                        ok = False
                    if ok:
                        data = _SeriesData(g.subs(gv, K), s0, ["written-out sum: general term as written"])
                        return offset + self.new(data)
            if len(pat) < 3:
                continue
            term = self._fit_terms(pat)
            if term is not None:
                return offset + self.new(
                    _SeriesData(term, 0, ["written-out sum: term fitted to the written terms"])
                )
        raise LatexReadError("cannot infer the general term of the written-out sum")

    def _fit_terms(self, pat) -> sp.Expr | None:
        values = [v for _, _, v in pat]
        if any(v == 0 or not v.is_Rational for v in values):
            return None
        signs = [1 if v > 0 else -1 for v in values]
        if all(s == signs[0] for s in signs):
            sign = sp.Integer(signs[0])
        elif all(signs[i] == -signs[i - 1] for i in range(1, len(signs))):
            sign = signs[0] * (-1) ** K
        else:
            return None
        mags = [abs(v) for v in values]
        # (1) numerator and denominator as written
        nums, dens = [], []
        for _, t, v in pat:
            t = _unwrap(t)
            if t[0] == "div":
                try:
                    p, q = abs(self.ev(t[1])), abs(self.ev(t[2]))
                except LatexReadError:
                    p, q = None, None
                if p is None or not (p.is_Rational and q.is_Rational) or q == 0 or p / q != abs(v):
                    p, q = sp.fraction(abs(v))
            else:
                p, q = sp.fraction(abs(v))
            nums.append(p)
            dens.append(q)
        den_nodes = [_unwrap(t)[2] if _unwrap(t)[0] == "div" else None for _, t, _ in pat]
        fp = _fit_poly(list(enumerate(nums)), max_deg=3)
        fq = self._fit_seq(list(enumerate(dens)), den_nodes, magnitude=True)
        if fp is not None and fq is not None:
            return sign * fp.subs(N, K) / fq.subs(N, K)
        # (2) reciprocal of the magnitude as a polynomial
        fq = _fit_poly([(i, 1 / m) for i, m in enumerate(mags)], max_deg=4)
        if fq is not None:
            return sign / fq.subs(N, K)
        return None

    # -- continued fractions
    def _cf_chain(self, node):
        """Steps [(a_node_terms, b_sign, b_node)] and the final a terms, if ``node`` is a CF ending in dots."""
        steps = []
        cur = node
        while True:
            cur = _unwrap(cur)
            if cur[0] == "dots":
                return steps, None
            if cur[0] == "div" and _contains_dots(cur[2]):
                steps.append(([], 1, cur[1]))
                cur = cur[2]
                continue
            if cur[0] == "add":
                terms = cur[1]
                last_sign, last = terms[-1]
                lastu = _unwrap(last)
                if lastu[0] == "dots":
                    return steps, terms[:-1]
                if lastu[0] == "div" and _contains_dots(lastu[2]):
                    steps.append((terms[:-1], last_sign, lastu[1]))
                    cur = lastu[2]
                    continue
            return None

    def try_cf(self, node) -> sp.Expr | None:
        if not _contains_dots(node):
            return None
        chain = self._cf_chain(node)
        if chain is None:
            return None
        steps, final = chain
        if len(steps) < 2:
            return None
        a_vals: list = []
        b_vals: list = []
        a_nodes: list = []
        b_nodes: list = []
        for a_terms, bs, b in steps:
            if any(_unwrap(t)[0] == "dots" for _, t in a_terms):
                a_vals.append(None)
                a_nodes.append(None)
            else:
                a_vals.append(sp.Add(*[s * self.ev(t) for s, t in a_terms]))
                a_nodes.append(a_terms[0][1] if len(a_terms) == 1 and a_terms[0][0] == 1 else None)
            b_vals.append(bs * self.ev(b))
            b_nodes.append(b if bs == 1 else None)
        if final is not None and final and not any(_unwrap(t)[0] == "dots" for _, t in final):
            a_vals.append(sp.Add(*[s * self.ev(t) for s, t in final]))
            a_nodes.append(final[0][1] if len(final) == 1 and final[0][0] == 1 else None)
        # a_vals[j] = a_j (j = 0..), b_vals[j] = b_{j+1}
        data = self._fit_cf(a_vals, b_vals, a_nodes, b_nodes)
        if data is None:
            raise LatexReadError("cannot infer a(n), b(n) of the written continued fraction")
        return self.new(data)

    def _fit_cf(self, a_vals, b_vals, a_nodes, b_nodes) -> _CFData | None:
        # general terms written with a variable
        sym_idx = [j for j, v in enumerate(b_vals) if v is not None and v.free_symbols]
        if sym_idx:
            j = sym_idx[0]
            bg = b_vals[j]
            ag = a_vals[j + 1] if j + 1 < len(a_vals) and a_vals[j + 1] is not None else None
            if ag is None or len(bg.free_symbols | ag.free_symbols) != 1:
                return None
            (v,) = bg.free_symbols | ag.free_symbols
            a, b = sp.expand(ag.subs(v, N)), sp.expand(bg.subs(v, N))
            a0 = a_vals[0]
            if a0 is None or a0.free_symbols:
                return None
            notes = ["continued fraction: general terms as written"]
            written_b = [x for x in b_vals[:j] if x is not None and not x.free_symbols]
            if any(b.subs(N, i + 1) != x for i, x in enumerate(written_b)):
                notes.append("the written first partial numerators disagree with the general term")
            head = sp.Matrix([[1, a0 - a.subs(N, 0)], [0, 1]])
            return _CFData(a, b, head, notes)
        if any(v is None for v in a_vals) or any(v is None for v in b_vals):
            return None
        for m in range(0, 3):
            a_pts = [(n, a_vals[n + m]) for n in range(1, len(a_vals) - m)]
            b_pts = [(n, b_vals[n + m - 1]) for n in range(1, len(b_vals) - m + 1)]
            if len(a_pts) < 2 or len(b_pts) < 2:
                break
            a = self._fit_seq(a_pts, [a_nodes[n + m] for n, _ in a_pts])
            b = self._fit_seq(b_pts, [b_nodes[n + m - 1] for n, _ in b_pts])
            if a is None or b is None:
                continue
            if b == 0 or a.free_symbols - {N} or b.free_symbols - {N}:
                continue
            head = sp.eye(2)
            for j in range(m):
                head = head * sp.Matrix([[a_vals[j], b_vals[j]], [1, 0]])
            head = head * sp.Matrix([[1, a_vals[m] - a.subs(N, 0)], [0, 1]])
            notes = []
            if m:
                notes.append(f"continued fraction: the first {m} level(s) read as a Möbius head")
            if a_vals[m] != a.subs(N, 0):
                notes.append(f"written a({m}) = {a_vals[m]} differs from the fitted a(0) = {a.subs(N, 0)}")
            return _CFData(a, b, head, notes)
        return None

    def _fit_seq(self, pts, nodes, magnitude: bool = False) -> sp.Expr | None:
        """Fit a sequence of written values by a polynomial in N: factor by factor when every value is written
        as a product of the same shape, else as whole values (with a check point; for continued fractions
        also exactly through three points). ``magnitude``: fit |value| (signs are handled by the caller)."""
        fix = abs if magnitude else (lambda x: x)
        if all(nd is not None for nd in nodes):
            shapes = [_factor_shape(nd) for nd in nodes]
            if len(shapes[0]) > 1 and all(len(s) == len(shapes[0]) for s in shapes):
                poly = sp.Integer(1)
                ok = True
                for pos in range(len(shapes[0])):
                    exps = {s[pos][2] for s in shapes}
                    if len(exps) != 1:
                        ok = False
                        break
                    try:
                        vals = [(x, fix(self.ev(s[pos][1]))) for (x, _), s in zip(pts, shapes)]
                    except LatexReadError:
                        ok = False
                        break
                    f = _fit_poly(vals, max_deg=3)
                    if f is None:
                        ok = False
                        break
                    poly = poly * f ** exps.pop()
                if ok and all(poly.subs(N, x) == fix(y) for x, y in pts):
                    return sp.expand(poly)
        f = _fit_poly(pts, max_deg=6)
        if f is None and len(pts) >= 3 and not magnitude:
            f = _fit_poly(pts, max_deg=2, min_spare=0)
        return f

    def k_cf(self, node) -> sp.Symbol:
        _, var, lo_n, b_n, a_n = node
        lo = self.ev(lo_n)
        if lo != 1:
            raise LatexReadError("K notation: the index must start at 1")
        v = _symbol(var)
        a, b = sp.expand(self.ev(a_n).subs(v, N)), sp.expand(self.ev(b_n).subs(v, N))
        if (a.free_symbols | b.free_symbols) - {N}:
            raise LatexReadError("K notation: unknown symbols in a(n), b(n)")
        # K_{n>=1} b(n)/a(n) = PCF(a, b) - a(0)
        head = sp.Matrix([[1, -a.subs(N, 0)], [0, 1]])
        return self.new(_CFData(a, b, head, ["continued fraction in K notation"]))


# ------------------------------------------------------------------------------------------------ API
def _is_value(expr: sp.Expr) -> bool:
    if expr.free_symbols or not expr.is_number:
        return False
    if expr.has(sp.oo, sp.zoo, sp.nan):
        return False
    return bool(expr.atoms(sp.NumberSymbol)) or expr.has(sp.zeta)


def _solve_for(expr: sp.Expr, x: sp.Symbol, value: sp.Expr) -> sp.Expr | None:
    num, den = sp.fraction(sp.together(expr - value))
    poly = sp.Poly(sp.expand(num), x)
    if poly.degree() != 1:
        return None
    c1, c0 = poly.all_coeffs()
    if c1 == 0:
        return None
    return sp.nsimplify(sp.simplify(-c0 / c1)) if False else sp.simplify(-c0 / c1)


def _reading(interp: _Interp, expr: sp.Expr, value: sp.Expr | None) -> Reading | None:
    phs = [s for s in expr.free_symbols if s in interp.placeholders]
    if not phs or expr.free_symbols - set(phs):
        return None
    datas = [interp.placeholders[s] for s in phs]
    if all(isinstance(d, _SeriesData) for d in datas):
        notes = [n for d in datas for n in d.notes]
        if len(phs) == 1:
            (x,) = phs
            d = datas[0]
            formula = Series(d.term, d.start)
        else:
            poly = sp.Poly(sp.expand(expr), *phs)
            if poly.total_degree() != 1:
                return None
            s0 = min(d.start for d in datas)
            term = sp.Add(
                *[poly.coeff_monomial(s) * d.term.subs(K, K + d.start - s0) for s, d in zip(phs, datas)]
            )
            x = sp.Symbol("__merged")
            expr = poly.coeff_monomial(1) + x
            formula = Series(sp.simplify(term), s0)
            notes.append(f"{len(phs)} sums merged into one (shifted to start at {s0})")
        if value is None:
            return Reading(formula, None, "latex", notes)
        stated = _solve_for(expr, x, value)
        if stated is None:
            return None
        return Reading(formula, stated, "latex", notes)
    if len(phs) == 1 and isinstance(datas[0], _CFData):
        d = datas[0]
        (x,) = phs
        formula = ContinuedFraction(d.a, d.b)
        if value is None:
            return Reading(formula, None, "latex", list(d.notes))
        written = _solve_for(expr, x, value)
        if written is None:
            return None
        h = d.head
        det = h.det()
        if det == 0:
            return None
        stated = sp.simplify((h[1, 1] * written - h[0, 1]) / (-h[1, 0] * written + h[0, 0]))
        return Reading(formula, stated, "latex", list(d.notes))
    return None


def read_latex(latex: str, *, macros: dict | None = None, strict: bool = False) -> list[Reading]:
    """Read every formula (series or continued fraction) in one LaTeX equation.

    Returns one :class:`Reading` per formula found, with ``stated_value`` the value the equation states for
    that formula (solved through any constant, factor or continued-fraction head written around it), or None
    where the equation states none. Statements or sides that cannot be read are skipped; if the text cannot
    be tokenized at all a :class:`LatexReadError` is raised. An equation with no readable formula gives [],
    or, with ``strict=True``, a :class:`LatexReadError` naming what could not be read.
    """
    if isinstance(latex, str) and ("\\newcommand" in latex or "\\def" in latex or "\\renewcommand" in latex):
        inline, latex = split_macro_definitions(latex)  # definitions shipped with the equation
        macros = merge_macros(macros, inline)
    toks = tokenize_latex(latex, macros)
    readings: list[Reading] = []
    all_errors: list[str] = []
    seen: set[tuple[str, str]] = set()
    for stmt in _statements(toks):
        sides = _split(stmt, lambda t: t.is_op("="))
        interp = _Interp()
        values: list[sp.Expr | None] = []
        errors: list[str] = []
        for side in sides:
            side = _clean_side(side)
            if not side:
                values.append(None)
                continue
            try:
                node = _Parser(side).parse_side()
                values.append(interp.ev(node))
            except (LatexReadError, ValueError, TypeError, ZeroDivisionError, RecursionError) as e:
                errors.append(str(e))
                values.append(None)
        all_errors.extend(errors)
        stated = next((v for v in values if v is not None and _is_value(v)), None)
        for v in values:
            if v is None or not (v.free_symbols & set(interp.placeholders)):
                continue
            try:
                r = _reading(interp, v, stated)
            except (ValueError, TypeError, sp.PolynomialError) as e:
                errors.append(str(e))
                continue
            if r is None:
                continue
            key = (str(r.formula), str(r.stated_value))
            if key in seen:
                continue
            seen.add(key)
            if errors:
                r.notes.append("skipped parts: " + "; ".join(errors[:3]))
            readings.append(r)
    if strict and not readings:
        why = "; ".join(dict.fromkeys(all_errors)) or "no infinite series or continued fraction found"
        raise LatexReadError(f"no formula read from {latex[:60]!r}: {why}")
    return readings
