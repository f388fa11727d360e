"""Trainer: config, schedule, optimizer groups, metrics, learning, determinism and bitwise resume."""

from __future__ import annotations

import math

import pytest
import torch

import recurrences.train.testing  # noqa: F401  (registers the toy mixers and task)
from recurrences.models import ModelConfig, SequenceModel
from recurrences.tasks import IGNORE_INDEX, create_task
from recurrences.train import (
    CheckpointError,
    RunStore,
    TrainConfig,
    evaluate,
    load_checkpoint,
    load_trained_model,
    lr_at,
    train,
)
from recurrences.train.trainer import make_optimizer, sequence_loss


def _setup(head="tagging", kind="tokens", mixer="_toy-ema", dropout=0.0, **task_kw):
    task = create_task("_toy", head=head, input_kind=kind, **task_kw)
    mc = ModelConfig.for_task(
        task.io, mixer=mixer, d_model=16, n_layers=1, n_heads=2, mlp_ratio=1.0, dropout=dropout
    )
    return task, mc


def _tc(**kw) -> TrainConfig:
    base = {
        "steps": 12,
        "batch_size": 8,
        "lr": 1e-2,
        "warmup_steps": 3,
        "eval_every": 4,
        "log_every": 2,
        "eval_batch_size": 16,
        "threads": None,
    }
    base.update(kw)
    return TrainConfig(**base)


def _weights(run_dir) -> dict[str, torch.Tensor]:
    tensors, _ = load_checkpoint(run_dir)
    return {k: v for k, v in tensors.items() if k.startswith("model.")}


# -- config --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "field, value",
    [("steps", -1), ("batch_size", 0), ("lr", 0.0), ("weight_decay", -1.0), ("warmup_steps", -2), ("min_lr_ratio", 1.5),
     ("grad_clip", -1.0), ("eval_every", -1), ("eval_batch_size", 0), ("eval_max_batches", 0), ("bf16", 1),
     ("seed", 1.5), ("checkpoint_every", 0), ("log_every", 0), ("threads", 0), ("early_stop", float("nan")),
     ("decay_steps", 0), ("label_smoothing", -0.1), ("label_smoothing", 1.5)],
)  # fmt: skip
def test_train_config_validation_names_the_field(field, value):
    with pytest.raises(ValueError, match=rf"TrainConfig\.{field}"):
        TrainConfig(**{field: value})


def test_train_config_round_trips(tmp_path):
    c = TrainConfig(
        steps=7, lr=3e-4, early_stop=0.9, eval_max_batches=2, bf16=True, grad_clip=None, threads=2
    )
    assert c.grad_clip == 0.0
    assert TrainConfig.from_json(c.to_json()) == c
    assert TrainConfig.from_toml(c.to_toml()) == c
    d = TrainConfig()
    assert TrainConfig.from_toml(d.to_toml()) == d
    with pytest.raises(ValueError, match="unknown field"):
        TrainConfig.from_dict({"stepz": 3})


def test_lr_schedule():
    c = TrainConfig(steps=110, lr=2.0, warmup_steps=10, min_lr_ratio=0.1)
    assert [lr_at(s, c) for s in range(3)] == pytest.approx([0.2, 0.4, 0.6])
    assert lr_at(9, c) == pytest.approx(2.0)
    assert lr_at(10, c) == pytest.approx(2.0)
    mid = 10 + 50
    assert lr_at(mid, c) == pytest.approx(2.0 * (0.1 + 0.9 * 0.5))
    assert lr_at(110, c) == pytest.approx(0.2)
    lrs = [lr_at(s, c) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))
    assert lr_at(0, TrainConfig(steps=5, lr=1.0, warmup_steps=0)) == pytest.approx(1.0)


def test_lr_schedule_decay_steps_holds_the_floor():
    c = TrainConfig(steps=210, lr=2.0, warmup_steps=10, min_lr_ratio=0.1, decay_steps=110)
    full = TrainConfig(steps=110, lr=2.0, warmup_steps=10, min_lr_ratio=0.1)
    assert [lr_at(s, c) for s in range(111)] == pytest.approx([lr_at(s, full) for s in range(111)])
    assert lr_at(60, c) == pytest.approx(2.0 * (0.1 + 0.9 * 0.5))
    assert [lr_at(s, c) for s in range(110, 210)] == pytest.approx([0.2] * 100)
    assert "decay_steps" not in TrainConfig().to_dict()  # unset: earlier run keys unchanged
    assert TrainConfig.from_dict(c.to_dict()) == c
    with pytest.raises(ValueError, match="decay_steps must be at most steps"):
        TrainConfig(steps=100, decay_steps=101)
    with pytest.raises(ValueError, match="decay_steps"):
        TrainConfig(steps=100, decay_steps=0)


def test_label_smoothing_trains_on_smoothed_targets_and_evaluates_plain(tmp_path):
    z = torch.tensor([[2.0, -1.0, 0.5], [0.0, 3.0, -2.0]])
    y = torch.tensor([0, 2])
    ce, n = sequence_loss(z, y, head="classify", label_smoothing=0.3)
    logp = torch.log_softmax(z, -1)
    want = -(0.7 * logp[torch.arange(2), y] + 0.3 * logp.mean(-1)).sum()
    assert int(n) == 2 and float(ce) == pytest.approx(float(want), rel=1e-6)
    assert "label_smoothing" not in TrainConfig().to_dict()
    # the smoothed loss trains (another trajectory), evaluation reports plain accuracy either way
    task, mc = _setup("classify")
    plain = train(mc, task, _tc(steps=6, eval_every=0), progress=False)
    smooth = train(mc, task, _tc(steps=6, eval_every=0, label_smoothing=0.2), progress=False)
    assert plain.history[-1]["loss"] != smooth.history[-1]["loss"]
    assert set(plain.final) == set(smooth.final)


def test_no_weight_decay_on_norms_biases_embeddings():
    task, mc = _setup("classify")
    m = SequenceModel(mc)
    opt = make_optimizer(m, _tc(weight_decay=0.3))
    decayed = {id(p) for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    names = {n for n, p in m.named_parameters() if id(p) in decayed}
    assert "embed.weight" not in names and "head.bias" not in names
    assert not any("norm" in n for n in names)
    assert "head.weight" in names and "blocks.0.mlp.gate.weight" in names
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(m.parameters()))


# -- metrics -------------------------------------------------------------------------------------
def test_evaluate_accuracy_and_bpc_match_manual():
    for head, metric in [("tagging", "accuracy"), ("classify", "accuracy"), ("lm", "bpc")]:
        task, mc = _setup(head, metric=metric, n_eval=20)
        torch.manual_seed(0)
        m = SequenceModel(mc)
        got = evaluate(m, task, batch_size=8)
        assert set(got) == {"short", "long"}
        for split in ("short", "long"):
            num = den = 0.0
            for b in task.eval_batches(split, 8):
                z = m(b.inputs, b.mask)
                y = b.targets
                if head != "classify":
                    z, y = z.reshape(-1, z.shape[-1]), y.reshape(-1)
                keep = y != IGNORE_INDEX
                if metric == "accuracy":
                    num += float((z.argmax(-1)[keep] == y[keep]).sum())
                else:
                    num += float(
                        torch.nn.functional.cross_entropy(z[keep], y[keep], reduction="sum").detach()
                    )
                den += float(keep.sum())
            want = num / den if metric == "accuracy" else num / den / math.log(2)
            assert got[split] == pytest.approx(want, rel=1e-6)
        # capped evaluation only sees the first batch
        capped = evaluate(m, task, batch_size=8, max_batches=1)
        first = next(iter(task.eval_batches("short", 8)))
        if metric == "accuracy" and head == "classify":
            z = m(first.inputs, first.mask)
            assert capped["short"] == pytest.approx(float((z.argmax(-1) == first.targets).float().mean()))


# -- training ------------------------------------------------------------------------------------
def test_learns_and_stops_early_on_target():
    task, mc = _setup("tagging")
    r = train(mc, task, _tc(steps=200, eval_every=5, early_stop=0.99), progress=False)
    assert r.stopped_early and r.score >= 0.99 and r.steps_done < 200
    assert r.final["long"] >= 0.99
    evals = [h for h in r.history if "eval" in h]
    assert evals[-1]["step"] == r.steps_done and evals[-1]["score"] == r.score
    assert r.history[0]["loss"] > r.history[-1]["loss"]


def test_bpc_task_lower_is_better_and_history():
    task, mc = _setup("lm", metric="bpc")
    r = train(mc, task, _tc(steps=10, eval_every=5, early_stop=0.0), progress=False)
    assert r.metric == "bpc" and not r.higher_is_better and not r.stopped_early
    assert r.steps_done == 10 and all(v > 0 for v in r.final.values())
    assert [h["step"] for h in r.history] == [2, 4, 5, 6, 8, 10]
    assert "eval" in r.history[2] and "eval" not in r.history[1]


def test_deterministic_and_seed_dependent(tmp_path):
    task, mc = _setup("classify", dropout=0.1)
    r1 = train(mc, task, _tc(steps=5), run_dir=tmp_path / "a", progress=False)
    r2 = train(mc, task, _tc(steps=5), run_dir=tmp_path / "b", progress=False)
    w1, w2 = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert all(torch.equal(w1[k], w2[k]) for k in w1)
    assert r1.history == r2.history
    train(mc, task, _tc(steps=5, seed=1), run_dir=tmp_path / "c", progress=False)
    w3 = _weights(tmp_path / "c")
    assert not all(torch.equal(w1[k], w3[k]) for k in w1)


def test_resume_after_crash_gives_bitwise_the_same_weights(tmp_path):
    task, mc = _setup("tagging", dropout=0.2)
    tc = _tc(steps=9, checkpoint_every=3, eval_every=4)
    full = train(mc, task, tc, run_dir=tmp_path / "full", progress=False)

    store = RunStore(tmp_path / "runs.db")
    crashing = create_task("_toy", head="tagging", fail_at_step=7)
    with pytest.raises(KeyboardInterrupt):
        train(mc, crashing, tc, run_dir=tmp_path / "crash", store=store, run_key="k", progress=False)
    assert load_checkpoint(tmp_path / "crash")[1]["step"] == 6
    assert store.get("k").status == "failed" and "interrupted" in store.get("k").error
    resumed = train(mc, crashing, tc, run_dir=tmp_path / "crash", store=store, run_key="k", progress=False)
    a, b = _weights(tmp_path / "full"), _weights(tmp_path / "crash")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ta, tb = load_checkpoint(tmp_path / "full")[0], load_checkpoint(tmp_path / "crash")[0]
    assert all(torch.equal(ta[k], tb[k]) for k in ta)  # optimizer state too
    assert resumed.history == full.history and resumed.final == full.final
    rec = store.get("k")
    assert rec.status == "finished" and rec.score == pytest.approx(full.score)
    # metrics re-logged after the resume replaced the ones from before the crash (no duplicates)
    rows = store.metrics("k")
    assert len(rows) == len({(r["step"], r["split"], r["name"]) for r in rows})


def test_finished_run_dir_returns_without_training(tmp_path):
    task, mc = _setup("classify")
    tc = _tc(steps=4)
    first = train(mc, task, tc, run_dir=tmp_path, progress=False)
    never = create_task("_toy", head="classify", fail_at_step=0)  # would raise if it trained
    again = train(mc, never, tc, run_dir=tmp_path, progress=False)
    assert again == first
    model = load_trained_model(tmp_path)
    assert isinstance(model, SequenceModel) and model.config == mc
    # a checkpoint of a different run is refused, naming what differs
    with pytest.raises(CheckpointError, match=r"train_config \(lr\)"):
        train(mc, task, _tc(steps=4, lr=0.5), run_dir=tmp_path, progress=False)


def test_store_records_metrics(tmp_path):
    task, mc = _setup("classify")
    store = RunStore(tmp_path / "s.db")
    r = train(mc, task, _tc(steps=8), store=store, progress=False)
    [rec] = store.runs()
    assert rec.status == "finished" and rec.n_params == r.n_params and rec.final == r.final
    assert rec.steps_done == 8 and rec.task_name == "_toy" and rec.mixer == "_toy-ema"
    rows = store.metrics(rec.key)
    assert {(x["split"], x["name"]) for x in rows} >= {
        ("train", "loss"),
        ("short", "accuracy"),
        ("score", "accuracy"),
    }
    assert [x["step"] for x in rows if x["split"] == "short"] == [4, 8]


def test_bf16_and_features_smoke():
    task, mc = _setup("classify", kind="features")
    r = train(mc, task, _tc(steps=3, bf16=True, grad_clip=0.5), progress=False)
    assert all(math.isfinite(v) for v in r.final.values())


def test_bad_inputs():
    task, mc = _setup("classify")
    other, _ = _setup("tagging")
    with pytest.raises(ValueError, match="head"):
        train(mc, other, _tc(), progress=False)
    with pytest.raises(TypeError, match="Task"):
        train(mc, "_toy", _tc(), progress=False)
    with pytest.raises(FloatingPointError, match="diverged"):
        train(mc, task, _tc(lr=1e30, grad_clip=0.0, warmup_steps=0, steps=50), progress=False)


def test_progress_bar_shows_loss_and_metric(capsys):
    task, mc = _setup("classify")
    train(mc, task, _tc(steps=4, eval_every=2), progress=True)
    err = capsys.readouterr().err
    assert "loss=" in err and "accuracy=" in err


def _real(names, pool):
    try:  # other workers' modules failing to import must not break collection here
        return [n for n in names if n in pool()]
    except Exception:
        return []


@pytest.mark.parametrize(
    "mixer", _real(("attention", "mamba"), lambda: __import__("recurrences.layers").layers.available_mixers())
)
@pytest.mark.parametrize(
    "task_name", _real(("parity",), lambda: __import__("recurrences.tasks").tasks.available_tasks())
)
def test_real_mixers_on_a_real_task(mixer, task_name):
    task = create_task(task_name)
    mc = ModelConfig.for_task(task.io, mixer=mixer, d_model=16, n_layers=1, n_heads=2)
    tc = TrainConfig(steps=2, batch_size=4, warmup_steps=1, eval_batch_size=4, eval_max_batches=1)
    r = train(mc, task, tc, progress=False)
    assert set(r.final) == set(task.eval_splits()) and 0 <= r.score <= 1 and r.steps_done == 2


# -- model selection on validation splits -----------------------------------------------------------
def _parity_setup(**task_kw):
    task = create_task(
        "parity", train_lengths=(1, 6), test_lengths=(7, 14), bucket_width=4, eval_examples=16, **task_kw
    )
    mc = ModelConfig.for_task(task.io, mixer="_toy-ema", d_model=8, n_layers=1, n_heads=1, mlp_ratio=1.0)
    return task, mc


def test_select_best_val_reports_the_evaluation_best_on_validation(tmp_path):
    task, mc = _parity_setup(val_examples=16)
    assert task.val_splits == ["val_007_008", "val_009_012", "val_013_014"]
    assert task.score_splits == ["len_007_008", "len_009_012", "len_013_014"]
    assert set(task.val_splits) <= set(task.eval_splits())
    assert not set(task.val_splits) & set(task.score_splits)
    r = train(mc, task, _tc(steps=24, eval_every=3, lr=3e-2, select="best_val"), progress=False)
    evals = [h for h in r.history if "eval" in h]
    vals = [sum(h["eval"][s] for s in task.val_splits) / 3 for h in evals]
    i = max(range(len(vals)), key=lambda j: (vals[j], -j))  # best, earliest on ties
    assert r.selected_step == evals[i]["step"] and r.selected_val == pytest.approx(vals[i])
    assert r.final == evals[i]["eval"] and r.score == pytest.approx(evals[i]["score"])
    last = train(mc, task, _tc(steps=24, eval_every=3, lr=3e-2), progress=False)
    assert last.selected_step is None and last.final == evals[-1]["eval"]  # same run, last evaluation
    assert "select" not in _tc().to_dict() and _tc(select="best_val").to_dict()["select"] == "best_val"


def test_select_best_val_survives_resume(tmp_path, monkeypatch):
    task, mc = _parity_setup(val_examples=8)
    tc = _tc(steps=15, eval_every=3, checkpoint_every=3, lr=3e-2, select="best_val")
    full = train(mc, task, tc, run_dir=tmp_path / "full", progress=False)
    crashing, _ = _parity_setup(val_examples=8)
    real = crashing.train_batch

    def boom(step, batch_size, seed):
        if step == 10:
            raise KeyboardInterrupt
        return real(step, batch_size, seed)

    monkeypatch.setattr(crashing, "train_batch", boom)
    with pytest.raises(KeyboardInterrupt):
        train(mc, crashing, tc, run_dir=tmp_path / "crash", progress=False)
    monkeypatch.setattr(crashing, "train_batch", real)
    resumed = train(mc, crashing, tc, run_dir=tmp_path / "crash", progress=False)
    assert resumed.selected_step == full.selected_step
    assert (resumed.final, resumed.score) == (full.final, full.score)


def test_select_needs_validation_splits():
    task, mc = _parity_setup()
    assert task.val_splits == []
    with pytest.raises(ValueError, match="val_examples"):
        train(mc, task, _tc(steps=2, select="best_val"), progress=False)
    with pytest.raises(ValueError, match="select"):
        _tc(select="best")


def test_numeric_fields_are_stored_as_floats_and_round_trip():
    tc = TrainConfig(lr=1, weight_decay=0, min_lr_ratio=0, grad_clip=1, early_stop=1, select="best_val")
    assert all(isinstance(v, float) for v in (tc.lr, tc.weight_decay, tc.min_lr_ratio, tc.grad_clip))
    assert isinstance(tc.early_stop, float)
    assert TrainConfig.from_dict(tc.to_dict()) == tc
    assert TrainConfig.from_dict(TrainConfig().to_dict()) == TrainConfig()


def test_unavailable_or_malformed_devices_are_clear_errors():
    task, mc = _setup("classify")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            train(mc, task, _tc(steps=1), progress=False, device="cuda")
    with pytest.raises(ValueError, match="not a torch device"):
        train(mc, task, _tc(steps=1), progress=False, device="gpu")
