r"""Harvesting (spec §1, steps 1-2): candidate equations for a constant from .tex files or arXiv sources.

Step 1 (scrape): every ``*.tex`` file of a folder, of a ``.tar.gz``/``.tgz``/``.tar`` arXiv source archive,
or of a single gzip-compressed file, decoded as UTF-8 (falling back to Latin-1). ``%`` comments are removed
(``\%`` is not a comment; line numbers are kept) and the math is extracted with its line number: the
environments equation, align, gather, multline, alignat, eqnarray, math, displaymath (and starred forms),
``$$...$$``, ``\[...\]``, ``\(...\)`` and ``$...$``. The file's ``\newcommand``/``\def`` macros go with
each candidate, so that the reader can expand them.

Step 2 (retrieve, no LLM): an equation is kept when the constant appears on one side of an ``=`` and on the
other side one of five "formula" patterns: a sum of at least two ``\frac`` (or ``\cfrac``), a nested
``\frac`` (or ``\cfrac``), or ``\sum_{...}^``. Multi-line environments are split at ``\\`` (gluing lines
that begin or end with an operator), and a piece is kept only if it still mentions the constant and none
of the forbidden words (``\sqrt``, ``\tan``, ``\cos``, ``\sin``, ``\log``, ``\ln``, ``\zeta`` for the
others..., or a power of the constant itself, e.g. ``\pi^2``).

Archives are read without extracting anything to disk. Members with absolute paths or ``..`` components,
links, devices, oversized members and binary members are refused (with a warning) rather than read.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import re
import sys
import tarfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from recurrences.constants.macros import Macro, macro_source, parse_macro_definitions

__all__ = [
    "Candidate",
    "harvest_rows",
    "cli_main",
    "HarvestWarning",
    "harvest",
    "harvest_text",
    "extract_math",
    "retrieve",
    "CONSTANT_PATTERNS",
]

MAX_MEMBER_BYTES = 16 * 2**20
MAX_ARCHIVE_BYTES = 256 * 2**20  # total uncompressed bytes read from one archive
MAX_MEMBERS = 20_000
MAX_EQUATION_CHARS = 5_000


class HarvestWarning(UserWarning):
    """A file or archive member was refused or skipped."""


@dataclass
class Candidate:
    file: str  # path of the .tex file (for an archive: "archive.tar.gz:member.tex")
    line: int  # 1-based line of the start of the equation
    latex: str
    macros: dict[str, Macro] = field(default_factory=dict)
    kind: str = ""  # environment name, "$$", "\\[" ...


# (LaTeX spelling regex, forbidden words specific to this constant)
CONSTANT_PATTERNS: dict[str, str] = {
    "pi": r"\\pi(?![A-Za-z])",
    "e": r"(?<![\\A-Za-z])e(?![A-Za-z])|\\mathrm\s*\{\s*e\s*\}|\\rm\s+e(?![A-Za-z])",
    "zeta3": r"\\zeta\s*\(\s*3\s*\)|\\zeta\s*\{\s*\(\s*3\s*\)\s*\}",
    "catalan": r"(?<![\\A-Za-z])G(?![A-Za-z])|\\mathrm\s*\{\s*G\s*\}|\\text\s*\{\s*Catalan",
}
_ALIASES = {"zeta(3)": "zeta3", "g": "catalan", "G": "catalan", "Catalan": "catalan", "E": "e", "π": "pi"}
_FORBIDDEN = ["sqrt", "tan", "cos", "sin", "log", "ln", "zeta"]

_ENVS = r"equation|align|gather|multline|alignat|eqnarray|math|displaymath"
_MATH_RE = re.compile(
    r"\\begin\{(?P<env>(?:" + _ENVS + r")\*?)\}(?P<body>.*?)\\end\{(?P=env)\}"
    r"|\$\$(?P<dd>.+?)\$\$"
    r"|\\\[(?P<br>.+?)\\\]"
    r"|\\\((?P<pa>.+?)\\\)"
    r"|(?<![\\$])\$(?P<d>[^$]+?)(?<!\\)\$",
    re.S,
)
_MULTILINE_ENVS = ("align", "gather", "eqnarray", "alignat")


def _constant_key(constant: str) -> str:
    key = _ALIASES.get(constant, constant).lower().replace("(", "").replace(")", "")
    if key not in CONSTANT_PATTERNS:
        raise ValueError(f"constant: expected one of {sorted(CONSTANT_PATTERNS)}, got {constant!r}")
    return key


def strip_comments(text: str) -> str:
    """Remove unescaped ``%`` comments, keeping every newline (so line numbers do not move)."""
    return re.sub(r"(?<!\\)%[^\n]*", "", text)


def extract_math(text: str) -> list[tuple[int, str, str]]:
    """(line, kind, latex) of every math environment / display / inline formula in ``text``."""
    body = strip_comments(text)
    out = []
    for m in _MATH_RE.finditer(body):
        if m.group("env"):
            kind, latex = m.group("env"), m.group(0)
        elif m.group("dd") is not None:
            kind, latex = "$$", m.group(0)
        elif m.group("br") is not None:
            kind, latex = "\\[", m.group(0)
        elif m.group("pa") is not None:
            kind, latex = "\\(", m.group(0)
        else:
            kind, latex = "$", m.group(0)
        if len(latex) > MAX_EQUATION_CHARS:
            continue
        out.append((body.count("\n", 0, m.start()) + 1, kind, latex))
    return out


def _clean(latex: str) -> str:
    s = re.sub(r"\\(displaystyle|textstyle|scriptstyle|left|right|nonumber|notag)(?![A-Za-z])", " ", latex)
    s = re.sub(r"\\label\s*\{[^}]*\}", " ", s)
    return re.sub(r"\s+", " ", s).strip()


def _patterns(s: str) -> bool:
    if re.search(r"\\sum\s*(?:\\limits\s*)?_", s) and "^" in s:
        return True
    for cmd in ("frac", "cfrac", "dfrac", "tfrac"):
        if re.search(r"\\" + cmd + r"(?![A-Za-z]).*[-+].*\\" + cmd + r"(?![A-Za-z])", s):
            return True
        # nested: a \frac inside the braces of a \frac
        for m in re.finditer(r"\\" + cmd + r"\s*\{", s):
            depth, j = 1, m.end()
            while j < len(s) and depth:
                if s[j] == "{":
                    depth += 1
                elif s[j] == "}":
                    depth -= 1
                j += 1
            # numerator and denominator: the next group too
            tail = s[m.end() : min(len(s), j + 400)]
            if re.search(r"\\[cdt]?frac(?![A-Za-z])", tail):
                return True
    return False


def _computes_constant(s: str, const_re: re.Pattern) -> bool:
    parts = re.split(r"(?<![<>!:\\])=", s)
    if len(parts) < 2:
        return False
    for i in range(1, len(parts)):
        left, right = "=".join(parts[:i]), "=".join(parts[i:])
        if const_re.search(left) and _patterns(right) or _patterns(left) and const_re.search(right):
            return True
    return False


def _split_lines(latex: str) -> list[str]:
    lines = [ln.strip() for ln in re.split(r"\\\\(?:\[[^\]]{0,12}\])?", latex)]
    out: list[str] = []
    for ln in lines:
        if not ln:
            continue
        bare = ln.replace("&", "").strip()
        starts = bare[:1] in "=+-*/" or bare.startswith("\\text")
        if out and (starts or out[-1].replace("&", "").rstrip()[-1:] in "=+-*/"):
            out[-1] = out[-1] + " " + ln
        else:
            out.append(ln)
    return out


def retrieve(latex: str, constant: str = "pi", kind: str = "") -> list[str]:
    """Step 2 on one extracted equation: the pieces that look like formulas computing ``constant``."""
    key = _constant_key(constant)
    const_re = re.compile(CONSTANT_PATTERNS[key])
    s = _clean(latex)
    if not const_re.search(s) or not _computes_constant(s, const_re):
        return []
    env = kind.rstrip("*")
    pieces = _split_lines(s) if env in _MULTILINE_ENVS else [s]
    forbidden = [w for w in _FORBIDDEN if not (key == "zeta3" and w == "zeta")]
    out = []
    for p in pieces:
        if not const_re.search(p):
            continue
        low = p.lower()
        if any(re.search(r"\\" + w + r"(?![a-z])", low) for w in forbidden):
            continue
        if re.search("(?:" + CONSTANT_PATTERNS[key] + r")\s*(?:\^|\*\*)", p):
            continue
        out.append(p)
    return out


def harvest_text(text: str, file: str, constant: str = "pi") -> list[Candidate]:
    """Candidates from the text of one .tex file."""
    macros = parse_macro_definitions(text)
    out = []
    for line, kind, latex in extract_math(text):
        for piece in retrieve(latex, constant, kind):
            out.append(Candidate(file, line, piece, macros, kind))
    return out


def _decode(data: bytes) -> str | None:
    if b"\x00" in data[:8192]:
        return None  # binary
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _safe_member_name(name: str) -> bool:
    p = PurePosixPath(name.replace("\\", "/"))
    return not p.is_absolute() and ".." not in p.parts and not re.match(r"^[A-Za-z]:", name)


def _read_limited(f, limit: int) -> bytes | None:
    data = f.read(limit + 1)
    return None if len(data) > limit else data


def _harvest_tar(path: Path, constant: str) -> list[Candidate]:
    out: list[Candidate] = []
    total = 0
    try:
        tf = tarfile.open(path, mode="r:*")  # noqa: SIM115 - closed by the with below
    except (tarfile.TarError, OSError, EOFError) as e:
        warnings.warn(f"{path}: not a readable tar archive ({e})", HarvestWarning, stacklevel=3)
        return out
    with tf:
        for count, member in enumerate(tf):
            if count >= MAX_MEMBERS:
                warnings.warn(
                    f"{path}: more than {MAX_MEMBERS} members; the rest is skipped",
                    HarvestWarning,
                    stacklevel=3,
                )
                break
            if not _safe_member_name(member.name):
                warnings.warn(
                    f"{path}: refused member {member.name!r} (absolute path or '..')",
                    HarvestWarning,
                    stacklevel=3,
                )
                continue
            if not member.isfile():
                if member.issym() or member.islnk() or member.isdev():
                    warnings.warn(
                        f"{path}: refused link/device member {member.name!r}", HarvestWarning, stacklevel=3
                    )
                continue
            if not member.name.lower().endswith(".tex"):
                continue
            if member.size > MAX_MEMBER_BYTES or total + member.size > MAX_ARCHIVE_BYTES:
                warnings.warn(
                    f"{path}: member {member.name!r} too large ({member.size} bytes)",
                    HarvestWarning,
                    stacklevel=3,
                )
                continue
            f = tf.extractfile(member)
            if f is None:
                continue
            data = _read_limited(f, MAX_MEMBER_BYTES)
            if data is None:
                continue
            total += len(data)
            text = _decode(data)
            if text is None:
                warnings.warn(f"{path}: skipped binary member {member.name!r}", HarvestWarning, stacklevel=3)
                continue
            out.extend(harvest_text(text, f"{path}:{member.name}", constant))
    return out


def _harvest_gz(path: Path, constant: str) -> list[Candidate]:
    try:
        with gzip.open(path, "rb") as f:
            data = _read_limited(f, MAX_MEMBER_BYTES)
    except (OSError, EOFError) as e:
        warnings.warn(f"{path}: not a readable gzip file ({e})", HarvestWarning, stacklevel=3)
        return []
    if data is None:
        warnings.warn(
            f"{path}: decompressed size exceeds {MAX_MEMBER_BYTES} bytes", HarvestWarning, stacklevel=3
        )
        return []
    if tarfile.is_tarfile(io.BytesIO(data)) if len(data) >= 512 else False:
        return _harvest_tar(path, constant)
    text = _decode(data)
    if text is None:
        warnings.warn(f"{path}: binary content skipped", HarvestWarning, stacklevel=3)
        return []
    return harvest_text(text, str(path), constant)


def _harvest_file(path: Path, constant: str) -> list[Candidate]:
    name = path.name.lower()
    if name.endswith((".tar.gz", ".tgz", ".tar")):
        return _harvest_tar(path, constant)
    if name.endswith(".gz"):
        return _harvest_gz(path, constant)
    if name.endswith(".tex"):
        if path.stat().st_size > MAX_MEMBER_BYTES:
            warnings.warn(f"{path}: too large", HarvestWarning, stacklevel=3)
            return []
        text = _decode(path.read_bytes())
        if text is None:
            warnings.warn(f"{path}: binary content skipped", HarvestWarning, stacklevel=3)
            return []
        return harvest_text(text, str(path), constant)
    return []


def harvest(path: str | Path, *, constant: str = "pi") -> list[Candidate]:
    """Candidate equations for ``constant`` ("pi", "e", "zeta3", "catalan") from a .tex file, an arXiv source
    archive (.tar.gz/.tgz/.tar or a single .gz) or a folder of them (searched recursively, sorted order)."""
    _constant_key(constant)
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"path: {p} does not exist")
    if p.is_dir():
        out: list[Candidate] = []
        for f in sorted(p.rglob("*")):
            if f.is_file() and not f.is_symlink():
                out.extend(_harvest_file(f, constant))
        return out
    return _harvest_file(p, constant)


_ARXIV_ID = re.compile(r"(\d{4}\.\d{4,5}(?:v\d+)?|[a-z-]+(?:\.[A-Z]{2})?/\d{7})")


def candidate_row(c: Candidate, row: int) -> dict:
    """A candidate as a corpus row (the ``harvested.jsonl`` fields): the macros it uses are prepended to
    ``latex`` as ``\\newcommand`` definitions, which :func:`read_latex` reads back."""
    used = {
        name: m
        for name, m in c.macros.items()
        if re.search(r"\\" + re.escape(name) + r"(?![A-Za-z])", c.latex)
    }
    prefix = " ".join(macro_source(n, m) for n, m in sorted(used.items()))
    m = _ARXIV_ID.search(c.file.rsplit("/", 1)[-1]) or _ARXIV_ID.search(c.file)
    return {
        "row": row,
        "arxiv_id": m.group(1) if m else "",
        "file": c.file,
        "line": c.line,
        "kind": "",
        "latex": (prefix + " " + c.latex).strip() if prefix else c.latex,
        "claimed_value": "",
    }


def harvest_rows(path: str | Path, *, constant: str = "pi") -> list[dict]:
    """:func:`harvest` as corpus rows (see :func:`candidate_row`), numbered in order."""
    return [candidate_row(c, i) for i, c in enumerate(harvest(path, constant=constant))]


def cli_main(argv: list[str] | None = None) -> int:
    """``recurrences constants harvest PATH [--constant pi] [--out rows.jsonl]``."""
    ap = argparse.ArgumentParser(prog="recurrences constants harvest", description=harvest.__doc__)
    ap.add_argument("path", help=".tex file, arXiv source archive (.tar.gz/.gz) or folder")
    ap.add_argument("--constant", default="pi", choices=sorted(CONSTANT_PATTERNS))
    ap.add_argument("--out", default=None, help="write JSONL rows here (default: stdout)")
    args = ap.parse_args(argv)
    rows = harvest_rows(args.path, constant=args.constant)
    text = "".join(json.dumps(r) + "\n" for r in rows)
    if args.out:
        out = Path(args.out)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(text)
        tmp.replace(out)
        print(f"{len(rows)} candidate equations -> {out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0
