"""The AUSSM result scripts (benchmarks/aussm/restarts.py, summarize.py) on a small hand-made run store."""

from __future__ import annotations

import importlib
import json
import sqlite3
import sys
from pathlib import Path

import pytest

AUSSM_BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "aussm"


@pytest.fixture
def scripts(monkeypatch):
    monkeypatch.syspath_prepend(str(AUSSM_BENCH))
    for name in ("restarts", "summarize"):
        sys.modules.pop(name, None)
    return importlib.import_module("restarts"), importlib.import_module("summarize")


def _store(path: Path, runs: list[tuple[dict, int, float, float]]) -> Path:
    """runs: (model config, seed, validation mean, test score)."""
    con = sqlite3.connect(path)
    con.execute(
        "create table runs (task_name text, task_config text, model_config text, train_config text, seed int,"
        " status text, score real, final text, seconds real)"
    )
    for mc, seed, val, score in runs:
        final = {"val_041_064": val, "len_041_064": score}
        con.execute(
            "insert into runs values (?, ?, ?, ?, ?, 'finished', ?, ?, 1.0)",
            ("cycle_navigation", "{}", json.dumps(mc), json.dumps({"steps": 10, "seed": seed}), seed, score,
             json.dumps(final)),
        )  # fmt: skip
    con.commit()
    con.close()
    return path


def _aussm(d_state: int) -> dict:
    return {"mixer": "aussm", "n_layers": 1, "mixer_options": {"aussm": {"d_state": d_state}}}


def test_labels_tell_recipes_apart(scripts):
    restarts, _ = scripts
    hybrid = {"mixer": "aussm|mamba", "n_layers": 2, "mixer_options": {"aussm": {"d_state": 8}}}
    mamba = {"mixer": "mamba", "n_layers": 1}
    labels = restarts.model_labels([_aussm(8), _aussm(16), hybrid, mamba, _aussm(8)])
    assert labels == [
        "aussm (d_state=8)",
        "aussm (d_state=16)",
        "aussm|mamba (2 layers)",
        "mamba",
        "aussm (d_state=8)",
    ]


def test_restarts_and_summary_never_pool_two_recipes(scripts, tmp_path):
    restarts, summarize = scripts
    runs = [(_aussm(8), s, v, v) for s, v in enumerate([0.9, 0.5, 0.7])]
    runs += [(_aussm(16), s, v, v) for s, v in enumerate([0.2, 0.3, 0.4])]
    db = _store(tmp_path / "runs.sqlite", runs)
    assert restarts.main(["--db", str(db), "--task", "cycle_navigation", "--out", str(tmp_path / "r")]) == 0
    models = json.loads((tmp_path / "r.json").read_text())["models"]
    assert set(models) == {"aussm (d_state=8)", "aussm (d_state=16)"}
    assert models["aussm (d_state=8)"]["blocks"][0]["chosen"] == 0
    assert models["aussm (d_state=16)"]["blocks"][0]["score"] == pytest.approx(0.4)
    assert summarize.main(["--db", str(db), "--out", str(tmp_path / "s")]) == 0
    cells = {c["model"]: c for c in json.loads((tmp_path / "s.json").read_text())["cells"]}
    assert cells["aussm (d_state=8)"]["mean"] == pytest.approx(0.7)
    assert cells["aussm (d_state=16)"]["mean"] == pytest.approx(0.3)
