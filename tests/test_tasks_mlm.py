"""The masked-token task: determinism, masking rules, the synthetic language, and a LION MLM that learns."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from recurrences.tasks import IGNORE_INDEX, available_tasks, create_task


def test_registered_and_io():
    assert "mlm" in available_tasks()
    t = create_task("mlm", n_symbols=10, seq_len=16)
    io = t.io
    assert io.head == "tagging" and io.input_kind == "tokens" and not io.needs_causal
    assert io.n_outputs == 10 and io.vocab_size == 11 and t.mask_id == 10
    assert create_task("mlm", **t.config()).config() == t.config()


def test_deterministic_batches():
    t = create_task("mlm", seq_len=20, min_len=5)
    a, b = t.train_batch(3, 8, seed=1), t.train_batch(3, 8, seed=1)
    assert (
        torch.equal(a.inputs, b.inputs) and torch.equal(a.targets, b.targets) and torch.equal(a.mask, b.mask)
    )
    c = t.train_batch(4, 8, seed=1)
    assert not torch.equal(a.inputs, c.inputs)
    e1 = next(t.eval_batches("val", 16, seed=0))
    e2 = next(t.eval_batches("val", 16, seed=5))
    assert torch.equal(e1.inputs, e2.inputs)


@pytest.mark.parametrize("source", ["markov", "text"])
def test_masking_rules(source):
    t = create_task("mlm", source=source, seq_len=30, min_len=10, mask_prob=0.3)
    b = t.train_batch(0, 64, seed=0)
    scored = b.targets != IGNORE_INDEX
    assert (b.inputs[scored] == t.mask_id).all()  # every scored position is masked in the input ...
    assert (b.inputs[~scored & b.mask] != t.mask_id).all()  # ... and only those
    assert (scored.sum(1) >= 1).all()
    assert not (scored & ~b.mask).any()  # padding is never scored
    lengths = b.mask.sum(1)
    assert lengths.min() >= 10 and lengths.max() <= 30
    assert (b.mask == (torch.arange(30)[None] < lengths[:, None])).all()  # right padding
    frac = scored.sum() / b.mask.sum()
    assert 0.2 < frac < 0.45
    assert (b.targets[scored] < t.io.n_outputs).all() and (b.targets[scored] >= 0).all()


def test_markov_language_follows_its_transitions():
    t = create_task("mlm", seq_len=40, mask_prob=0.01, n_symbols=8, branching=2, language_seed=3)
    full = t._symbols(np.random.default_rng(0), 50, "train")
    for row in full:
        for a, b in zip(row[:-1], row[1:]):
            assert b in t.successors[a]
    assert t.successors.shape == (8, 2)
    other = create_task("mlm", n_symbols=8, language_seed=4)
    assert not np.array_equal(other.successors, t.successors)


def test_bad_options():
    with pytest.raises(ValueError, match="min_len"):
        create_task("mlm", seq_len=8, min_len=9)
    with pytest.raises(ValueError, match="mask_prob"):
        create_task("mlm", mask_prob=1.5)
    with pytest.raises(ValueError, match="source"):
        create_task("mlm", source="wiki")
    with pytest.raises(ValueError, match="path"):
        create_task("mlm", path="/nonexistent.txt")
    with pytest.raises(ValueError, match="split"):
        next(create_task("mlm").eval_batches("test", 4))


def test_lion_mlm_learns():
    """A one-layer LION-S masked LM beats what the left neighbour alone allows on the Markov language."""
    from recurrences.models.config import ModelConfig
    from recurrences.models.sequence import SequenceModel

    task = create_task("mlm", seq_len=24, min_len=16, mask_prob=0.15, n_symbols=12, n_eval=256)
    torch.manual_seed(0)
    model = SequenceModel(ModelConfig.for_task(task.io, mixer="lion-s", d_model=32, n_layers=1, n_heads=4))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for step in range(80):
        b = task.train_batch(step, 32, seed=0)
        z = model(b.inputs, b.mask)
        loss = F.cross_entropy(z.reshape(-1, z.shape[-1]), b.targets.reshape(-1), ignore_index=IGNORE_INDEX)
        opt.zero_grad()
        loss.backward()
        opt.step()
    b = next(task.eval_batches("val", 256))
    with torch.no_grad():
        z = model(b.inputs, b.mask)
    scored = b.targets != IGNORE_INDEX
    acc = (z.argmax(-1)[scored] == b.targets[scored]).float().mean().item()
    # best left-only predictor: the most likely successor of the left symbol
    probs = np.diff(np.concatenate([np.zeros((12, 1)), task.cum], axis=1), axis=1)
    left_only = probs.max(1).mean()
    assert acc > 0.6 and acc > left_only - 0.05, (acc, left_only)
    assert task.bayes_accuracy(b) > left_only
