"""The arena: train every registered mixer on a suite of tasks and compare them.

An arena config (a TOML file; the presets ship in ``recurrences/train/presets/``) names

- ``models``: ``"all"`` (every mixer in the registry at run time) or a list of names, where a name may
  be a hybrid pattern ``"aussm|mamba"``; ``exclude_models`` removes names from ``"all"``;
- ``[model]``: sizes shared by every model (``d_model``, ``n_layers``, ``n_heads``, ...), and
  ``[mixer_options.<name>]`` options passed to one mixer;
- ``[train]``: training settings shared by every run (any :class:`TrainConfig` field);
- ``[[tasks]]``: the suite, each with ``name``, ``options`` (passed to ``create_task``) and optional
  ``train`` / ``model`` overrides and a ``label``;
- ``seeds``: how many seeds (0 .. seeds-1) each (model, task) cell is run with;
- ``jobs``: how many cells run at once by default (``--jobs`` overrides it).

The grid is task x model x seed. A task whose ``io.needs_causal`` is set only gets causal mixers (a
bidirectional mixer would see the answer). Nothing here names a mixer family: a mixer registered
anywhere joins the arena as soon as it is registered.

Every cell goes through :func:`recurrences.train.run_one`, which skips finished runs and resumes
interrupted ones from their checkpoint, so an arena can be killed and restarted at any time.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import importlib.resources
import json
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = [
    "ArenaConfigError",
    "TaskEntry",
    "ArenaConfig",
    "Cell",
    "ArenaResult",
    "available_presets",
    "load_preset",
    "load_config",
    "parse_config",
    "resolve_models",
    "plan",
    "run_arena",
    "cell_key",
]

TOP_KEYS = {
    "name": str,
    "description": str,
    "estimate": str,
    "models": (str, list),
    "exclude_models": list,
    "seeds": int,
    "jobs": int,
    "model": dict,
    "mixer_options": dict,
    "train": dict,
    "tasks": list,
}
TASK_KEYS = {"name": str, "label": str, "options": dict, "train": dict, "model": dict, "models": (str, list)}
# ModelConfig fields the arena derives from the task (or the mixer name) and a config may not set.
DERIVED_MODEL_FIELDS = {
    "mixer",
    "mixer_options",
    "input_kind",
    "vocab_size",
    "n_features",
    "head",
    "n_outputs",
    "pooling",
}


class ArenaConfigError(ValueError):
    """A malformed arena config; the message names the file and the offending field."""


@dataclass
class TaskEntry:
    name: str
    label: str
    options: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)
    models: list[str] | str | None = None


@dataclass
class ArenaConfig:
    name: str = "custom"
    description: str = ""
    estimate: str = ""
    models: list[str] | str = "all"
    exclude_models: list[str] = field(default_factory=list)
    seeds: int = 1
    jobs: int = 1
    model: dict[str, Any] = field(default_factory=dict)
    mixer_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    tasks: list[TaskEntry] = field(default_factory=list)
    source: str = "<dict>"


# -- loading and validation ------------------------------------------------------------------------
def _presets_dir():
    return importlib.resources.files("recurrences.train") / "presets"


def available_presets() -> list[str]:
    return sorted(p.name[: -len(".toml")] for p in _presets_dir().iterdir() if p.name.endswith(".toml"))


def load_preset(name: str) -> ArenaConfig:
    known = available_presets()
    if name not in known:
        raise ArenaConfigError(f"unknown preset {name!r}; known presets: {', '.join(known)}")
    text = (_presets_dir() / f"{name}.toml").read_text()
    return parse_config(tomllib.loads(text), source=f"preset {name!r}")


def load_config(path: str | Path) -> ArenaConfig:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ArenaConfigError(f"cannot read arena config {str(path)!r}: {e.strerror or e}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ArenaConfigError(f"{path}: not valid TOML: {e}") from None
    return parse_config(data, source=str(path))


def _type_name(t) -> str:
    if isinstance(t, tuple):
        return " or ".join(_type_name(x) for x in t)
    return {
        str: "a string",
        int: "an integer",
        float: "a number",
        bool: "a boolean",
        list: "a list",
        dict: "a table",
    }.get(t, t.__name__)


def _check_keys(where: str, data: dict[str, Any], schema: dict[str, Any]) -> None:
    for key, value in data.items():
        if key not in schema:
            close = difflib.get_close_matches(key, list(schema), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ArenaConfigError(
                f"{where}: unknown key {key!r}{hint}; known keys: {', '.join(sorted(schema))}"
            )
        expected = schema[key]
        if expected is None:
            continue
        ok = isinstance(value, expected) and not (isinstance(value, bool) and expected in (int, float))
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            ok = True
        if not ok:
            raise ArenaConfigError(f"{where}.{key}: expected {_type_name(expected)}, got {value!r}")


def _dataclass_schema(cls, *, exclude: set[str] = frozenset()) -> dict[str, Any]:
    """field name -> accepted python type(s), read from the dataclass defaults (None: anything)."""
    schema: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name in exclude or f.name.startswith("_"):
            continue
        if f.default is not dataclasses.MISSING:
            d = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            d = f.default_factory()  # type: ignore[misc]
        else:
            d = None
        if isinstance(d, bool):
            schema[f.name] = bool
        elif isinstance(d, int):
            schema[f.name] = int
        elif isinstance(d, float):
            schema[f.name] = float
        elif isinstance(d, str):
            schema[f.name] = str
        elif isinstance(d, (list, tuple)):
            schema[f.name] = list
        elif isinstance(d, dict):
            schema[f.name] = dict
        else:
            schema[f.name] = None  # Optional or unknown: let the dataclass itself check it
    return schema


def _train_schema() -> dict[str, Any]:
    from recurrences.train import TrainConfig

    return _dataclass_schema(TrainConfig)


def _model_schema() -> dict[str, Any]:
    from recurrences.models import ModelConfig

    return _dataclass_schema(ModelConfig, exclude=DERIVED_MODEL_FIELDS)


def _check_model_names(where: str, names: list[str] | str) -> None:
    if names == "all":
        return
    if isinstance(names, str):
        raise ArenaConfigError(f'{where}: expected "all" or a list of mixer names, got {names!r}')
    for i, name in enumerate(names):
        check_model_name(f"{where}[{i}]", name)


def check_model_name(where: str, name: object) -> None:
    """Raise ArenaConfigError naming ``where`` unless ``name`` is a registered mixer or a hybrid of them."""
    from recurrences.layers import available_mixers

    if not isinstance(name, str) or not name:
        raise ArenaConfigError(f"{where}: expected a mixer name (string), got {name!r}")
    known = available_mixers()
    for part in _parts(name):
        if part not in known:
            close = difflib.get_close_matches(part, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ArenaConfigError(f"{where}: unknown mixer {part!r}{hint}; known mixers: {', '.join(known)}")


def _check_task_name(where: str, name: str) -> None:
    from recurrences.tasks import available_tasks

    known = available_tasks()
    if name not in known:
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ArenaConfigError(f"{where}: unknown task {name!r}{hint}; known tasks: {', '.join(known)}")


def parse_config(data: dict[str, Any], *, source: str = "<dict>") -> ArenaConfig:
    """Validate a parsed TOML table into an :class:`ArenaConfig` (errors name ``source`` and the field)."""
    if not isinstance(data, dict):
        raise ArenaConfigError(f"{source}: expected a table at the top level, got {type(data).__name__}")
    _check_keys(source, data, TOP_KEYS)
    train_schema = _train_schema()
    model_schema = _model_schema()
    cfg = ArenaConfig(source=source)
    cfg.name = data.get("name", Path(source).stem if source.endswith(".toml") else "custom")
    cfg.description = data.get("description", "")
    cfg.estimate = data.get("estimate", "")
    cfg.models = data.get("models", "all")
    _check_model_names(f"{source}: models", cfg.models)
    cfg.exclude_models = list(data.get("exclude_models", []))
    for i, name in enumerate(cfg.exclude_models):
        if not isinstance(name, str):
            raise ArenaConfigError(f"{source}: exclude_models[{i}]: expected a mixer name, got {name!r}")
    cfg.seeds = data.get("seeds", 1)
    if cfg.seeds < 1:
        raise ArenaConfigError(f"{source}: seeds: expected a positive integer, got {cfg.seeds}")
    cfg.jobs = data.get("jobs", 1)
    if cfg.jobs < 1:
        raise ArenaConfigError(f"{source}: jobs: expected a positive integer, got {cfg.jobs}")
    cfg.model = dict(data.get("model", {}))
    _check_keys(f"{source}: model", cfg.model, model_schema)
    cfg.train = dict(data.get("train", {}))
    _check_keys(f"{source}: train", cfg.train, train_schema)
    cfg.mixer_options = {}
    for mname, opts in data.get("mixer_options", {}).items():
        check_model_name(f"{source}: mixer_options.{mname}", mname)
        if not isinstance(opts, dict):
            raise ArenaConfigError(
                f"{source}: mixer_options.{mname}: expected a table of options, got {opts!r}"
            )
        cfg.mixer_options[mname] = dict(opts)
    tasks = data.get("tasks", [])
    if not tasks:
        raise ArenaConfigError(f"{source}: tasks: expected at least one [[tasks]] entry")
    labels: set[str] = set()
    for i, t in enumerate(tasks):
        where = f"{source}: tasks[{i}]"
        if not isinstance(t, dict):
            raise ArenaConfigError(f"{where}: expected a table, got {t!r}")
        _check_keys(where, t, TASK_KEYS)
        if "name" not in t:
            raise ArenaConfigError(f"{where}: missing key 'name' (the registered task name)")
        _check_task_name(f"{where}.name", t["name"])
        _check_keys(f"{where}.train", t.get("train", {}), train_schema)
        _check_keys(f"{where}.model", t.get("model", {}), model_schema)
        if "models" in t:
            _check_model_names(f"{where}.models", t["models"])
        entry = TaskEntry(
            name=t["name"],
            label=t.get("label", t["name"]),
            options=dict(t.get("options", {})),
            train=dict(t.get("train", {})),
            model=dict(t.get("model", {})),
            models=t.get("models"),
        )
        if entry.label in labels:
            raise ArenaConfigError(
                f"{where}.label: duplicate task label {entry.label!r}; give each entry a 'label'"
            )
        labels.add(entry.label)
        cfg.tasks.append(entry)
    return cfg


# -- the grid ------------------------------------------------------------------------------------------
@dataclass
class Cell:
    """One run of the grid: everything :func:`run_one` needs, as plain (picklable) data."""

    task_label: str
    task_name: str
    task_options: dict[str, Any]
    mixer: str
    model: dict[str, Any]  # ModelConfig.to_dict()
    train: dict[str, Any]  # TrainConfig fields
    seed: int
    n_params: int | None = None

    def describe(self) -> str:
        return f"{self.task_label} / {self.mixer} / seed {self.seed}"


def _parts(name: str) -> list[str]:
    """The mixer names of a model name: a mixer, a pattern "a|b", or a named hybrid ("rat-swa")."""
    from recurrences.layers import expand_hybrid

    return expand_hybrid(name)[0].split("|")


def _is_causal(mixer: str) -> bool:
    from recurrences.layers import mixer_spec

    return all(mixer_spec(part).causal for part in _parts(mixer))


def resolve_models(
    models: list[str] | str | None, *, exclude: list[str] = (), needs_causal: bool = False
) -> list[str]:
    """The mixer names a task gets: ``"all"`` = every registered mixer, minus ``exclude``; causal only if asked."""
    from recurrences.layers import available_mixers

    names = available_mixers() if models in (None, "all") else list(models)
    names = [n for n in names if n not in set(exclude)]
    if needs_causal:
        names = [n for n in names if _is_causal(n)]
    return names


def _scale_train(train: dict[str, Any], scale: float) -> dict[str, Any]:
    """Multiply the step counts of a train config by ``scale`` (at least 1 step)."""
    if scale == 1.0:
        return train
    out = dict(train)
    for k in ("steps", "warmup_steps", "eval_every", "checkpoint_every", "log_every"):
        v = out.get(k)
        if isinstance(v, int) and not isinstance(v, bool) and v > 0:
            out[k] = max(1, int(math.ceil(v * scale))) if k != "warmup_steps" else int(round(v * scale))
    return out


def plan(
    config: ArenaConfig,
    *,
    models: list[str] | None = None,
    tasks: list[str] | None = None,
    seeds: int | None = None,
    steps_scale: float = 1.0,
    threads: int | None = None,
    log: Callable[[str], None] | None = None,
) -> list[Cell]:
    """Expand a config into its grid of cells (task-major, then model, then seed).

    ``models`` replaces the config's model list (hybrids "a|b" allowed); ``tasks`` keeps only the
    entries with these labels or names (a registered task not in the config is added with its
    defaults); ``seeds`` replaces the number of seeds; ``steps_scale`` multiplies every step count;
    ``threads`` is the torch thread count of runs whose config does not set ``threads``.
    """
    from recurrences.models import ModelConfig
    from recurrences.tasks import create_task
    from recurrences.train import TrainConfig

    if steps_scale <= 0 or not math.isfinite(steps_scale):
        raise ArenaConfigError(f"--steps-scale: expected a positive number, got {steps_scale}")
    if models is not None:
        _check_model_names("--models", models)
    entries = list(config.tasks)
    if tasks is not None:
        chosen = []
        for name in tasks:
            found = [e for e in entries if e.label == name] or [e for e in entries if e.name == name]
            if not found:
                _check_task_name("--tasks", name)
                found = [TaskEntry(name=name, label=name)]
            chosen.extend(e for e in found if e not in chosen)
        entries = chosen
    n_seeds = config.seeds if seeds is None else seeds
    if n_seeds < 1:
        raise ArenaConfigError(f"--seeds: expected a positive integer, got {n_seeds}")

    cells: list[Cell] = []
    for entry in entries:
        try:
            task = create_task(entry.name, **entry.options)
        except (TypeError, ValueError, KeyError) as e:
            msg = (e.args[0] if isinstance(e, KeyError) and e.args else str(e)).removeprefix(
                f"create_task({entry.name!r}): "
            )
            raise ArenaConfigError(f"{config.source}: task {entry.label!r} options: {msg}") from None
        io = task.io
        wanted = (
            models if models is not None else (entry.models if entry.models is not None else config.models)
        )
        names = resolve_models(
            wanted, exclude=config.exclude_models if models is None else (), needs_causal=False
        )
        if io.needs_causal:
            dropped = [n for n in names if not _is_causal(n)]
            names = [n for n in names if _is_causal(n)]
            if dropped and log is not None:
                log(
                    f"task {entry.label}: skipping bidirectional mixers (the task needs causal ones): {', '.join(dropped)}"
                )
        train_dict = _scale_train({**config.train, **entry.train}, steps_scale)
        if threads is not None and "threads" not in train_dict:
            train_dict["threads"] = threads
        try:
            train_cfg = TrainConfig(**train_dict)
        except (TypeError, ValueError) as e:
            raise ArenaConfigError(
                f"{config.source}: task {entry.label!r}: bad train settings: {e}"
            ) from None
        if train_cfg.select == "best_val" and not list(task.val_splits):
            raise ArenaConfigError(
                f"{config.source}: task {entry.label!r}: train.select = 'best_val' needs validation splits, "
                f"and task {entry.name!r} with these options has none (for the length-generalisation tasks "
                "add the option val_examples > 0)"
            )
        sizes = {**config.model, **entry.model}
        for name in names:
            # per-mixer options, keyed by mixer name (ModelConfig routes each entry to its layers)
            options = {p: dict(config.mixer_options[p]) for p in _parts(name) if p in config.mixer_options}
            try:
                mc = ModelConfig.for_task(
                    io, mixer=name, **sizes, **({"mixer_options": options} if options else {})
                )
            except (TypeError, ValueError, KeyError) as e:
                raise ArenaConfigError(
                    f"{config.source}: task {entry.label!r}, model {name!r}: bad model settings {sizes}: {e}"
                ) from None
            for seed in range(n_seeds):
                cells.append(
                    Cell(
                        task_label=entry.label,
                        task_name=entry.name,
                        task_options=copy.deepcopy(entry.options),
                        mixer=name,
                        model=mc.to_dict(),
                        train=_train_to_dict(train_cfg),
                        seed=seed,
                    )
                )
    return cells


def _train_to_dict(tc) -> dict[str, Any]:
    if hasattr(tc, "to_dict"):
        return tc.to_dict()
    return dataclasses.asdict(tc)


def _materialise(cell: Cell):
    from recurrences.models import ModelConfig
    from recurrences.train import TrainConfig

    return ModelConfig.from_dict(cell.model), TrainConfig.from_dict(cell.train)


def cell_key(cell: Cell) -> str:
    """The store key of a cell (the same hash :func:`run_one` files it under); trains nothing."""
    from recurrences.train import prepare_run

    mc, tc = _materialise(cell)
    return prepare_run(mc, cell.task_name, cell.task_options, tc, cell.seed).key


# -- running -------------------------------------------------------------------------------------------
@dataclass
class ArenaResult:
    cells: list[Cell]
    keys: list[str]
    failed: list[tuple[Cell, str]]
    seconds: float
    labels: dict[str, str] = field(default_factory=dict)  # run key -> task label


def _run_cell(cell: Cell, db: str, root_dir: str, progress: bool) -> tuple[str, str | None, bool]:
    """Run one cell (in this process or a pool worker).

    Returns (key, error message or None, whether the store already had the run finished).
    """
    from recurrences.train import run_one

    t0 = time.time()
    try:
        mc, tc = _materialise(cell)
        rec = run_one(
            mc,
            cell.task_name,
            cell.task_options,
            tc,
            cell.seed,
            store=db,
            root_dir=root_dir,
            progress=progress,
        )
    except KeyboardInterrupt:
        raise
    except Exception as e:  # one broken mixer or task must not stop the arena
        try:
            key = cell_key(cell)
        except Exception:
            key = ""
        return key, f"{type(e).__name__}: {e}", False
    if rec.status != "finished":
        return rec.key, rec.error or f"run ended with status {rec.status!r}", False
    return rec.key, None, rec.finished is not None and rec.finished < t0


def _registering_modules(cells: list[Cell]) -> list[str]:
    """Modules that registered the cells' mixers and tasks outside the built-in packages.

    A spawned worker imports the built-ins itself; a mixer or task registered elsewhere (a plug-in, a
    test) is only known to the worker once the module that registers it is imported there too.
    """
    from recurrences.layers import mixer_spec
    from recurrences.tasks import task_spec

    mods: list[str] = []
    factories = [mixer_spec(p).factory for c in cells for p in _parts(c.mixer)]
    factories += [task_spec(c.task_name).factory for c in cells]
    for f in factories:
        m = getattr(f, "__module__", None)
        if (
            m
            and m != "__main__"
            and not m.startswith(("recurrences.layers", "recurrences.tasks"))
            and m not in mods
        ):
            mods.append(m)
    return mods


def _worker_init(modules: list[str]) -> None:
    import importlib
    import signal

    # Ctrl-C goes to the parent, which stops the workers itself (see run_arena)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for m in modules:
        importlib.import_module(m)


def _stop_on_sigterm() -> Callable[[], None]:
    """While the pool runs, SIGTERM (a scheduler's or ``kill``'s stop) takes the Ctrl-C path: the workers
    are stopped with the parent instead of training on as orphans (which a restarted arena would then
    race on the same runs). Returns the function that puts the previous handler back."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def stop(signum, frame):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    return lambda: signal.signal(signal.SIGTERM, previous)


def run_arena(
    cells: list[Cell],
    *,
    db: str | Path,
    out_dir: str | Path,
    jobs: int = 1,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> ArenaResult:
    """Run every cell through ``run_one`` (finished ones are skipped by the store, interrupted ones resume)."""
    if jobs < 1:
        raise ValueError(f"--jobs: expected a positive integer, got {jobs}")
    db = str(db)
    Path(db).parent.mkdir(parents=True, exist_ok=True)
    root_dir = str(Path(out_dir) / "runs")
    Path(root_dir).mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    keys: list[str] = []
    failed: list[tuple[Cell, str]] = []
    labels: dict[str, str] = {}
    n = len(cells)
    if jobs == 1 or n <= 1:
        for i, cell in enumerate(cells):
            log(f"[{i + 1}/{n}] {cell.describe()}")
            key, err, skipped = _run_cell(cell, db, root_dir, progress)
            if skipped:
                log("  already finished in the store: not run again")
            if key:
                keys.append(key)
                labels[key] = cell.task_label
            if err:
                failed.append((cell, err))
                log(f"  FAILED: {err}")
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        ctx = mp.get_context("spawn")
        results: dict[int, tuple[str, str | None, bool]] = {}
        init_args = (_registering_modules(cells),)
        from concurrent.futures import as_completed

        pool = ProcessPoolExecutor(
            max_workers=jobs, mp_context=ctx, initializer=_worker_init, initargs=init_args
        )
        restore_sigterm = _stop_on_sigterm()
        try:
            futures = {pool.submit(_run_cell, cell, db, root_dir, False): i for i, cell in enumerate(cells)}
            for done, fut in enumerate(as_completed(futures), start=1):
                i = futures[fut]
                try:
                    results[i] = fut.result()
                except Exception as e:  # a worker that died (e.g. killed by the OS)
                    results[i] = ("", f"worker died: {type(e).__name__}: {e}", False)
                err, skipped = results[i][1], results[i][2]
                status = f"  FAILED: {err}" if err else ("  already finished" if skipped else "  done")
                log(f"[{done}/{n}] {cells[i].describe()}{status}")
        except BaseException:
            # Ctrl-C (or any error here): drop the queued cells and stop the workers now. Their runs
            # stay "running" in the store and resume from their checkpoints next time.
            for p in list(getattr(pool, "_processes", {}).values()):
                p.terminate()
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        finally:
            restore_sigterm()
        pool.shutdown(wait=True)
        for i, cell in enumerate(cells):
            if results[i][0]:
                keys.append(results[i][0])
                labels[results[i][0]] = cell.task_label
            if results[i][1]:
                failed.append((cell, results[i][1]))
    return ArenaResult(cells=cells, keys=keys, failed=failed, seconds=time.time() - t0, labels=labels)


def default_threads(jobs: int) -> int:
    """Threads per worker so that ``jobs`` workers share the machine's cores without oversubscribing."""
    return max(1, (os.cpu_count() or 1) // max(1, jobs))


def config_summary(config: ArenaConfig, cells: list[Cell]) -> str:
    tasks = sorted({c.task_label for c in cells}, key=[c.task_label for c in cells].index)
    mixers = sorted({c.mixer for c in cells})
    return json.dumps(
        {"config": config.name, "tasks": tasks, "models": mixers, "runs": len(cells)},
    )
