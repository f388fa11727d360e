"""The ``train``, ``arena``, ``report`` and ``bench`` verbs of the ``recurrences`` command.

Each ``*_main(argv)`` returns an exit code: 0 success, 1 some runs failed, 2 bad arguments or config.
"""

from __future__ import annotations

import argparse
import copy
import shlex
import sys
import time
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DEFAULT_OUT = "arena-out"
DB_NAME = "runs.sqlite"


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so ``*_main`` can return the exit code."""

    def error(self, message: str):  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise _Exit(2)

    def exit(self, status: int = 0, message: str | None = None):  # type: ignore[override]
        if message:
            print(message, file=sys.stderr)
        raise _Exit(status)


class _Exit(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def _fail(prog: str, message: str, code: int = 2) -> int:
    print(f"{prog}: error: {message}", file=sys.stderr)
    return code


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _int_csv(value: str) -> list[int]:
    try:
        out = [int(v) for v in _csv(value)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {value!r}") from None
    if not out or any(v < 1 for v in out):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {value!r}")
    return out


def _positive_int(value: str) -> int:
    try:
        v = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}")
    return v


def _positive_float(value: str) -> float:
    try:
        v = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value!r}") from None
    if not v > 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value!r}")
    return v


def _names(values: list[str] | None) -> list[str] | None:
    """``--models a b,c`` -> [a, b, c] (space- or comma-separated)."""
    if values is None:
        return None
    return [n for v in values for n in _csv(v)]


def parse_option(text: str) -> tuple[str, Any]:
    """``k=v`` with v read as a TOML value (``3``, ``0.5``, ``[1, 40]``, ``true``), else as a string."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ValueError(f"--task-option: expected KEY=VALUE, got {text!r}")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key, value


def _db_and_out(args) -> tuple[Path, Path]:
    out = Path(args.out)
    db = Path(args.db) if args.db else out / DB_NAME
    return db, out


# -- arena ---------------------------------------------------------------------------------------------
def arena_parser() -> argparse.ArgumentParser:
    from .arena import available_presets

    p = _Parser(
        prog="recurrences arena",
        description="Train every registered mixer on a task suite (grid model x task x seed), skip runs "
        "already finished in the store, resume interrupted ones, print a leaderboard and write a report.",
    )
    p.add_argument(
        "--preset", default=None, choices=available_presets(), help="suite to run (default: quick)"
    )
    p.add_argument("--config", metavar="FILE.toml", help="an arena config file (same schema as the presets)")
    p.add_argument(
        "--models", nargs="+", metavar="NAME", help="mixers to run (hybrids as 'a|b'); default: the config's"
    )
    p.add_argument("--tasks", nargs="+", metavar="NAME", help="task labels/names to keep (or add)")
    p.add_argument("--seeds", type=_positive_int, help="number of seeds per cell (default: the config's)")
    p.add_argument(
        "--jobs", type=_positive_int, help="grid cells run in parallel processes (default: the config's)"
    )
    p.add_argument(
        "--threads",
        type=_positive_int,
        help="torch threads per run (default: the config's, else cores / jobs)",
    )
    p.add_argument("--db", metavar="FILE", help=f"SQLite run store (default: OUT/{DB_NAME})")
    p.add_argument(
        "--out", default=DEFAULT_OUT, metavar="DIR", help=f"output folder (default: {DEFAULT_OUT})"
    )
    p.add_argument(
        "--steps-scale", type=_positive_float, default=1.0, metavar="F", help="multiply all step counts"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--no-report", action="store_true", help="print the leaderboard but write no report files")
    p.add_argument("--list", action="store_true", help="print the grid and exit without running")
    return p


def arena_main(argv: list[str]) -> int:
    prog = "recurrences arena"
    try:
        args = arena_parser().parse_args(argv)
    except _Exit as e:
        return e.code
    from .arena import (
        ArenaConfigError,
        config_summary,
        default_threads,
        load_config,
        load_preset,
        plan,
        run_arena,
    )

    if args.preset and args.config:
        return _fail(prog, "give either --preset or --config, not both")
    try:
        config = load_config(args.config) if args.config else load_preset(args.preset or "quick")
        jobs = args.jobs or config.jobs
        threads = args.threads or default_threads(jobs)
        if args.threads:  # the command line wins over the config
            config.train["threads"] = args.threads
            for t in config.tasks:
                t.train.pop("threads", None)
        notes: list[str] = []
        cells = plan(
            config,
            models=_names(args.models),
            tasks=_names(args.tasks),
            seeds=args.seeds,
            steps_scale=args.steps_scale,
            threads=threads,
            log=notes.append,
        )
    except (ArenaConfigError, KeyError, ValueError, TypeError) as e:
        return _fail(prog, str(e).strip("'\""))
    for n in notes:
        print(n)
    db, out = _db_and_out(args)
    print(f"arena {config.name}: {config_summary(config, cells)}")
    if args.list:
        for c in cells:
            print(f"  {c.describe()}")
        return 0
    if not cells:
        return _fail(prog, "the grid is empty (no model fits the chosen tasks)")
    run_threads = sorted({c.train.get("threads") or threads for c in cells})
    print(f"store: {db}   out: {out}   jobs: {jobs}   threads per run: {', '.join(map(str, run_threads))}")
    result = run_arena(cells, db=db, out_dir=out, jobs=jobs, progress=not args.no_progress)

    from .report import leaderboard, render_leaderboard, write_report

    boards = leaderboard(db, keys=result.keys, labels=result.labels)
    print()
    print(render_leaderboard(boards))
    print(f"\narena wall time: {result.seconds:.1f}s for {len(cells)} runs")
    if not args.no_report:
        files = write_report(
            db,
            out,
            keys=result.keys,
            labels=result.labels,
            title=f"Arena: {config.name}",
            command="recurrences arena " + " ".join(shlex.quote(a) for a in argv),
        )
        print("report: " + ", ".join(str(f) for f in files))
    if result.failed:
        print(f"\n{len(result.failed)} run(s) failed:", file=sys.stderr)
        for cell, err in result.failed:
            print(f"  {cell.describe()}: {err}", file=sys.stderr)
        return 1
    return 0


# -- report --------------------------------------------------------------------------------------------
def report_main(argv: list[str]) -> int:
    prog = "recurrences report"
    p = _Parser(
        prog=prog, description="Re-render the arena report (Markdown, plots, JSON) from the run store alone."
    )
    p.add_argument("--db", metavar="FILE", help=f"SQLite run store (default: OUT/{DB_NAME})")
    p.add_argument(
        "--out", default=DEFAULT_OUT, metavar="DIR", help=f"output folder (default: {DEFAULT_OUT})"
    )
    p.add_argument("--title", default="Arena report")
    try:
        args = p.parse_args(argv)
    except _Exit as e:
        return e.code
    db, out = _db_and_out(args)
    if not db.is_file():
        return _fail(prog, f"no run store at {str(db)!r} (give --db FILE or the --out of an arena run)")
    from .report import leaderboard, render_leaderboard, write_report

    boards = leaderboard(db)
    print(render_leaderboard(boards))
    files = write_report(db, out, title=args.title)
    print("report: " + ", ".join(str(f) for f in files))
    return 0


# -- train ---------------------------------------------------------------------------------------------
def train_main(argv: list[str]) -> int:
    prog = "recurrences train"
    p = _Parser(prog=prog, description="Train one model on one task and print its result.")
    p.add_argument("--model", required=False, metavar="NAME", help="mixer name or hybrid pattern 'a|b'")
    p.add_argument("--task", required=False, metavar="NAME", help="registered task name")
    p.add_argument(
        "--task-option", action="append", default=[], metavar="K=V", help="task option (repeatable)"
    )
    p.add_argument(
        "--config", metavar="FILE.toml", help="arena-style config: its [model], [train] and task entry"
    )
    p.add_argument("--steps", type=_positive_int)
    p.add_argument("--batch-size", type=_positive_int)
    p.add_argument("--lr", type=_positive_float)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--d-model", type=_positive_int)
    p.add_argument("--n-layers", type=_positive_int)
    p.add_argument("--n-heads", type=_positive_int)
    p.add_argument("--threads", type=_positive_int)
    p.add_argument("--db", metavar="FILE", help=f"SQLite run store (default: OUT/{DB_NAME})")
    p.add_argument(
        "--out",
        default="train-out",
        metavar="DIR",
        help="output folder (default: train-out; not the arena's)",
    )
    p.add_argument("--no-progress", action="store_true")
    try:
        args = p.parse_args(argv)
    except _Exit as e:
        return e.code
    from .arena import (
        ArenaConfig,
        ArenaConfigError,
        TaskEntry,
        check_model_name,
        load_config,
        parse_config,
        plan,
    )

    try:
        config = load_config(args.config) if args.config else None
        task_name = args.task
        if config is not None and task_name is None:
            if len(config.tasks) != 1:
                raise ArenaConfigError(
                    f"--task: the config has {len(config.tasks)} tasks; name one of "
                    f"{', '.join(t.label for t in config.tasks)}"
                )
            task_name = config.tasks[0].label
        if task_name is None:
            raise ArenaConfigError("--task: required (a registered task name)")
        model = args.model
        if model is None:
            if config is not None and isinstance(config.models, list) and len(config.models) == 1:
                model = config.models[0]
            else:
                raise ArenaConfigError("--model: required (a mixer name or hybrid pattern 'a|b')")
        check_model_name("--model", model)
        if config is None:
            config = parse_config({"tasks": [{"name": task_name}]}, source="command line")
        found = [t for t in config.tasks if task_name in (t.label, t.name)]
        entry = found[0] if found else TaskEntry(name=task_name, label=task_name)
        entry = copy.deepcopy(entry)
        for opt in args.task_option:
            k, v = parse_option(opt)
            entry.options[k] = v
        for flag, key in (("steps", "steps"), ("batch_size", "batch_size"), ("lr", "lr")):
            if getattr(args, flag) is not None:
                entry.train[key] = getattr(args, flag)
        for flag in ("d_model", "n_layers", "n_heads"):
            if getattr(args, flag) is not None:
                entry.model[flag] = getattr(args, flag)
        one = ArenaConfig(
            name=config.name,
            model=config.model,
            mixer_options=config.mixer_options,
            train=config.train,
            tasks=[entry],
            source=config.source,
        )
        cells = plan(one, models=[model], seeds=1, threads=args.threads)
    except (ArenaConfigError, KeyError, ValueError, TypeError) as e:
        return _fail(prog, str(e).strip("'\""))
    if not cells:
        return _fail(prog, f"mixer {model!r} cannot run task {task_name!r} (the task needs a causal mixer)")
    cell = cells[0]
    cell.seed = args.seed
    db, out = _db_and_out(args)
    from .arena import run_arena

    t0 = time.time()
    result = run_arena([cell], db=db, out_dir=out, progress=not args.no_progress)
    from .report import load_runs

    runs = load_runs(db, keys=result.keys)
    if result.failed:
        return _fail(prog, f"run failed: {result.failed[0][1]}", 1)
    for r in runs:
        print(f"run {r.key}: {r.status}")
        print(
            f"  model {r.mixer} ({r.n_params or '?'} params) on task {r.task_name} {_short(r.task_options)}, seed {r.seed}"
        )
        if r.score is not None:
            arrow = "higher is better" if r.higher_is_better else "lower is better"
            print(f"  {r.metric}: {r.score:.4f} ({arrow})")
        for split, v in (r.results or {}).items():
            print(f"    {split}: {v:.4f}")
        print(f"  seconds: {r.seconds or time.time() - t0:.1f}")
    return 0


def _short(options: dict[str, Any], width: int = 40) -> str:
    """Task options for a one-line summary (long values such as a vocabulary are cut)."""
    parts = []
    for k, v in options.items():
        text = repr(v)
        parts.append(f"{k}={text if len(text) <= width else text[: width - 3] + '...'}")
    return "{" + ", ".join(parts) + "}"


# -- bench ---------------------------------------------------------------------------------------------
def bench_main(argv: list[str]) -> int:
    prog = "recurrences bench"
    p = _Parser(
        prog=prog,
        description="Time the forward (and forward+backward) of mixers and their forms, or of the scan "
        "methods, against a baseline measured in the same run. Writes bench.json and bench.png.",
    )
    p.add_argument(
        "--mixers", metavar="A,B[:FORM]", help="mixers to time; 'name:form' picks a form (bare = auto)"
    )
    p.add_argument(
        "--forms", choices=("auto", "all"), default="auto", help="'all': every form of each bare name"
    )
    p.add_argument("--scan", action="store_true", help="time the linear_scan methods instead of mixers")
    p.add_argument("--methods", metavar="A,B", help="scan methods (default: all but auto)")
    p.add_argument("--lengths", type=_int_csv, default=[256, 1024], metavar="T1,T2")
    p.add_argument("--batch", type=_positive_int, default=None, help="batch size (default 4 mixers, 8 scan)")
    p.add_argument("--d-model", type=_positive_int, default=256)
    p.add_argument("--d", type=_positive_int, default=256, help="state width for --scan")
    p.add_argument("--n-heads", type=_positive_int, default=4)
    p.add_argument("--backward", action="store_true", help="also time forward+backward")
    p.add_argument("--baseline", metavar="NAME", help="baseline target (default: first mixer / 'sequential')")
    p.add_argument("--repeats", type=_positive_int, default=5)
    p.add_argument("--max-seconds", type=_positive_float, default=30.0, help="time budget per cell")
    p.add_argument("--threads", type=_positive_int)
    p.add_argument("--device", default="cuda" if _cuda() else "cpu")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory pass")
    p.add_argument("--out", default="bench-out", metavar="DIR")
    try:
        args = p.parse_args(argv)
    except _Exit as e:
        return e.code
    import torch

    from .bench import bench_mixers, bench_scan, format_table, parse_mixer_list, write_bench

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        if args.scan:
            if args.mixers:
                return _fail(prog, "give either --scan or --mixers, not both")
            result = bench_scan(
                args.lengths,
                batch=args.batch or 8,
                d=args.d,
                methods=_csv(args.methods) if args.methods else None,
                backward=args.backward,
                baseline=args.baseline or "sequential",
                repeats=args.repeats,
                max_seconds=args.max_seconds,
                device=args.device,
                memory=not args.no_memory,
            )
        else:
            if not args.mixers:
                return _fail(prog, "--mixers is required (or --scan)")
            mixers = parse_mixer_list(args.mixers, forms_all=args.forms == "all")
            result = bench_mixers(
                mixers,
                args.lengths,
                batch=args.batch or 4,
                d_model=args.d_model,
                n_heads=args.n_heads,
                backward=args.backward,
                baseline=args.baseline,
                repeats=args.repeats,
                max_seconds=args.max_seconds,
                device=args.device,
                memory=not args.no_memory,
            )
    except (ValueError, KeyError, TypeError) as e:
        return _fail(prog, str(e).strip("'\""))
    print(format_table(result))
    files = write_bench(
        result, args.out, command="recurrences bench " + " ".join(shlex.quote(a) for a in argv)
    )
    print("wrote " + ", ".join(str(f) for f in files.values()))
    return 0


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:  # pragma: no cover
        return False
