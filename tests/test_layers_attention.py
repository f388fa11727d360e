"""Softmax attention baseline: forms, masks (causal / bidirectional / window / padding), RoPE, KV cache."""

from __future__ import annotations

import math

import pytest
import torch

from recurrences.layers import create_mixer
from recurrences.layers._rope import apply_rope, rope_cos_sin, rope_frequencies, rotate_half
from recurrences.layers.attention import (
    Attention,
    KVCache,
    attention_mask,
    softmax_attention_reference,
    softmax_attention_sdpa,
)

F64 = torch.float64


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


def visible(i: int, j: int, causal: bool, window: int | None) -> bool:
    if causal and j > i:
        return False
    if window is not None:
        return (i - j < window) if causal else (abs(i - j) < window)
    return True


def brute_force(q, k, v, valid, causal, window):
    """One query at a time, from the definition; valid (B, T) marks real keys."""
    B, T, H, d = q.shape
    out = torch.zeros_like(q)
    for b in range(B):
        for h in range(H):
            for i in range(T):
                js = [j for j in range(T) if visible(i, j, causal, window) and bool(valid[b, j])]
                if not js:
                    continue
                s = torch.stack([q[b, i, h] @ k[b, j, h] for j in js]) / math.sqrt(d)
                p = torch.softmax(s, 0)
                out[b, i, h] = sum(p[n] * v[b, j, h] for n, j in enumerate(js))
    return out


# -- masks and forms -------------------------------------------------------------------------------
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("window", [None, 1, 3])
def test_mask_rule(causal, window):
    T = 6
    pos = torch.arange(T)
    got = attention_mask(pos, pos, causal=causal, window=window)[0]
    want = torch.tensor([[visible(i, j, causal, window) for j in range(T)] for i in range(T)])
    assert torch.equal(got, want)


def test_mask_padding_rows():
    pos = torch.arange(4)
    valid = torch.tensor([[False, True, True, False]])
    got = attention_mask(pos, pos, causal=False, key_valid=valid, query_valid=valid)[0]
    # every query sees the real keys; a padded query also sees itself (so no row is ever empty)
    want = torch.tensor([[1, 1, 1, 0], [0, 1, 1, 0], [0, 1, 1, 0], [0, 1, 1, 1]], dtype=torch.bool)
    assert torch.equal(got, want)
    got = attention_mask(pos, pos, causal=True, key_valid=valid, query_valid=valid)[0]
    want = torch.tensor([[1, 0, 0, 0], [0, 1, 0, 0], [0, 1, 1, 0], [0, 1, 1, 1]], dtype=torch.bool)
    assert torch.equal(got, want)


@pytest.mark.parametrize("T", [1, 7, 23])
@pytest.mark.parametrize("causal,window", [(True, None), (False, None), (True, 4), (False, 3)])
def test_reference_matches_definition(T, causal, window):
    q, k, v = rand(2, T, 2, 4, seed=1), rand(2, T, 2, 4, seed=2), rand(2, T, 2, 4, seed=3)
    valid = torch.ones(2, T, dtype=torch.bool)
    valid[1, : T // 3] = False
    valid[1, -1] = True
    pos = torch.arange(T)
    allowed = attention_mask(pos, pos, causal=causal, window=window, key_valid=valid)
    got = softmax_attention_reference(q, k, v, allowed)
    want = brute_force(q, k, v, valid, causal, window)
    rows = allowed.any(-1)  # rows with at least one visible key
    torch.testing.assert_close(got[rows], want[rows])
    assert bool((got[~rows] == 0).all())


def test_causal_flag_equals_explicit_mask():
    q, k, v = rand(1, 9, 2, 4, seed=1), rand(1, 9, 2, 4, seed=2), rand(1, 9, 2, 4, seed=3)
    pos = torch.arange(9)
    allowed = attention_mask(pos, pos, causal=True)
    for fn in (softmax_attention_reference, softmax_attention_sdpa):
        torch.testing.assert_close(fn(q, k, v, causal=True), softmax_attention_reference(q, k, v, allowed))
        torch.testing.assert_close(
            fn(q, k, v, allowed, causal=True), softmax_attention_reference(q, k, v, allowed)
        )


def test_reference_empty_row_is_zero_with_finite_grads():
    q, k, v = (rand(1, 3, 1, 2, seed=s).requires_grad_(True) for s in (1, 2, 3))
    allowed = torch.tensor([[[False, False, False], [True, True, False], [True, True, True]]])
    o = softmax_attention_reference(q, k, v, allowed)
    assert bool((o[0, 0] == 0).all())
    o.sum().backward()
    assert all(bool(torch.isfinite(t.grad).all()) for t in (q, k, v))


@pytest.mark.parametrize("T", [1, 7, 63, 100])
@pytest.mark.parametrize(
    "kw", [{"causal": True}, {"causal": False}, {"causal": True, "window": 5}, {"causal": False, "window": 4}]
)
def test_sdpa_matches_reference_with_padding(T, kw):
    torch.manual_seed(0)
    m = Attention(16, 4, **kw).double()
    x0 = rand(2, T, 16, seed=T)
    mask = torch.ones(2, T, dtype=torch.bool)
    mask[0, : T // 4] = False  # left
    mask[1, T // 2 : T // 2 + T // 5] = False  # middle
    mask[:, -1] = True
    w = rand(2, T, 16, seed=99)
    res = {}
    for form in ("reference", "sdpa"):
        m.form = form
        m.zero_grad(set_to_none=True)
        x = x0.clone().requires_grad_(True)
        y = m(x, mask=mask)
        (y * w).sum().backward()
        res[form] = (y.detach(), x.grad, m.qkv.weight.grad.clone(), m.out.weight.grad.clone())
    for a, b in zip(res["sdpa"], res["reference"]):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


def test_auto_form_is_sdpa():
    m = Attention(16, 2)
    assert m.resolve_form(10) == "sdpa"
    m.form = "reference"
    assert m.resolve_form(10) == "reference"


# -- padding ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kw", [{"causal": True}, {"causal": False}, {"causal": True, "window": 3}, {"causal": False, "window": 3}]
)
def test_left_padding_equals_unpadded(kw):
    # RoPE scores depend only on i - j, so shifting a sequence right by padding changes nothing.
    torch.manual_seed(0)
    m = Attention(16, 2, **kw).double()
    x = rand(1, 9, 16, seed=4)
    padded = torch.cat([rand(1, 5, 16, seed=5), x], dim=1)
    mask = torch.ones(1, 14, dtype=torch.bool)
    mask[0, :5] = False
    with torch.no_grad():
        y_pad = m(padded, mask=mask)
        torch.testing.assert_close(y_pad[:, 5:], m(x))
        assert bool((y_pad[:, :5] == 0).all())


def test_padded_keys_get_no_weight_bidirectional():
    torch.manual_seed(0)
    # without RoPE positions do not matter, so dropping the padded tokens must give the same outputs
    m = Attention(8, 2, causal=False, rope=False).double()
    x = rand(1, 6, 8, seed=1)
    mask = torch.tensor([[True, True, False, True, False, True]])
    with torch.no_grad():
        y = m(x, mask=mask)
        torch.testing.assert_close(y[mask], m(x[:, mask[0]])[0])


def test_no_rope_bidirectional_is_permutation_equivariant():
    torch.manual_seed(0)
    m = Attention(8, 2, causal=False, rope=False).double()
    x = rand(1, 7, 8, seed=1)
    perm = torch.randperm(7)
    with torch.no_grad():
        torch.testing.assert_close(m(x[:, perm]), m(x)[:, perm])
    m_rope = Attention(8, 2, causal=False, rope=True).double()
    with torch.no_grad():
        assert not torch.allclose(m_rope(x[:, perm]), m_rope(x)[:, perm])


# -- RoPE ------------------------------------------------------------------------------------------
def test_rope_is_relative_and_norm_preserving():
    q, k = rand(1, 1, 1, 8, seed=1), rand(1, 1, 1, 8, seed=2)

    def score(m, n):
        return (apply_rope(q, torch.tensor([m])) * apply_rope(k, torch.tensor([n]))).sum()

    torch.testing.assert_close(score(3, 1), score(103, 101))
    torch.testing.assert_close(score(0, 0), (q * k).sum())
    assert not torch.allclose(score(3, 1), score(1, 3))
    r = apply_rope(q, torch.tensor([57]))
    torch.testing.assert_close(r.norm(), q.norm())


def test_rope_matches_complex_rotation():
    # rotate-half RoPE = multiplying (x1 + i x2) by exp(i p w) pairwise
    x = rand(2, 5, 3, 6, seed=1)
    pos = torch.arange(5) * 7.0
    got = apply_rope(x, pos)
    z = (
        torch.complex(x[..., :3], x[..., 3:])
        * torch.polar(torch.ones(5, 3, dtype=F64), pos[:, None].double() * rope_frequencies(6))[None, :, None]
    )
    torch.testing.assert_close(got, torch.cat([z.real, z.imag], -1))
    pos2 = torch.stack([pos, pos + 1])
    torch.testing.assert_close(apply_rope(x, pos2)[0], got[0])
    torch.testing.assert_close(rotate_half(rotate_half(x)), -x)
    cos, sin = rope_cos_sin(pos, 6)
    assert cos.shape == (5, 6) and cos.dtype == torch.float32


def test_rope_errors():
    with pytest.raises(ValueError, match="even"):
        rope_frequencies(5)
    with pytest.raises(ValueError, match="positions"):
        apply_rope(rand(1, 4, 1, 4), torch.arange(3))
    with pytest.raises(ValueError, match="shape"):
        apply_rope(rand(4, 4), torch.arange(4))


# -- KV cache --------------------------------------------------------------------------------------
@pytest.mark.parametrize("window", [None, 1, 4])
def test_step_with_cache_equals_forward(window):
    torch.manual_seed(0)
    m = Attention(16, 2, window=window).double()
    x = rand(2, 20, 16, seed=3)
    with torch.no_grad():
        y = m(x)
        y0, s = m(x[:, :6], return_state=True)  # state=None: a fresh cache
        outs = [y0]
        for t in range(6, 20):
            y_t, s = m.step(x[:, t], s)
            outs.append(y_t.unsqueeze(1))
            if window is not None:
                assert s.k.shape[1] <= window - 1  # bounded cache
            else:
                assert s.k.shape[1] == t + 1
        assert s.pos == 20
    torch.testing.assert_close(torch.cat(outs, 1), y)


def test_init_state_is_empty_cache():
    m = Attention(16, 4)
    s = m.init_state(3)
    assert isinstance(s, KVCache)
    assert s.k.shape == (3, 0, 4, 4) and s.valid.shape == (3, 0) and s.pos == 0
    assert s.k.dtype == torch.float32


def test_bidirectional_has_no_state():
    m = Attention(16, 2, causal=False)
    with pytest.raises(NotImplementedError):
        m.init_state(2)
    with pytest.raises(NotImplementedError):
        m.step(torch.randn(2, 16), None)


def test_bad_state_raises():
    m = Attention(16, 2)
    x = torch.randn(2, 16)
    with pytest.raises(TypeError, match="KVCache"):
        m.step(x, (torch.zeros(2, 0, 2, 8), torch.zeros(2, 0, 2, 8)))
    s = m.init_state(2)
    with pytest.raises(ValueError, match="state.k"):
        m.step(
            x,
            KVCache(torch.zeros(2, 1, 4, 4), torch.zeros(2, 1, 4, 4), torch.ones(2, 1, dtype=torch.bool), 1),
        )
    with pytest.raises(ValueError, match="state.valid"):
        m.step(x, KVCache(s.k, s.v, torch.zeros(2, 0), 0))
    with pytest.raises(ValueError, match="state.pos"):
        m.step(
            x,
            KVCache(torch.zeros(2, 2, 2, 8), torch.zeros(2, 2, 2, 8), torch.ones(2, 2, dtype=torch.bool), 1),
        )


@pytest.mark.parametrize("window", [None, 1, 3, 5])
@pytest.mark.parametrize("rope", [True, False])
def test_long_in_place_decoding_equals_forward(window, rope):
    """Many no-grad steps: the buffers are appended to in place, grown, and (with a window) slid."""
    torch.manual_seed(0)
    m = Attention(16, 2, window=window, rope=rope).double()
    T, P = 300, 7  # positions up to 300 cross the RoPE table's 256-position blocks
    x = rand(2, T, 16, seed=4)
    mask = torch.ones(2, T, dtype=torch.bool)
    mask[0, :3] = False  # a left-padded prompt: the cache holds invalid entries
    with torch.no_grad():
        y = m(x, mask=mask)
        y0, s = m(x[:, :P], mask=mask[:, :P], return_state=True)
        outs, bufs = [y0], set()
        for t in range(P, T):
            y_t, s = m.step(x[:, t], s)
            outs.append(y_t.unsqueeze(1))
            bufs.add(s.k_buf.data_ptr())
            assert s.k.shape[1] == (t + 1 if window is None else min(t + 1, window - 1))
    torch.testing.assert_close(torch.cat(outs, 1)[mask], y[mask])
    # amortised O(1) appends: a new buffer only when the old one is full (doubling, or sliding a window)
    assert len(bufs) <= (12 if window is None else (T - P) // 4 + 2)


def test_steps_reuse_the_buffer_and_views_stay_consistent():
    m = Attention(16, 4)
    s = m.init_state(2)
    x = torch.randn(10, 2, 16)
    with torch.no_grad():
        _, s1 = m.step(x[0], s)
        _, s2 = m.step(x[1], s1)
    assert s2.k_buf is s1.k_buf and s2.k.shape == (2, 2, 4, 4) and s2.valid.shape == (2, 2)
    torch.testing.assert_close(s2.k[:, :1], s1.k)
    assert bool(s2.valid.all()) and s2.all_valid
    # a cache whose views were replaced by other tensors gets fresh buffers (its own views are kept)
    moved = KVCache(s2.k.clone(), s2.v.clone(), s2.valid.clone(), s2.pos, s2.k_buf, s2.v_buf, s2.valid_buf)
    with torch.no_grad():
        ya, sa = m.step(x[2], moved)
        yb, sb = m.step(x[2], s2)
    assert sa.k_buf is not s2.k_buf
    torch.testing.assert_close(ya, yb)


def test_clone_allows_branching():
    torch.manual_seed(0)
    m = Attention(16, 2).double()
    x = rand(1, 9, 16, seed=2)
    with torch.no_grad():
        _, s = m(x[:, :5], return_state=True)
        _, s = m.step(x[:, 5], s)  # now a cache with spare room, appended to in place
        s2 = s.clone()
        ya, _ = m.step(x[:, 6], s)
        yb, _ = m.step(x[:, 7], s2)
        yc, _ = m.step(x[:, 6], s2.clone())
        yd = m(x[:, :7])[:, -1]
    torch.testing.assert_close(ya, yc)
    torch.testing.assert_close(ya, yd)
    assert not torch.allclose(ya, yb)


@pytest.mark.parametrize("window", [None, 3])
def test_steps_under_autograd_never_write_in_place(window):
    """With gradients on, step() concatenates; mixing it with in-place no-grad steps keeps backward valid."""
    torch.manual_seed(0)
    m = Attention(16, 2, window=window).double()
    x = rand(2, 12, 16, seed=5)
    y_full = m(x)
    y0, s = m(x[:, :4], return_state=True)  # prefill with gradients
    outs = [y0]
    for t in range(4, 8):  # steps with gradients
        y_t, s = m.step(x[:, t], s)
        outs.append(y_t.unsqueeze(1))
    with torch.no_grad():  # then in-place steps: must not touch tensors the graph saved
        for t in range(8, 12):
            y_t, s = m.step(x[:, t], s)
            outs.append(y_t.unsqueeze(1))
    y = torch.cat(outs, 1)
    torch.testing.assert_close(y, y_full.detach(), rtol=1e-9, atol=1e-11)
    w = rand(2, 8, 16, seed=6)
    (y[:, :8] * w).sum().backward()
    g_step = m.qkv.weight.grad.clone()
    m.zero_grad()
    (m(x[:, :8]) * w).sum().backward()
    torch.testing.assert_close(g_step, m.qkv.weight.grad)


def test_step_rejects_bad_tokens():
    m = Attention(16, 2)
    s = m.init_state(2)
    bad = torch.randn(2, 16)
    bad[1, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        m.step(bad, s)
    with pytest.raises(ValueError, match="d_model"):
        m.step(torch.randn(2, 15), s)
    with pytest.raises(TypeError, match="floating"):
        m.step(torch.ones(2, 16, dtype=torch.long), s)


# -- construction ----------------------------------------------------------------------------------
def test_registry_variants():
    a = create_mixer("attention", d_model=16, n_heads=2)
    b = create_mixer("attention-bidir", d_model=16, n_heads=2)
    s = create_mixer("swa", d_model=16, n_heads=2)
    s2 = create_mixer("swa", d_model=16, n_heads=2, window=1024)
    assert (a.causal, a.window) == (True, None)
    assert (b.causal, b.window) == (False, None)
    assert (s.causal, s.window, s2.window) == (True, 64, 1024)
    assert a.rope and b.rope and s.rope


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"window": 0}, "window"),
        ({"window": 2.5}, "window"),
        ({"window": True}, "window"),
        ({"causal": "yes"}, "causal"),
        ({"rope_base": 0.0}, "rope_base"),
    ],
)
def test_bad_options_raise(kw, match):
    with pytest.raises((ValueError, TypeError), match=match):
        Attention(16, 2, **kw)


def test_bad_head_sizes_raise():
    with pytest.raises(ValueError, match="divisible"):
        Attention(16, 3)
    with pytest.raises(ValueError, match="even head dim"):
        Attention(6, 2)  # head dim 3
    Attention(6, 2, rope=False)  # fine without RoPE


def test_form_functions_check_shapes():
    q = rand(1, 4, 2, 4)
    with pytest.raises(ValueError, match="shape"):
        softmax_attention_reference(q[0], q[0], q[0])
    with pytest.raises(ValueError, match="allowed"):
        softmax_attention_sdpa(q, q, q, torch.ones(1, 4, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="causal"):
        softmax_attention_reference(q, q[:, :3], q[:, :3], causal=True)
