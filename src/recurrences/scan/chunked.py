"""Chunked two-level form of the first-order linear scan, with a reverse-scan backward.

Forward (time split into chunks of length C):
  1. inside every chunk, all chunks at once: the local state hl_t (started from 0) and the running
     product P_t = a_{c0} ... a_t of the decays (``torch.cumprod``; products only, never a division,
     so decays in (0, 1] underflow gracefully to 0 instead of overflowing);
  2. across chunks: s_c = P_end(c) * s_{c-1} + hl_end(c), a scan of length T/C (recursively chunked);
  3. h_t = hl_t + P_t * s_{c-1}.
That is 2*sqrt(T) Python steps instead of T, each over B*sqrt(T)*N elements.

Backward: the adjoint of a linear scan is a linear scan run backwards in time,
  lam_t = g_t + conj(a_{t+1}) * lam_{t+1},   dL/db_t = lam_t,   dL/da_t = lam_t * conj(h_{t-1}),
  dL/dh0 = conj(a_0) * lam_0,
so the backward reuses the same forward kernel on flipped inputs and saves only a and h.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def auto_chunk(T: int) -> int:
    """Chunk length ~ sqrt(T) (balances the two sequential loops), clamped to [8, 256]."""
    return int(min(256, max(8, 2 ** round(math.log2(max(T, 1)) / 2))))


def _pad_time(x: Tensor, pad: int, value: float) -> Tensor:
    if pad == 0:
        return x
    filler = torch.full((x.shape[0], pad, x.shape[2]), value, dtype=x.dtype, device=x.device)
    return torch.cat([x, filler], dim=1)


def chunked_scan_forward(a: Tensor, b: Tensor, initial: Tensor | None, chunk: int | None = None) -> Tensor:
    """h_t = a_t h_{t-1} + b_t over dim 1 of (B, T, N) tensors, no autograd bookkeeping needed.

    Returns h of shape (B, T, N). ``initial`` is (B, N) or None (zero state).
    """
    B, T, N = b.shape
    if T == 0:
        return b.clone()
    C = chunk or auto_chunk(T)
    C = min(C, T)
    nC = -(-T // C)
    pad = nC * C - T
    # Padding at the end (a = 1, b = 0) never changes earlier states.
    av = _pad_time(a, pad, 1.0).reshape(B, nC, C, N)
    bv = _pad_time(b, pad, 0.0).reshape(B, nC, C, N)
    hl = torch.empty_like(bv)
    hl[:, :, 0] = bv[:, :, 0]
    for i in range(1, C):
        torch.addcmul(bv[:, :, i], av[:, :, i], hl[:, :, i - 1], out=hl[:, :, i])
    if nC == 1 and initial is None:
        h = hl
    else:
        P = torch.cumprod(av, dim=2)
        if nC == 1:
            carry = initial.unsqueeze(1)
        else:
            ends = chunked_scan_forward(P[:, :, -1], hl[:, :, -1], initial, None)  # s_c, (B, nC, N)
            first = torch.zeros_like(ends[:, :1]) if initial is None else initial.unsqueeze(1)
            carry = torch.cat([first, ends[:, :-1]], dim=1)
        h = torch.addcmul(hl, P, carry.unsqueeze(2))
    h = h.reshape(B, nC * C, N)
    return h[:, :T] if pad else h


class _ChunkedScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a: Tensor, b: Tensor, initial: Tensor | None, chunk: int | None):
        h = chunked_scan_forward(a, b, initial, chunk)
        ctx.save_for_backward(a, h, initial)
        ctx.chunk = chunk
        return h

    @staticmethod
    def backward(ctx, grad_h: Tensor):
        a, h, initial = ctx.saved_tensors
        complex_ = a.is_complex()
        ac = a.conj() if complex_ else a
        # a'_t = conj(a_{t+1}) (the last one is unused by a backward scan started at T-1).
        a_next = torch.cat([ac[:, 1:], torch.zeros_like(ac[:, :1])], dim=1)
        lam = chunked_scan_forward(a_next.flip(1), grad_h.flip(1), None, ctx.chunk).flip(1)
        grad_a = grad_initial = None
        if ctx.needs_input_grad[0]:
            h_prev = torch.cat([torch.zeros_like(h[:, :1]) if initial is None else initial.unsqueeze(1), h[:, :-1]], 1)
            grad_a = lam * (h_prev.conj() if complex_ else h_prev)
        if initial is not None and ctx.needs_input_grad[2]:
            grad_initial = ac[:, 0] * lam[:, 0]
        return grad_a, lam, grad_initial, None


def chunked_scan(a: Tensor, b: Tensor, initial: Tensor | None = None, chunk: int | None = None) -> Tensor:
    """Differentiable chunked scan of same-shape (B, T, N) tensors; returns h (B, T, N)."""
    return _ChunkedScan.apply(a.contiguous(), b.contiguous(), initial, chunk)
