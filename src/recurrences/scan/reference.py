"""The sequential reference for first-order linear recurrences.

    h_t = a_t * h_{t-1} + b_t,        t = 0 .. T-1,   h_{-1} = initial (or 0)

This is the ground truth the fast forms are tested against: one Python step per time step, plain
autograd. It is written to be obviously correct, not fast (``unbind``/``stack`` keep its backward
linear in T rather than the quadratic cost of indexing a[:, t] in a loop).
"""

from __future__ import annotations

import torch
from torch import Tensor


def sequential_scan(a: Tensor, b: Tensor, initial: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Forward-in-time scan over dim 1 of already-validated, same-shape ``a`` and ``b``.

    a, b: (B, T, N); initial: (B, N) or None. Returns (h of shape (B, T, N), h_{T-1} of shape (B, N)).
    Resets are expected to have been folded into ``a`` (a_t = 0 where the state restarts).
    """
    h = torch.zeros_like(b[:, 0]) if initial is None else initial
    out = []
    for a_t, b_t in zip(a.unbind(1), b.unbind(1)):
        h = a_t * h + b_t
        out.append(h)
    if not out:  # T == 0
        return b.clone(), h
    return torch.stack(out, dim=1), h
