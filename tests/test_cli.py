"""The command line: help, exit codes for bad arguments and configs, and one small run of each verb."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import recurrences.train.testing  # noqa: F401  (registers the _toy mixers and task)
from recurrences.cli import main
from recurrences.train import RunStore
from recurrences.train.cli import parse_option

TINY = """
name = "tiny"
models = ["_toy-ema", "_toy-bimean"]
[model]
d_model = 8
n_layers = 1
n_heads = 1
[train]
steps = 4
batch_size = 4
eval_every = 2
warmup_steps = 1
log_every = 2
threads = 1
[[tasks]]
name = "_toy"
options = { n_eval = 8 }
"""


@pytest.mark.parametrize("verb", ["arena", "train", "report", "bench"])
def test_help_of_every_verb(verb, capsys):
    assert main([verb, "--help"]) == 0
    assert f"recurrences {verb}" in capsys.readouterr().out


def test_top_level_usage_and_unknown_verb(capsys):
    assert main([]) == 0
    assert "arena" in capsys.readouterr().out
    assert main(["fly"]) == 2
    assert "unknown command 'fly'" in capsys.readouterr().err


def test_entry_point_runs_as_a_module():
    out = subprocess.run([sys.executable, "-m", "recurrences.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "arena" in out.stdout and "bench" in out.stdout


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["arena", "--preset", "nope"], "invalid choice"),
        (["arena", "--jobs", "0"], "positive integer"),
        (["arena", "--steps-scale", "-1"], "positive number"),
        (["arena", "--models", "no-such-mixer", "--list"], "unknown mixer 'no-such-mixer'"),
        (["arena", "--tasks", "no-such-task", "--list"], "unknown task 'no-such-task'"),
        (["arena", "--preset", "quick", "--config", "x.toml"], "either --preset or --config"),
        (["arena", "--config", "/nonexistent/arena.toml"], "cannot read arena config"),
        (["bench"], "--mixers is required"),
        (["bench", "--mixers", "nope"], "unknown mixer 'nope'"),
        (["bench", "--scan", "--mixers", "_toy-ema"], "either --scan or --mixers"),
        (["bench", "--scan", "--lengths", "0"], "positive integers"),
        (["train", "--model", "_toy-ema"], "--task: required"),
        (["train", "--task", "_toy"], "--model: required"),
        (["train", "--model", "nope", "--task", "_toy"], "--model: unknown mixer 'nope'"),
        (
            ["train", "--model", "_toy-bimean", "--task", "_toy", "--task-option", "head=lm"],
            "needs a causal mixer",
        ),
        (["train", "--model", "_toy-ema", "--task", "_toy", "--task-option", "oops"], "KEY=VALUE"),
    ],
)
def test_bad_arguments_exit_2_with_a_message(argv, needle, capsys):
    assert main(argv) == 2
    assert needle in capsys.readouterr().err


def test_bad_config_file_exits_2_naming_the_field(tmp_path, capsys):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(TINY.replace("steps = 4", "steps = 'four'"))
    assert main(["arena", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "train.steps: expected an integer" in err and "bad.toml" in err


def test_parse_option_reads_toml_values():
    assert parse_option("train_lengths=[1, 40]") == ("train_lengths", [1, 40])
    assert parse_option("n=3") == ("n", 3)
    assert parse_option("dataset=GunPoint") == ("dataset", "GunPoint")
    assert parse_option("flag=true") == ("flag", True)
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_option("=3")


def test_arena_list_and_run(tmp_path, capsys):
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(TINY)
    assert main(["arena", "--config", str(cfg), "--list"]) == 0
    assert "_toy / _toy-bimean / seed 0" in capsys.readouterr().out
    out = tmp_path / "out"
    argv = ["arena", "--config", str(cfg), "--out", str(out), "--no-progress", "--seeds", "1"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "== _toy: accuracy (higher is better) ==" in printed and "_toy-ema" in printed
    assert (
        (out / "runs.sqlite").is_file() and (out / "report.md").is_file() and (out / "results.json").is_file()
    )
    data = json.loads((out / "results.json").read_text())
    assert {r["mixer"] for r in data["leaderboard"][0]["rows"]} == {"_toy-ema", "_toy-bimean"}


def test_train_one_run(tmp_path, capsys):
    argv = ["train", "--model", "_toy-ema", "--task", "_toy", "--task-option", "n_eval=8", "--steps", "3",
            "--batch-size", "4", "--d-model", "8", "--n-heads", "1", "--n-layers", "1", "--out", str(tmp_path),
            "--no-progress", "--threads", "1"]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "finished" in printed and "accuracy:" in printed and "short:" in printed
    (run,) = RunStore(tmp_path / "runs.sqlite").runs()
    assert run.status == "finished" and run.steps_done == 3 and run.model_config["d_model"] == 8
    assert run.task_config["n_eval"] == 8


def test_bench_scan_cli(tmp_path, capsys):
    argv = [
        "bench",
        "--scan",
        "--lengths",
        "4,8",
        "--batch",
        "1",
        "--d",
        "4",
        "--repeats",
        "1",
        "--out",
        str(tmp_path),
    ]
    assert main(argv) == 0
    assert "baseline: sequential" in capsys.readouterr().out
    data = json.loads((tmp_path / "bench.json").read_text())
    assert data["lengths"] == [4, 8] and data["command"].startswith("recurrences bench --scan")
    assert (tmp_path / "bench.png").is_file()


def test_bench_mixers_cli(tmp_path, capsys):
    argv = ["bench", "--mixers", "_toy-ema,_toy-bimean", "--forms", "all", "--lengths", "4", "--batch", "1",
            "--d-model", "4", "--n-heads", "1", "--repeats", "1", "--backward", "--out", str(tmp_path)]  # fmt: skip
    assert main(argv) == 0
    data = json.loads((tmp_path / "bench.json").read_text())
    assert data["targets"] == ["_toy-ema:reference", "_toy-bimean:reference"]
    assert len(data["cells"]) == 4


def test_train_with_a_config_file(tmp_path, capsys):
    cfg = tmp_path / "one.toml"
    cfg.write_text(TINY.replace('models = ["_toy-ema", "_toy-bimean"]', 'models = ["_toy-ema"]'))
    # model and task come from the config (one of each); --steps overrides its [train]
    argv = ["train", "--config", str(cfg), "--steps", "2", "--out", str(tmp_path), "--no-progress"]
    assert main(argv) == 0
    assert "model _toy-ema" in capsys.readouterr().out
    (run,) = RunStore(tmp_path / "runs.sqlite").runs()
    assert run.steps_done == 2 and run.train_config["batch_size"] == 4 and run.model_config["d_model"] == 8
