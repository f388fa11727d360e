"""The report: leaderboard statistics and ranking, Markdown/JSON/PNG files, re-rendering from the store."""

from __future__ import annotations

import json
import statistics

import pytest

import recurrences.train.testing  # noqa: F401  (registers the _toy task)
from recurrences.cli import main
from recurrences.train import RunStore
from recurrences.train.report import leaderboard, load_runs, render_leaderboard, render_markdown, write_report

TRAIN = {"steps": 10, "lr": 1e-3, "seed": 0, "threads": 1}


def _model(mixer: str, d_model: int = 8) -> dict:
    return {"mixer": mixer, "d_model": d_model, "n_layers": 1, "head": "classify"}


def add_run(
    store: RunStore,
    key: str,
    mixer: str,
    task: str,
    task_cfg: dict,
    seed: int,
    score: float | None,
    *,
    metric: str = "accuracy",
    d_model: int = 8,
    final: dict | None = None,
    status: str = "finished",
):
    store.upsert_pending(key, _model(mixer, d_model), task, task_cfg, {**TRAIN, "seed": seed}, seed)
    store.mark_running(key)
    for step in (5, 10):
        value = None if score is None else score * step / 10
        store.log_metrics(
            key, step, {"short": value, "long": value}, loss=1.0 / step, lr=1e-3, score=value, metric=metric
        )
    if status == "finished":
        store.finish(
            key,
            {
                "n_params": 100 + d_model,
                "score": score,
                "final": final or {"short": score, "long": score},
                "steps_done": 10,
                "seconds": 1.5 + seed,
            },
        )
    elif status == "failed":
        store.fail(key, "FloatingPointError: training loss is nan")


TOY = {"head": "classify", "n_eval": 16}
TOY_LM = {"head": "lm", "n_eval": 16, "metric": "bpc"}


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "runs.sqlite"
    store = RunStore(path)
    for seed, (a, b) in enumerate([(0.9, 0.5), (0.7, 0.6), (0.8, 0.55)]):
        add_run(store, f"a{seed}", "alpha", "_toy", TOY, seed, a, final={"short": 1.0, "long": a})
        add_run(store, f"b{seed}", "beta", "_toy", TOY, seed, b, final={"short": 0.9, "long": b})
    # bpc: lower is better
    add_run(store, "lm-a", "alpha", "_toy", TOY_LM, 0, 2.5, metric="bpc")
    add_run(store, "lm-b", "beta", "_toy", TOY_LM, 0, 1.5, metric="bpc")
    add_run(store, "lm-c", "gamma", "_toy", TOY_LM, 0, None, metric="bpc", status="failed")
    # the same mixer twice on one task, with different sizes: rows must be told apart
    add_run(store, "wide", "alpha", "_toy", {"head": "classify", "n_eval": 8}, 0, 0.4, d_model=16)
    add_run(store, "narrow", "alpha", "_toy", {"head": "classify", "n_eval": 8}, 0, 0.3, d_model=8)
    return path


def test_leaderboard_statistics_and_ranking(db):
    boards = leaderboard(db)
    assert len(boards) == 3
    cls = boards[0]
    assert cls.metric == "accuracy" and cls.higher_is_better
    assert [r.mixer for r in cls.rows] == ["alpha", "beta"]
    alpha, beta = cls.rows
    assert alpha.n == 3 and alpha.scores == [0.9, 0.7, 0.8]
    assert alpha.mean == pytest.approx(0.8) and alpha.std == pytest.approx(statistics.stdev([0.9, 0.7, 0.8]))
    assert beta.mean == pytest.approx(0.55)
    assert alpha.splits == {"short": pytest.approx(1.0), "long": pytest.approx(0.8)}
    assert alpha.seconds == pytest.approx(2.5) and alpha.n_params == 108
    # the toy task's splits have lengths: length plots are possible
    assert set(cls.split_lengths) == {"short", "long"}

    lm = boards[1]
    assert lm.metric == "bpc" and not lm.higher_is_better
    assert [r.mixer for r in lm.rows] == ["beta", "alpha"]  # lower bpc ranks first
    assert [u.mixer for u in lm.unfinished] == ["gamma"] and lm.unfinished[0].status == "failed"

    sizes = boards[2]
    labels = [r.label for r in sizes.rows]
    assert labels == ["alpha (d_model=16)", "alpha (d_model=8)"]
    # same task name, different options: the task labels are told apart too
    assert len({b.label for b in boards}) == 3


def test_leaderboard_for_selected_keys_and_labels(db):
    boards = leaderboard(db, keys=["a0", "b0"], labels={"a0": "my-task"})
    assert len(boards) == 1 and boards[0].label == "my-task"
    assert [r.n for r in boards[0].rows] == [1, 1]
    assert [r.key for r in load_runs(db, keys=["b0", "a0", "missing"])] == ["b0", "a0"]


def test_render_text_and_markdown(db):
    boards = leaderboard(db)
    text = render_leaderboard(boards)
    assert "accuracy (higher is better)" in text and "bpc (lower is better)" in text
    assert "0.8000 ± 0.1000" in text
    assert "gamma (seed 0) failed: FloatingPointError" in text
    md = render_markdown(boards, title="T", plots={boards[0].label: {"length": "length_x.png"}})
    assert md.startswith("# T\n")
    assert "| 1 | `alpha` | 0.8000 ± 0.1000 | 3 | 108 | 2.5 |" in md
    assert "![Score against sequence length" in md and "length_x.png" in md
    assert render_leaderboard([]) == "leaderboard: no runs in the store"


def test_write_report_files(db, tmp_path):
    out = tmp_path / "report"
    files = write_report(db, out, title="Arena test", command="recurrences arena --x")
    names = {f.name for f in files}
    assert {"report.md", "results.json"} <= names
    pngs = sorted(n for n in names if n.endswith(".png"))
    assert any(n.startswith("length_") for n in pngs) and any(n.startswith("curves_") for n in pngs)
    for f in files:
        assert f.is_file() and f.stat().st_size > 0
    data = json.loads((out / "results.json").read_text())
    assert data["title"] == "Arena test" and data["command"] == "recurrences arena --x"
    assert len(data["runs"]) == len(load_runs(db))
    first = data["leaderboard"][0]
    assert first["metric"] == "accuracy" and first["rows"][0]["mixer"] == "alpha"
    assert not list(out.glob("*.tmp*"))  # atomic writes leave no temp files
    # a re-rendering under other task labels leaves no stale plots behind
    write_report(db, out, keys=["a0", "b0"], labels={"a0": "renamed"})
    assert sorted(p.name for p in out.glob("*.png")) == ["curves_renamed.png", "length_renamed.png"]


def test_report_cli_rerenders_from_the_store_alone(db, tmp_path, capsys):
    # the default db is OUT/runs.sqlite: the report is rebuilt from the store and nothing else
    assert main(["report", "--out", str(db.parent)]) == 0
    printed = capsys.readouterr().out
    assert "alpha" in printed and "bpc (lower is better)" in printed
    assert (db.parent / "report.md").is_file() and (db.parent / "results.json").is_file()
    assert "0.8000 ± 0.1000" in (db.parent / "report.md").read_text()
    assert main(["report", "--db", str(tmp_path / "nope.sqlite")]) == 2
    assert "no run store" in capsys.readouterr().err


def test_model_selection_is_stated_in_the_report(tmp_path):
    store = RunStore(tmp_path / "sel.sqlite")
    add_run(store, "plain", "alpha", "_toy", TOY, 0, 0.5)
    store.upsert_pending("sel", _model("beta"), "_toy", TOY, {**TRAIN, "seed": 0, "select": "best_val"}, 0)
    store.mark_running("sel")
    store.finish("sel", {"n_params": 1, "score": 0.7, "final": {"short": 0.7, "long": 0.7}, "steps_done": 10})
    [board] = leaderboard(tmp_path / "sel.sqlite")
    assert board.selected_on_validation
    assert 'Model selection (`select = "best_val"`)' in render_markdown([board], title="T")
    plain = RunStore(tmp_path / "plain.sqlite")
    add_run(plain, "p", "alpha", "_toy", TOY, 0, 0.5)
    [board] = leaderboard(tmp_path / "plain.sqlite")
    assert not board.selected_on_validation and "Model selection" not in render_markdown([board], title="T")
