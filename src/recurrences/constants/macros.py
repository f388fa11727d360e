"""LaTeX macro definitions: read ``\\newcommand`` / ``\\renewcommand`` / ``\\def`` and keep a small table of
abbreviations that papers use without their preamble (``\\f`` for ``\\frac``, ``\\bi`` for ``\\binom``, ...).

A macro is ``Macro(nargs, body)``; ``#1 .. #9`` in ``body`` are replaced by the arguments when expanded
(by :mod:`recurrences.constants.latex`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "Macro",
    "DEFAULT_MACROS",
    "parse_macro_definitions",
    "split_macro_definitions",
    "merge_macros",
    "macro_source",
]


@dataclass(frozen=True)
class Macro:
    nargs: int
    body: str


# Common abbreviations found in papers on pi series (used when an equation comes without its preamble).
DEFAULT_MACROS: dict[str, Macro] = {
    "f": Macro(0, r"\frac"),
    "fr": Macro(0, r"\frac"),
    "bi": Macro(0, r"\binom"),
    "bin": Macro(0, r"\binom"),
    "l": Macro(0, r"\left"),
    "r": Macro(0, r"\right"),
    "eps": Macro(0, r"\epsilon"),
}

_MAX_BODY = 2_000


def read_group(text: str, i: int) -> tuple[str, int] | None:
    """Return (content, index after) of the balanced ``{...}`` starting at text[i] == '{'."""
    if i >= len(text) or text[i] != "{":
        return None
    depth = 0
    j = i
    while j < len(text):
        c = text[j]
        if c == "\\":
            j += 2
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j], j + 1
        j += 1
    return None


_NEWCMD = re.compile(r"\\(?:re)?newcommand\*?\s*")
_DEF = re.compile(r"\\def\s*\\([A-Za-z]+)\s*((?:#\d)*)\s*")
_DECLOP = re.compile(r"\\DeclareMathOperator\*?\s*")


def parse_macro_definitions(tex: str) -> dict[str, Macro]:
    """All macros defined in ``tex`` by ``\\newcommand{\\x}[n]{body}``, ``\\newcommand\\x{body}``,
    ``\\def\\x#1#2{body}`` or ``\\DeclareMathOperator{\\x}{text}``. Later definitions win."""
    return split_macro_definitions(tex)[0]


def split_macro_definitions(tex: str) -> tuple[dict[str, Macro], str]:
    """(macros defined in ``tex``, ``tex`` with those definitions removed)."""
    if not isinstance(tex, str):
        raise TypeError(f"tex: expected a string, got {type(tex).__name__}")
    out: dict[str, Macro] = {}
    spans: list[tuple[int, int]] = []
    for m in _NEWCMD.finditer(tex):
        i = m.end()
        if i < len(tex) and tex[i] == "{":
            g = read_group(tex, i)
            if g is None:
                continue
            name, i = g[0].strip(), g[1]
        else:
            mm = re.match(r"\\[A-Za-z]+", tex[i:])
            if mm is None:
                continue
            name, i = mm.group(0), i + mm.end()
        if not re.fullmatch(r"\\[A-Za-z]+", name):
            continue
        while i < len(tex) and tex[i].isspace():
            i += 1
        nargs = 0
        mm = re.match(r"\[(\d)\]\s*", tex[i:])
        if mm:
            nargs, i = int(mm.group(1)), i + mm.end()
            if tex[i : i + 1] == "[":  # optional default argument: skip it
                close = tex.find("]", i)
                if close < 0:
                    continue
                i = close + 1
                while i < len(tex) and tex[i].isspace():
                    i += 1
        g = read_group(tex, i)
        if g is None or len(g[0]) > _MAX_BODY:
            continue
        out[name[1:]] = Macro(nargs, g[0])
        spans.append((m.start(), g[1]))
    for m in _DEF.finditer(tex):
        g = read_group(tex, m.end())
        if g is None or len(g[0]) > _MAX_BODY:
            continue
        out[m.group(1)] = Macro(len(m.group(2)) // 2, g[0])
        spans.append((m.start(), g[1]))
    for m in _DECLOP.finditer(tex):
        g = read_group(tex, m.end())
        if g is None:
            continue
        g2 = read_group(tex, g[1] + (len(tex[g[1] :]) - len(tex[g[1] :].lstrip())))
        if g2 is None:
            continue
        name = g[0].strip()
        if re.fullmatch(r"\\[A-Za-z]+", name):
            out[name[1:]] = Macro(0, r"\operatorname{" + g2[0] + "}")
            spans.append((m.start(), g2[1]))
    rest, last = [], 0
    for a, b in sorted(spans):
        if a >= last:
            rest.append(tex[last:a])
            last = b
    rest.append(tex[last:])
    return out, "".join(rest)


def macro_source(name: str, macro: Macro) -> str:
    """LaTeX that defines ``macro`` again (``\\newcommand{\\name}[n]{body}``)."""
    args = f"[{macro.nargs}]" if macro.nargs else ""
    return f"\\newcommand{{\\{name}}}{args}{{{macro.body}}}"


def merge_macros(*tables: dict[str, Macro] | None) -> dict[str, Macro]:
    """Merge macro tables; later tables win. Plain strings as values are read as 0-argument macros."""
    out: dict[str, Macro] = {}
    for t in tables:
        if not t:
            continue
        for k, v in t.items():
            out[k.lstrip("\\")] = v if isinstance(v, Macro) else Macro(0, str(v))
    return out
