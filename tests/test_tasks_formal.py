"""Formal-language tasks: labels against slow independent re-computations, splits, determinism, options."""

from __future__ import annotations

import pytest
import torch

from recurrences.tasks import create_task

FORMAL = ["parity", "even_pairs", "cycle_navigation", "modular_arithmetic", "modular_arithmetic_brackets"]


def _examples(task, batch):
    """Yield (token list of the real positions, label) of every example in a batch."""
    for i in range(len(batch)):
        n = int(batch.mask[i].sum())
        assert bool(batch.mask[i, :n].all()), "padding must be on the right"
        yield batch.inputs[i, :n].tolist(), int(batch.targets[i])


def _batches(task):
    """A few training batches (both length modes) and the first batch of every eval split."""
    out = [task.train_batch(step, 16, seed=3) for step in range(4)]
    for split in task.eval_splits():
        out.extend(task.eval_batches(split, 32))
    return out


# ---------------------------------------------------------------- slow, independent re-computations


def slow_parity(tokens):
    count = 0
    for t in tokens:
        if t == 1:
            count += 1
    return count % 2


def slow_even_pairs(tokens):
    pairs = 0
    for a, b in zip(tokens, tokens[1:]):
        if (a, b) in ((0, 1), (1, 0)):
            pairs += 1
    return pairs % 2


def slow_cycle(tokens, modulus):
    position = 0
    for t in tokens:
        position = (position + {0: -1, 1: 0, 2: 1}[t]) % modulus
    return position


class Parser:
    """Recursive descent over the token names: expr := term (+|- term)*, term := factor (* factor)*,
    factor := - factor | ( expr ) | digit. Works over the integers, reduced mod m at the end."""

    def __init__(self, tokens, modulus):
        m = modulus
        names = {m: "+", m + 1: "-", m + 2: "*", m + 3: "(", m + 4: ")"}
        self.symbols = [names.get(t, t) for t in tokens]
        for s in self.symbols:
            assert s in names.values() or (isinstance(s, int) and 0 <= s < m), f"bad token {s}"
        self.i = 0

    def peek(self):
        return self.symbols[self.i] if self.i < len(self.symbols) else None

    def take(self, expected=None):
        s = self.peek()
        assert s is not None, "unexpected end"
        if expected is not None:
            assert s == expected, f"expected {expected}, got {s}"
        self.i += 1
        return s

    def expr(self):
        value = self.term()
        while self.peek() in ("+", "-"):
            op = self.take()
            rhs = self.term()
            value = value + rhs if op == "+" else value - rhs
        return value

    def term(self):
        value = self.factor()
        while self.peek() == "*":
            self.take()
            value = value * self.factor()
        return value

    def factor(self):
        s = self.peek()
        if s == "-":
            self.take()
            return -self.factor()
        if s == "(":
            self.take()
            value = self.expr()
            self.take(")")
            return value
        assert isinstance(s, int), f"expected a digit, got {s}"
        return self.take()

    def evaluate(self, modulus):
        value = self.expr()
        assert self.peek() is None, "trailing tokens"
        return value % modulus


# ------------------------------------------------------------------------------------------- labels


@pytest.mark.parametrize("batch_lengths", ["batch", "example"])
@pytest.mark.parametrize("name", FORMAL)
def test_labels_match_slow_recomputation(name, batch_lengths):
    task = create_task(
        name,
        train_lengths=(1, 20),
        test_lengths=(21, 70),
        bucket_width=25,
        eval_examples=40,
        batch_lengths=batch_lengths,
    )
    n_checked = 0
    labels = set()
    for batch in _batches(task):
        for tokens, label in _examples(task, batch):
            if name == "parity":
                expected = slow_parity(tokens)
            elif name == "even_pairs":
                expected = slow_even_pairs(tokens)
            elif name == "cycle_navigation":
                expected = slow_cycle(tokens, task.modulus)
            else:
                expected = Parser(tokens, task.modulus).evaluate(task.modulus)
            assert label == expected, (name, tokens)
            labels.add(label)
            n_checked += 1
    assert n_checked == 4 * 16 + len(task.eval_splits()) * 40
    assert labels == set(range(task.io.n_outputs)), "every class should occur"


@pytest.mark.parametrize("modulus", [3, 7])
def test_modulus_option(modulus):
    for name in ["cycle_navigation", "modular_arithmetic", "modular_arithmetic_brackets"]:
        task = create_task(name, modulus=modulus, train_lengths=(1, 30), test_lengths=(31, 40))
        assert task.io.n_outputs == modulus
        batch = task.train_batch(0, 64, seed=0)
        for tokens, label in _examples(task, batch):
            if name == "cycle_navigation":
                assert label == slow_cycle(tokens, modulus)
            else:
                assert label == Parser(tokens, modulus).evaluate(modulus)


def test_brackets_are_nested_and_lengths_exact():
    task = create_task("modular_arithmetic_brackets", train_lengths=(1, 60), test_lengths=(61, 64))
    m = task.modulus
    seen_nesting = 0
    for tokens, _ in _examples(task, next(iter(task.eval_batches("train_len", 128)))):
        depth = deepest = 0
        for t in tokens:
            depth += (t == m + 3) - (t == m + 4)
            assert depth >= 0
            deepest = max(deepest, depth)
        assert depth == 0
        seen_nesting = max(seen_nesting, deepest)
    assert seen_nesting >= 3
    lengths = next(iter(task.eval_batches("len_061_064", 128))).mask.sum(1)
    assert set(lengths.tolist()) == {61, 62, 63, 64}


def test_modular_arithmetic_odd_lengths():
    task = create_task("modular_arithmetic", train_lengths=(1, 40), test_lengths=(41, 64))
    for step in range(5):
        lengths = task.train_batch(step, 8, seed=1).mask.sum(1)
        assert bool((lengths % 2 == 1).all())
        assert int(lengths.max()) <= 40


# --------------------------------------------------------------------------------- shapes and splits


@pytest.mark.parametrize("name", FORMAL)
def test_shapes_dtypes_and_padding(name):
    task = create_task(name, train_lengths=(1, 40), test_lengths=(41, 128), batch_lengths="example")
    io = task.io
    assert io.head == "classify" and io.pooling == "last" and io.input_kind == "tokens"
    assert io.max_length == 128 and not io.needs_causal
    batch = task.train_batch(5, 32, seed=0)
    assert batch.inputs.dtype == torch.int64 and batch.targets.dtype == torch.int64
    assert batch.mask.dtype == torch.bool
    assert batch.inputs.shape == batch.mask.shape and batch.targets.shape == (32,)
    assert int(batch.inputs.max()) < io.vocab_size and int(batch.inputs.min()) >= 0
    pad = io.vocab_size - 1
    assert bool((batch.inputs[~batch.mask] == pad).all())
    assert bool((batch.inputs[batch.mask] != pad).all())
    assert int(batch.targets.min()) >= 0 and int(batch.targets.max()) < io.n_outputs
    lengths = batch.mask.sum(1)
    assert int(lengths.max()) == batch.inputs.shape[1] and len(set(lengths.tolist())) > 1


def test_splits_buckets_and_lengths():
    task = create_task("parity", train_lengths=(1, 40), test_lengths=(41, 256))
    splits = task.eval_splits()
    assert splits[0] == "train_len"
    assert splits[1:] == [
        "len_041_064",
        "len_065_096",
        "len_097_128",
        "len_129_160",
        "len_161_192",
        "len_193_224",
        "len_225_256",
    ]
    assert task.score_splits == splits[1:]
    assert task.split_length("len_041_064") == 52
    for split in splits:
        n = 0
        lo, hi = (1, 40) if split == "train_len" else map(int, split[4:].split("_"))
        for batch in task.eval_batches(split, 50):
            lengths = batch.mask.sum(1)
            assert int(lengths.min()) >= lo and int(lengths.max()) <= hi
            n += len(batch)
        assert n == 128
    custom = create_task("parity", test_lengths=(41, 100), bucket_width=20, eval_examples=10)
    assert custom.eval_splits()[1:] == ["len_041_060", "len_061_080", "len_081_100"]
    assert sum(len(b) for b in custom.eval_batches("len_061_080", 3)) == 10
    with pytest.raises(KeyError, match="len_041_060"):
        list(custom.eval_batches("len_999", 4))


# -------------------------------------------------------------------------------------- determinism


@pytest.mark.parametrize("name", FORMAL)
def test_determinism(name):
    a, b = create_task(name), create_task(name)
    for step in (0, 7):
        x, y = a.train_batch(step, 8, seed=11), b.train_batch(step, 8, seed=11)
        assert torch.equal(x.inputs, y.inputs) and torch.equal(x.targets, y.targets)
        assert torch.equal(x.mask, y.mask)
    assert not torch.equal(a.train_batch(0, 64, 1).inputs[:, :1], a.train_batch(0, 64, 2).inputs[:, :1])
    # eval data do not depend on the batch size nor on which instance made them
    e1 = torch.cat([bt.targets for bt in a.eval_batches("len_041_064", 128)])
    e2 = torch.cat([bt.targets for bt in b.eval_batches("len_041_064", 7)])
    assert torch.equal(e1, e2)


# ----------------------------------------------------------------------------------------- bad input


def test_bad_options_name_the_option():
    with pytest.raises(ValueError, match="train_lengths"):
        create_task("parity", train_lengths=(40, 1))
    with pytest.raises(ValueError, match="test_lengths"):
        create_task("parity", train_lengths=(1, 40), test_lengths=(30, 100))
    with pytest.raises(ValueError, match="train_lengths"):
        create_task("parity", train_lengths=(0, 10))
    with pytest.raises(TypeError, match="test_lengths"):
        create_task("parity", test_lengths=64)
    with pytest.raises(ValueError, match="eval_examples"):
        create_task("parity", eval_examples=-1)
    with pytest.raises(ValueError, match="bucket_width"):
        create_task("parity", bucket_width=0)
    with pytest.raises(ValueError, match="modulus"):
        create_task("modular_arithmetic", modulus=1)
    with pytest.raises(ValueError, match="batch_lengths"):
        create_task("parity", batch_lengths="sometimes")
    with pytest.raises(ValueError, match="batch_size"):
        create_task("parity").train_batch(0, 0, seed=0)
    with pytest.raises(TypeError, match="no_such_option"):
        create_task("parity", no_such_option=3)
    with pytest.raises(KeyError, match="parity"):
        create_task("parityy")


# ------------------------------------------------------------------------------- length curriculum


@pytest.mark.parametrize("batch_lengths", ["batch", "example"])
def test_curriculum_grows_the_longest_training_length(batch_lengths):
    task = create_task(
        "parity",
        train_lengths=(2, 40),
        curriculum_steps=100,
        curriculum_start=10,
        batch_lengths=batch_lengths,
    )
    assert [task.train_high(s) for s in (0, 50, 99, 100, 10_000)] == [10, 25, 39, 40, 40]

    def longest(steps):
        return max(int(task.train_batch(s, 16, seed=1).mask.sum(1).max()) for s in steps)

    def shortest(steps):
        return min(int(task.train_batch(s, 16, seed=1).mask.sum(1).min()) for s in steps)

    assert longest(range(0, 3)) <= 10
    assert longest(range(50, 53)) <= 25
    assert longest(range(100, 160)) > 30  # the full range is reached after the curriculum
    assert shortest(range(100, 160)) >= 2
    # the schedule is a function of the step: the same step gives the same batch (resume-safe)
    a, b = task.train_batch(37, 8, seed=5), task.train_batch(37, 8, seed=5)
    assert torch.equal(a.inputs, b.inputs) and torch.equal(a.targets, b.targets)
    # evaluation splits do not depend on the curriculum
    plain = create_task("parity", train_lengths=(2, 40), batch_lengths=batch_lengths)
    assert task.eval_splits() == plain.eval_splits()
    x, y = next(task.eval_batches("len_041_064", 16)), next(plain.eval_batches("len_041_064", 16))
    assert torch.equal(x.inputs, y.inputs)


def test_curriculum_off_by_default_and_in_the_config():
    task = create_task("cycle_navigation", train_lengths=(1, 40))
    assert task.train_high(0) == 40 and "curriculum_steps" not in task.config()
    cur = create_task("cycle_navigation", train_lengths=(1, 40), curriculum_steps=500)
    assert cur.curriculum_start == 8 and cur.train_high(0) == 8
    assert cur.config()["curriculum_steps"] == 500 and cur.config()["curriculum_start"] == 8
    again = create_task("cycle_navigation", **cur.config())
    assert again.config() == cur.config()
    with pytest.raises(ValueError, match="curriculum_steps"):
        create_task("parity", curriculum_steps=-1)
    with pytest.raises(ValueError, match="curriculum_start"):
        create_task("parity", train_lengths=(1, 40), curriculum_steps=10, curriculum_start=41)
    with pytest.raises(TypeError, match="curriculum_start"):
        create_task("parity", curriculum_steps=10, curriculum_start=2.5)


def test_validation_splits_are_independent_of_the_test_buckets():
    plain = create_task("cycle_navigation", train_lengths=(1, 8), test_lengths=(9, 24), bucket_width=8)
    task = create_task(
        "cycle_navigation", train_lengths=(1, 8), test_lengths=(9, 24), bucket_width=8, val_examples=12
    )
    assert task.val_splits == ["val_009_016", "val_017_024"] and plain.val_splits == []
    assert task.score_splits == plain.score_splits == ["len_009_016", "len_017_024"]
    assert task.config()["val_examples"] == 12 and "val_examples" not in plain.config()
    for split in plain.score_splits:  # adding validation splits leaves the test data alone
        a, b = next(task.eval_batches(split, 64)), next(plain.eval_batches(split, 64))
        assert torch.equal(a.inputs, b.inputs) and torch.equal(a.targets, b.targets)
    val = next(task.eval_batches("val_009_016", 64))
    test = next(task.eval_batches("len_009_016", 64))
    assert len(val) == 12 and int(val.mask.sum(1).min()) >= 9 and int(val.mask.sum(1).max()) <= 16
    assert not torch.equal(val.inputs[:, :9], test.inputs[:12, :9])  # a different stream
    for x, y in _examples(task, val):
        assert slow_cycle(x, 5) == y
    assert task.split_length("val_009_016") is None and task.split_length("len_009_016") == 12
    with pytest.raises(ValueError, match="val_examples"):
        create_task("parity", val_examples=-2)


def test_curriculum_start_without_curriculum_is_refused():
    with pytest.raises(ValueError, match="curriculum_steps"):
        create_task("parity", curriculum_start=5)
