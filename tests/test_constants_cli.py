"""`recurrences constants ...`: single-stage verbs, the run verb, and no torch import."""

from __future__ import annotations

import json
import subprocess
import sys

import sympy as sp

from recurrences.constants.cli import main


def test_validate_verb(capsys):
    assert main(["validate", "PCF(2, (2*n+1)**2)", "--claimed", "pi/(4 - pi)"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["status"] == "ok" and out["matches_target"] is True
    assert out["canonical"] == "PCF(2, 4*n**2 + 4*n + 1)"


def test_convert_canonical_dynamics_verbs(capsys):
    assert main(["convert", "Sum((-1)**k/(2*k+1), (k, 0, oo))"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["canonical"]["text"] == "PCF(2, 4*n**2 + 4*n + 1)"
    from recurrences.constants.safe_parse import parse_sympy_text

    assert sp.simplify(parse_sympy_text(out["canonical_value"]) - sp.pi / (4 - sp.pi)) == 0
    assert main(["canonical", "PCF(-6*n - 3, 9*(2*n+1)**2)"]) == 0
    assert json.loads(capsys.readouterr().out)["canonical"] == "PCF(2*n + 1, (2*n + 1)**2)".replace(
        "(2*n + 1)**2", "4*n**2 + 4*n + 1"
    )
    assert main(["dynamics", "PCF(2, n**2)", "--depth", "200"]) == 0
    assert json.loads(capsys.readouterr().out)["delta"] < -0.9


def test_bad_input_is_reported(capsys):
    assert main(["validate", "exec('1')"]) == 1
    assert main(["frobnicate"]) == 2
    assert main(["report", "--db", "/nonexistent/x.sqlite"]) == 2


def test_run_verb_on_small_corpus(tmp_path, capsys):
    corpus = tmp_path / "c.jsonl"
    rows = [
        {"latex": "", "sympy": "PCF(3*n + 1, -2*n**2 + n)", "claimed_value": "2/pi"},
        {"latex": "", "sympy": "Sum((-1)**k/(2*k + 1), (k, 0, oo))", "claimed_value": "pi/4"},
    ]
    corpus.write_text("\n".join(json.dumps(r) for r in rows))
    out = tmp_path / "out"
    args = [
        "run",
        "--corpus",
        str(corpus),
        "--out",
        str(out),
        "--use-sympy-field",
        "--depth",
        "100",
        "--no-progress",
    ]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "canonical forms: 2" in text and "validate  ok 2" in text
    export = json.loads((out / "export.json").read_text())
    assert len(export["formulas"]) == 2 and len(export["pcfs"]) == 2
    assert (out / "delta_histogram.png").stat().st_size > 1000
    assert main(["report", "--db", str(out / "store.sqlite")]) == 0


def test_no_torch_import():
    code = (
        "import sys\n"
        "import recurrences.constants, recurrences.constants.pipeline, recurrences.constants.cli\n"
        "from recurrences.cli import main\n"
        "main(['constants', 'validate', 'PCF(3*n+1, -2*n**2+n)', '--digits', '20'])\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
