"""RAT (recurrence inside chunks, attention across chunks): forms, limits, generation, padding, errors.

The independent implementations below are written from the equations (spec part B.3/B.4), not from the
layer's code: a dense score matrix over [earlier summaries ; own running state], softmax attention with
token RoPE for L = 1, and a plain gated-RNN loop for L >= T.
"""

from __future__ import annotations

import copy
import io
import math
import pickle

import numpy as np
import pytest
import torch

import recurrences.layers.rat as rat_module
from recurrences.layers import available_mixers, create_mixer
from recurrences.layers.rat import RAT, RATState, chunk_attention

D, H = 16, 4
F64 = torch.float64

try:
    import numba  # noqa: F401

    HAVE_NUMBA = True
except ImportError:
    HAVE_NUMBA = False
STEP_METHODS_ALL = ("auto", "eager", "compiled")
# the two step() implementations; "compiled" (the numba kernel) needs the [fast] extra
STEP_METHODS = [
    "eager",
    pytest.param("compiled", marks=pytest.mark.skipif(not HAVE_NUMBA, reason="numba not installed")),
]


def make(L: int = 4, seed: int = 0, **kw) -> RAT:
    torch.manual_seed(seed)
    m = create_mixer("rat", d_model=D, n_heads=H, chunk_size=L, **kw).double()
    with torch.no_grad():  # larger weights than the 0.02 init, so that every term matters in the checks
        m.in_proj.weight.normal_(0, 0.4)
        m.out_proj.weight.normal_(0, 0.3)
        m.gate_bias.normal_(0, 1.0)
    return m


def data(B: int, T: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, T, D, generator=g, dtype=F64)


def decode(m: RAT, x: torch.Tensor, state: RATState | None = None) -> tuple[torch.Tensor, RATState]:
    """m.step over every token of x (B, T, D) from ``state`` (default: a new one): outputs (B, T, D)."""
    s = m.init_state(x.shape[0], dtype=x.dtype) if state is None else state
    outs = []
    for t in range(x.shape[1]):
        y_t, s = m.step(x[:, t], s)
        outs.append(y_t)
    return torch.stack(outs, 1), s


# -- independent implementations ----------------------------------------------------------------------
def rope(x: torch.Tensor, pos: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """x (..., P, d) rotated at positions pos (P,), rotate-half layout."""
    d = x.shape[-1]
    w = base ** (-torch.arange(0, d, 2, dtype=F64) / d)
    ang = pos.to(F64)[:, None] * w
    cos, sin = ang.cos().to(x.dtype), ang.sin().to(x.dtype)
    x1, x2 = x[..., : d // 2], x[..., d // 2 :]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


def projections(m: RAT, x: torch.Tensor):
    """z, q, k, v, g as (B, H, T, d) (z as (B, T, D)) straight from the weights."""
    B, T, _ = x.shape
    G, d = m.n_groups, D // H
    W = m.in_proj.weight
    zl, v, gl, qg, kg = (x @ W.T).split([D, D, D, G * d, G * d], dim=-1)
    g = torch.sigmoid(gl + m.gate_bias)
    heads = [h % G for h in range(H)]
    q = torch.stack([qg[..., i * d : (i + 1) * d] for i in heads], dim=1)
    k = torch.stack([kg[..., i * d : (i + 1) * d] for i in heads], dim=1)
    v = v.view(B, T, H, d).transpose(1, 2)
    g = g.view(B, T, H, d).transpose(1, 2)
    return torch.sigmoid(zl), q, k, v, g


def dense_rat(m: RAT, x: torch.Tensor) -> torch.Tensor:
    """Spec B.3/B.4 with explicit products of gates and an explicit score matrix (no scan, no cache)."""
    B, T, _ = x.shape
    L, d = m.chunk_size, D // H
    z, q, k, v, g = projections(m, x)
    # k~_t = sum_{s in chunk(t), s <= t} (prod_{s < r <= t} g_r) (1 - g_s) k_s
    kt, vt = torch.zeros_like(k), torch.zeros_like(v)
    for t in range(T):
        for s in range((t // L) * L, t + 1):
            w = (1 - g[:, :, s]) * torch.prod(g[:, :, s + 1 : t + 1], dim=2)
            kt[:, :, t] += w * k[:, :, s]
            vt[:, :, t] += w * v[:, :, s]
    C = T // L  # complete chunks; summaries of chunk j at position j L + L - 1
    Kb = torch.stack([kt[:, :, j * L + L - 1] for j in range(C)], 2) if C else k.new_zeros(B, H, 0, d)
    Vb = torch.stack([vt[:, :, j * L + L - 1] for j in range(C)], 2) if C else v.new_zeros(B, H, 0, d)
    cq = torch.arange(T) // L
    s_inter = rope(q, cq) @ rope(Kb, torch.arange(C)).transpose(-1, -2) / math.sqrt(d)  # (B, H, T, C)
    s_inter = s_inter.masked_fill(torch.arange(C)[None, :] >= cq[:, None], float("-inf"))
    s_self = (q * kt).sum(-1, keepdim=True) / math.sqrt(d)
    p = torch.softmax(torch.cat([s_inter, s_self], -1), -1)
    y = p[..., :C] @ Vb + p[..., C:] * vt
    return (z * y.transpose(1, 2).reshape(B, T, D)) @ m.out_proj.weight.T


# -- the forms -----------------------------------------------------------------------------------------
def run_form(m: RAT, form: str, x0: torch.Tensor, mask=None, seed: int = 5):
    m.form = form
    m.zero_grad(set_to_none=True)
    x = x0.clone().requires_grad_(True)
    y = m(x, mask=mask)
    w = torch.randn(y.shape, generator=torch.Generator().manual_seed(seed), dtype=F64)
    (y * w).sum().backward()
    return y.detach(), x.grad.clone(), {n: p.grad.clone() for n, p in m.named_parameters()}


@pytest.mark.parametrize("L,T", [(4, 1), (4, 7), (3, 63), (16, 100), (1, 7), (5, 5), (7, 23)])
def test_reference_equals_parallel_outputs_and_gradients(L, T):
    m = make(L)
    x = data(2, T, seed=T)
    yr, gxr, gpr = run_form(m, "reference", x)
    yp, gxp, gpp = run_form(m, "parallel", x)
    torch.testing.assert_close(yp, yr, rtol=1e-9, atol=1e-11)
    torch.testing.assert_close(gxp, gxr, rtol=1e-9, atol=1e-11)
    for n in gpr:
        torch.testing.assert_close(
            gpp[n], gpr[n], rtol=1e-9, atol=1e-11, msg=lambda s, n=n: f"grad of {n}: {s}"
        )


def test_reference_equals_parallel_with_padding():
    T, L = 23, 4
    m = make(L)
    x = data(3, T)
    mask = torch.ones(3, T, dtype=torch.bool)
    mask[0, 17:] = False  # right
    mask[1, :8] = False  # left, two whole chunks
    mask[2, 3:11] = False  # middle: one partial chunk, one empty chunk
    yr, gxr, gpr = run_form(m, "reference", x, mask)
    yp, gxp, gpp = run_form(m, "parallel", x, mask)
    torch.testing.assert_close(yp, yr, rtol=1e-9, atol=1e-11)
    torch.testing.assert_close(gxp, gxr, rtol=1e-9, atol=1e-11)
    for n in gpr:
        torch.testing.assert_close(gpp[n], gpr[n], rtol=1e-9, atol=1e-11)
    assert bool((gxp[~mask] == 0).all()), "padded inputs must get no gradient"


@pytest.mark.parametrize("L,T", [(4, 13), (3, 9), (2, 1), (6, 20)])
def test_parallel_equals_dense_equations(L, T):
    m = make(L)
    x = data(2, T)
    with torch.no_grad():
        torch.testing.assert_close(m(x), dense_rat(m, x), rtol=1e-9, atol=1e-11)


def test_chunk_size_one_is_softmax_attention():
    """L = 1: softmax attention with keys (1-g)k, values (1-g)v and RoPE at token positions."""
    m = make(1)
    T = 19
    x = data(2, T)
    z, q, k, v, g = projections(m, x)
    pos = torch.arange(T)
    kk, vv = rope((1 - g) * k, pos), (1 - g) * v
    s = rope(q, pos) @ kk.transpose(-1, -2) / math.sqrt(D // H)
    s = s.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
    y = torch.softmax(s, -1) @ vv
    want = (z * y.transpose(1, 2).reshape(2, T, D)) @ m.out_proj.weight.T
    with torch.no_grad():
        for form in m.forms:
            m.form = form
            torch.testing.assert_close(m(x), want, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("L", [23, 64, 10**9])
def test_chunk_size_at_least_t_is_a_gated_rnn(L):
    """(L = 10**9: the parallel form scans the T tokens, never a padded chunk of L slots.)"""
    m = make(L)
    T = 23
    x = data(2, T)
    z, q, k, v, g = projections(m, x)
    h = torch.zeros_like(v[:, :, 0])
    ys = []
    for t in range(T):
        h = g[:, :, t] * h + (1 - g[:, :, t]) * v[:, :, t]
        ys.append(h)
    y = torch.stack(ys, 2).transpose(1, 2).reshape(2, T, D)
    want = (z * y) @ m.out_proj.weight.T
    with torch.no_grad():
        for form in m.forms:
            m.form = form
            torch.testing.assert_close(m(x), want, rtol=1e-9, atol=1e-11)
            # prefill in two pieces (the second starts inside the chunk), then a step
            y1, s = m(x[:, :7], return_state=True)
            y2, s = m(x[:, 7:15], state=s, return_state=True)
            y3, _ = m.step(x[:, 15], s)
            got = torch.cat([y1, y2, y3[:, None]], 1)
            torch.testing.assert_close(got, want[:, :16], rtol=1e-9, atol=1e-11)


def test_rope_is_on_the_chunk_index():
    """Without RoPE the result changes; with it, positions enter only through chunk differences."""
    m = make(4)
    m2 = make(4, rope=False)
    x = data(1, 13)
    with torch.no_grad():
        assert not torch.allclose(m(x), m2(x))
        # shifting the start by whole chunks (an empty, fully padded prefix) changes nothing
        prefix = torch.zeros(1, 8, D, dtype=F64)
        mask = torch.cat([torch.zeros(1, 8, dtype=torch.bool), torch.ones(1, 13, dtype=torch.bool)], 1)
        for form in m.forms:
            m.form = form
            torch.testing.assert_close(
                m(torch.cat([prefix, x], 1), mask=mask)[:, 8:], m(x), rtol=1e-9, atol=1e-11
            )


# -- the inter-chunk attention kernel -----------------------------------------------------------------
def test_chunk_attention_gradcheck_and_blocks(monkeypatch):
    g = torch.Generator().manual_seed(3)
    B, Hh, T, d, N = 2, 1, 11, 2, 4
    q = torch.randn(B, Hh, T, d, generator=g, dtype=F64, requires_grad=True)
    kb = torch.randn(B, Hh, N, d, generator=g, dtype=F64, requires_grad=True)
    vb = torch.randn(B, Hh, N, d, generator=g, dtype=F64, requires_grad=True)
    ss = torch.randn(B, Hh, T, generator=g, dtype=F64, requires_grad=True)
    vt = torch.randn(B, Hh, T, d, generator=g, dtype=F64, requires_grad=True)
    cq = torch.tensor([0, 0, 1, 1, 1, 2, 2, 3, 4, 4, 4])
    kbias = torch.zeros(B, 1, N, dtype=F64)
    kbias[1, 0, 2] = float("-inf")  # an empty (padded) chunk
    args = (q, kb, vb, ss, vt)

    def dense(q, kb, vb, ss, vt):
        s = q @ kb.transpose(-1, -2) + kbias.unsqueeze(2)
        s = s.masked_fill(torch.arange(N)[None, :] >= cq[:, None], float("-inf"))
        p = torch.softmax(torch.cat([s, ss.unsqueeze(-1)], -1), -1)
        return p[..., :N] @ vb + p[..., N:] * vt

    def fast(*a):
        return chunk_attention(*a, cq, kbias)

    torch.testing.assert_close(fast(*args), dense(*args), rtol=1e-10, atol=1e-12)
    assert torch.autograd.gradcheck(fast, args, fast_mode=True)
    monkeypatch.setattr(rat_module, "_BLOCK_ELEMS", 9)  # force several query blocks
    torch.testing.assert_close(fast(*args), dense(*args), rtol=1e-10, atol=1e-12)
    assert torch.autograd.gradcheck(fast, args, fast_mode=True)
    y = fast(*args)
    y.sum().backward(retain_graph=True)
    g1 = q.grad.clone()
    y.sum().backward()  # a second backward through the same graph
    torch.testing.assert_close(q.grad, 2 * g1)
    monkeypatch.setattr(rat_module, "_SAVE_P_ELEMS", 0)  # always recompute the probabilities
    assert torch.autograd.gradcheck(fast, args, fast_mode=True)


# -- generation ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("step_method", STEP_METHODS)
@pytest.mark.parametrize("form", ["reference", "parallel"])
def test_step_by_step_equals_forward(form, step_method):
    m = make(4, step_method=step_method)
    T = 27
    x = data(2, T)
    with torch.no_grad():
        y = m(x)
        m.form = form
        ys, s = decode(m, x)
    torch.testing.assert_close(ys, y, rtol=1e-9, atol=1e-11)
    assert s.n_chunks == T // 4 and s.pos == T
    assert s.cache_numel() == 2 * 2 * H * (D // H) * (T // 4 + 1)  # one key/value per chunk + running state


@pytest.mark.parametrize("step_method", STEP_METHODS)
def test_step_with_parametrized_weights_equals_forward(step_method):
    """The step reads its weights from the modules' parameter dicts when they are plain parameters; a
    parametrized weight (torch.nn.utils.parametrize) is read through the attribute, and gradients reach it."""
    from torch.nn.utils import parametrize

    class Scale(torch.nn.Module):
        def forward(self, w):
            return 1.5 * w

    m = make(4, step_method=step_method)
    parametrize.register_parametrization(m.in_proj, "weight", Scale())
    parametrize.register_parametrization(m.out_proj, "weight", Scale())
    x = data(2, 9)
    with torch.no_grad():
        ys, _ = decode(m, x)
        torch.testing.assert_close(ys, m(x), rtol=1e-9, atol=1e-11)
        plain = make(4, step_method=step_method)  # the same weights, not scaled: the scale is seen
        assert not torch.allclose(ys, decode(plain, x)[0])
    if step_method == "eager":
        y_t, _ = m.step(x[:, 0], None)
        y_t.sum().backward()
        assert m.in_proj.parametrizations.weight.original.grad is not None


@pytest.mark.parametrize("step_method", STEP_METHODS)
@pytest.mark.parametrize("form", ["reference", "parallel"])
@pytest.mark.parametrize("cuts", [(5, 11), (8, 12), (4, 5), (1, 2)])
def test_prefill_then_step_equals_forward(form, cuts, step_method):
    """Prompts ending inside a chunk and exactly at a chunk boundary (L = 4)."""
    m = make(4, step_method=step_method)
    T = 22
    x = data(2, T)
    a, b = cuts
    with torch.no_grad():
        y = m(x)
        m.form = form
        y1, s = m(x[:, :a], state=m.init_state(2), return_state=True)
        y2, s = m(x[:, a:b], state=s, return_state=True)
        outs = [y1, y2]
        for t in range(b, T):
            y_t, s = m.step(x[:, t], s)
            outs.append(y_t.unsqueeze(1))
    torch.testing.assert_close(torch.cat(outs, 1), y, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("step_method", STEP_METHODS)
def test_padded_prefill_then_step(step_method):
    m = make(3, step_method=step_method)
    T, P = 20, 13
    x = data(3, T)
    mask = torch.ones(3, T, dtype=torch.bool)
    mask[0, :6] = False  # left-padded prompt (two whole chunks)
    mask[1, 2:8] = False  # holes
    mask[2, 10:P] = False  # right-padded prompt
    with torch.no_grad():
        y = m(x, mask=mask)
        y1, s = m(x[:, :P], mask=mask[:, :P], return_state=True)
        outs = [y1]
        for t in range(P, T):
            y_t, s = m.step(x[:, t], s)
            outs.append(y_t.unsqueeze(1))
    torch.testing.assert_close(torch.cat(outs, 1)[mask], y[mask], rtol=1e-9, atol=1e-11)
    # left padding by whole chunks gives the unpadded outputs
    with torch.no_grad():
        torch.testing.assert_close(y[0, 6:], m(x[:1, 6:])[0], rtol=1e-9, atol=1e-11)


def test_right_padding_never_changes_real_outputs():
    m = make(4)
    x = data(3, 21)
    lengths = [21, 9, 4]
    mask = torch.arange(21)[None, :] < torch.tensor(lengths)[:, None]
    garbage = torch.where(mask.unsqueeze(-1), x, 100 * data(3, 21, seed=9))
    with torch.no_grad():
        y = m(garbage, mask=mask)
        for b, n in enumerate(lengths):
            torch.testing.assert_close(y[b, :n], m(x[b : b + 1, :n])[0], rtol=1e-9, atol=1e-11)
        assert bool((y[~mask] == 0).all())


@pytest.mark.parametrize("step_method", STEP_METHODS)
def test_state_clone_allows_branching(step_method):
    m = make(2, step_method=step_method)
    x = data(1, 9)
    with torch.no_grad():
        _, s = m(x[:, :5], return_state=True)
        s2 = s.clone()
        ya, _ = m.step(x[:, 5], s)
        yb, _ = m.step(x[:, 6], s2)
        yc, _ = m.step(x[:, 5], s2.clone())
    torch.testing.assert_close(ya, yc)
    assert not torch.allclose(ya, yb)


@pytest.mark.parametrize("copier", ["deepcopy", "pickle", "torch.save"])
@pytest.mark.parametrize("step_method", STEP_METHODS)
def test_decoding_from_a_copied_state_is_exact(step_method, copier):
    # a state from the compiled step carries numpy views of its buffers; a copy must not decode from
    # views of the original's (or from stale copies of them) once the copy's buffers move on
    m = make(4, step_method=step_method)
    x = data(2, 30)
    with torch.no_grad():
        want = m(x)
        _, s = decode(m, x[:, :10])
        if copier == "deepcopy":
            s = copy.deepcopy(s)
        elif copier == "pickle":
            s = pickle.loads(pickle.dumps(s))
        else:
            buf = io.BytesIO()
            torch.save(s, buf)
            buf.seek(0)
            s = torch.load(buf, weights_only=False)
        y, _ = decode(m, x[:, 10:], s)
    torch.testing.assert_close(y, want[:, 10:], rtol=1e-9, atol=1e-11)


@pytest.mark.skipif(not HAVE_NUMBA, reason="numba not installed")
def test_compiled_state_continues_after_the_model_changes_dtype():
    m = make(4, step_method="compiled").float()
    x = data(1, 12)
    with torch.no_grad():
        _, s = decode(m, x[:, :6].float())
        m.double()
        y, _ = decode(m, x[:, 6:], s)
        want = m(x)[:, 6:]
    torch.testing.assert_close(y, want, rtol=1e-5, atol=1e-6)  # the first 6 tokens went through float32


@pytest.mark.parametrize("step_method", STEP_METHODS_ALL)
def test_a_decode_in_inference_mode_leaves_nothing_that_breaks_autograd(step_method):
    if step_method == "compiled" and not HAVE_NUMBA:
        pytest.skip("numba not installed")
    rat_module._rope_matrix.cache_clear()  # so that this decode is the one that fills them
    rat_module._rope_one.cache_clear()
    m = make(3, step_method=step_method)
    x = data(1, 8)
    with torch.inference_mode():
        decode(m, x)  # fills the RoPE caches (module-level and per layer)
    fresh = make(3, step_method="eager")
    y, _ = decode(fresh, x)  # with gradients
    y.sum().backward()
    ref = make(3, form="reference")
    ref(x).sum().backward()
    torch.testing.assert_close(y, ref(x).detach(), rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("step_method", STEP_METHODS_ALL)
def test_step_under_autocast_runs_in_the_weights_dtype(step_method):
    if step_method == "compiled" and not HAVE_NUMBA:
        pytest.skip("numba not installed")
    torch.manual_seed(0)
    m = create_mixer("rat", d_model=D, n_heads=H, chunk_size=3, step_method=step_method)
    x = torch.randn(2, 7, D)
    with torch.no_grad():
        want = m(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y, s = decode(m, x)
    assert y.dtype == torch.float32 and s.keys.dtype == torch.float32
    torch.testing.assert_close(y, want, rtol=1e-4, atol=1e-5)


def test_float32_forms_agree_and_step_under_autograd():
    torch.manual_seed(0)
    m = create_mixer("rat", d_model=D, n_heads=H, chunk_size=3)
    x = data(2, 17).float()
    ys = {}
    for form in m.forms:
        m.form = form
        ys[form] = m(x)
    torch.testing.assert_close(ys["parallel"], ys["reference"], rtol=1e-4, atol=1e-6)
    # stepping with gradients enabled never writes into buffers autograd has saved
    stepped, _ = decode(m, x[:, :8])
    stepped.sum().backward()
    assert m.in_proj.weight.grad is not None
    torch.testing.assert_close(stepped, ys["parallel"][:, :8], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("step_method", STEP_METHODS)
@pytest.mark.parametrize("n_groups,rope", [(1, True), (2, False), (4, True)])
def test_long_decoding_equals_forward(n_groups, rope, step_method):
    """Many in-place steps (the chunk buffers grow several times), other group counts, RoPE off, B = 3."""
    m = make(2, n_groups=n_groups, rope=rope, step_method=step_method)
    T, P = 45, 3
    x = data(3, T, seed=7)
    with torch.no_grad():
        y = m(x)
        y0, s = m(x[:, :P], return_state=True)
        outs, bufs = [y0], set()
        for t in range(P, T):
            y_t, s = m.step(x[:, t], s)
            outs.append(y_t.unsqueeze(1))
            bufs.add(s.keys.data_ptr())
    torch.testing.assert_close(torch.cat(outs, 1), y, rtol=1e-9, atol=1e-11)
    assert s.n_chunks == T // 2 and len(bufs) <= 5  # capacity doubling: few reallocations


def test_low_precision_step_is_close_to_forward():
    torch.manual_seed(0)
    m = create_mixer("rat", d_model=D, n_heads=H, chunk_size=3).to(torch.bfloat16)
    x = data(2, 10).to(torch.bfloat16)
    with torch.no_grad():
        y = m(x)
        ys, _ = decode(m, x)
    assert ys.dtype == torch.bfloat16
    torch.testing.assert_close(ys.float(), y.float(), rtol=0.05, atol=2e-3)


@pytest.mark.parametrize("step_method", STEP_METHODS)
def test_no_grad_steps_after_a_prefill_with_gradients_keep_backward_valid(step_method):
    m = make(3, step_method=step_method)
    x = data(2, 14)
    y_full = m(x).detach()
    y0, s = m(x[:, :7], return_state=True)  # prefill with gradients: the state is part of the graph
    outs = [y0]
    with torch.no_grad():  # in-place steps must not write into tensors the graph saved
        for t in range(7, 14):
            y_t, s = m.step(x[:, t], s)
            outs.append(y_t.unsqueeze(1))
    torch.testing.assert_close(torch.cat(outs, 1).detach(), y_full, rtol=1e-9, atol=1e-11)
    y0.sum().backward()  # would raise if a saved tensor had been modified in place
    g = m.in_proj.weight.grad.clone()
    m.zero_grad()
    m(x[:, :7]).sum().backward()
    torch.testing.assert_close(g, m.in_proj.weight.grad)


@pytest.mark.parametrize("step_method", STEP_METHODS)
@pytest.mark.parametrize("bad_value", [float("inf"), float("nan")])
def test_step_rejects_a_non_finite_token_and_the_state_stays_usable(step_method, bad_value):
    """A NaN/inf token raises before anything is written: the same state (whose buffers the compiled step
    writes in place) then decodes exactly as if the bad token had never been offered."""
    m = make(4, step_method=step_method)
    x = data(2, 7)
    with torch.no_grad():
        y_full = m(x)
        s = m.init_state(2)
        outs = []
        for t in range(7):
            if t in (3, 4):  # the last position of a chunk and the first of the next
                bad = x[:, t].clone()
                bad[1, 2] = bad_value
                with pytest.raises(ValueError, match="NaN or inf"):
                    m.step(bad, s)
            y_t, s = m.step(x[:, t], s)
            outs.append(y_t)
    torch.testing.assert_close(torch.stack(outs, 1), y_full, rtol=1e-9, atol=1e-11)


def test_step_rejects_bad_tokens():
    m = make(4)
    s = m.init_state(2)
    bad = data(2, 1)[:, 0].clone()
    bad[0, 2] = float("inf")
    with pytest.raises(ValueError, match="NaN or inf"):
        m.step(bad, s)
    with pytest.raises(ValueError, match="d_model"):
        m.step(data(2, 1)[:, 0, :-1], s)
    with pytest.raises(TypeError, match="floating"):
        m.step(torch.ones(2, D, dtype=torch.long), s)


# -- the compiled step ------------------------------------------------------------------------------------
@pytest.mark.skipif(not HAVE_NUMBA, reason="numba not installed")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("L,n_groups,rope", [(1, 2, True), (3, 1, True), (5, 4, False), (16, 2, True)])
def test_compiled_step_equals_eager_step(dtype, L, n_groups, rope):
    """Every output and every field of the state, step after step, across chunk ends and buffer growth."""
    m = make(L, n_groups=n_groups, rope=rope).to(dtype)
    T = 40
    x = data(2, T, seed=3).to(dtype)
    tol = {"rtol": 1e-10, "atol": 1e-12} if dtype == F64 else {"rtol": 2e-5, "atol": 2e-6}
    with torch.no_grad():
        m.step_method = "eager"
        _, se = m(x[:, :6], return_state=True)
        sc = se.clone()
        for t in range(6, T):
            m.step_method = "eager"
            ye, se = m.step(x[:, t], se)
            m.step_method = "compiled"
            yc, sc = m.step(x[:, t], sc)
            torch.testing.assert_close(yc, ye, **tol)
            assert (sc.n_chunks, sc.pos, sc.all_valid) == (se.n_chunks, se.pos, se.all_valid)
            # the finished chunks, and the open chunk's slot while one is open (the rest is scratch space;
            # the buffers' capacities may differ)
            n = se.n_chunks + (1 if se.pos % L else 0)
            torch.testing.assert_close(sc.keys[:, :, :n], se.keys[:, :, :n], **tol)
            torch.testing.assert_close(sc.values[:, :, :n], se.values[:, :, :n], **tol)
            assert torch.equal(sc.valid[:, :n], se.valid[:, :n])
            torch.testing.assert_close(sc.k_run, se.k_run, **tol)
            torch.testing.assert_close(sc.v_run, se.v_run, **tol)
    assert yc.dtype == dtype


@pytest.mark.skipif(not HAVE_NUMBA, reason="numba not installed")
def test_step_methods_can_alternate_on_one_state():
    """A state made by one step method continues under the other (the compiled step's cached numpy views
    of a state must never be used for another state's tensors), through buffer growth and chunk ends."""
    m = make(3)
    T = 30
    x = data(2, T, seed=4)
    with torch.no_grad():
        y = m(x)
        s = m.init_state(2)
        outs = []
        for t in range(T):
            m.step_method = "compiled" if (t // 2) % 2 else "eager"
            y_t, s = m.step(x[:, t], s)
            outs.append(y_t)
            if t == 17:  # a clone drops the cached views; the original keeps going
                s = s.clone()
    torch.testing.assert_close(torch.stack(outs, 1), y, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("step_method", STEP_METHODS)
@pytest.mark.parametrize("via", ["in_place", "data"])
def test_a_new_decode_sees_changed_weights(step_method, via):
    """What a step derives from the parameters (the gate-bias row, the transposed weights, the RoPE
    matrix) must follow updates: in-place ones as an optimiser makes (a new version), and writes through
    .data or fused optimisers, which keep the version; those live in the chain of states, so the next
    decode (a new state) sees them."""
    m = make(3, step_method=step_method)
    x = data(2, 8)
    with torch.no_grad():
        decode(m, x[:, :4])
        w_in, w_out, b_g = (m.in_proj.weight, m.out_proj.weight, m.gate_bias)
        if via == "data":
            w_in, w_out, b_g = w_in.data, w_out.data, b_g.data
        w_in.mul_(1.5)
        w_out.mul_(0.5)
        b_g.add_(1.0)
        y = m(x)
        ys, _ = decode(m, x)
    torch.testing.assert_close(ys, y, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("step_method", STEP_METHODS)
def test_no_grad_step_never_writes_into_a_graph_made_by_a_step(step_method):
    """A step with gradients, then a no-grad step of the same chunk: the second must not write into the
    buffers the first one's graph saved (it copies them), so the gradient stays right."""
    m = make(4, step_method="eager")  # (a step with gradients is always eager)
    x = data(1, 3)
    y0, s = m.step(x[:, 0], m.init_state(1))
    m.step_method = step_method
    with torch.no_grad():
        y1, s1 = m.step(x[:, 1], s)
    y0.pow(2).sum().backward()
    g = m.in_proj.weight.grad.clone()
    m.zero_grad()
    m.step_method = "eager"
    m.step(x[:, 0], m.init_state(1))[0].pow(2).sum().backward()
    torch.testing.assert_close(g, m.in_proj.weight.grad)
    with torch.no_grad():
        torch.testing.assert_close(torch.stack([y0.detach(), y1], 1), m(x[:, :2]), rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("step_method", STEP_METHODS)
def test_state_from_inference_mode_continues_outside_it(step_method):
    m = make(4, step_method=step_method)
    x = data(2, 11)
    with torch.inference_mode():
        y0, s = m(x[:, :6], return_state=True)
        y1, s = m.step(x[:, 6], s)
    with torch.no_grad():
        y2, _ = decode(m, x[:, 7:], s)
        torch.testing.assert_close(torch.cat([y0, y1[:, None], y2], 1), m(x), rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("step_method", STEP_METHODS_ALL)
def test_state_from_inference_mode_continues_with_gradients(step_method):
    """A state decoded under inference_mode, continued by a step with autograd on (the eager step's lerp
    saves the running state for backward, which inference tensors may not be)."""
    m = make(4, step_method=step_method)
    x = data(2, 8).requires_grad_()
    with torch.inference_mode():
        s = None
        for t in range(5):  # position 5 is inside a chunk: the running state is carried
            _, s = m.step(x[:, t].detach(), s)
    m.step_method = "auto"  # (the compiled step does not run under autograd)
    y, _ = m.step(x[:, 5], s)
    torch.testing.assert_close(y, m(x[:, :6])[:, 5], rtol=1e-9, atol=1e-11)
    y.sum().backward()
    assert x.grad is not None and x.grad[:, 5].abs().sum() > 0


def _stepped(m: RAT, x: torch.Tensor, n: int) -> RATState:
    s = None
    for t in range(n):
        _, s = m.step(x[:, t], s)
    return s


@pytest.mark.parametrize("step_method", STEP_METHODS)
def test_step_rejects_a_malformed_state_before_writing(step_method):
    """Every buffer of a hand-edited state is checked (the compiled kernel has no bounds checks: a buffer of
    the wrong size would be written out of bounds)."""
    import dataclasses

    m = make(4, step_method=step_method)
    x = data(4, 8)
    with torch.no_grad():
        s = _stepped(m, x, 6)
        bad = {
            "values": (dataclasses.replace(s, values=s.values[:1].clone()), ValueError, "state.values"),
            "valid batch": (dataclasses.replace(s, valid=s.valid[:2].clone()), ValueError, "state.valid"),
            "valid dtype": (dataclasses.replace(s, valid=s.valid.double()), ValueError, "state.valid"),
            "run_valid": (dataclasses.replace(s, run_valid=s.run_valid[:1]), ValueError, "state.run_valid"),
            "capacity": (
                dataclasses.replace(
                    s,
                    keys=s.keys[:, :, :1].clone(),
                    values=s.values[:, :, :1].clone(),
                    valid=s.valid[:, :1].clone(),
                    pos=9,
                    n_chunks=2,
                ),
                ValueError,
                "fewer than state.n_chunks",
            ),  # fmt: skip
            "numpy pos": (dataclasses.replace(s, pos=np.int64(s.pos)), TypeError, "Python ints"),
        }
        for state, err, match in bad.values():
            with pytest.raises(err, match=match):
                m.step(x[:, 6], state)
        y, _ = m.step(x[:, 6], s)  # the good state is untouched
        torch.testing.assert_close(y, m(x[:, :7])[:, 6], rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("B", [2, 9])  # "auto": compiled at batch <= 8, eager above
def test_step_from_an_expanded_state(B):
    """A batch-1 state broadcast with .expand() (e.g. one prompt, B continuations) is never written in place."""
    m = make(4)
    x = data(1, 8)
    with torch.no_grad():
        s1 = _stepped(m, x, 6)  # a step's state: its buffers have spare capacity
        e = lambda t: t.expand(B, *t.shape[1:])  # noqa: E731
        sB = RATState(e(s1.keys), e(s1.values), e(s1.valid), s1.n_chunks, e(s1.k_run), e(s1.v_run),
                      e(s1.run_valid), s1.pos, s1.all_valid)  # fmt: skip
        y, _ = m.step(x[:, 6].expand(B, D), sB)
        torch.testing.assert_close(y, m(x[:, :7])[:, 6].expand(B, D), rtol=1e-9, atol=1e-11)
        y1, _ = m.step(x[:, 6], s1)  # the batch-1 state still decodes
        torch.testing.assert_close(y1, y[:1], rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("step_method", STEP_METHODS)
@pytest.mark.parametrize("param", ["gate_bias", "out_proj.weight"])
def test_step_rejects_parameters_of_mixed_dtypes(step_method, param):
    """As the forward does: a step with, e.g., a float64 gate bias in a float32 layer is a clear error, not
    a kernel specialised on the mix nor a torch error from inside."""
    m = make(4, step_method=step_method).float()
    p = m.get_parameter(param)
    p.data = p.data.double()
    x = data(2, 1).float()
    with torch.no_grad(), pytest.raises(TypeError, match="must share one dtype"):
        m.step(x[:, 0], None)


def test_step_rejects_a_token_of_another_type_or_device():
    m = make(4)
    with pytest.raises(TypeError, match="torch.Tensor"):
        m.step(np.zeros((2, D)), None)
    with pytest.raises(ValueError, match="meta"):
        m.step(torch.empty(2, D, dtype=F64, device="meta"), None)


@pytest.mark.skipif(not HAVE_NUMBA, reason="numba not installed")
def test_auto_step_uses_the_kernel_only_where_it_applies(monkeypatch):
    calls = []
    real = rat_module.RAT._step_compiled

    def spy(self, kernel, x_t, *args):
        calls.append(x_t.dtype)
        return real(self, kernel, x_t, *args)

    monkeypatch.setattr(rat_module.RAT, "_step_compiled", spy)
    m = make(4)
    x = data(2, 3)
    with torch.no_grad():
        m.step(x[:, 0], None)
        m.to(torch.bfloat16).step(x[:, 0].to(torch.bfloat16), None)  # low precision: eager
    m.double().step(x[:, 0], None)  # gradients enabled: eager
    big = data(rat_module._AUTO_KERNEL_MAX_BATCH + 1, 1)[:, 0]
    with torch.no_grad():
        m.step(big, None)  # a large batch: eager
        m.step_method = "compiled"
        m.step(big, None)  # unless asked for
        m.step_method = "eager"
        m.step(x[:, 0], None)
    assert calls == [F64, F64]


def test_step_method_errors(monkeypatch):
    with pytest.raises(ValueError, match="step_method must be one of"):
        make(4, step_method="fast")
    m = make(4, step_method="compiled")
    x = data(2, 3)[:, 0]
    with pytest.raises(ValueError, match=r"no_grad"):
        m.step(x, None)  # gradients enabled
    with torch.no_grad(), pytest.raises(ValueError, match="float32/float64"):
        m.to(torch.bfloat16).step(x.to(torch.bfloat16), None)
    m.double()
    for method in STEP_METHODS_ALL:  # x_t in another dtype than the weights: a clear error, any method
        m.step_method = method
        with torch.no_grad(), pytest.raises(TypeError, match="x_t has dtype torch.float32 but the mixer's"):
            m.step(x.float(), None)
    m.step_method = "compiled"
    with pytest.raises(ValueError, match="step_method must be one of"):
        m.step_method = "bogus"  # checked on assignment too
    assert m.step_method == "compiled"
    with torch.no_grad(), pytest.raises(ValueError, match="batch size 0"):
        m.step(x[:0], None)
    # numba missing: "compiled" names the extra, "auto" falls back to the eager step
    import sys

    from recurrences import _optional

    monkeypatch.setitem(sys.modules, "numba", None)
    monkeypatch.delitem(sys.modules, "recurrences.layers._rat_kernel", raising=False)
    monkeypatch.setattr(_optional, "_cache", {})
    with torch.no_grad(), pytest.raises(ImportError, match=r"recurrences\[fast\]"):
        m.step(x, None)
    m.step_method = "auto"
    with torch.no_grad():
        y, _ = m.step(x, None)
    torch.testing.assert_close(y, m(x[:, None])[:, 0].detach())


# -- construction, registry and errors ---------------------------------------------------------------
def test_registry_and_defaults():
    assert "rat" in available_mixers(causal=True)
    m = create_mixer("rat", d_model=32, n_heads=4)
    assert m.chunk_size == 16 and m.n_groups == 2 and m.form == "auto" and m.resolve_form(100) == "parallel"
    p = torch.sigmoid(m.gate_bias.detach())
    assert float(p.min()) >= 0.5 - 1e-6 and float(p.max()) <= 1 - 1 / 16 + 1e-6
    assert create_mixer("rat", d_model=24, n_heads=3).n_groups == 1
    n = sum(p.numel() for p in m.parameters())
    assert n == 32 * (3 * 32 + 2 * 2 * 8) + 32 * 32 + 32  # D(3D + 2 G d_h) + D^2 + D


def test_bad_options_and_inputs_raise():
    with pytest.raises(ValueError, match="chunk_size"):
        RAT(16, 4, chunk_size=0)
    with pytest.raises(ValueError, match="chunk_size"):
        RAT(16, 4, chunk_size=2.5)
    with pytest.raises(ValueError, match="n_groups"):
        RAT(16, 4, n_groups=3)
    with pytest.raises(ValueError, match="even head dim"):
        RAT(15, 5)
    for bad_base in (0.0, float("inf"), float("nan"), "1e4", True):
        with pytest.raises(ValueError, match="rope_base"):
            RAT(16, 4, rope_base=bad_base)
    m = make(4)
    x = data(2, 9)
    with pytest.raises(ValueError, match="x must have shape"):
        m(x[0])
    with pytest.raises(ValueError, match="mask"):
        m(x, mask=torch.ones(2, 8, dtype=torch.bool))
    with pytest.raises(ValueError, match="x_t must have shape"):
        m.step(x, m.init_state(2))
    with pytest.raises(TypeError, match="RATState"):
        m.step(x[:, 0], {"pos": 0})
    with pytest.raises(ValueError, match=r"\(B, H, capacity, d\)"):
        m(x, state=m.init_state(3), return_state=True)
    with pytest.raises(ValueError, match="chunk_size"):
        _, s = make(3)(x, return_state=True)  # a state from a layer with another chunk size
        m.step(x[:, 0], s)
    with pytest.raises(ValueError, match="batch_size"):
        m.init_state(0)
    assert isinstance(m.init_state(2), RATState)


def test_hybrid_rat_swa_model():
    """RAT-SWA = the pattern "rat|swa": RAT and sliding-window attention alternate over the layers."""
    models = pytest.importorskip("recurrences.models")
    if not hasattr(models, "ModelConfig") or not hasattr(models, "SequenceModel"):
        pytest.skip("model package not ready")
    cfg = models.ModelConfig(
        mixer="rat|swa",
        d_model=16,
        n_heads=2,
        n_layers=4,
        vocab_size=11,
        head="lm",
        mixer_options={"rat": {"chunk_size": 4}, "swa": {"window": 8}},
    )
    torch.manual_seed(0)
    model = models.SequenceModel(cfg).double()
    kinds = [type(b.mixer).__name__ for b in model.blocks]
    assert kinds == ["RAT", "Attention", "RAT", "Attention"]
    assert model.blocks[1].mixer.window == 8 and model.blocks[0].mixer.chunk_size == 4
    x = torch.randint(0, 11, (2, 19), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = model(x)
        _, state = model(x[:, :10], return_state=True)
        outs = []
        for t in range(10, 19):
            lt, state = model.step(x[:, t], state)
            outs.append(lt)
    assert logits.shape == (2, 19, 11)
    torch.testing.assert_close(torch.stack(outs, 1), logits[:, 10:], rtol=1e-9, atol=1e-11)


def test_named_hybrid_rat_swa_expands_to_the_alternating_pattern():
    from recurrences.layers import available_hybrids, expand_hybrid
    from recurrences.models import ModelConfig, SequenceModel

    assert "rat-swa" in available_hybrids()
    assert expand_hybrid("rat-swa") == ("rat|swa", {"swa": {"window": 1024}})
    cfg = ModelConfig(
        mixer="rat-swa", d_model=16, n_layers=2, n_heads=2, vocab_size=11, n_outputs=11, head="lm"
    )
    assert cfg.mixer == "rat|swa" and cfg.mixer_options == {"swa": {"window": 1024}}
    model = SequenceModel(cfg)
    kinds = [type(b.mixer).__name__ for b in model.blocks]
    assert kinds[0] != kinds[1]
    assert model.blocks[1].mixer.window == 1024
    # explicit options override the hybrid's defaults
    cfg = ModelConfig(
        mixer="rat-swa",
        mixer_options={"swa": {"window": 32}},
        d_model=16,
        n_layers=2,
        n_heads=2,
        vocab_size=11,
        n_outputs=11,
        head="lm",
    )
    assert SequenceModel(cfg).blocks[1].mixer.window == 32
    # round-trips as its expanded pattern
    assert ModelConfig.from_json(cfg.to_json()) == cfg
