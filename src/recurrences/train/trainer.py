"""The trainer: AdamW + warmup/cosine schedule, periodic evaluation on every split, checkpoints, resume.

Loss: cross-entropy over the non-ignored targets (``IGNORE_INDEX``),

    L = sum_{i: y_i != IGNORE} -log softmax(z_i)[y_i] / #{i: y_i != IGNORE}.

Learning rate at step s (0-based) with peak lr, warmup W, floor r = min_lr_ratio and decay length
S = decay_steps (default: steps):

    lr(s) = lr * (s + 1) / W                                                       for s < W
    lr(s) = lr * (r + (1 - r) * (1 + cos(pi * min(1, (s - W) / max(1, S - W)))) / 2)   otherwise,

so with decay_steps < steps the rate holds at the floor r * lr from step S to the end.

Metrics: "accuracy" = correct / count over non-ignored targets; "bpc" = (sum CE / count) / ln 2.
The headline score is the mean of the metric over ``task.score_splits``.

Everything random is seeded: the model is built after ``torch.manual_seed(seed)``, batch ``s`` is
``task.train_batch(s, batch_size, seed)``, and a checkpoint carries the torch RNG state, so a run
resumed from a checkpoint ends with bitwise the same weights as an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import os
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recurrences.models.config import ConfigMixin, ModelConfig
from recurrences.models.sequence import SequenceModel
from recurrences.tasks.base import IGNORE_INDEX, Batch, Task

from .checkpoint import (
    CheckpointError,
    encode_rng_state,
    flatten_optimizer_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
    unflatten_optimizer_state,
)
from .distributed import DistContext, all_reduce_sum, dist_context, shard_batch

__all__ = [
    "TrainConfig",
    "TrainResult",
    "train",
    "evaluate",
    "load_trained_model",
    "lr_at",
    "make_optimizer",
    "sequence_loss",
    "METRICS",
    "RESUME_IGNORED_FIELDS",
]

METRICS = ("accuracy", "bpc")
# train-config fields that may differ between a checkpoint and the run resuming from it
RESUME_IGNORED_FIELDS = ("threads", "log_every", "checkpoint_every")


def _check_int(name: str, v: Any, *, minimum: int, allow_none: bool = False) -> None:
    if v is None and allow_none:
        return
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        extra = " or None" if allow_none else ""
        raise ValueError(f"TrainConfig.{name} must be an int >= {minimum}{extra}, got {v!r}")


def _check_num(
    name: str, v: Any, *, lo: float, lo_open: bool = False, hi: float | None = None, allow_none: bool = False
):
    if v is None and allow_none:
        return
    ok = not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)
    ok = ok and (v > lo if lo_open else v >= lo) and (hi is None or v <= hi)
    if not ok:
        rng = f"{'>' if lo_open else '>='} {lo}" + (f" and <= {hi}" if hi is not None else "")
        raise ValueError(
            f"TrainConfig.{name} must be a finite number {rng}{' or None' if allow_none else ''}, got {v!r}"
        )


# Fields added after runs were first keyed, left out of TrainConfig.to_dict at these defaults so that the
# keys of runs made before them do not change.
_KEYLESS_DEFAULTS: dict[str, Any] = {"select": "last", "decay_steps": None, "label_smoothing": 0.0}


@dataclass
class TrainConfig(ConfigMixin):
    """How to train. ``eval_every=0`` evaluates only at the end; ``checkpoint_every=None`` checkpoints
    at every evaluation (every ``steps // 10`` if ``eval_every=0``) and always at the end;
    ``grad_clip=0`` disables clipping (None is accepted for both and stored as 0);
    ``eval_max_batches=None`` evaluates every batch of a split; ``early_stop`` is a target for the
    headline score (reached means >= for accuracy, <= for bpc); ``threads=None`` leaves torch's
    thread count alone. ``decay_steps``: the cosine reaches ``min_lr_ratio * lr`` there and holds it
    to the end (default: at the last step). ``label_smoothing``: of the training loss only.
    ``select``: which evaluation the run reports - "last" (the final one) or "best_val" (the one with
    the best mean over ``task.val_splits``, earliest on ties; the task must have validation splits,
    e.g. ``val_examples > 0`` for the length-generalisation tasks)."""

    steps: int = 1000
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1
    decay_steps: int | None = None
    label_smoothing: float = 0.0
    grad_clip: float = 1.0
    eval_every: int = 200
    eval_batch_size: int = 64
    eval_max_batches: int | None = None
    early_stop: float | None = None
    bf16: bool = False
    seed: int = 0
    checkpoint_every: int | None = None
    log_every: int = 50
    threads: int | None = None
    select: str = "last"

    def __post_init__(self) -> None:
        if self.grad_clip is None:
            self.grad_clip = 0.0
        if self.eval_every is None:
            self.eval_every = 0
        _check_int("steps", self.steps, minimum=1)
        _check_int("batch_size", self.batch_size, minimum=1)
        _check_num("lr", self.lr, lo=0, lo_open=True)
        _check_num("weight_decay", self.weight_decay, lo=0)
        _check_int("warmup_steps", self.warmup_steps, minimum=0)
        _check_num("min_lr_ratio", self.min_lr_ratio, lo=0, hi=1)
        _check_int("decay_steps", self.decay_steps, minimum=1, allow_none=True)
        if self.decay_steps is not None and self.decay_steps > self.steps:
            raise ValueError(
                f"TrainConfig.decay_steps must be at most steps ({self.steps}), got {self.decay_steps} "
                f"(leave it unset to decay over all steps)"
            )
        _check_num("grad_clip", self.grad_clip, lo=0)
        _check_num("label_smoothing", self.label_smoothing, lo=0, hi=1)
        _check_int("eval_every", self.eval_every, minimum=0)
        _check_int("eval_batch_size", self.eval_batch_size, minimum=1)
        _check_int("eval_max_batches", self.eval_max_batches, minimum=1, allow_none=True)
        _check_num("early_stop", self.early_stop, lo=-math.inf, allow_none=True)
        if not isinstance(self.bf16, bool):
            raise ValueError(f"TrainConfig.bf16 must be a bool, got {self.bf16!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"TrainConfig.seed must be an int, got {self.seed!r}")
        _check_int("checkpoint_every", self.checkpoint_every, minimum=1, allow_none=True)
        _check_int("log_every", self.log_every, minimum=1)
        _check_int("threads", self.threads, minimum=1, allow_none=True)
        if self.select not in SELECT_MODES:
            raise ValueError(f"TrainConfig.select must be one of {SELECT_MODES}, got {self.select!r}")
        self.lr = float(self.lr)
        self.weight_decay = float(self.weight_decay)
        self.min_lr_ratio = float(self.min_lr_ratio)
        self.grad_clip = float(self.grad_clip)
        self.label_smoothing = float(self.label_smoothing)
        if self.early_stop is not None:
            self.early_stop = float(self.early_stop)

    def to_dict(self) -> dict[str, Any]:
        """The fields as a dict; ``select`` only when not "last", ``decay_steps`` only when set and
        ``label_smoothing`` only when not 0, so runs keyed before they existed keep their keys (stores
        and checkpoints made earlier are found and resumed)."""
        d = super().to_dict()
        for name, default in _KEYLESS_DEFAULTS.items():
            if name in d and d[name] == default:
                del d[name]
        return d


SELECT_MODES = ("last", "best_val")


@dataclass
class TrainResult:
    """What a training run produced. ``history`` entries: {"step", "loss", "lr"} every ``log_every``
    steps, plus {"eval": {split: value}, "score"} at evaluations (``step`` = optimizer steps done).
    ``final``/``score`` are the reported evaluation: the last one, or with ``select="best_val"`` the
    one at ``selected_step`` (best validation mean ``selected_val``)."""

    final: dict[str, float]
    score: float
    history: list[dict[str, Any]] = field(default_factory=list)
    n_params: int = 0
    steps_done: int = 0
    seconds: float = 0.0
    stopped_early: bool = False
    metric: str = "accuracy"
    higher_is_better: bool = True
    selected_step: int | None = None
    selected_val: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainResult:
        return cls(**d)


# -- pieces ------------------------------------------------------------------------------------
def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate for (0-based) ``step``: linear warmup, then cosine down to ``min_lr_ratio * lr``
    at ``decay_steps`` (default: ``steps``), held there after."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    total = cfg.steps if cfg.decay_steps is None else cfg.decay_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps))
    r = cfg.min_lr_ratio
    return cfg.lr * (r + (1 - r) * 0.5 * (1 + math.cos(math.pi * progress)))


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only: none on norms, biases, embeddings (or other 1-D params)."""
    no_decay: set[int] = set()
    for m in model.modules():
        if isinstance(m, nn.Embedding):
            no_decay.update(id(p) for p in m.parameters(recurse=False))
    decay, other = [], []
    for p in model.parameters():
        if not p.requires_grad:
            continue
        (decay if p.dim() >= 2 and id(p) not in no_decay else other).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": other, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.98), eps=1e-8)


def sequence_loss(
    logits: Tensor, targets: Tensor, *, head: str, label_smoothing: float = 0.0
) -> tuple[Tensor, Tensor]:
    """(sum of cross-entropy over non-ignored targets, their count) for any head's logits; with
    ``label_smoothing`` = eps the target is (1 - eps) on the label plus eps spread evenly over the
    classes (torch's definition). Training only: evaluation always scores plain cross-entropy."""
    if head == "classify":
        if logits.dim() != 2 or targets.shape != logits.shape[:1]:
            raise ValueError(
                f"classify head: targets must be (B,) for logits {tuple(logits.shape)}, got {tuple(targets.shape)}"
            )
    elif targets.shape != logits.shape[:-1]:
        raise ValueError(
            f"{head} head: targets must be (B, T) = {tuple(logits.shape[:-1])}, got {tuple(targets.shape)}"
        )
    z = logits.reshape(-1, logits.shape[-1]).float()
    y = targets.reshape(-1)
    ce = F.cross_entropy(z, y, ignore_index=IGNORE_INDEX, reduction="sum", label_smoothing=label_smoothing)
    return ce, (y != IGNORE_INDEX).sum()


def _check_batch(batch: Batch, task: Task, head: str) -> None:
    if not isinstance(batch, Batch):
        raise TypeError(f"task {task.name!r} returned {type(batch).__name__}, expected a Batch")
    if batch.targets.dtype != torch.int64:
        raise TypeError(f"task {task.name!r}: targets must be int64, got {batch.targets.dtype}")


@torch.no_grad()
def evaluate(
    model: nn.Module,
    task: Task,
    *,
    batch_size: int = 64,
    max_batches: int | None = None,
    device: torch.device | str = "cpu",
    bf16: bool = False,
    ctx: DistContext | None = None,
) -> dict[str, float]:
    """{split: metric} on every evaluation split of ``task`` (at most ``max_batches`` batches each).

    Under DDP batch i is evaluated by rank i mod W and the sums are all-reduced, so every rank
    returns the same numbers.
    """
    ctx = ctx or DistContext()
    device = torch.device(device)
    metric = task.metric
    if metric not in METRICS:
        raise ValueError(f"task {task.name!r}: unknown metric {metric!r}; expected one of {METRICS}")
    was_training = model.training
    model.eval()
    head = model.config.head if isinstance(model, SequenceModel) else task.io.head
    out: dict[str, float] = {}
    try:
        for split in task.eval_splits():
            num = torch.zeros((), dtype=torch.float64)
            den = torch.zeros((), dtype=torch.float64)
            for i, batch in enumerate(task.eval_batches(split, batch_size)):
                if max_batches is not None and i >= max_batches:
                    break
                if i % ctx.world_size != ctx.rank:
                    continue
                batch = batch.to(device)
                with _autocast(device, bf16):
                    logits = model(batch.inputs, batch.mask)
                if metric == "accuracy":
                    if head == "classify":
                        pred, y = logits.argmax(-1), batch.targets
                    else:
                        pred, y = logits.argmax(-1).reshape(-1), batch.targets.reshape(-1)
                    valid = y != IGNORE_INDEX
                    num += ((pred == y) & valid).sum().double().cpu()
                    den += valid.sum().double().cpu()
                else:
                    ce, n = sequence_loss(logits, batch.targets, head=head)
                    num += ce.double().cpu()
                    den += n.double().cpu()
            if ctx.enabled:
                both = torch.stack([num, den]).to(device)
                all_reduce_sum(both, ctx)
                num, den = both[0].cpu(), both[1].cpu()
            if float(den) == 0:
                raise ValueError(f"task {task.name!r}: evaluation split {split!r} has no targets to score")
            value = float(num / den)
            out[split] = value if metric == "accuracy" else value / math.log(2)
    finally:
        model.train(was_training)
    return out


def _mean_over(results: dict[str, float], splits: list[str], kind: str, task: Task) -> float:
    missing = [s for s in splits if s not in results] if splits else ["(none)"]
    if missing:
        raise KeyError(
            f"task {task.name!r}: {kind} splits {missing} were not evaluated (eval splits: {list(results)})"
        )
    return float(sum(results[s] for s in splits) / len(splits))


def headline_score(results: dict[str, float], task: Task) -> float:
    """Mean of the metric over ``task.score_splits`` (a run's headline score)."""
    return _mean_over(results, list(task.score_splits), "score", task)


def validation_score(results: dict[str, float], task: Task) -> float:
    """Mean of the metric over ``task.val_splits`` (what ``select="best_val"`` ranks evaluations by)."""
    return _mean_over(results, list(task.val_splits), "validation", task)


def _reached(score: float, target: float | None, higher_is_better: bool) -> bool:
    if target is None or math.isnan(score):
        return False
    return score >= target if higher_is_better else score <= target


def _autocast(device: torch.device, enabled: bool):
    if not enabled:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def _pick_device(device: str | torch.device | None, ctx_local_rank: int) -> torch.device:
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(
            f"train: device {device!r} is not a torch device (e.g. 'cpu', 'cuda:0'): {e}"
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"train: device {str(device)!r} requested, but CUDA is not available on this machine"
        )
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", ctx_local_rank % max(1, torch.cuda.device_count()))
    return device


def _task_identity(task: Task) -> tuple[str, dict[str, Any]]:
    try:
        cfg = task.config()
    except NotImplementedError:
        cfg = {}
    try:
        cfg = json.loads(json.dumps(cfg, sort_keys=True))
    except (TypeError, ValueError) as e:
        raise TypeError(f"task {task.name!r}: config() must be JSON-serialisable: {e}") from e
    return (task.name or type(task).__name__), cfg


# -- the loop ----------------------------------------------------------------------------------
def train(
    model_config: ModelConfig | dict[str, Any],
    task: Task,
    train_config: TrainConfig | dict[str, Any],
    *,
    run_dir: str | Path | None = None,
    store: Any = None,
    run_key: str | None = None,
    progress: bool = True,
    device: str | torch.device | None = None,
) -> TrainResult:
    """Train a :class:`SequenceModel` on ``task``; resume from ``run_dir``'s checkpoint if it has one.

    With ``store`` (a :class:`~recurrences.train.RunStore`) the run is recorded under ``run_key``
    (computed from the configs when None): pending -> running -> finished/failed, with its metrics.
    Under ``torchrun`` (WORLD_SIZE > 1) the model is wrapped in DDP and each rank takes its slice of
    every global batch; only rank 0 writes checkpoints, the store and the progress bar.
    ``device``: None = CUDA if available, else CPU.
    """
    if isinstance(model_config, dict):
        model_config = ModelConfig.from_dict(model_config)
    if isinstance(train_config, dict):
        train_config = TrainConfig.from_dict(train_config)
    if not isinstance(model_config, ModelConfig):
        raise TypeError(f"train: model_config must be a ModelConfig, got {type(model_config).__name__}")
    if not isinstance(train_config, TrainConfig):
        raise TypeError(f"train: train_config must be a TrainConfig, got {type(train_config).__name__}")
    if not isinstance(task, Task):
        raise TypeError(
            f"train: task must be a Task (see recurrences.tasks.create_task), got {type(task).__name__}"
        )
    _check_compatible(model_config, task)
    if train_config.select == "best_val" and not list(task.val_splits):
        raise ValueError(
            f"TrainConfig.select='best_val' needs validation splits, but task {task.name!r} has none "
            "(for the length-generalisation tasks set the task option val_examples > 0)"
        )
    cfg = train_config
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)

    world_env = int(os.environ.get("WORLD_SIZE", "1") or 1)
    device = _pick_device(device, int(os.environ.get("LOCAL_RANK", "0") or 0) if world_env > 1 else 0)
    ctx = dist_context(device)
    if ctx.enabled and cfg.batch_size % ctx.world_size:
        raise ValueError(
            f"TrainConfig.batch_size={cfg.batch_size} must be divisible by the world size {ctx.world_size}"
        )
    if ctx.enabled and device.type == "cuda":
        torch.cuda.set_device(device)

    task_name, task_cfg = _task_identity(task)
    key = run_key
    if store is not None and key is None:
        from .store import run_key as _run_key

        key = _run_key(model_config.to_dict(), task_name, task_cfg, cfg.to_dict(), cfg.seed)
    writer = ctx.is_main
    if store is not None and writer:
        store.upsert_pending(
            key, model_config.to_dict(), task_name, task_cfg, cfg.to_dict(), cfg.seed, run_dir
        )
        store.mark_running(key)
    try:
        result = _train_loop(
            model_config, task, cfg, run_dir, store if writer else None, key, progress and writer, device, ctx
        )
    except BaseException as e:
        if store is not None and writer:
            store.fail(key, e if not isinstance(e, KeyboardInterrupt) else f"interrupted: {e}")
        raise
    if store is not None and writer:
        store.finish(key, result)
    return result


def _check_compatible(mc: ModelConfig, task: Task) -> None:
    io = task.io
    for f in ("input_kind", "head", "n_outputs"):
        if getattr(mc, f) != getattr(io, f):
            raise ValueError(
                f"train: ModelConfig.{f}={getattr(mc, f)!r} does not fit task {task.name!r} ({f}={getattr(io, f)!r})"
            )
    if io.input_kind == "tokens" and (io.vocab_size or 0) > (mc.vocab_size or 0):
        raise ValueError(
            f"train: ModelConfig.vocab_size={mc.vocab_size} is smaller than the task's {io.vocab_size}"
        )
    if io.input_kind == "features" and mc.n_features != io.n_features:
        raise ValueError(
            f"train: ModelConfig.n_features={mc.n_features} does not fit the task's {io.n_features}"
        )


def _model_tensors(model: nn.Module) -> dict[str, Tensor]:
    return {f"model.{k}": v for k, v in model.state_dict().items()}


def _train_loop(
    mc: ModelConfig,
    task: Task,
    cfg: TrainConfig,
    run_dir: str | Path | None,
    store: Any,
    key: str | None,
    progress: bool,
    device: torch.device,
    ctx: DistContext,
) -> TrainResult:
    t0 = time.perf_counter()
    task_name, task_cfg = _task_identity(task)
    metric = task.metric
    if metric not in METRICS:
        raise ValueError(f"task {task_name!r}: unknown metric {metric!r}; expected one of {METRICS}")
    hib = bool(task.higher_is_better)

    torch.manual_seed(cfg.seed)
    model = SequenceModel(mc).to(device)
    n_params = model.n_params()
    opt = make_optimizer(model, cfg)

    # -- resume ---------------------------------------------------------------------------------
    start, history, seconds_before = 0, [], 0.0
    loss_sum, loss_count = 0.0, 0
    best: dict[str, Any] | None = None  # select="best_val": {"step", "val", "eval", "score"}
    ckpt = load_checkpoint(run_dir) if run_dir is not None else None
    if ckpt is not None:
        tensors, meta = ckpt
        _check_same_run(meta, mc, cfg, task_name, task_cfg, run_dir)
        if meta.get("finished"):
            r = TrainResult.from_dict(meta["result"])
            return r
        model_sd = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
        try:
            model.load_state_dict(model_sd, strict=True)
            opt.load_state_dict(unflatten_optimizer_state(tensors, meta["optimizer"]))
        except (RuntimeError, KeyError, ValueError) as e:
            raise CheckpointError(f"checkpoint in {run_dir} does not fit this model/optimizer: {e}") from e
        for st in opt.state.values():
            for k, v in st.items():
                if isinstance(v, Tensor) and k != "step":
                    st[k] = v.to(device)
        start = int(meta["step"])
        history = list(meta.get("history", []))
        seconds_before = float(meta.get("seconds", 0.0))
        loss_sum, loss_count = float(meta.get("loss_sum", 0.0)), int(meta.get("loss_count", 0))
        best = meta.get("best")
        restore_rng_state(meta["rng"])

    net: nn.Module = model
    if ctx.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP

        net = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)

    ckpt_every = cfg.checkpoint_every or cfg.eval_every or max(1, cfg.steps // 10)
    last_eval: dict[str, float] | None = None
    last_score = math.nan
    last_eval_step = -1
    stopped = False

    def save(step_done: int, finished: bool, result: TrainResult | None = None) -> None:
        if run_dir is None or not ctx.is_main:
            return
        otensors, ometa = flatten_optimizer_state(opt.state_dict())
        meta = {
            "step": step_done,
            "finished": finished,
            "model_config": mc.to_dict(),
            "train_config": cfg.to_dict(),
            "task_name": task_name,
            "task_config": task_cfg,
            "history": history,
            "seconds": seconds_before + time.perf_counter() - t0,
            "loss_sum": loss_sum,
            "loss_count": loss_count,
            "rng": encode_rng_state(),
            "optimizer": ometa,
            "n_params": n_params,
            "best": best,
        }
        if result is not None:
            meta["result"] = result.to_dict()
        save_checkpoint(run_dir, {**_model_tensors(model), **otensors}, meta)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(
            total=cfg.steps, initial=start, desc=f"{task_name} {mc.mixer}", leave=False, dynamic_ncols=True
        )

    def run_eval(step_done: int) -> None:
        nonlocal last_eval, last_score, last_eval_step, best
        last_eval = evaluate(
            model,
            task,
            batch_size=cfg.eval_batch_size,
            max_batches=cfg.eval_max_batches,
            device=device,
            bf16=cfg.bf16,
            ctx=ctx,
        )
        last_score = headline_score(last_eval, task)
        last_eval_step = step_done
        if cfg.select == "best_val":
            val = validation_score(last_eval, task)
            if best is None or (val > best["val"] if hib else val < best["val"]):
                best = {"step": step_done, "val": val, "eval": dict(last_eval), "score": last_score}

    try:
        model.train()
        step = start
        while step < cfg.steps:
            lr = lr_at(step, cfg)
            for g in opt.param_groups:
                g["lr"] = lr
            batch = task.train_batch(step, cfg.batch_size, cfg.seed)
            if step == start:
                _check_batch(batch, task, mc.head)
            if len(batch) != cfg.batch_size:
                raise ValueError(
                    f"task {task_name!r} returned {len(batch)} rows for batch_size={cfg.batch_size}"
                )
            n_global = (batch.targets != IGNORE_INDEX).sum()
            local = shard_batch(batch, ctx).to(device)
            try:
                with _autocast(device, cfg.bf16):
                    logits = net(local.inputs, local.mask)
            except ValueError as e:
                if "NaN" in str(e) and step > 0:  # a mixer's input check tripped on blown-up activations
                    raise FloatingPointError(
                        f"activations became NaN/inf at step {step} (diverged); try a lower lr: {e}"
                    ) from e
                raise
            ce, _ = sequence_loss(logits, local.targets, head=mc.head, label_smoothing=cfg.label_smoothing)
            denom = max(1, int(n_global))
            loss = ce * (ctx.world_size / denom)
            if not bool(torch.isfinite(loss.detach())):
                raise FloatingPointError(
                    f"training loss is {float(loss)} at step {step} (diverged); try a lower lr"
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip or math.inf)
            if not bool(torch.isfinite(gnorm)):
                raise FloatingPointError(
                    f"gradient norm is {float(gnorm)} at step {step} (diverged); try a lower lr"
                )
            opt.step()
            step += 1

            step_loss = all_reduce_sum(ce.detach().double().reshape(1), ctx).item() / denom
            if not math.isfinite(step_loss):
                raise FloatingPointError(
                    f"training loss is {step_loss} at step {step} (diverged); try a lower lr"
                )
            loss_sum += step_loss
            loss_count += 1
            entry: dict[str, Any] = {}
            if step % cfg.log_every == 0 or step == cfg.steps:
                entry = {"step": step, "loss": loss_sum / max(1, loss_count), "lr": lr}
                loss_sum, loss_count = 0.0, 0
            if (cfg.eval_every and step % cfg.eval_every == 0) or step == cfg.steps:
                run_eval(step)
                if not entry:
                    entry = {"step": step, "loss": step_loss, "lr": lr}
                entry["eval"] = dict(last_eval)
                entry["score"] = last_score
                if _reached(last_score, cfg.early_stop, hib):
                    stopped = True
            if entry:
                history.append(entry)
                if store is not None:
                    store.log_metrics(
                        key,
                        step,
                        entry.get("eval"),
                        loss=entry["loss"],
                        lr=lr,
                        score=entry.get("score"),
                        metric=metric,
                    )
                if bar is not None:
                    post = {"loss": f"{entry['loss']:.4f}"}
                    if last_eval is not None:
                        post[metric] = f"{last_score:.4f}"
                    bar.set_postfix(post, refresh=False)
            if bar is not None:
                bar.update(1)
            if stopped:
                break
            if step % ckpt_every == 0 and step < cfg.steps:
                save(step, False)
    finally:
        if bar is not None:
            bar.refresh()  # show the last loss/metric even when the run finished within one refresh interval
            bar.close()

    if last_eval is None or last_eval_step != step:
        run_eval(step)
    assert last_eval is not None
    chosen = best if (cfg.select == "best_val" and best is not None) else None
    result = TrainResult(
        final=dict(chosen["eval"] if chosen else last_eval),
        score=chosen["score"] if chosen else last_score,
        history=history,
        n_params=n_params,
        steps_done=step,
        seconds=seconds_before + time.perf_counter() - t0,
        stopped_early=stopped,
        metric=metric,
        higher_is_better=hib,
        selected_step=chosen["step"] if chosen else None,
        selected_val=chosen["val"] if chosen else None,
    )
    save(step, True, result)
    return result


def _check_same_run(
    meta: dict[str, Any], mc: ModelConfig, cfg: TrainConfig, task_name: str, task_cfg: dict, run_dir
) -> None:
    diffs = []
    if meta.get("model_config") != mc.to_dict():
        diffs.append("model_config")
    saved_train = {
        k: v for k, v in (meta.get("train_config") or {}).items() if k not in RESUME_IGNORED_FIELDS
    }
    now_train = {k: v for k, v in cfg.to_dict().items() if k not in RESUME_IGNORED_FIELDS}
    if saved_train != now_train:
        fields = sorted(
            k for k in set(saved_train) | set(now_train) if saved_train.get(k) != now_train.get(k)
        )
        diffs.append(f"train_config ({', '.join(fields)})")
    if meta.get("task_name") != task_name or meta.get("task_config") != task_cfg:
        diffs.append("task")
    if diffs:
        raise CheckpointError(
            f"the checkpoint in {run_dir} belongs to a different run (differs in {'; '.join(diffs)}); "
            "use another run_dir or delete it"
        )


def load_trained_model(run_dir: str | Path, *, device: str | torch.device = "cpu") -> SequenceModel:
    """The model saved in ``run_dir``'s checkpoint (its config and weights), in eval mode."""
    ckpt = load_checkpoint(run_dir)
    if ckpt is None:
        raise FileNotFoundError(f"no checkpoint in {run_dir}")
    tensors, meta = ckpt
    try:
        model = SequenceModel(ModelConfig.from_dict(meta["model_config"]))
        model.load_state_dict({k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")})
    except (KeyError, RuntimeError, ValueError, TypeError) as e:
        raise CheckpointError(f"checkpoint in {run_dir} does not hold a loadable model: {e}") from e
    return model.to(device).eval()
