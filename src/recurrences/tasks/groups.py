"""Word problems over the permutation groups S5 and A5 (state tracking; Merrill et al., 2024).

A permutation of {0..4} is a tuple g with g[i] the image of i. Elements are indexed deterministically:
S5 = ``itertools.permutations(range(5))`` in lexicographic order (index 0 is the identity), A5 = the
even permutations of that list, in the same order. Composition is (g h)[i] = g[h[i]] (apply h first).

Input: element ids g_1..g_n (tokens; the padding id is |G|). Target at every position t is the
running product p_t = g_1 g_2 ... g_t (head "tagging"), IGNORE_INDEX at padding. A5 is the smallest
non-solvable group, so its word problem is NC^1-complete: no fixed-depth diagonal linear recurrence
solves it at every length. Lengths follow the same train/unseen-bucket protocol as the formal tasks.
"""

from __future__ import annotations

import itertools
from functools import cache
from typing import Any

import numpy as np

from ._common import IGNORE_INDEX, LengthTask, check_choice
from .base import register_task

__all__ = ["group_elements", "multiplication_table", "WordProblemTask"]

GROUPS = ("S5", "A5")


def _is_even(p: tuple[int, ...]) -> bool:
    inversions = sum(1 for i in range(len(p)) for j in range(i + 1, len(p)) if p[i] > p[j])
    return inversions % 2 == 0


@cache
def group_elements(group: str) -> tuple[tuple[int, ...], ...]:
    """The elements of ``group`` ("S5" or "A5") in their index order."""
    check_choice("group", group, GROUPS)
    perms = list(itertools.permutations(range(5)))
    if group == "A5":
        perms = [p for p in perms if _is_even(p)]
    return tuple(perms)


@cache
def multiplication_table(group: str) -> np.ndarray:
    """table[i, j] = index of g_i g_j, where (g h)[k] = g[h[k]]."""
    elements = group_elements(group)
    index = {p: i for i, p in enumerate(elements)}
    n = len(elements)
    table = np.empty((n, n), dtype=np.int64)
    for i, g in enumerate(elements):
        for j, h in enumerate(elements):
            table[i, j] = index[tuple(g[h[k]] for k in range(5))]
    table.setflags(write=False)
    return table


class WordProblemTask(LengthTask):
    """Group word problem: tag every position with the running product of the elements so far."""

    name = "word_problem"
    head = "tagging"

    def __init__(self, group: str = "S5", **options: Any) -> None:
        self.group = check_choice("group", group, GROUPS)
        self.n_symbols = len(group_elements(group))
        self.n_classes = self.n_symbols
        super().__init__(**options)

    def _extra_config(self) -> dict[str, Any]:
        return {"group": self.group}

    def _generate(self, rng, lengths):
        table = multiplication_table(self.group)
        t = int(lengths.max())
        b = len(lengths)
        mask = np.arange(t)[None, :] < lengths[:, None]
        words = rng.integers(0, self.n_symbols, size=(b, t)).astype(np.int64)
        prefix = np.empty((b, t), dtype=np.int64)
        state = np.zeros(b, dtype=np.int64)  # the identity is index 0 in both groups
        for i in range(t):
            state = table[state, words[:, i]]
            prefix[:, i] = state
        tokens = np.where(mask, words, self.pad_id)
        targets = np.where(mask, prefix, IGNORE_INDEX)
        return tokens, lengths.astype(np.int64), targets


def _fixed_group(name: str, fixed: str):
    def factory(group: str = fixed, **options: Any) -> WordProblemTask:
        if group != fixed:
            raise ValueError(f"option 'group' of task {name!r} is fixed to {fixed!r}, got {group!r}")
        task = WordProblemTask(group=fixed, **options)
        task.name = name
        return task

    factory.__doc__ = f"Word problem over {fixed}: tag each position with the running product."
    return factory


register_task("s5", _fixed_group("s5", "S5"))
register_task("a5", _fixed_group("a5", "A5"))
register_task("word_problem", WordProblemTask)
