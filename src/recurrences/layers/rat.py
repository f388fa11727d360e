"""RAT: a gated recurrence inside chunks of L tokens, softmax attention across chunks (Wei et al., 2025).

Token t sits in chunk c = floor(t / L) at offset l = t mod L (0-indexed, absolute positions). Per
channel, with one forget gate g_t in (0, 1)^D shared by keys and values and a reset at every chunk start:

    k~_t = g_t * k~_{t-1} + (1 - g_t) * k_t,    v~_t = g_t * v~_{t-1} + (1 - g_t) * v_t,   k~ = v~ = 0 before l = 0

Chunk c's summary is its final state (K_c, V_c) = (k~, v~) at l = L - 1. Per head (d_h = D / H,
scale d_h^{-1/2}, R_p = RoPE at *chunk* index p), a query attends to the summaries of all strictly
earlier chunks plus the running state of its own chunk (the rotations of the latter cancel):

    s_{t,j} = <R_c q_t, R_j K_j> / sqrt(d_h)  (j < c),      s_{t,self} = <q_t, k~_t> / sqrt(d_h)
    y_t = (sum_{j<c} e^{s_{t,j}} V_j + e^{s_{t,self}} v~_t) / (sum_{j<c} e^{s_{t,j}} + e^{s_{t,self}})
    o_t = W_out (sigmoid(z_t) * y_t)

Projections (one bias-free W_in: D -> 3D + 2 G d_h): z (D), v (D), g~ (D), q^ (G d_h), k^ (G d_h);
g = sigmoid(g~ + b_g) with a learnable per-channel bias b_g (init log U(1, L - 1)); q and k are the
G group vectors tiled over the heads (head h uses group h mod G; q is not gated, k is: heads that share
a group still see different keys). L = 1 is softmax attention over gated keys/values (RoPE at token
positions); L >= T is the pure gated RNN o_t = W_out(sigmoid(z_t) * v~_t).

Forms: "reference" is a direct loop over positions (explicit softmax per token); "parallel" runs the
intra-chunk scan with :func:`recurrences.scan.linear_scan` on the sequence reshaped to chunks and the
inter-chunk attention as a blocked softmax over the chunk summaries (custom backward; memory O(T d)
beyond the probabilities it keeps when they are small) merged with the self term by log-sum-exp. Any T works (a trailing partial
chunk's summary is simply never attended to).

Padding (``mask`` False): a padded position is an empty time step. It leaves the running state
untouched (gate 1, no input), a chunk with no real token contributes no summary, and its output is 0.
Chunk boundaries stay at absolute positions, so right padding never changes real outputs, left padding
by a multiple of L gives exactly the unpadded outputs, and other padding keeps real outputs independent
of the padded *content* but shifts which real tokens share a chunk (see docs/rat.md).

Generation (:meth:`RAT.step`) keeps one RoPE-rotated key and one value per finished chunk plus the
running state (:class:`RATState`): O(T / L) memory and O(T / L) work per token.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from recurrences.scan import linear_scan

from .._optional import optional_import
from ._rope import rope_cos_sin, rotate_half
from .base import Mixer, check_finite_step_input, check_step_input, register_hybrid, register_mixer

__all__ = ["RAT", "RATState", "rat_reference", "rat_parallel", "chunk_attention"]

# Target number of score elements held at once by the blocked inter-chunk attention.
_BLOCK_ELEMS = 1 << 20  # 256 query rows x 1k keys x 4 heads: finer causal skipping, cache-sized blocks
# Keep the attention probabilities for the backward when they total at most this many numbers.
_SAVE_P_ELEMS = 1 << 26
STEP_METHODS = ("auto", "eager", "compiled")
# step_method="auto" uses the compiled step up to this batch size: on the test machine it was 1.4-2x faster
# than the eager step at batch 1-8 and 10-20% slower at batch 16, where SDPA's batched products win.
_AUTO_KERNEL_MAX_BATCH = 8
_EMPTY_NP = {dt: torch.empty(0, dtype=dt).numpy() for dt in (torch.float32, torch.float64)}


# -- state --------------------------------------------------------------------------------------------
@dataclass
class RATState:
    """Decoding state of :class:`RAT`.

    keys, values: (B, H, capacity, d) buffers; the first ``n_chunks`` slots hold the summaries of the
        finished chunks, keys already rotated by RoPE at their chunk index.
    valid: (B, capacity) bool; False for a chunk that held no real token (all padding).
    k_run, v_run: (B, H, d) running state of the current chunk (not rotated).
    run_valid: (B,) bool; whether the current chunk has seen a real token.
    pos: absolute position of the next token.
    all_valid: True when no finished chunk is invalid (decoding then skips the mask).

    Slots from ``n_chunks`` on are scratch space: :meth:`RAT.step` keeps the rotated running state in
    slot ``n_chunks`` while a chunk is open.

    :meth:`RAT.step` writes into the buffers in place (amortised O(1) append); :meth:`clone` before
    branching one state into several continuations.
    """

    keys: Tensor
    values: Tensor
    valid: Tensor
    n_chunks: int
    k_run: Tensor
    v_run: Tensor
    run_valid: Tensor
    pos: int
    all_valid: bool = True
    # numpy views of the fields above, set by the compiled step for the next one (see RAT._kernel_arrays)
    _arrays: tuple | None = field(default=None, repr=False, compare=False)
    # what the steps derive from the layer's parameters, passed along one chain of states (RAT._snapshot)
    _decode: _Snapshot | None = field(default=None, repr=False, compare=False)

    def __getstate__(self) -> dict:
        # copy.deepcopy, pickle and torch.save keep the fields, not the step's caches: the numpy views in
        # _arrays would become copies of their own, no longer views of the copied tensors
        return {**self.__dict__, "_arrays": None, "_decode": None}

    def clone(self) -> RATState:
        return RATState(
            self.keys.clone(),
            self.values.clone(),
            self.valid.clone(),
            self.n_chunks,
            self.k_run.clone(),
            self.v_run.clone(),
            self.run_valid.clone(),
            self.pos,
            self.all_valid,
        )

    def cache_numel(self) -> int:
        """Number of cached numbers: the finished-chunk keys and values plus the running state."""
        n = self.n_chunks
        return 2 * self.keys[:, :, :n].numel() + self.k_run.numel() + self.v_run.numel()


@dataclass
class _Snapshot:
    """Tensors a decoding step derives from the parameters, made at the first step of a chain of states
    and passed along it: the in_proj bias row [0, 0, b_g, 0, 0] (eager step), and W_in^T, W_out^T
    (row-major) and b_g as numpy arrays (compiled step), each built when first needed. ``key`` = (data pointer,
    version) of in_proj.weight, out_proj.weight and gate_bias; ``params`` holds aliases of them, which
    keeps their storage alive, so an equal data pointer means the same tensor."""

    key: tuple
    params: tuple
    bias_row: Tensor | None = None
    w_in_t: np.ndarray | None = None
    w_out_t: np.ndarray | None = None
    b_g: np.ndarray | None = None


# -- the inter-chunk attention (parallel form) ---------------------------------------------------------
def _block_rows(B: int, H: int, n_keys: int, T: int) -> int:
    """Query rows per block: within the score budget, and >= 16 blocks on long inputs (causal skipping)."""
    budget = _BLOCK_ELEMS // max(1, B * H * max(n_keys, 1))
    return max(1, min(T, budget, max(64, -(-T // 16))))


class _ChunkAttention(torch.autograd.Function):
    """softmax over [earlier chunk summaries ; own running state], blocked over queries.

    Saves the output and the log-sum-exp; the probabilities of each block are kept for the backward
    when they fit in ``_SAVE_P_ELEMS`` numbers, and recomputed block by block otherwise.
    """

    @staticmethod
    def forward(ctx, q, kb, vb, s_self, vt, cq, kbias):  # noqa: D102
        q, kb, vb, vt = q.contiguous(), kb.contiguous(), vb.contiguous(), vt.contiguous()
        B, H, T, d = q.shape
        y = torch.empty_like(vt)
        lse = torch.empty_like(s_self)
        rows = _block_rows(B, H, kb.shape[2], T)
        cq_list = cq.tolist()
        blocks = [(r0, min(T, r0 + rows), cq_list[min(T, r0 + rows) - 1]) for r0 in range(0, T, rows)]
        # cq is non-decreasing: a block's last row sees the most keys (n of them)
        keep = (
            any(ctx.needs_input_grad) and sum((r1 - r0) * n for r0, r1, n in blocks) * B * H <= _SAVE_P_ELEMS
        )
        saved = []
        for r0, r1, n in blocks:
            ss = s_self[:, :, r0:r1]
            if n == 0:
                y[:, :, r0:r1] = vt[:, :, r0:r1]
                lse[:, :, r0:r1] = ss
                saved.append(None)
                continue
            S = _scores(q[:, :, r0:r1], kb[:, :, :n], kbias[:, :, :n], cq[r0:r1])
            m = torch.maximum(S.amax(-1), ss)
            P = S.sub_(m.unsqueeze(-1)).exp_()
            ps = torch.exp(ss - m)
            den = P.sum(-1) + ps
            y[:, :, r0:r1] = (P @ vb[:, :, :n] + ps.unsqueeze(-1) * vt[:, :, r0:r1]) / den.unsqueeze(-1)
            lse[:, :, r0:r1] = m + torch.log(den)
            saved.append(P.div_(den.unsqueeze(-1)) if keep else None)
        ctx.blocks = blocks
        ctx.keep = keep
        probs = [p for p in saved if p is not None] if keep else []
        ctx.save_for_backward(q, kb, vb, s_self, vt, cq, kbias, y, lse, *probs)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):  # noqa: D102
        q, kb, vb, s_self, vt, cq, kbias, y, lse, *kept = ctx.saved_tensors
        probs = iter(kept) if ctx.keep else None
        dy = dy.contiguous()
        delta = (dy * y).sum(-1)  # (B, H, T)
        ps = torch.exp(s_self - lse)
        ds_self = ps * ((dy * vt).sum(-1) - delta)
        dvt = ps.unsqueeze(-1) * dy
        dq = torch.zeros_like(q)
        dkb = torch.zeros_like(kb)
        dvb = torch.zeros_like(vb)
        for r0, r1, n in ctx.blocks:
            if n == 0:
                continue
            qb, dyb = q[:, :, r0:r1], dy[:, :, r0:r1]
            if probs is not None:
                P = next(probs)
            else:
                S = _scores(qb, kb[:, :, :n], kbias[:, :, :n], cq[r0:r1])
                P = S.sub_(lse[:, :, r0:r1].unsqueeze(-1)).exp_()
            dvb[:, :, :n] += P.transpose(-1, -2) @ dyb
            dS = (dyb @ vb[:, :, :n].transpose(-1, -2)).sub_(delta[:, :, r0:r1].unsqueeze(-1)).mul_(P)
            dq[:, :, r0:r1] = dS @ kb[:, :, :n]
            dkb[:, :, :n] += dS.transpose(-1, -2) @ qb
        return dq, dkb, dvb, ds_self, dvt, None, None


def _scores(q: Tensor, kb: Tensor, kbias: Tensor, cq: Tensor) -> Tensor:
    """q kb^T + bias, with -inf where key j is not strictly before the query's chunk (j >= cq)."""
    n = kb.shape[2]
    S = (q @ kb.transpose(-1, -2)).add_(kbias.unsqueeze(2))
    c0 = int(cq[0])
    if c0 < n:  # the block's first rows do not see keys c0 .. n - 1: mask only that corner
        late = torch.arange(c0, n, device=q.device).unsqueeze(0) >= cq.unsqueeze(1)  # (rows, n - c0)
        S[..., c0:].masked_fill_(late, float("-inf"))
    return S


def chunk_attention(
    q: Tensor, kb: Tensor, vb: Tensor, s_self: Tensor, vt: Tensor, cq: Tensor, kbias: Tensor
) -> Tensor:
    """y_t = softmax over {q_t . kb_j + kbias_j : j < cq_t} and {s_self_t}, applied to {vb_j} and vt_t.

    q (B, H, T, d) already rotated and scaled; kb, vb (B, H, N, d); s_self (B, H, T); vt (B, H, T, d);
    cq (T,) long, non-decreasing (the query's chunk index); kbias (B, 1, N) with 0 or -inf (padding).
    Equal to the log-sum-exp merge of the inter-chunk attention and the self term; memory O(T d).
    """
    return _ChunkAttention.apply(q, kb, vb, s_self, vt, cq, kbias)


# -- forms ----------------------------------------------------------------------------------------------
def _rope_at(x: Tensor, pos: Tensor | int, base: float | None) -> Tensor:
    """RoPE of x (..., P, d) at positions pos (P,), or at one int position (identity when base is None)."""
    if base is None:
        return x
    if isinstance(pos, int):
        cos, sin = _rope_one(pos, x.shape[-1], base, x.dtype, x.device)
    else:
        cos, sin = rope_cos_sin(pos, x.shape[-1], base, dtype=x.dtype)
    return x * cos + rotate_half(x) * sin


@functools.lru_cache(maxsize=16)
def _rope_matrix(pos: int, d: int, base: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    """M with x @ M = R_pos x (RoPE as a d x d matrix, rows = rotated basis vectors).

    Cached across calls, so built outside inference mode: an inference tensor in the cache would break
    every later use of it with gradients."""
    with torch.inference_mode(False):
        return _rope_at(torch.eye(d, dtype=dtype, device=device), pos, base)


@functools.lru_cache(maxsize=16)
def _rope_one(
    pos: int, d: int, base: float, dtype: torch.dtype, device: torch.device
) -> tuple[Tensor, Tensor]:
    """cos/sin at one position (decoding asks for the same chunk index L times in a row); built outside
    inference mode, as it is cached (see _rope_matrix)."""
    with torch.inference_mode(False):
        return rope_cos_sin(torch.tensor([pos], device=device), d, base, dtype=dtype)


def _empty_prev(B: int, H: int, d: int, like: Tensor) -> RATState:
    z = like.new_zeros(B, H, 0, d)
    zr = like.new_zeros(B, H, d)
    return RATState(
        z,
        z.clone(),
        torch.zeros(B, 0, dtype=torch.bool, device=like.device),
        0,
        zr,
        zr.clone(),
        torch.zeros(B, dtype=torch.bool, device=like.device),
        0,
    )


def rat_parallel(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    g: Tensor,
    *,
    chunk_size: int,
    mask: Tensor | None = None,
    state: RATState | None = None,
    rope_base: float | None = 10000.0,
) -> tuple[Tensor, RATState]:
    """The parallel form: chunk-reshaped scan + blocked inter-chunk attention merged with the self term.

    q, k, v, g: (B, T, H, d), g the forget gate in (0, 1); mask (B, T) bool; ``state`` continues a
    previous segment (absolute positions start at ``state.pos``). Returns y (B, T, H, d) and the state
    after the segment (finished-chunk buffers sized exactly, no spare capacity).
    """
    B, T, H, d = q.shape
    L = chunk_size
    st = _empty_prev(B, H, d, q) if state is None else state
    pos0 = st.pos
    r = pos0 % L  # offset of the segment's first token in its chunk
    n_prev = st.n_chunks  # == pos0 // L
    n = -(-(r + T) // L)  # chunks touched by the segment
    # the scan runs on chunks of Lc slots: L, except when the segment stays inside one chunk (L >= r + T,
    # e.g. the gated-RNN limit of a huge L): then just its r + T slots, so that time and memory follow T
    Lc = L if n > 1 else r + T
    total = n * Lc

    # intra-chunk scan on (B * n, Lc, H, 2, d) (keys and values share the gate); the r leading slots of
    # the first chunk carry the previous running state in, the trailing slots pad the last chunk
    x = torch.stack([k, v], dim=3)
    a = g.unsqueeze(3)
    b = (1 - a) * x
    if mask is not None:
        m5 = mask[:, :, None, None, None]
        a = torch.where(m5, a, torch.ones((), dtype=a.dtype, device=a.device))
        b = torch.where(m5, b, torch.zeros((), dtype=b.dtype, device=b.device))
    padded = r > 0 or total > T
    if padded:
        a = F.pad(a, (0, 0, 0, 0, 0, 0, r, total - r - T), value=1.0)
        b = F.pad(b, (0, 0, 0, 0, 0, 0, r, total - r - T), value=0.0)
    init = None
    if r > 0:
        init = b.new_zeros(B, n, H, 2, d)
        init[:, 0] = torch.stack([st.k_run, st.v_run], dim=2).to(b.dtype)
        init = init.reshape(B * n, H, 2, d)
    h, h_last = linear_scan(
        a.reshape(B * n, Lc, H, 1, d), b.reshape(B * n, Lc, H, 2, d), init, check_finite=False
    )
    h = h.reshape(B, total, H, 2, d)
    if padded:
        h = h[:, r : r + T]
    kt, vt = h.unbind(3)  # running states (B, T, H, d)
    # the final state of every chunk: summaries of chunks n_prev .. n_prev + n - 1, (B, H, n, d)
    ks, vs = h_last.reshape(B, n, H, 2, d).transpose(1, 2).unbind(3)

    # which chunks hold a real token
    if mask is None:
        chunk_ok = torch.ones(B, n, dtype=torch.bool, device=q.device)
    else:
        mp = F.pad(mask, (r, total - r - T), value=False).view(B, n, Lc).any(-1)
        chunk_ok = mp.clone()
        if r > 0:
            chunk_ok[:, 0] |= st.run_valid

    # attention over summaries of earlier chunks (cached ones first) plus the self term
    chunk_idx = torch.arange(n_prev, n_prev + n, device=q.device)
    ks_rot = _rope_at(ks, chunk_idx, rope_base)
    kb = torch.cat([st.keys[:, :, :n_prev].to(q.dtype), ks_rot[:, :, : n - 1]], dim=2)
    vb = torch.cat([st.values[:, :, :n_prev].to(q.dtype), vs[:, :, : n - 1]], dim=2)
    ok = torch.cat([st.valid[:, :n_prev], chunk_ok[:, : n - 1]], dim=1)
    kbias = torch.zeros(B, 1, ok.shape[1], dtype=q.dtype, device=q.device).masked_fill(
        ~ok[:, None], float("-inf")
    )
    scale = d**-0.5
    cq = torch.arange(pos0, pos0 + T, device=q.device) // L
    qh = q.transpose(1, 2) * scale  # (B, H, T, d)
    s_self = (qh * kt.transpose(1, 2)).sum(-1)
    qr = _rope_at(qh, cq, rope_base)
    y = chunk_attention(qr, kb, vb, s_self, vt.transpose(1, 2), cq, kbias).transpose(1, 2)

    # the state after the segment
    n_done = (pos0 + T) // L - n_prev  # chunks of this segment that finished
    valid = torch.cat([st.valid[:, :n_prev], chunk_ok[:, :n_done]], dim=1)
    new = RATState(
        torch.cat([st.keys[:, :, :n_prev].to(q.dtype), ks_rot[:, :, :n_done]], dim=2),
        torch.cat([st.values[:, :, :n_prev].to(q.dtype), vs[:, :, :n_done]], dim=2),
        valid,
        n_prev + n_done,
        kt[:, -1],
        vt[:, -1],
        chunk_ok[:, (r + T - 1) // L],
        pos0 + T,
        bool(valid.all()),
    )
    return y, new


def _token(
    q_t: Tensor,
    k_t: Tensor,
    v_t: Tensor,
    g_t: Tensor,
    m_t: Tensor | None,
    keys: Tensor,
    values: Tensor,
    valid: Tensor,
    k_run: Tensor,
    v_run: Tensor,
    run_valid: Tensor,
    pos: int,
    L: int,
    rope_base: float | None,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One position of RAT written out: update the running state, then the explicit softmax.

    q_t, k_t, v_t, g_t: (B, H, d); m_t (B,) bool or None; keys/values (B, H, c, d) the rotated
    summaries of the c = pos // L earlier chunks, valid (B, c). Returns (y_t, k_run, v_run, run_valid).
    """
    if pos % L == 0:  # a new chunk: forget everything
        k_run, v_run = torch.zeros_like(k_t), torch.zeros_like(v_t)
        run_valid = torch.zeros_like(run_valid)
    if m_t is None:
        k_run = g_t * k_run + (1 - g_t) * k_t
        v_run = g_t * v_run + (1 - g_t) * v_t
        run_valid = torch.ones_like(run_valid)
    else:
        m = m_t[:, None, None]
        k_run = torch.where(m, g_t * k_run + (1 - g_t) * k_t, k_run)
        v_run = torch.where(m, g_t * v_run + (1 - g_t) * v_t, v_run)
        run_valid = run_valid | m_t
    d = q_t.shape[-1]
    c = pos // L
    qs = q_t * d**-0.5
    s_self = (qs * k_run).sum(-1, keepdim=True)  # (B, H, 1)
    if c == 0:
        return v_run, k_run, v_run, run_valid
    qr = _rope_at(qs.unsqueeze(-2), c, rope_base)  # (B, H, 1, d)
    s = (qr @ keys.transpose(-1, -2)).squeeze(-2)  # (B, H, c)
    s = s.masked_fill(~valid[:, None, :], float("-inf"))
    p = torch.softmax(torch.cat([s, s_self], dim=-1), dim=-1)
    y = (p[..., :-1].unsqueeze(-2) @ values).squeeze(-2) + p[..., -1:] * v_run
    return y, k_run, v_run, run_valid


def rat_reference(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    g: Tensor,
    *,
    chunk_size: int,
    mask: Tensor | None = None,
    state: RATState | None = None,
    rope_base: float | None = 10000.0,
) -> tuple[Tensor, RATState]:
    """The reference form: a direct loop over positions (same arguments and results as :func:`rat_parallel`)."""
    B, T, H, d = q.shape
    L = chunk_size
    st = _empty_prev(B, H, d, q) if state is None else state
    keys = list(st.keys[:, :, : st.n_chunks].to(q.dtype).unbind(2))
    values = list(st.values[:, :, : st.n_chunks].to(q.dtype).unbind(2))
    valid = list(st.valid[:, : st.n_chunks].unbind(1))
    k_run, v_run, run_valid = st.k_run.to(q.dtype), st.v_run.to(q.dtype), st.run_valid
    ys = []
    for t in range(T):
        pos = st.pos + t
        c = pos // L
        K = torch.stack(keys, 2) if c else q.new_zeros(B, H, 0, d)
        V = torch.stack(values, 2) if c else q.new_zeros(B, H, 0, d)
        ok = torch.stack(valid, 1) if c else torch.zeros(B, 0, dtype=torch.bool, device=q.device)
        m_t = None if mask is None else mask[:, t]
        y_t, k_run, v_run, run_valid = _token(
            q[:, t], k[:, t], v[:, t], g[:, t], m_t, K, V, ok, k_run, v_run, run_valid, pos, L, rope_base
        )
        ys.append(y_t)
        if pos % L == L - 1:  # the chunk is finished: its state becomes a summary
            keys.append(_rope_at(k_run.unsqueeze(-2), c, rope_base).squeeze(-2))
            values.append(v_run)
            valid.append(run_valid)
    y = torch.stack(ys, 1) if ys else q.new_zeros(B, 0, H, d)
    n = len(keys)
    ok = torch.stack(valid, 1) if n else torch.zeros(B, 0, dtype=torch.bool, device=q.device)
    new = RATState(
        torch.stack(keys, 2) if n else q.new_zeros(B, H, 0, d),
        torch.stack(values, 2) if n else q.new_zeros(B, H, 0, d),
        ok,
        n,
        k_run,
        v_run,
        run_valid,
        st.pos + T,
        bool(ok.all()),
    )
    return y, new


_FORMS = {"reference": rat_reference, "parallel": rat_parallel}


# -- the mixer ------------------------------------------------------------------------------------------
class RAT(Mixer):
    """RAT: gated recurrence inside chunks of ``chunk_size`` tokens, softmax attention across chunks.

    Options: ``chunk_size`` L (default 16; 1 = softmax attention, >= T = a gated RNN), ``n_groups`` G
    of shared q/k vectors (default 2 when n_heads is even, else 1), ``rope`` (chunk-index RoPE, default
    True), ``rope_base`` (10000), ``step_method`` ("auto", "eager" or "compiled"; see :meth:`step`).
    """

    forms = ("reference", "parallel")

    def __init__(
        self,
        d_model: int,
        n_heads: int = 1,
        *,
        chunk_size: int = 16,
        n_groups: int | None = None,
        rope: bool = True,
        rope_base: float = 10000.0,
        step_method: str = "auto",
        form: str = "auto",
    ) -> None:
        super().__init__(d_model, n_heads, form=form)
        self.step_method = step_method
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"RAT: chunk_size must be a positive int, got {chunk_size!r}")
        if n_groups is None:
            n_groups = 2 if n_heads % 2 == 0 else 1
        if isinstance(n_groups, bool) or not isinstance(n_groups, int) or n_groups < 1 or n_heads % n_groups:
            raise ValueError(
                f"RAT: n_groups must be a positive int dividing n_heads={n_heads}, got {n_groups!r}"
            )
        self.head_dim = d_model // n_heads
        if rope and self.head_dim % 2:
            raise ValueError(f"RAT: rope=True needs an even head dim, got d_model/n_heads = {self.head_dim}")
        if (
            isinstance(rope_base, bool)
            or not isinstance(rope_base, (int, float))
            or not 0 < rope_base < math.inf
        ):
            raise ValueError(f"RAT: rope_base must be a positive finite number, got {rope_base!r}")
        self.chunk_size = chunk_size
        self.n_groups = n_groups
        self.rope = bool(rope)
        self.rope_base = float(rope_base)
        D, Gd = d_model, n_groups * self.head_dim
        self.in_proj = nn.Linear(D, 3 * D + 2 * Gd, bias=False)  # z, v, g~, q^, k^
        self.gate_bias = nn.Parameter(torch.zeros(D))
        self.out_proj = nn.Linear(D, D, bias=False)
        self._true: dict[int, Tensor] = {}  # step(): shared all-True run_valid tensors, per batch size
        self._rope_cache: tuple[int, Tensor, float] | None = None  # step(): RoPE matrix of the current chunk
        self._rope_np_cache: tuple | None = None  # compiled step(): (c, dtype, base, cos, sin) now
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Linear weights N(0, 0.02); forget-gate bias log U(1, L - 1) (0 for L <= 2): sigmoid in [0.5, 1 - 1/L]."""
        nn.init.normal_(self.in_proj.weight, std=0.02)
        nn.init.normal_(self.out_proj.weight, std=0.02)
        with torch.no_grad():
            L = self.chunk_size
            if L > 2:
                self.gate_bias.copy_(torch.empty_like(self.gate_bias).uniform_(1.0, L - 1.0).log())
            else:
                self.gate_bias.zero_()

    @property
    def step_method(self) -> str:
        """How :meth:`step` runs: "auto", "eager" or "compiled" (settable)."""
        return self._step_method

    @step_method.setter
    def step_method(self, value: str) -> None:
        if value not in STEP_METHODS:
            raise ValueError(f"RAT: step_method must be one of {STEP_METHODS}, got {value!r}")
        self._step_method = value

    def resolve_form(self, T: int) -> str:
        """The form used for length T: "auto" means "parallel"."""
        return "parallel" if self.form == "auto" else self.form

    @property
    def _rope_base(self) -> float | None:
        return self.rope_base if self.rope else None

    # -- projections --------------------------------------------------------------------------------
    def _project(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """x (B, T, D) -> output gate z (B, T, D) and q, k, v, g (B, T, H, d)."""
        B, T, D = x.shape
        H, d, G = self.n_heads, self.head_dim, self.n_groups
        zl, v, gl, qg, kg = self.in_proj(x).split([D, D, D, G * d, G * d], dim=-1)
        work = torch.promote_types(x.dtype, torch.float32)  # the gate is computed in (at least) float32
        g = torch.sigmoid(gl.to(work) + self.gate_bias.to(work)).to(x.dtype)
        q = qg.view(B, T, 1, G, d).expand(B, T, H // G, G, d).reshape(B, T, H, d)
        k = kg.view(B, T, 1, G, d).expand(B, T, H // G, G, d).reshape(B, T, H, d)
        return torch.sigmoid(zl), q, k, v.view(B, T, H, d), g.view(B, T, H, d)

    # -- state ---------------------------------------------------------------------------------------
    def init_state(self, batch_size: int, device=None, dtype=None) -> RATState:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"RAT.init_state: batch_size must be a positive int, got {batch_size!r}")
        w = self.in_proj.weight
        like = torch.empty(
            0, device=w.device if device is None else device, dtype=w.dtype if dtype is None else dtype
        )
        return _empty_prev(batch_size, self.n_heads, self.head_dim, like)

    def _check_state(self, state: object, B: int) -> RATState:
        if not isinstance(state, RATState):
            raise TypeError(f"RAT: state must be a RATState (from init_state), got {type(state).__name__}")
        H, d = self.n_heads, self.head_dim
        if state.keys.dim() != 4 or tuple(state.keys.shape[:2]) != (B, H) or state.keys.shape[3] != d:
            raise ValueError(
                f"RAT: state.keys has shape {tuple(state.keys.shape)}, expected (B, H, capacity, d) = ({B}, {H}, *, {d})"
            )
        # every buffer is checked: the compiled step writes through them with no bounds checks of its own
        if state.values.shape != state.keys.shape:
            raise ValueError(
                f"RAT: state.values has shape {tuple(state.values.shape)}, expected state.keys' {tuple(state.keys.shape)}"
            )
        cap = state.keys.shape[2]
        if state.valid.shape != (B, cap) or state.valid.dtype != torch.bool:
            raise ValueError(
                f"RAT: state.valid must be a bool tensor of shape (B, capacity) = ({B}, {cap}), "
                f"got {state.valid.dtype} {tuple(state.valid.shape)}"
            )
        if state.k_run.shape != (B, H, d) or state.v_run.shape != (B, H, d):
            raise ValueError(f"RAT: state.k_run/v_run must have shape (B, H, d) = ({B}, {H}, {d})")
        if state.run_valid.shape != (B,) or state.run_valid.dtype != torch.bool:
            raise ValueError(f"RAT: state.run_valid must be a bool tensor of shape (B,) = ({B},)")
        if type(state.pos) is not int or type(state.n_chunks) is not int:
            raise TypeError(
                f"RAT: state.pos and state.n_chunks must be Python ints, got {type(state.pos).__name__} "
                f"and {type(state.n_chunks).__name__}"
            )
        if state.pos < 0 or state.n_chunks != state.pos // self.chunk_size:
            raise ValueError(
                f"RAT: state.pos={state.pos!r} and state.n_chunks={state.n_chunks!r} do not match chunk_size="
                f"{self.chunk_size} (expected n_chunks == pos // chunk_size); was it made by another RAT layer?"
            )
        if cap < state.n_chunks:
            raise ValueError(
                f"RAT: state.keys holds {cap} chunk slots, fewer than state.n_chunks={state.n_chunks}"
            )
        return state

    # -- forward -------------------------------------------------------------------------------------
    def _forward(self, x: Tensor, *, mask: Tensor | None, state: RATState | None, return_state: bool):
        B, T, D = x.shape
        if state is not None:
            state = self._check_state(state, B)
        if mask is not None and bool(mask.all()):
            mask = None
        z, q, k, v, g = self._project(x)
        fn = _FORMS[self.resolve_form(T)]
        o, new = fn(q, k, v, g, chunk_size=self.chunk_size, mask=mask, state=state, rope_base=self._rope_base)
        y = self.out_proj(z * o.reshape(B, T, D))
        if mask is not None:
            y = y * mask.unsqueeze(-1).to(y.dtype)  # outputs at padding are meaningless; make them 0
        return (y, new) if return_state else y

    def step(self, x_t: Tensor, state: RATState | None) -> tuple[Tensor, RATState]:
        """Decode one token: x_t (B, D) -> y_t (B, D); O(pos / L) work against the chunk-summary cache.

        The running state, rotated at the current chunk index c, is written into cache slot n = c (spec
        B.8): <R_c q, R_c k~> = <q, k~> is the self term, so one softmax over slots 0..c gives y_t,
        y_t = softmax(R_c q [K_0; ..; K_{c-1}; R_c k~_t]^T / sqrt(d)) [V_0; ..; V_{c-1}; v~_t]. When the
        chunk ends, that slot already holds its summary and simply becomes a finished chunk.

        Under no_grad the buffers are written in place (amortised O(1) append); with gradients enabled
        they are concatenated instead, so that autograd never sees an in-place write.

        ``step_method`` picks the implementation: "eager" (torch calls), "compiled" (the whole step,
        projections included, in one numba kernel, :mod:`recurrences.layers._rat_kernel`; CPU,
        float32/float64, under ``torch.no_grad()``), or "auto": compiled where it applies, numba is
        installed and the batch has at most 8 sequences (larger batches run faster eager), else eager.
        Both give the same result (tests hold them equal).
        """
        params = self._decode_params()
        check_step_input("RAT.step", x_t, self.d_model, like=params[0], finite=False)
        if torch.is_autocast_enabled("cpu" if x_t.is_cpu else x_t.device.type):
            # under autocast the step runs in the weights' dtype, autocast off: the cache and running
            # state are accumulated in it (as the forward keeps its scan and softmax statistics in float32)
            with torch.autocast(x_t.device.type, enabled=False):
                return self.step(x_t.to(params[0].dtype), state)
        B, D = x_t.shape
        st = (
            self.init_state(B, device=x_t.device, dtype=x_t.dtype)
            if state is None
            else self._check_state(state, B)
        )
        kernel = self._step_kernel(x_t)
        if kernel is not None:
            return self._step_compiled(kernel, x_t, st, params)  # (the kernel checks that x_t is finite)
        check_finite_step_input("RAT.step", x_t)
        return self._step_eager(x_t, st, params)

    def _decode_params(self) -> tuple[Tensor, Tensor, Tensor]:
        """(in_proj.weight, out_proj.weight, gate_bias), read from the modules' parameter dicts: a step
        costs tens of microseconds at batch 1, and nn.Module attribute lookups about 0.5 us each
        (a parametrized or otherwise non-plain weight falls back to the attribute)."""
        w_in = self._modules["in_proj"]._parameters.get("weight")
        w_out = self._modules["out_proj"]._parameters.get("weight")
        b_g = self._parameters.get("gate_bias")
        if w_in is None or w_out is None or b_g is None:
            return self.in_proj.weight, self.out_proj.weight, self.gate_bias
        return w_in, w_out, b_g

    def _snapshot(self, st: RATState, params: tuple[Tensor, Tensor, Tensor]) -> _Snapshot:
        """The state's snapshot of ``params`` (:meth:`_decode_params`), or a new one when there is none
        or a parameter has changed (other storage, or an in-place update: a new version)."""
        key = tuple((p.data_ptr(), p._version) for p in params)
        snap = st._decode
        if snap is None or snap.key != key:
            w_in, w_out, b_g = params
            if w_out.dtype != w_in.dtype or b_g.dtype != w_in.dtype:  # (the forward refuses them too)
                raise TypeError(
                    f"RAT.step: in_proj.weight, out_proj.weight and gate_bias must share one dtype, got "
                    f"{w_in.dtype}, {w_out.dtype} and {b_g.dtype}; cast the whole layer (layer.to(dtype))"
                )
            snap = _Snapshot(key, tuple(p.detach() for p in params))
        return snap

    @staticmethod
    def _shared_with_autograd(t: Tensor) -> bool:
        """Whether t may not be written in place: part of a graph (a state from a step or prefill with
        gradients, which autograd may have saved), or an inference tensor outside inference mode."""
        return t.requires_grad or (t.is_inference() and not torch.is_inference_mode_enabled())

    def _step_kernel(self, x_t: Tensor):
        """The compiled step kernel when ``step_method`` and the input allow it, else None (eager)."""
        method = self.step_method
        if method == "eager":
            return None
        why = None
        if not x_t.is_cpu:
            why = f"runs on CPU tensors only, got x_t on {x_t.device}"
        elif x_t.dtype not in (torch.float32, torch.float64):
            why = f"runs in float32/float64 only, got {x_t.dtype}"
        elif torch.is_grad_enabled():
            why = "runs under torch.no_grad() only (it writes the cache in place and has no backward)"
        if why is None and method == "auto" and x_t.shape[0] > _AUTO_KERNEL_MAX_BATCH:
            return None  # larger batches: SDPA's batched products win (benchmarks/rat/README.md)
        if why is None:
            mod = optional_import("recurrences.layers._rat_kernel")
            if not isinstance(mod, Exception):
                return mod.rat_decode_kernel
            if method == "compiled":
                raise ImportError(
                    f"RAT: step_method='compiled' needs numba; install it with pip install 'recurrences[fast]' ({mod})"
                ) from mod
            return None
        if method == "compiled":
            raise ValueError(f"RAT: step_method='compiled' {why}; use step_method='auto' or 'eager'")
        return None

    def _step_buffers(
        self, keys: Tensor, values: Tensor, valid: Tensor, n: int
    ) -> tuple[Tensor, Tensor, Tensor, bool]:
        """Cache buffers that slot n can be written into in place: the given ones when they have room
        and are the step's own, else new ones (capacity doubled: amortised O(1) per chunk) holding the
        first n slots; and whether they are new (slot n is then new too)."""
        shared = self._shared_with_autograd
        writable = keys.is_contiguous() and values.is_contiguous() and valid.is_contiguous()  # (not expanded)
        if keys.shape[2] > n and writable and not (shared(keys) or shared(values) or shared(valid)):
            return keys, values, valid, False
        (B, H), d = keys.shape[:2], self.head_dim
        cap = max(4, 2 * (n + 1))
        keys = torch.cat([keys[:, :, :n], keys.new_empty(B, H, cap - n, d)], dim=2)  # (no_grad: a plain copy)
        values = torch.cat([values[:, :, :n], values.new_empty(B, H, cap - n, d)], dim=2)
        valid = torch.cat([valid[:, :n], valid.new_empty(B, cap - n)], dim=1)
        return keys, values, valid, True

    def _step_compiled(self, kernel, x_t: Tensor, st: RATState, params: tuple) -> tuple[Tensor, RATState]:
        """:meth:`step` in one compiled call, projections included (at batch 1 the eager step's ~30 small
        torch calls, and even two BLAS calls, cost more in fixed overhead than in arithmetic)."""
        B, D = x_t.shape
        L, dt, pos, n = self.chunk_size, x_t.dtype, st.pos, st.n_chunks
        snap = self._snapshot(st, params)
        if snap.w_in_t is None:
            # row-major transposed copies (as large as the weights): the kernel streams them row by row
            w_in, w_out, b_g = snap.params
            snap.w_in_t, snap.w_out_t = w_in.t().contiguous().numpy(), w_out.t().contiguous().numpy()
            snap.b_g = b_g.contiguous().numpy()
        arrays = st._arrays
        if not (arrays is not None and st.keys.shape[2] > n and self._arrays_current(st, arrays, dt)):
            arrays = self._kernel_arrays(st, dt)
        keys, values, valid = arrays[0], arrays[1], arrays[2]
        kn, vn, valn, kpn, vpn = arrays[5:]
        npdt = kpn.dtype
        kr, vr, y = np.empty(kpn.shape, npdt), np.empty(vpn.shape, npdt), np.empty((B, D), npdt)
        cos, sin = self._rope_numpy(pos // L, dt)
        xn = (x_t.detach() if x_t.requires_grad else x_t).contiguous().numpy()
        if not kernel(xn, snap.w_in_t, snap.b_g, kpn, vpn, pos % L == 0, kn, vn, valn, n, not st.all_valid,
                      cos, sin, self.n_groups, snap.w_out_t, kr, vr, y):  # fmt: skip
            raise ValueError("RAT.step: x_t contains NaN or inf")  # (checked before anything is written)
        if pos % L == L - 1:  # the chunk is finished: its slot now holds the summary
            n += 1
        k_run, v_run = torch.from_numpy(kr), torch.from_numpy(vr)
        new = RATState(keys, values, valid, n, k_run, v_run, self._all_true(B, x_t), pos + 1, st.all_valid)
        new._arrays = (keys, values, valid, k_run, v_run, kn, vn, valn, kr, vr)
        new._decode = snap
        return torch.from_numpy(y), new

    @staticmethod
    def _arrays_current(st: RATState, arrays: tuple, dt: torch.dtype) -> bool:
        """Whether the compiled step's cached numpy views still belong to this state: the same tensor
        objects (a state rebuilt field by field fails this) in the step's dtype (a model cast to another
        dtype fails it). Copies of a state do not carry the views (RATState.__getstate__), so the same
        objects mean the same memory; checking each view's address would cost more than the kernel's
        Python overhead per token."""
        return (
            arrays[0] is st.keys
            and arrays[1] is st.values
            and arrays[2] is st.valid
            and arrays[3] is st.k_run
            and arrays[4] is st.v_run
            and st.keys.dtype == dt
        )

    def _kernel_arrays(self, st: RATState, dt: torch.dtype) -> tuple:
        """The state as the kernel reads it: buffers with room for slot n, in ``dt``, contiguous, detached,
        and their numpy views: (keys, values, valid, k_run, v_run, keys_np, values_np, valid_np,
        k_run_np, v_run_np). A state made by the compiled step carries this tuple (``_arrays``), so only
        states from elsewhere (a prefill, the eager step, a clone) and full buffers come here.

        The kernel writes slot n through numpy, which autograd's version counters do not see, so buffers
        that may be part of a graph (a state from a step or a prefill with gradients) are never written:
        :meth:`_step_buffers` copies them first. The running state is read detached.
        """
        keys, values, valid = st.keys, st.values, st.valid
        if keys.dtype != dt or values.dtype != dt:
            keys, values = keys.to(dt), values.to(dt)
        keys, values, valid = keys.contiguous(), values.contiguous(), valid.contiguous()
        keys, values, valid, _ = self._step_buffers(keys, values, valid, st.n_chunks)  # never in a graph
        k_run = st.k_run.detach().to(dt).contiguous()
        v_run = st.v_run.detach().to(dt).contiguous()
        return (keys, values, valid, st.k_run, st.v_run,
                keys.numpy(), values.numpy(), valid.numpy(), k_run.numpy(), v_run.numpy())  # fmt: skip

    def _rope_numpy(self, c: int, dt: torch.dtype):
        """(cos, sin) as (d,) numpy arrays at chunk index c for the kernel (empty without RoPE); cached for
        the current chunk."""
        if not self.rope:
            e = _EMPTY_NP[dt]
            return e, e
        cached = self._rope_np_cache
        if cached is not None and cached[:3] == (c, dt, self.rope_base):
            return cached[3], cached[4]
        cos, sin = _rope_one(c, self.head_dim, self.rope_base, dt, torch.device("cpu"))
        cos, sin = cos[0].numpy(), sin[0].numpy()
        self._rope_np_cache = (c, dt, self.rope_base, cos, sin)
        return cos, sin

    def _step_eager(self, x_t: Tensor, st: RATState, params: tuple) -> tuple[Tensor, RATState]:
        """:meth:`step` in torch calls."""
        B, D = x_t.shape
        H, d, L = self.n_heads, self.head_dim, self.chunk_size
        pos, n, dt = st.pos, st.n_chunks, x_t.dtype
        G, Gd, J = self.n_groups, self.n_groups * d, H // self.n_groups
        # heads as (J, G) = (H / G, G): head h uses group h mod G, so the group vectors q^, k^ broadcast
        # over dim 1 of (B, J, G, d)
        w_in, w_out, b_g = params
        snap = self._snapshot(st, params)
        if dt is torch.float32 or dt is torch.float64:
            u = F.linear(x_t, w_in, self._gate_bias_row(snap, b_g))  # [z~, v, g~ + b_g, q^, k^]
            # one sigmoid gives z and g (sigmoid(v) is not used)
            z, _, g = torch.sigmoid(u.narrow(1, 0, 3 * D)).view(B, 3, J, G, d).unbind(1)
            _, v, _, qg, kg = u.split([D, D, D, Gd, Gd], dim=1)
        else:  # low precision: the gate is computed in float32, as in the forward
            u = F.linear(x_t, w_in)
            zl, v, gl, qg, kg = u.split([D, D, D, Gd, Gd], dim=1)
            z = torch.sigmoid(zl).view(B, J, G, d)
            g = torch.sigmoid(gl.float() + b_g.float()).to(dt).view(B, J, G, d)
        v, k = v.view(B, J, G, d), kg.view(B, 1, G, d)
        if pos % L == 0:  # a new chunk: forget everything
            a = 1 - g
            k_run, v_run = a * k, a * v
        else:  # g * state + (1 - g) * input
            kp, vp = st.k_run, st.v_run
            if kp.is_inference() and not torch.is_inference_mode_enabled():
                kp, vp = kp.clone(), vp.clone()  # (from a decode under inference_mode: lerp saves them)
            if kp.dtype != dt or vp.dtype != dt:
                kp, vp = kp.to(dt), vp.to(dt)
            k_run = torch.lerp(k, kp.reshape(B, J, G, d), g)
            v_run = torch.lerp(v, vp.reshape(B, J, G, d), g)
        k_run, v_run = k_run.view(B, H, d), v_run.view(B, H, d)
        M = self._rope_matrix(pos // L, x_t) if self.rope else None
        q = qg.view(B, 1, G, 1, d)  # q^ of each group, rotated
        if M is not None:
            q = q @ M
        keys, values, valid = st.keys, st.values, st.valid
        if torch.is_grad_enabled() or keys.dtype != dt or values.dtype != dt:
            # never write in place into tensors autograd may have saved
            kr = k_run if M is None else k_run @ M
            keys = torch.cat([keys[:, :, :n].to(dt), kr.unsqueeze(2)], dim=2)
            values = torch.cat([values[:, :, :n].to(dt), v_run.unsqueeze(2)], dim=2)
            valid = torch.cat([valid[:, :n], valid.new_ones(B, 1)], dim=1)
        else:
            keys, values, valid, grown = self._step_buffers(keys, values, valid, n)
            fresh = grown or pos % L == 0  # slot n is new: mark it valid (a step's own token is always real)
            if M is None:
                keys.select(2, n).copy_(k_run)
            else:
                torch.matmul(k_run, M, out=keys.select(2, n))  # slot n <- R_c k~
            values.select(2, n).copy_(v_run)
            if fresh:
                valid[:, n] = True
        # heads as (H / G) x G "batch x heads" for the attention: the G group queries broadcast over the
        # first dim (a view at B = 1, no copy of q per head)
        BJ = B * J
        q = q.expand(B, J, G, 1, d).reshape(BJ, G, 1, d)
        kk = keys.reshape(BJ, G, keys.shape[2], d).narrow(2, 0, n + 1)
        vv = values.reshape(BJ, G, values.shape[2], d).narrow(2, 0, n + 1)
        mask = None
        if not st.all_valid:
            mask = valid[:, None, None, None, : n + 1].expand(B, J, 1, 1, n + 1).reshape(BJ, 1, 1, n + 1)
        y = F.scaled_dot_product_attention(q, kk, vv, attn_mask=mask)  # (B H/G, G, 1, d)
        out = F.linear(z.reshape(B, D) * y.reshape(B, D), w_out)
        if pos % L == L - 1:  # the chunk is finished: its slot now holds the summary
            n += 1
        run_valid = self._all_true(B, x_t)  # the chunk now holds a real token
        new = RATState(keys, values, valid, n, k_run, v_run, run_valid, pos + 1, st.all_valid)
        new._decode = snap
        return out, new

    def _rope_matrix(self, c: int, like: Tensor) -> Tensor:
        """M with x @ M = R_c x at chunk index c; cached for the current chunk (asked for L times in a row)."""
        cached = self._rope_cache
        if (
            cached is not None
            and cached[0] == c
            and cached[1].dtype == like.dtype
            and cached[1].device == like.device
            and cached[2] == self.rope_base
        ):
            return cached[1]
        M = _rope_matrix(c, self.head_dim, self.rope_base, like.dtype, like.device)
        self._rope_cache = (c, M, self.rope_base)
        return M

    def _gate_bias_row(self, snap: _Snapshot, bg: Tensor) -> Tensor:
        """[0 (D), 0 (D), b_g (D), 0 (2 G d)]: in_proj's output plus this has the gate bias ``bg`` (the
        parameter) added. Kept in the snapshot (built differentiably each step when gradients are enabled)."""
        if torch.is_grad_enabled() and bg.requires_grad:
            return self._bias_row(bg)
        if snap.bias_row is None:
            snap.bias_row = self._bias_row(snap.params[2])
        return snap.bias_row

    def _bias_row(self, bg: Tensor) -> Tensor:
        D, Gd = self.d_model, self.n_groups * self.head_dim
        return torch.cat([bg.new_zeros(2 * D), bg, bg.new_zeros(2 * Gd)])

    def _all_true(self, B: int, like: Tensor) -> Tensor:
        """A (B,) True tensor, made once per batch size (decoding would otherwise build one per token)."""
        t = self._true.get(B)
        if t is None or t.device != like.device:
            t = self._true[B] = torch.ones(B, dtype=torch.bool, device=like.device)
        return t

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, chunk_size={self.chunk_size}, n_groups={self.n_groups}, rope={self.rope}"


register_mixer(
    "rat",
    RAT,
    defaults={"chunk_size": 16},
    description="RAT: gated recurrence inside chunks (L=16) + softmax attention over chunk summaries",
    family="rat",
)


# The paper's hybrid: RAT and sliding-window attention layers alternating, window 1024 by default
# (override with mixer_options={"swa": {"window": ...}}).
register_hybrid("rat-swa", "rat|swa", {"swa": {"window": 1024}})
