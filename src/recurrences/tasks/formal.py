"""Formal-language tasks of the Chomsky-hierarchy benchmark (Deletang et al., 2023), for length
generalisation: train on lengths ``train_lengths`` (default 1-40), score on unseen ``test_lengths``
(default 41-256) in buckets. Every task is a sequence classification read at the last real position
(head "classify", pooling "last"), so bidirectional mixers can run them too.

Token ids: the task's symbols are 0..n_symbols-1 and the padding id is n_symbols (vocab_size =
n_symbols + 1); padding is on the right and masked out.

========================== ====================================== ==========================================
task                       input                                  label
========================== ====================================== ==========================================
parity                     bits b_1..b_n                          (sum_i b_i) mod 2
even_pairs                 bits b_1..b_n                          #{i: b_i != b_{i+1}} mod 2 (= [b_1 != b_n])
cycle_navigation           moves a_i in {0: -1, 1: stay, 2: +1}   (sum_i (a_i - 1)) mod ``modulus``
modular_arithmetic         d op d op ... d, op in {+, -, *}       value mod ``modulus``, * before +/-
modular_arithmetic_brackets expression with ( ), unary -, + - *   value mod ``modulus``
========================== ====================================== ==========================================

modular_arithmetic has odd lengths only: a drawn even length n gives an expression of n - 1 tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ._common import LengthTask, check_int
from .base import register_task

__all__ = [
    "ParityTask",
    "EvenPairsTask",
    "CycleNavigationTask",
    "ModularArithmeticTask",
    "ModularArithmeticBracketsTask",
    "PLUS",
    "MINUS",
    "TIMES",
    "OPEN",
    "CLOSE",
]

# Operator offsets: for modulus m the digits are 0..m-1 and the symbols below are m + offset.
PLUS, MINUS, TIMES, OPEN, CLOSE = 0, 1, 2, 3, 4


def _bits_and_mask(rng: np.random.Generator, lengths: np.ndarray, n_values: int):
    t = int(lengths.max())
    mask = np.arange(t)[None, :] < lengths[:, None]
    values = rng.integers(0, n_values, size=(len(lengths), t)).astype(np.int64)
    values[~mask] = 0
    return values, mask


class _Formal(LengthTask):
    def _finish(self, values: np.ndarray, mask: np.ndarray, lengths: np.ndarray, labels: np.ndarray):
        tokens = np.where(mask, values, self.pad_id).astype(np.int64)
        return tokens, lengths.astype(np.int64), labels.astype(np.int64)


@register_task("parity")
class ParityTask(_Formal):
    """Parity: label = (number of ones) mod 2."""

    name = "parity"
    n_symbols = 2
    n_classes = 2

    def _generate(self, rng, lengths):
        bits, mask = _bits_and_mask(rng, lengths, 2)
        return self._finish(bits, mask, lengths, bits.sum(1) % 2)


@register_task("even_pairs")
class EvenPairsTask(_Formal):
    """Even pairs: label = (number of 01 and 10 pairs) mod 2."""

    name = "even_pairs"
    n_symbols = 2
    n_classes = 2

    def _generate(self, rng, lengths):
        bits, mask = _bits_and_mask(rng, lengths, 2)
        changes = (bits[:, 1:] != bits[:, :-1]) & mask[:, 1:]
        return self._finish(bits, mask, lengths, changes.sum(1) % 2)


@register_task("cycle_navigation")
class CycleNavigationTask(_Formal):
    """Cycle navigation: moves -1/0/+1 (tokens 0/1/2) on a cycle; label = final position mod modulus."""

    name = "cycle_navigation"
    n_symbols = 3

    def __init__(self, modulus: int = 5, **options: Any) -> None:
        self.modulus = check_int("modulus", modulus, minimum=2)
        self.n_classes = self.modulus
        super().__init__(**options)

    def _extra_config(self) -> dict[str, Any]:
        return {"modulus": self.modulus}

    def _generate(self, rng, lengths):
        moves, mask = _bits_and_mask(rng, lengths, 3)
        steps = np.where(mask, moves - 1, 0)
        return self._finish(moves, mask, lengths, steps.sum(1) % self.modulus)


@register_task("modular_arithmetic")
class ModularArithmeticTask(_Formal):
    """Modular arithmetic without brackets: d op d op ... d over Z_m, * binds tighter than + and -.

    Evaluated left to right with the state (sum s, current product p):
    '*' d: p <- p d;  '+' d: s <- s + p, p <- d;  '-' d: s <- s + p, p <- -d;  value = s + p (mod m).
    """

    name = "modular_arithmetic"

    def __init__(self, modulus: int = 5, **options: Any) -> None:
        self.modulus = check_int("modulus", modulus, minimum=2)
        self.n_symbols = self.modulus + 3
        self.n_classes = self.modulus
        super().__init__(**options)

    def _extra_config(self) -> dict[str, Any]:
        return {"modulus": self.modulus}

    def _generate(self, rng, lengths):
        m = self.modulus
        lengths = np.maximum(1, lengths - (1 - lengths % 2))  # odd lengths only
        n_ops = (lengths - 1) // 2
        k = int(n_ops.max())
        b = len(lengths)
        digits = rng.integers(0, m, size=(b, k + 1)).astype(np.int64)
        ops = rng.integers(0, 3, size=(b, k)).astype(np.int64)
        total = np.zeros(b, dtype=np.int64)
        prod = digits[:, 0].copy()
        for j in range(k):
            live = j < n_ops
            d = digits[:, j + 1]
            op = ops[:, j]
            new_total = np.where(op == TIMES, total, (total + prod) % m)
            new_prod = np.where(op == TIMES, (prod * d) % m, np.where(op == PLUS, d, (-d) % m))
            total = np.where(live, new_total, total)
            prod = np.where(live, new_prod, prod)
        labels = (total + prod) % m
        t = int(lengths.max())
        values = np.zeros((b, t), dtype=np.int64)
        values[:, 0::2] = digits[:, : (t + 1) // 2]
        values[:, 1::2] = m + ops[:, : t // 2]
        mask = np.arange(t)[None, :] < lengths[:, None]
        return self._finish(values, mask, lengths, labels)


@register_task("modular_arithmetic_brackets")
class ModularArithmeticBracketsTask(_Formal):
    """Modular arithmetic with brackets: random expressions of an exact length over Z_m.

    Grammar (inner expressions E, whole expression S):
        E(1) = d,  E(2) = -d,  E(3) = (d),  E(4) = (-d) | -(d),
        E(n >= 5) = ( E(a) op E(n - 3 - a) )  or, rarely, ( E(n - 2) ),
        S(n <= 2) = E(n),  S(n >= 3) = E(a) op E(n - 1 - a).
    The top level holds a single binary operator, so no precedence rule is ever needed.
    """

    name = "modular_arithmetic_brackets"

    def __init__(self, modulus: int = 5, **options: Any) -> None:
        self.modulus = check_int("modulus", modulus, minimum=2)
        self.n_symbols = self.modulus + 5
        self.n_classes = self.modulus
        super().__init__(**options)

    def _extra_config(self) -> dict[str, Any]:
        return {"modulus": self.modulus}

    def _apply(self, op: int, x: int, y: int) -> int:
        m = self.modulus
        if op == PLUS:
            return (x + y) % m
        if op == MINUS:
            return (x - y) % m
        return (x * y) % m

    def _inner(self, n: int, rng: np.random.Generator, out: list[int]) -> int:
        m = self.modulus
        o = m  # operator ids start at m
        if n == 1:
            d = int(rng.integers(m))
            out.append(d)
            return d
        if n == 2:
            d = int(rng.integers(m))
            out += [o + MINUS, d]
            return (-d) % m
        if n == 3 or n == 4 or rng.random() < 0.1:
            if n == 4 and rng.random() < 0.5:  # -(d)
                d = int(rng.integers(m))
                out += [o + MINUS, o + OPEN, d, o + CLOSE]
                return (-d) % m
            out.append(o + OPEN)
            v = self._inner(n - 2, rng, out)
            out.append(o + CLOSE)
            return v
        a = int(rng.integers(1, n - 3))  # sizes a and n - 3 - a, both >= 1
        op = int(rng.integers(3))
        out.append(o + OPEN)
        x = self._inner(a, rng, out)
        out.append(o + op)
        y = self._inner(n - 3 - a, rng, out)
        out.append(o + CLOSE)
        return self._apply(op, x, y)

    def _expression(self, n: int, rng: np.random.Generator) -> tuple[list[int], int]:
        out: list[int] = []
        if n <= 2:
            return out, self._inner(n, rng, out)
        a = int(rng.integers(1, n - 1))
        op = int(rng.integers(3))
        x = self._inner(a, rng, out)
        out.append(self.modulus + op)
        y = self._inner(n - 1 - a, rng, out)
        return out, self._apply(op, x, y)

    def _generate(self, rng, lengths):
        t = int(lengths.max())
        values = np.zeros((len(lengths), t), dtype=np.int64)
        labels = np.zeros(len(lengths), dtype=np.int64)
        for i, n in enumerate(lengths):
            seq, labels[i] = self._expression(int(n), rng)
            values[i, : len(seq)] = seq
        mask = np.arange(t)[None, :] < lengths[:, None]
        return self._finish(values, mask, lengths, labels)


def token_names(task: LengthTask) -> Sequence[str]:
    """Human-readable names of a formal task's token ids (for docs and debugging)."""
    if isinstance(task, (ModularArithmeticTask, ModularArithmeticBracketsTask)):
        names = [str(d) for d in range(task.modulus)] + ["+", "-", "*", "(", ")"][
            : task.n_symbols - task.modulus
        ]
    elif isinstance(task, CycleNavigationTask):
        names = ["-1", "0", "+1"]
    else:
        names = ["0", "1"]
    return [*names, "<pad>"]
