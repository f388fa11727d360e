"""Harvesting: math extraction with line numbers, the retrieval filter, safe archive handling."""

from __future__ import annotations

import gzip
import io
import tarfile
import warnings

import pytest

from recurrences.constants.harvest import (
    HarvestWarning,
    cli_main,
    extract_math,
    harvest,
    harvest_rows,
    harvest_text,
    retrieve,
)
from recurrences.constants.latex import read_latex

PAPER = r"""\documentclass{article}
\newcommand{\bn}[2]{\binom{#1}{#2}}
\def\f{\frac}
\begin{document}
Some text with $x = 1$ inline.
% a comment: \begin{equation} \pi = \sum_{k=0}^\infty \frac{1}{2^k} \end{equation}
Ramanujan:
\begin{equation}
\sum_{k=0}^\infty \f{6k+1}{256^k}\bn{2k}{k}^3 = \frac{4}{\pi}
\end{equation}
Basel: \[ \sum_{n=1}^\infty \frac{1}{n^2} = \frac{\pi^2}{6} \]
With a root: $$ \sqrt{2}\,\pi = \sum_{k=0}^\infty \frac{1}{k!} $$
\begin{align*}
\frac{\pi}{4} &= 1 - \frac{1}{3} + \frac{1}{5} - \dots \\
x &= y
\end{align*}
Price is 5\% here $\pi = 3$.
\end{document}
"""


def test_extract_math_line_numbers_and_comments():
    found = extract_math(PAPER)
    kinds = [k for _, k, _ in found]
    assert "equation" in kinds and "\\[" in kinds and "$$" in kinds and "align*" in kinds
    lines = {k: ln for ln, k, _ in found}
    assert lines["equation"] == 8
    assert not any("2^k" in t for _, _, t in found)  # the commented-out equation is not extracted


def test_retrieve_filter():
    assert retrieve(r"\frac{\pi}{4} = \sum_{k=0}^\infty \frac{(-1)^k}{2k+1}")
    assert retrieve(r"\pi = 3 + \frac{1}{7 + \frac{1}{15 + \dots}}")  # nested fraction
    assert retrieve(r"\frac{4}{\pi} = 1 + \frac{1}{3} + \frac{4}{5}")  # a sum of fractions
    assert not retrieve(r"\sum_{n=1}^\infty \frac{1}{n^2} = \frac{\pi^2}{6}")  # a power of pi
    assert not retrieve(r"\sqrt{2}\pi = \sum_{k=0}^\infty \frac{1}{k!}")  # forbidden word
    assert not retrieve(r"\pi = 3.14")  # no formula pattern
    assert not retrieve(r"\sum_{k=0}^\infty \frac{1}{k!}")  # no constant
    # other constants
    assert retrieve(r"\zeta(3) = \frac{5}{2}\sum_{n=1}^\infty \frac{(-1)^{n-1}}{n^3\binom{2n}{n}}", "zeta3")
    assert retrieve(r"e = \sum_{k=0}^\infty \frac{1}{k!}", "e")
    assert retrieve(r"G = \sum_{k=0}^\infty \frac{(-1)^k}{(2k+1)^2}", "catalan")
    with pytest.raises(ValueError, match="constant"):
        retrieve("x", "tau")


def test_align_is_split_and_glued():
    pieces = retrieve(
        r"\begin{align} \pi &= 4\sum_{k=0}^\infty \frac{(-1)^k}{2k+1} \\ &= 3 + \sum_{k=1}^\infty \frac{1}{k} \\"
        r" y &= 2 \end{align}",
        kind="align",
    )
    assert len(pieces) == 1 and "3 +" in pieces[0]


def test_harvest_text_keeps_macros_and_reads():
    cands = harvest_text(PAPER, "paper.tex")
    assert len(cands) == 2
    c = cands[0]
    assert c.line == 8 and "bn" in c.macros
    rs = read_latex(c.latex, macros=c.macros)
    assert rs and str(rs[0].stated_value) == "4/pi"


def _tar(tmp_path, members: list[tuple[str, bytes, str]]) -> str:
    path = tmp_path / "2101.00001.tar.gz"
    with tarfile.open(path, "w:gz") as tf:
        for name, data, kind in members:
            info = tarfile.TarInfo(name)
            if kind == "sym":
                info.type = tarfile.SYMTYPE
                info.linkname = "/etc/passwd"
                tf.addfile(info)
            else:
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return str(path)


def test_archive_is_read_safely(tmp_path):
    evil = b"\\begin{equation} \\pi = 4\\sum_{k=0}^\\infty \\frac{(-1)^k}{2k+1} \\end{equation}"
    path = _tar(
        tmp_path,
        [
            ("main.tex", PAPER.encode(), "file"),
            ("../evil.tex", evil, "file"),
            ("/abs/evil2.tex", evil, "file"),
            ("link.tex", b"", "sym"),
            ("figure.tex", b"\x00\x01binary" * 10, "file"),
            ("notes.txt", evil, "file"),
        ],
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cands = harvest(path)
    files = {c.file.split(":", 1)[1] for c in cands}
    assert files == {"main.tex"}
    msgs = " ".join(str(w.message) for w in caught if issubclass(w.category, HarvestWarning))
    assert "../evil.tex" in msgs and "/abs/evil2.tex" in msgs and "link.tex" in msgs and "binary" in msgs
    assert not (tmp_path.parent / "evil.tex").exists()


def test_single_gz_and_folder(tmp_path):
    (tmp_path / "a.tex").write_text(PAPER)
    with gzip.open(tmp_path / "2101.00002.gz", "wb") as f:
        f.write(PAPER.replace("256^k", "256^{k}").encode("latin-1"))
    (tmp_path / "junk.gz").write_bytes(b"not gzip at all")
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        cands = harvest(tmp_path)
    assert {c.file.rsplit("/", 1)[-1] for c in cands} == {"a.tex", "2101.00002.gz"}
    with pytest.raises(FileNotFoundError, match="does not exist"):
        harvest(tmp_path / "missing")


def test_rows_carry_their_macros_and_read(tmp_path):
    (tmp_path / "2101.00003.tex").write_text(PAPER)
    rows = harvest_rows(tmp_path)
    assert [r["arxiv_id"] for r in rows] == ["2101.00003"] * 2
    assert rows[0]["line"] == 8 and "\\newcommand{\\bn}[2]" in rows[0]["latex"]
    rs = read_latex(rows[0]["latex"])  # the definitions travel with the equation
    assert rs and str(rs[0].stated_value) == "4/pi"
    out = tmp_path / "rows.jsonl"
    assert cli_main([str(tmp_path / "2101.00003.tex"), "--out", str(out)]) == 0
    assert len(out.read_text().splitlines()) == 2
