"""The arena report, rendered from the run store alone: leaderboard, Markdown, plots, JSON.

For each task (a task name with its options) and each model (a model config with its train config),
the leaderboard shows the headline score over seeds,

    mean = (1/n) sum_i s_i,    std = sqrt( sum_i (s_i - mean)^2 / (n - 1) )   (0 when n = 1),

with the task's metric and its direction (accuracy: higher is better; bpc: lower is better), the
parameter count and the mean wall time of a run. Rows are ranked best first.

Files written into the output folder (each atomically: temp file + rename):

- ``report.md``: the leaderboard per task, per-split scores, unfinished/failed runs, links to plots;
- ``results.json``: every run and every leaderboard row, for other tools;
- ``length_<task>.png``: score against sequence length for tasks whose splits have a length
  (length generalisation), one line per model (needs matplotlib, the ``[plot]`` extra);
- ``curves_<task>.png``: headline score (and training loss) against step, one line per model.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import re
import statistics
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

__all__ = [
    "RunView",
    "Row",
    "TaskBoard",
    "load_runs",
    "leaderboard",
    "render_leaderboard",
    "render_markdown",
    "write_report",
    "options_json",
]


def options_json(options: dict[str, Any]) -> str:
    """Canonical JSON of task options (tuples as lists, sorted keys): the identity of a task variant."""
    return json.dumps(json.loads(json.dumps(options, default=str)), sort_keys=True)


@dataclass
class RunView:
    """A run as the report sees it (one row of the store, with its metric decoded)."""

    key: str
    status: str
    task_name: str
    task_options: dict[str, Any]
    model: dict[str, Any]
    train: dict[str, Any]
    seed: int
    mixer: str
    metric: str = "accuracy"
    higher_is_better: bool = True
    score: float | None = None
    results: dict[str, float] = field(default_factory=dict)
    n_params: int | None = None
    seconds: float | None = None
    started: float | None = None
    finished: float | None = None
    steps_done: int | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Row:
    rank: int
    label: str
    mixer: str
    mean: float
    std: float
    n: int
    scores: list[float]
    n_params: int | None
    seconds: float | None
    splits: dict[str, float]
    keys: list[str]
    model: dict[str, Any]


@dataclass
class TaskBoard:
    label: str
    task_name: str
    task_options: dict[str, Any]
    metric: str
    higher_is_better: bool
    score_splits: list[str]
    split_lengths: dict[str, int]
    rows: list[Row]
    unfinished: list[RunView]
    selected_on_validation: bool = False  # some run reports its best-on-validation evaluation


# -- reading the store ----------------------------------------------------------------------------
def _store(db):
    from .store import RunStore

    return db if hasattr(db, "runs") else RunStore(db)


def load_runs(db, *, keys: list[str] | None = None) -> list[RunView]:
    """Every run in the store (or only ``keys``, in that order), as :class:`RunView`."""
    store = _store(db)
    if keys is None:
        records = store.runs()
    else:
        wanted = list(dict.fromkeys(keys))
        found = {r.key: r for r in store.runs(key=wanted)} if wanted else {}
        records = [found[k] for k in wanted if k in found]
    out = []
    for r in records:
        metric = _metric_of(store, r)
        hib = metric != "bpc"
        out.append(
            RunView(
                key=r.key,
                status=r.status,
                task_name=r.task_name,
                task_options=dict(r.task_config),
                model=dict(r.model_config),
                train=dict(r.train_config),
                seed=int(r.seed),
                mixer=str(r.model_config.get("mixer", "?")),
                metric=metric,
                higher_is_better=hib,
                score=r.score,
                results=dict(r.final or {}),
                n_params=r.n_params,
                seconds=r.seconds,
                started=r.started,
                finished=r.finished,
                steps_done=r.steps_done,
                error=r.error,
            )
        )
    return out


def _metric_of(store, record) -> str:
    """The run's metric: from its logged metrics, else from the task itself."""
    try:
        rows = store.metrics(record.key)
    except Exception:
        rows = []
    for row in rows:
        if row["split"] == "score":
            return str(row["name"])
    info = _task_info(record.task_name, options_json(record.task_config))
    return info[0] if info else "accuracy"


@lru_cache(maxsize=128)
def _task_info(task_name: str, options: str) -> tuple[str, list[str], dict[str, int], list[str]] | None:
    """(metric, score splits, {split: length}, eval splits) of a task, or None if it cannot be built here."""
    try:
        from recurrences.tasks import create_task

        task = create_task(task_name, **json.loads(options))
        lengths = {}
        for s in task.eval_splits():
            n = task.split_length(s)
            if n is not None:
                lengths[s] = int(n)
        return task.metric, list(task.score_splits), lengths, list(task.eval_splits())
    except Exception:
        return None


def _curves(db, key: str) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    """(headline score against step, training loss against step) of one run."""
    score, loss = [], []
    for row in _store(db).metrics(key):
        if row["value"] is None:
            continue
        if row["split"] == "score":
            score.append((int(row["step"]), float(row["value"])))
        elif row["split"] == "train" and row["name"] == "loss":
            loss.append((int(row["step"]), float(row["value"])))
    return score, loss


# -- the leaderboard ----------------------------------------------------------------------------------
_SEED_FIELDS = ("seed", "threads", "log_every", "checkpoint_every")


def _model_identity(run: RunView) -> str:
    train = {k: v for k, v in run.train.items() if k not in _SEED_FIELDS}
    return json.dumps({"model": run.model, "train": train}, sort_keys=True)


def _std(xs: list[float]) -> float:
    return statistics.stdev(xs) if len(xs) > 1 else 0.0


def _mean(xs: list[float]) -> float | None:
    xs = [x for x in xs if x is not None and not math.isnan(x)]
    return sum(xs) / len(xs) if xs else None


def _distinguish(groups: dict[str, dict[str, Any]], base: dict[str, str]) -> dict[str, str]:
    """Labels for groups sharing a base label: base + the fields in which their dicts differ."""
    by_base: dict[str, list[str]] = defaultdict(list)
    for g, b in base.items():
        by_base[b].append(g)
    out = {}
    for b, gs in by_base.items():
        if len(gs) == 1:
            out[gs[0]] = b
            continue
        flat = {g: _flatten(groups[g]) for g in gs}
        keys = sorted({k for f in flat.values() for k in f})
        differing = [
            k for k in keys if len({json.dumps(f.get(k), sort_keys=True) for f in flat.values()}) > 1
        ]
        for g in gs:
            parts = [f"{k.split('.')[-1]}={flat[g].get(k)}" for k in differing[:3]]
            out[g] = f"{b} ({', '.join(parts)})" if parts else f"{b} [{g[:6]}]"
    return out


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def leaderboard(
    db,
    *,
    keys: list[str] | None = None,
    labels: dict[str, str] | None = None,
    runs: list[RunView] | None = None,
) -> list[TaskBoard]:
    """One :class:`TaskBoard` per task variant found among the runs (all runs, or ``keys`` only).

    ``labels`` maps run keys to a task label (the arena's labels); other task variants are labelled
    by their name, plus the options that tell same-named variants apart.
    """
    runs = load_runs(db, keys=keys) if runs is None else runs
    tasks: dict[str, list[RunView]] = defaultdict(list)
    order: list[str] = []
    for r in runs:
        tid = json.dumps([r.task_name, options_json(r.task_options)])
        if tid not in tasks:
            order.append(tid)
        tasks[tid].append(r)
    base = {}
    for tid in order:
        name, _ = json.loads(tid)
        given = [labels[r.key] for r in tasks[tid] if labels and r.key in labels]
        base[tid] = given[0] if given else name
    task_label = _distinguish({t: {"options": json.loads(json.loads(t)[1])} for t in order}, base)

    boards = []
    for tid in order:
        group = tasks[tid]
        name, opts = json.loads(tid)
        info = _task_info(name, opts)
        finished = [r for r in group if r.status == "finished" and r.score is not None]
        metric = finished[0].metric if finished else (info[0] if info else group[0].metric)
        hib = metric != "bpc"
        models: dict[str, list[RunView]] = defaultdict(list)
        for r in finished:
            models[_model_identity(r)].append(r)
        mlabels = _distinguish(
            {m: json.loads(m) for m in models}, {m: runs_[0].mixer for m, runs_ in models.items()}
        )
        rows = []
        for mid, rs in models.items():
            rs = sorted(rs, key=lambda r: r.seed)
            scores = [float(r.score) for r in rs]
            split_names = list(dict.fromkeys(s for r in rs for s in r.results))
            if info:  # the task's own order (train lengths first, then growing lengths)
                split_names.sort(key=lambda s: info[3].index(s) if s in info[3] else len(info[3]))
            splits = {s: _mean([r.results.get(s) for r in rs]) for s in split_names}
            rows.append(
                Row(
                    rank=0,
                    label=mlabels[mid],
                    mixer=rs[0].mixer,
                    mean=sum(scores) / len(scores),
                    std=_std(scores),
                    n=len(scores),
                    scores=scores,
                    n_params=rs[0].n_params,
                    seconds=_mean([r.seconds for r in rs]),
                    splits={k: v for k, v in splits.items() if v is not None},
                    keys=[r.key for r in rs],
                    model=rs[0].model,
                )
            )
        rows.sort(key=lambda row: (-row.mean if hib else row.mean, row.label))
        for i, row in enumerate(rows):
            row.rank = i + 1
        boards.append(
            TaskBoard(
                label=task_label[tid],
                task_name=name,
                task_options=json.loads(opts),
                metric=metric,
                higher_is_better=hib,
                score_splits=info[1] if info else [],
                split_lengths=info[2] if info else {},
                rows=rows,
                unfinished=[r for r in group if r not in finished],
                selected_on_validation=any(r.train.get("select") == "best_val" for r in finished),
            )
        )
    return boards


def _fmt_params(n: int | None) -> str:
    if n is None:
        return "?"
    if n >= 1_000_000:
        return f"{n / 1e6:.2f}M"
    if n >= 1_000:
        return f"{n / 1e3:.1f}k"
    return str(n)


def _direction(board: TaskBoard) -> str:
    return "higher is better" if board.higher_is_better else "lower is better"


def render_leaderboard(boards: list[TaskBoard]) -> str:
    """Plain-text leaderboard (what ``recurrences arena`` prints)."""
    if not boards:
        return "leaderboard: no runs in the store"
    lines = []
    for b in boards:
        lines.append(f"== {b.label}: {b.metric} ({_direction(b)}) ==")
        width = max([len(r.label) for r in b.rows] + [5])
        lines.append(
            f"  {'#':>2}  {'model':<{width}}  {'score':>17}  {'seeds':>5}  {'params':>8}  {'seconds':>8}"
        )
        for r in b.rows:
            score = f"{r.mean:.4f} ± {r.std:.4f}"
            secs = f"{r.seconds:.1f}" if r.seconds is not None else "?"
            lines.append(
                f"  {r.rank:>2}  {r.label:<{width}}  {score:>17}  {r.n:>5}  {_fmt_params(r.n_params):>8}  {secs:>8}"
            )
        for u in b.unfinished:
            why = f": {u.error.splitlines()[0][:100]}" if u.error else ""
            lines.append(f"   -  {u.mixer} (seed {u.seed}) {u.status}{why}")
        lines.append("")
    return "\n".join(lines).rstrip()


# -- Markdown ------------------------------------------------------------------------------------------
def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "task"


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def render_markdown(
    boards: list[TaskBoard],
    *,
    title: str = "Arena report",
    plots: dict[str, dict[str, str]] | None = None,
    command: str | None = None,
) -> str:
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    out = [f"# {title}", "", f"Generated {now} from the run store."]
    if command:
        out += ["", f"Command: `{command}`"]
    n_runs = sum(len(r.keys) for b in boards for r in b.rows)
    n_unf = sum(len(b.unfinished) for b in boards)
    out += [
        "",
        f"{len(boards)} task(s), {n_runs} finished run(s)"
        + (f", {n_unf} unfinished or failed." if n_unf else "."),
    ]
    out += ["", "Score: the task's headline metric (mean over its scored splits), mean ± std over seeds.", ""]
    for b in boards:
        opts = json.dumps(b.task_options, sort_keys=True)
        out += [
            f"## {b.label}",
            "",
            f"Task `{b.task_name}` with options `{opts}`. Metric: **{b.metric}** ({_direction(b)}).",
        ]
        if b.score_splits:
            out += [f"Scored splits: {', '.join(f'`{s}`' for s in b.score_splits)}."]
        if b.selected_on_validation:
            out += [
                'Model selection (`select = "best_val"`): each run reports its evaluation that was best on '
                "the task's validation splits, not its last one."
            ]
        out += ["", "| # | model | score | seeds | params | seconds |", "|---:|---|---:|---:|---:|---:|"]
        for r in b.rows:
            secs = f"{r.seconds:.1f}" if r.seconds is not None else "?"
            out.append(
                f"| {r.rank} | `{_md_escape(r.label)}` | {r.mean:.4f} ± {r.std:.4f} | {r.n} | {_fmt_params(r.n_params)} | {secs} |"
            )
        splits = list(dict.fromkeys(s for r in b.rows for s in r.splits))
        if len(splits) > 1 and b.rows:
            out += ["", "Per split (mean over seeds):", ""]
            out.append("| model | " + " | ".join(f"`{s}`" for s in splits) + " |")
            out.append("|---|" + "---:|" * len(splits))
            for r in b.rows:
                vals = [f"{r.splits[s]:.4f}" if s in r.splits else "-" for s in splits]
                out.append(f"| `{_md_escape(r.label)}` | " + " | ".join(vals) + " |")
        if b.unfinished:
            out += ["", "Unfinished or failed runs:", ""]
            for u in b.unfinished:
                why = f": `{_md_escape(u.error.splitlines()[0][:160])}`" if u.error else ""
                out.append(f"- `{u.mixer}` seed {u.seed}: {u.status}{why}")
        for kind, caption in (("length", "Score against sequence length"), ("curves", "Learning curves")):
            path = (plots or {}).get(b.label, {}).get(kind)
            if path:
                out += ["", f"![{caption}: {b.label}]({path})"]
        out.append("")
    return "\n".join(out).rstrip() + "\n"


# -- plots -----------------------------------------------------------------------------------------------
def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        return plt
    except ImportError:
        return None


def _legend(label: str) -> str:
    # matplotlib hides legend labels that start with "_"
    return "\u200b" + label if label.startswith("_") else label


def _save(fig, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=100)
    os.replace(tmp, path)


def plot_lengths(board: TaskBoard, path: Path) -> Path | None:
    """Score against split length, one line per model (tasks whose splits have lengths)."""
    plt = _pyplot()
    if plt is None or len(board.split_lengths) < 2 or not board.rows:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in board.rows:
        pts = sorted((board.split_lengths[s], v) for s, v in r.splits.items() if s in board.split_lengths)
        if pts:
            xs, ys = zip(*pts)
            ax.plot(xs, ys, marker="o", label=_legend(r.label))
    ax.set_xlabel("sequence length")
    ax.set_ylabel(board.metric)
    ax.set_title(f"{board.label}: {board.metric} against length ({_direction(board)})")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return path


def plot_curves(board: TaskBoard, db, path: Path) -> Path | None:
    """Headline score (left) and training loss (right) against step, one line per model (seed 0)."""
    plt = _pyplot()
    if plt is None or not board.rows:
        return None
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    drew = False
    for r in board.rows:
        score, loss = _curves(db, r.keys[0])
        if score:
            xs, ys = zip(*score)
            ax1.plot(xs, ys, marker=".", label=_legend(r.label))
            drew = True
        if loss:
            xs, ys = zip(*loss)
            ax2.plot(xs, ys, label=_legend(r.label))
            drew = True
    if not drew:
        plt.close(fig)
        return None
    ax1.set_xlabel("step")
    ax1.set_ylabel(board.metric)
    ax1.set_title(f"{board.label}: {board.metric} ({_direction(board)})")
    ax2.set_xlabel("step")
    ax2.set_ylabel("training loss")
    ax2.set_yscale("log")
    ax2.set_title(f"{board.label}: training loss")
    for ax in (ax1, ax2):
        ax.grid(True, alpha=0.3)
    ax1.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return path


# -- all files -------------------------------------------------------------------------------------------
def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_report(
    db,
    out_dir: str | Path,
    *,
    keys: list[str] | None = None,
    labels: dict[str, str] | None = None,
    title: str = "Arena report",
    command: str | None = None,
) -> list[Path]:
    """Write report.md, results.json and the plots into ``out_dir``; return the paths written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    runs = load_runs(db, keys=keys)
    boards = leaderboard(db, labels=labels, runs=runs)
    files: list[Path] = []
    plots: dict[str, dict[str, str]] = {}
    for b in boards:
        slug = _slug(b.label)
        p = plot_lengths(b, out / f"length_{slug}.png")
        if p is not None:
            plots.setdefault(b.label, {})["length"] = p.name
            files.append(p)
        p = plot_curves(b, db, out / f"curves_{slug}.png")
        if p is not None:
            plots.setdefault(b.label, {})["curves"] = p.name
            files.append(p)
    # plots of an earlier rendering under other task labels would be stale: remove them
    for old in [*out.glob("length_*.png"), *out.glob("curves_*.png")]:
        if old not in files:
            old.unlink(missing_ok=True)
    md = out / "report.md"
    _write_text(md, render_markdown(boards, title=title, plots=plots, command=command))
    data = {
        "title": title,
        "command": command,
        "generated": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "leaderboard": [
            {
                "task": b.label,
                "task_name": b.task_name,
                "task_options": b.task_options,
                "metric": b.metric,
                "higher_is_better": b.higher_is_better,
                "score_splits": b.score_splits,
                "split_lengths": b.split_lengths,
                "selected_on_validation": b.selected_on_validation,
                "rows": [asdict(r) for r in b.rows],
                "unfinished": [
                    {"key": u.key, "mixer": u.mixer, "seed": u.seed, "status": u.status, "error": u.error}
                    for u in b.unfinished
                ],
                "plots": plots.get(b.label, {}),
            }
            for b in boards
        ],
        "runs": [r.to_dict() for r in runs],
    }
    js = out / "results.json"
    _write_text(js, json.dumps(_finite(data), indent=2, default=_json_default, allow_nan=False) + "\n")
    return [md, js, *files]


def _json_default(o: Any) -> Any:
    return str(o)


def _finite(o: Any) -> Any:
    """NaN/inf (e.g. a diverged run) become null: JSON has no NaN."""
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite(v) for v in o]
    return o
