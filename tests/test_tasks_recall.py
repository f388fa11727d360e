"""MQAR with zoology semantics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recurrences.tasks import IGNORE_INDEX, create_task


def _check_example(inputs, targets, k, v, random_non_queries):
    inputs, targets = inputs.tolist(), targets.tolist()
    half = v // 2
    keys, values = inputs[0 : 2 * k : 2], inputs[1 : 2 * k : 2]
    assert all(1 <= key < half for key in keys) and len(set(keys)) == k
    assert all(half <= val < v for val in values) and len(set(values)) == k
    pairs = dict(zip(keys, values))
    queries = [t for t, y in enumerate(targets) if y != IGNORE_INDEX]
    assert len(queries) == k
    gaps = []
    for t in queries:
        assert t >= 2 * k and (t - 2 * k) % 2 == 0
        assert targets[t] == pairs[inputs[t]]
        gaps.append((t - 2 * k) // 2)
    assert sorted(inputs[t] for t in queries) == sorted(keys), "every key is queried once"
    if not random_non_queries:
        others = [inputs[t] for t in range(2 * k, len(inputs)) if t not in queries]
        assert set(others) <= {0}
    return gaps


@pytest.mark.parametrize("random_non_queries", [True, False])
def test_semantics(random_non_queries):
    task = create_task(
        "mqar",
        vocab_size=256,
        train_configs=[(64, 4), (32, 8)],
        test_configs=[(64, 4), (128, 16)],
        eval_examples=20,
        random_non_queries=random_non_queries,
    )
    io = task.io
    assert io.head == "tagging" and io.vocab_size == io.n_outputs == 256 and io.max_length == 128
    seen_t = set()
    for step in range(6):
        batch = task.train_batch(step, 8, seed=1)
        assert batch.inputs.dtype == torch.int64 and bool(batch.mask.all())
        t = batch.inputs.shape[1]
        seen_t.add(t)
        k = {64: 4, 32: 8}[t]
        for i in range(len(batch)):
            _check_example(batch.inputs[i], batch.targets[i], k, 256, random_non_queries)
    assert seen_t == {32, 64}
    assert task.eval_splits() == ["len64_kv4", "len128_kv16"]
    assert task.split_length("len128_kv16") == 128
    batches = list(task.eval_batches("len128_kv16", 8))
    assert [len(b) for b in batches] == [8, 8, 4]
    for b in batches:
        assert b.inputs.shape[1] == 128
        for i in range(len(b)):
            _check_example(b.inputs[i], b.targets[i], 16, 256, random_non_queries)


def test_power_law_gaps():
    """With one pair, P(gap = g) is proportional to (g + 1)^(a - 1)."""
    task = create_task(
        "mqar",
        vocab_size=128,
        train_configs=[(64, 1)],
        test_configs=[(64, 1)],
        eval_examples=3000,
        random_non_queries=False,
    )
    batch = next(iter(task.eval_batches("len64_kv1", 3000)))
    gaps = (torch.nonzero(batch.targets != IGNORE_INDEX)[:, 1] - 2) // 2
    space = (64 - 2) // 2
    weights = np.array([(g + 1.0) ** (0.01 - 1) for g in range(space)])
    weights /= weights.sum()
    freq = np.bincount(gaps.numpy(), minlength=space) / len(gaps)
    assert abs(freq[0] - weights[0]) < 0.03
    assert abs(freq[:5].sum() - weights[:5].sum()) < 0.04


def test_determinism():
    a, b = create_task("mqar"), create_task("mqar")
    x, y = a.train_batch(2, 4, seed=3), b.train_batch(2, 4, seed=3)
    assert torch.equal(x.inputs, y.inputs) and torch.equal(x.targets, y.targets)
    assert not torch.equal(x.inputs, a.train_batch(2, 4, seed=4).inputs)
    e1 = torch.cat([t.inputs for t in a.eval_batches("len64_kv8", 128)])
    e2 = torch.cat([t.inputs for t in b.eval_batches("len64_kv8", 5)])
    assert torch.equal(e1, e2)
    c = create_task("mqar", **a.config())
    assert torch.equal(c.train_batch(2, 4, seed=3).targets, x.targets)


def test_bad_options():
    with pytest.raises(ValueError, match="even"):
        create_task("mqar", train_configs=[(63, 4)])
    with pytest.raises(ValueError, match="num_kv_pairs"):
        create_task("mqar", test_configs=[(64, 17)])
    with pytest.raises(ValueError, match="vocab_size"):
        create_task("mqar", vocab_size=64)
    with pytest.raises(TypeError, match="train_configs"):
        create_task("mqar", train_configs=[64])
    with pytest.raises(ValueError, match="power_a"):
        create_task("mqar", power_a=-1.0)
    with pytest.raises(KeyError, match="len64_kv4"):
        list(create_task("mqar").eval_batches("len65_kv4", 8))
