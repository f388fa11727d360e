"""Chunked two-pass form of the first-order linear scan, with a reverse-scan backward.

Forward in time, with time split into chunks of length C (~sqrt(T)):
  1. all chunks at once, one step per position inside a chunk: the chunk's local end state
     e_c (started from 0) and the product p_c of its decays (products only, never a division: decays in
     (0, 1] underflow gracefully to 0 instead of overflowing as cumprod-then-divide would);
  2. across chunks: s_c = p_c * s_{c-1} + e_c, a scan of length T/C (itself chunked, recursively);
  3. all chunks at once again: h_t = a_t h_{t-1} + b_t started from the true incoming state s_{c-1}.
That is about 2*sqrt(T) + sqrt(T) Python steps instead of T, each over B*(T/C)*N elements; both passes
read a and b in place through strided views, and the reverse direction iterates backwards with no flips.

Backward: the adjoint of a linear scan is a linear scan run the other way in time,
  lam_t = g_t + conj(a_{t+1}) * lam_{t+1},   dL/db_t = lam_t,   dL/da_t = lam_t * conj(h_{t-1}),
  dL/dh0 = conj(a_0) * lam_0      (mirror images for a reverse scan),
so the backward reuses the same kernel and the autograd graph saves only a and h.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def auto_chunk(T: int) -> int:
    """Chunk length ~ sqrt(T) (balances the sequential steps of the two levels), clamped to [8, 256]."""
    return int(min(256, max(8, 2 ** round(math.log2(max(T, 1)) / 2))))


def _pad_time(x: Tensor, pad: int, value: float, front: bool) -> Tensor:
    if pad == 0:
        return x
    filler = torch.full((x.shape[0], pad, x.shape[2]), value, dtype=x.dtype, device=x.device)
    return torch.cat([filler, x] if front else [x, filler], dim=1)


class _FlushDenormals:
    """Flush subnormal floats to zero while the kernel runs (CPU only).

    Products of many decays in (0, 1) pass through the subnormal range on their way to 0, and x86 CPUs
    handle subnormals 10-100x slower than normal numbers; flushing them changes values by < 1e-38
    (float32) / 1e-308 (float64), far below any tolerance. PyTorch offers no getter for the mode, so it is
    switched off again on exit; code that wants it on globally should call torch.set_flush_denormal(True)
    after using the scan.
    """

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def __enter__(self) -> None:
        if self.enabled:
            torch.set_flush_denormal(True)

    def __exit__(self, *exc) -> None:
        if self.enabled:
            torch.set_flush_denormal(False)


def chunked_scan_forward(
    a: Tensor, b: Tensor, initial: Tensor | None, chunk: int | None = None, reverse: bool = False
) -> Tensor:
    """h_t = a_t h_{t-1} + b_t (or h_t = a_t h_{t+1} + b_t if ``reverse``) over dim 1 of (B, T, N) tensors.

    ``initial`` is (B, N) or None (zero state). Returns h of shape (B, T, N). No autograd bookkeeping.
    """
    with _FlushDenormals(b.device.type == "cpu"):
        return _chunked_scan_forward(a, b, initial, chunk, reverse)


def _chunked_scan_forward(
    a: Tensor, b: Tensor, initial: Tensor | None, chunk: int | None, reverse: bool
) -> Tensor:
    B, T, N = b.shape
    if T == 0:
        return b.clone()
    C = min(chunk or auto_chunk(T), T)
    nC = -(-T // C)
    pad = nC * C - T
    # Padding on the side processed last (a = 1, b = 0) never changes the real states.
    av = _pad_time(a, pad, 1.0, reverse).view(B, nC, C, N)
    bv = _pad_time(b, pad, 0.0, reverse).view(B, nC, C, N)
    order = range(C - 1, -1, -1) if reverse else range(C)
    first, rest = order[0], order[1:]

    if nC == 1:
        carry = None if initial is None else initial.unsqueeze(1)
    else:
        # pass 1: local end state and decay product of every chunk
        e = bv[:, :, first].clone()
        p = av[:, :, first].clone()
        for i in rest:
            e = torch.addcmul(bv[:, :, i], av[:, :, i], e)
            p.mul_(av[:, :, i])
        # level 2: states at chunk ends, then the state entering each chunk
        s = _chunked_scan_forward(p, e, initial, None, reverse)
        start = torch.zeros_like(s[:, :1]) if initial is None else initial.unsqueeze(1)
        carry = torch.cat([s[:, 1:], start], 1) if reverse else torch.cat([start, s[:, :-1]], 1)

    # pass 2: the states themselves, from the true incoming state of each chunk
    hv = torch.empty_like(bv)
    if carry is None:
        hv[:, :, first] = bv[:, :, first]
    else:
        torch.addcmul(bv[:, :, first], av[:, :, first], carry, out=hv[:, :, first])
    prev = first
    for i in rest:
        torch.addcmul(bv[:, :, i], av[:, :, i], hv[:, :, prev], out=hv[:, :, i])
        prev = i
    h = hv.view(B, nC * C, N)
    if pad:
        h = h[:, pad:] if reverse else h[:, :T]
    return h


class _ChunkedScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a: Tensor, b: Tensor, initial: Tensor | None, chunk: int | None, reverse: bool):
        h = chunked_scan_forward(a, b, initial, chunk, reverse)
        ctx.save_for_backward(a, h, initial)
        ctx.chunk, ctx.reverse = chunk, reverse
        return h

    @staticmethod
    def backward(ctx, grad_h: Tensor):
        a, h, initial = ctx.saved_tensors
        reverse = ctx.reverse
        ac = a.conj() if a.is_complex() else a
        hc = h.conj() if h.is_complex() else h
        zero = torch.zeros_like(ac[:, :1])
        # The adjoint runs the other way; the coefficient linking t to its successor in the adjoint
        # direction is the decay of that successor in the original direction.
        if reverse:
            a_adj = torch.cat([zero, ac[:, :-1]], 1)  # lam_t = g_t + conj(a_{t-1}) lam_{t-1}
        else:
            a_adj = torch.cat([ac[:, 1:], zero], 1)  # lam_t = g_t + conj(a_{t+1}) lam_{t+1}
        lam = chunked_scan_forward(a_adj, grad_h.contiguous(), None, ctx.chunk, not reverse)
        grad_a = grad_initial = None
        if ctx.needs_input_grad[0]:
            grad_a = a_adj  # a_adj is no longer needed: reuse its memory rather than allocate again
            # dL/da_t = lam_t * conj(state entering t)
            if reverse:
                torch.mul(lam[:, :-1], hc[:, 1:], out=grad_a[:, :-1])
                edge, init_pos = grad_a[:, -1], -1
            else:
                torch.mul(lam[:, 1:], hc[:, :-1], out=grad_a[:, 1:])
                edge, init_pos = grad_a[:, 0], 0
            if initial is None:
                edge.zero_()
            else:
                torch.mul(lam[:, init_pos], initial.conj() if initial.is_complex() else initial, out=edge)
        if initial is not None and ctx.needs_input_grad[2]:
            pos = -1 if reverse else 0
            grad_initial = ac[:, pos] * lam[:, pos]
        return grad_a, lam, grad_initial, None, None


def chunked_scan(
    a: Tensor, b: Tensor, initial: Tensor | None = None, chunk: int | None = None, reverse: bool = False
) -> Tensor:
    """Differentiable chunked scan of same-shape (B, T, N) tensors; returns h (B, T, N)."""
    if initial is not None:
        initial = initial.contiguous()
    return _ChunkedScan.apply(a.contiguous(), b.contiguous(), initial, chunk, reverse)
