"""S5/A5 word problems: running products checked by composing permutations independently."""

from __future__ import annotations

import itertools

import pytest
import torch

from recurrences.tasks import IGNORE_INDEX, create_task
from recurrences.tasks.groups import group_elements, multiplication_table


def _cycle_parity(p):
    """Permutation parity from the cycle count (independent of the library's inversion count)."""
    seen, cycles = set(), 0
    for start in range(len(p)):
        if start not in seen:
            cycles += 1
            j = start
            while j not in seen:
                seen.add(j)
                j = p[j]
    return (len(p) - cycles) % 2


def _elements(group):
    perms = sorted(itertools.permutations(range(5)))
    return perms if group == "S5" else [p for p in perms if _cycle_parity(p) == 0]


def test_indexing_is_documented_order():
    assert list(group_elements("S5")) == _elements("S5")
    assert list(group_elements("A5")) == _elements("A5")
    assert len(group_elements("S5")) == 120 and len(group_elements("A5")) == 60
    assert group_elements("S5")[0] == (0, 1, 2, 3, 4) == group_elements("A5")[0]


@pytest.mark.parametrize("group", ["S5", "A5"])
def test_table_is_a_group(group):
    table = multiplication_table(group)
    n = len(table)
    assert (table[0] == list(range(n))).all() and (table[:, 0] == list(range(n))).all()
    for row in table:  # Latin square: every row and column is a permutation of the elements
        assert sorted(row.tolist()) == list(range(n))
    assert sorted(table[:, 5].tolist()) == list(range(n))
    a, b, c = 7, 23, 41
    assert table[table[a, b], c] == table[a, table[b, c]]


@pytest.mark.parametrize("name,group", [("s5", "S5"), ("a5", "A5"), ("word_problem", "S5")])
def test_running_products(name, group):
    task = create_task(
        name, train_lengths=(1, 12), test_lengths=(13, 30), eval_examples=16, batch_lengths="example"
    )
    elements = _elements(group)
    io = task.io
    assert io.head == "tagging" and io.n_outputs == len(elements) and io.vocab_size == len(elements) + 1
    batches = [task.train_batch(s, 8, seed=5) for s in range(3)]
    batches += [b for split in task.eval_splits() for b in task.eval_batches(split, 16)]
    checked = 0
    for batch in batches:
        assert batch.targets.shape == batch.inputs.shape == batch.mask.shape
        assert bool((batch.targets[~batch.mask] == IGNORE_INDEX).all())
        assert bool((batch.inputs[~batch.mask] == len(elements)).all())
        for i in range(len(batch)):
            product = (0, 1, 2, 3, 4)
            for t in range(int(batch.mask[i].sum())):
                g = elements[int(batch.inputs[i, t])]
                product = tuple(product[g[k]] for k in range(5))  # (p g)[k] = p[g[k]]
                assert elements.index(product) == int(batch.targets[i, t])
                checked += 1
    assert checked > 500


def test_determinism_and_options():
    a, b = create_task("a5"), create_task("a5")
    x, y = a.train_batch(3, 4, seed=9), b.train_batch(3, 4, seed=9)
    assert torch.equal(x.inputs, y.inputs) and torch.equal(x.targets, y.targets)
    assert create_task("a5", **a.config()).config() == a.config()
    assert a.config()["group"] == "A5"
    with pytest.raises(ValueError, match="group"):
        create_task("word_problem", group="S6")
    with pytest.raises(ValueError, match="group"):
        create_task("s5", group="A5")
