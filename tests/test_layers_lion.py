"""LION: all forms equal (outputs and gradients), equal to the paper's mask definition, padding, errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from recurrences.layers import available_mixers, create_mixer, mixer_spec
from recurrences.layers.lion import (
    LION_FORMS,
    feature_map,
    lion_attention,
    lion_chunk,
    lion_mask,
    lion_numden,
    lion_rnn,
    lion_scan,
    snake_orders,
)

DT = torch.float64
FAST_FORMS = {"rnn": lion_rnn, "chunk": lion_chunk, "scan": lion_scan}
NAMES = ("lion-lit", "lion-d", "lion-s")


def _qkv(B=2, T=9, H=2, d=3, e=4, seed=0, decay=True):
    g = torch.Generator().manual_seed(seed)
    q = feature_map(torch.randn(B, T, H, d, generator=g, dtype=DT))
    k = feature_map(torch.randn(B, T, H, d, generator=g, dtype=DT))
    v = torch.randn(B, T, H, e, generator=g, dtype=DT)
    a = F.logsigmoid(torch.randn(B, T, H, generator=g, dtype=DT)) if decay else None
    return q, k, v, a


def _double_loop(q, k, v, lam, normalize=True, eps=1e-6):
    """y_i = sum_j M_ij (q_i.k_j) v_j / (sum_j M_ij q_i.k_j + eps), M from explicit products of lambdas:
    M_ij = prod_{k=j}^{i-1} lam_k (i > j), 1 (i = j), prod_{k=i+1}^{j} lam_k (i < j)."""
    B, T, H, _ = q.shape
    y = torch.zeros(B, T, H, v.shape[-1], dtype=q.dtype)
    for b in range(B):
        for h in range(H):
            for i in range(T):
                num = torch.zeros(v.shape[-1], dtype=q.dtype)
                den = torch.zeros((), dtype=q.dtype)
                for j in range(T):
                    m = torch.ones((), dtype=q.dtype)
                    rng = range(j, i) if i > j else range(i + 1, j + 1)
                    for kk in rng:
                        m = m * lam[b, kk, h]
                    w = m * (q[b, i, h] @ k[b, j, h])
                    num = num + w * v[b, j, h]
                    den = den + w
                y[b, i, h] = num / (den + eps) if normalize else num
    return y


# -- the mask ----------------------------------------------------------------------------------------------------
def test_mask_matches_products_and_toeplitz():
    _, _, _, a = _qkv(B=1, T=8, H=2)
    M = lion_mask(a)
    lam = a.exp()
    for i in range(8):
        for j in range(8):
            rng = range(j, i) if i > j else range(i + 1, j + 1)
            expect = math.prod(lam[0, kk, 1].item() for kk in rng)
            assert M[0, 1, i, j].item() == pytest.approx(expect, rel=1e-12)
    assert not torch.allclose(M, M.transpose(-1, -2))  # not symmetric in general
    lam_h = torch.tensor([0.3, 0.9], dtype=DT)
    MD = lion_mask(lam_h.log().expand(1, 6, 2))
    idx = torch.arange(6)
    toeplitz = lam_h[:, None, None] ** (idx[:, None] - idx[None, :]).abs()
    torch.testing.assert_close(MD[0], toeplitz)


# -- forms equal each other and the definition ---------------------------------------------------------------------
@pytest.mark.parametrize("T", [1, 7, 63, 100])
@pytest.mark.parametrize("decay", [False, True])
@pytest.mark.parametrize("normalize", [True, False])
def test_forms_equal_reference(T, decay, normalize):
    q, k, v, a = _qkv(T=T, decay=decay, seed=T)
    ref = lion_attention(q, k, v, a, normalize=normalize)
    for name, f in FAST_FORMS.items():
        for cs in (5, 16):  # chunk sizes that do not divide T
            if name == "rnn" and cs == 16:
                continue
            out = f(q, k, v, a, normalize=normalize, chunk_size=cs)
            torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10, msg=f"{name} C={cs}")


@pytest.mark.parametrize("normalize", [True, False])
def test_equals_double_loop_from_definition(normalize):
    q, k, v, a = _qkv(B=1, T=6, H=2, seed=3)
    ref = _double_loop(q, k, v, a.exp(), normalize=normalize)
    for form in LION_FORMS:
        num, den = lion_numden(q, k, v, a, form=form, normalize=normalize, chunk_size=4)
        out = num if den is None else num / (den + 1e-6)[..., None]
        torch.testing.assert_close(out, ref, rtol=1e-11, atol=1e-11, msg=form)


@pytest.mark.parametrize("T,C", [(1, 4), (7, 3), (63, 8), (100, 16)])
def test_chunked_causal_gla_equals_sequential_scan(T, C):
    """Spec C.4: the chunked causal gated linear attention (the building block of the "scan" form) equals
    the token-by-token recurrence S_t = exp(g_t) S_{t-1} + k_t v_t^T, o_t = q_t^T S_t."""
    from recurrences.layers.lion import _causal_chunked

    q, k, v, g = _qkv(T=T, seed=T + 1)
    S = torch.zeros(2, 2, 3, 4, dtype=DT)
    ref = []
    for t in range(T):
        S = g[:, t, :, None, None].exp() * S + k[:, t, :, :, None] * v[:, t, :, None, :]
        ref.append(torch.einsum("bhd,bhde->bhe", q[:, t], S))
    ref = torch.stack(ref, 1)
    torch.testing.assert_close(_causal_chunked(q, k, v, g, C), ref, rtol=1e-11, atol=1e-12)
    S = torch.cumsum(k[..., :, None] * v[..., None, :], dim=1)
    torch.testing.assert_close(_causal_chunked(q, k, v, None, C), torch.einsum("bthd,bthde->bthe", q, S))


def test_naive_sum_of_two_causal_directions_double_counts():
    q, k, v, _ = _qkv(B=1, T=7, decay=False)
    ref = lion_attention(q, k, v, None, normalize=False)
    scores = torch.einsum("bihd,bjhd->bhij", q, k)
    naive = torch.einsum("bhij,bjhe->bihe", scores.tril() + scores.triu(), v)
    assert (naive - ref).abs().max() > 1e-3


@pytest.mark.parametrize("form", ["rnn", "chunk", "scan"])
def test_gradients_equal_reference(form):
    q, k, v, a = _qkv(T=23, seed=5)
    ins = [t.clone().requires_grad_() for t in (q, k, v, a)]
    w = torch.randn(2, 23, 2, 4, dtype=DT, generator=torch.Generator().manual_seed(1))
    (lion_attention(*ins) * w).sum().backward()
    g_ref = [t.grad.clone() for t in ins]
    ins2 = [t.detach().clone().requires_grad_() for t in ins]
    (FAST_FORMS[form](*ins2, chunk_size=6) * w).sum().backward()
    for n, g1, g2 in zip("qkva", g_ref, [t.grad for t in ins2]):
        torch.testing.assert_close(g2, g1, rtol=1e-9, atol=1e-10, msg=f"d{n} ({form})")


@pytest.mark.parametrize("form", LION_FORMS)
def test_gradcheck(form):
    q, k, v, a = _qkv(B=1, T=5, H=1, d=2, e=2, seed=7)
    ins = tuple(t.clone().requires_grad_() for t in (q, k, v, a))

    def f(q, k, v, a):
        num, den = lion_numden(q, k, v, a, form=form, chunk_size=2)
        return num / (den + 1e-6)[..., None]

    assert torch.autograd.gradcheck(f, ins)


@pytest.mark.parametrize("log_lam", [-40.0, -1e-9])
def test_selective_decays_near_zero_and_one(log_lam):
    q, k, v, _ = _qkv(T=40, seed=9)
    g = torch.Generator().manual_seed(2)
    a = (log_lam * (1 + 0.1 * torch.rand(2, 40, 2, generator=g, dtype=DT))).requires_grad_()
    ref = lion_attention(q, k, v, a)
    assert torch.isfinite(ref).all()
    (ga,) = torch.autograd.grad(ref.sum(), a)
    for f in FAST_FORMS.values():
        a2 = a.detach().clone().requires_grad_()
        out = f(q, k, v, a2, chunk_size=8)
        torch.testing.assert_close(out, ref, rtol=1e-9, atol=1e-10)
        (g2,) = torch.autograd.grad(out.sum(), a2)
        assert torch.isfinite(g2).all()
        torch.testing.assert_close(g2, ga, rtol=1e-7, atol=1e-9)
    if log_lam < -1:  # lambda ~ 0: M = I, so y_i = v_i
        torch.testing.assert_close(ref, v, rtol=1e-5, atol=1e-5)
    else:  # lambda ~ 1: LION-LIT
        torch.testing.assert_close(ref, lion_attention(q, k, v, None), rtol=1e-6, atol=1e-6)


# -- the mixers ------------------------------------------------------------------------------------------------
def test_registered_bidirectional():
    bidir = available_mixers(causal=False)
    for name in NAMES:
        assert name in bidir
        assert mixer_spec(name).causal is False
        m = create_mixer(name, d_model=8, n_heads=2)
        assert m.causal is False and "reference" in m.forms and "attention" in m.forms
    assert create_mixer("lion-s", 8, 2).resolve_form(16) == "attention"
    assert create_mixer("lion-s", 8, 2).resolve_form(1 << 16) == "scan"


def _mixer(name, **kw):
    torch.manual_seed(0)
    m = create_mixer(name, d_model=12, n_heads=3, chunk_size=5, **kw).to(DT)
    with torch.no_grad():  # larger weights than the 0.02 init, so that the test is sensitive
        for p in m.parameters():
            p.normal_(0, 0.5)
    return m


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("T", [1, 7, 63, 100])
def test_mixer_forms_equal_with_padding(name, T):
    m = _mixer(name)
    g = torch.Generator().manual_seed(T)
    x = torch.randn(3, T, 12, generator=g, dtype=DT)
    lengths = [T, max(1, T - 3), max(1, T // 2)]
    mask = torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]
    if T > 4:
        mask[0, 2] = False  # a hole in the middle as well
    outs, grads = {}, {}
    for form in LION_FORMS:
        m.form = form
        xx = x.clone().requires_grad_()
        y = m(xx, mask=mask)
        (y * torch.linspace(-1, 1, 12, dtype=DT)).sum().backward()
        outs[form] = y
        grads[form] = [xx.grad] + [
            torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in m.parameters()
        ]
        m.zero_grad()
    for form in LION_FORMS[1:]:
        torch.testing.assert_close(outs[form], outs["reference"], rtol=1e-9, atol=1e-10)
        for g1, g2 in zip(grads["reference"], grads[form]):
            torch.testing.assert_close(g2, g1, rtol=1e-8, atol=1e-9)
    assert (outs["reference"][~mask] == 0).all()


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("form", ["reference", "scan"])
def test_padding_is_transparent_in_both_directions(name, form):
    m = _mixer(name, form=form)
    g = torch.Generator().manual_seed(4)
    real = torch.randn(1, 10, 12, generator=g, dtype=DT)
    y_real = m(real)
    # the same tokens with padding inserted at the start, in the middle and at the end
    x = torch.randn(1, 16, 12, generator=g, dtype=DT) * 100
    pos = torch.tensor([1, 2, 3, 6, 7, 8, 9, 11, 12, 13])
    mask = torch.zeros(1, 16, dtype=torch.bool)
    mask[0, pos] = True
    x[0, pos] = real[0]
    y = m(x, mask=mask)
    torch.testing.assert_close(y[0, pos], y_real[0], rtol=1e-10, atol=1e-10)
    x2 = x.clone()
    x2[~mask] = -x2[~mask]
    torch.testing.assert_close(m(x2, mask=mask), y)


def test_patch_grid_two_orderings_equal_mask_average():
    m = _mixer("lion-s", patch_grid=(3, 4))
    x = torch.randn(2, 13, 12, dtype=DT, generator=torch.Generator().manual_seed(1))  # CLS + 3x4 patches
    outs = {}
    for form in LION_FORMS:
        m.form = form
        outs[form] = m(x)
    for form in LION_FORMS[1:]:
        torch.testing.assert_close(outs[form], outs["reference"], rtol=1e-10, atol=1e-10)
    # explicit: M = P1 M1 P1^T + P2 M2 P2^T (the 1/2 cancels), normalisation after masking
    B, T, H, d = 2, 13, 3, 4
    q, k, v = m.qkv(x).reshape(B, T, 3, H, d).unbind(2)
    q, k = feature_map(q), feature_map(k)
    a = m.log_decays(x)
    M = torch.zeros(B, H, T, T, dtype=DT)
    for o, perm in enumerate(snake_orders(3, 4, 1)):
        Mo = lion_mask(a[:, perm, o])
        inv = torch.argsort(perm)
        M = M + Mo[:, :, inv][:, :, :, inv]
    A = torch.einsum("bihd,bjhd->bhij", q, k) * M
    y = torch.einsum("bhij,bjhe->bihe", A, v) / (A.sum(-1).transpose(1, 2)[..., None] + 1e-6)
    torch.testing.assert_close(outs["reference"], m.proj(y.reshape(B, T, 12)))
    assert snake_orders(2, 3)[0].tolist() == [0, 1, 2, 5, 4, 3]
    assert snake_orders(2, 3)[1].tolist() == [0, 3, 4, 1, 2, 5]
    with pytest.raises(ValueError, match="patch_grid"):
        m(torch.randn(1, 7, 12, dtype=DT))


def test_feature_maps_and_options():
    x = torch.randn(4, 8)
    f = feature_map(x)
    assert (f > 0).all()
    torch.testing.assert_close(f.norm(dim=-1), torch.ones(4))
    assert (feature_map(x, "elu") > 0).all()
    m = create_mixer("lion-lit", 16, 4, feature_map="elu", normalize=False)
    assert m.head_norm and torch.isfinite(m(torch.randn(2, 9, 16))).all()


def test_memory_linear_in_T_for_scan_form():
    """Bytes saved for backward: the scan form grows linearly in T, the attention form quadratically."""

    def saved_bytes(form, T):
        total = 0

        def pack(t):
            nonlocal total
            total += t.numel() * t.element_size()
            return t

        m = create_mixer("lion-s", 16, 2, form=form, chunk_size=16)
        x = torch.randn(1, T, 16, requires_grad=True)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            m(x).sum().backward()
        return total

    r_scan = saved_bytes("scan", 2048) / saved_bytes("scan", 512)
    r_attn = saved_bytes("attention", 2048) / saved_bytes("attention", 512)
    assert r_scan < 4.5, r_scan
    assert r_attn > 10, r_attn


def test_bad_input_errors():
    with pytest.raises(ValueError, match="divisible"):
        create_mixer("lion-s", d_model=10, n_heads=3)
    m = create_mixer("lion-d", d_model=8, n_heads=2)
    with pytest.raises(ValueError, match="mask"):
        m(torch.randn(2, 5, 8), mask=torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(TypeError, match="mask"):
        m(torch.randn(2, 5, 8), mask=torch.ones(2, 5))
    x = torch.randn(2, 5, 8)
    x[0, 1, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        m(x)
    with pytest.raises(ValueError, match="d_model"):
        m(torch.randn(2, 5, 6))
    with pytest.raises(ValueError, match="form"):
        create_mixer("lion-s", 8, 2, form="fft")
    with pytest.raises(ValueError, match="bidirectional"):
        m(torch.randn(1, 3, 8), return_state=True)
    with pytest.raises(ValueError, match="feature_map"):
        create_mixer("lion-s", 8, 2, feature_map="relu")
    with pytest.raises(ValueError, match="chunk_size"):
        create_mixer("lion-s", 8, 2, chunk_size=0)
    with pytest.raises(ValueError, match="patch_grid"):
        create_mixer("lion-s", 8, 2, patch_grid=(3,))
    q, k, v, a = _qkv(T=4)
    with pytest.raises(ValueError, match="log_decay"):
        lion_attention(q, k, v, a.abs() + 0.1)
    with pytest.raises(ValueError, match="log_decay"):
        lion_scan(q, k, v, a[:, :3])
    with pytest.raises(ValueError, match="NaN"):
        lion_rnn(q, k, v, a * float("nan"))
    with pytest.raises(ValueError, match="same shape"):
        lion_chunk(q, k[..., :2], v)
    with pytest.raises(ValueError, match="form"):
        lion_numden(q, k, v, form="fft")


# -- it trains -------------------------------------------------------------------------------------------------
def _train_toy(name: str, task: str, steps: int = 150) -> float:
    """Embedding + positions -> x + mixer(x) -> x + MLP(x) -> mean -> linear; returns test accuracy.

    "adjacent": are the marker tokens 1 and 2 neighbours (needs locality: not additively separable in the
    two positions, so the MLP alone cannot solve it); "order": does 1 come before 2."""
    torch.manual_seed(0)
    V, D, T = 6, 32, 12
    emb = torch.nn.Embedding(V, D)
    pos = torch.nn.Parameter(torch.randn(T, D) * 0.1)
    mixer = create_mixer("lion-s" if name == "none" else name, D, 4)
    mlp = torch.nn.Sequential(torch.nn.Linear(D, 2 * D), torch.nn.GELU(), torch.nn.Linear(2 * D, D))
    head = torch.nn.Linear(D, 2)
    params = [*emb.parameters(), pos, *mixer.parameters(), *mlp.parameters(), *head.parameters()]
    opt = torch.optim.Adam(params, lr=1e-2)
    g = torch.Generator().manual_seed(0)

    def batch(n):
        x = torch.randint(3, V, (n, T), generator=g)
        i = torch.randint(0, T, (n,), generator=g)
        if task == "adjacent":
            near = torch.rand(n, generator=g) < 0.5
            side = torch.where(torch.rand(n, generator=g) < 0.5, 1, T - 1)
            off = torch.where(near, side, torch.randint(2, T - 1, (n,), generator=g))
        else:
            off = torch.randint(1, T, (n,), generator=g)
        j = (i + off) % T
        x[torch.arange(n), i] = 1
        x[torch.arange(n), j] = 2
        y = (i - j).abs() == 1 if task == "adjacent" else i < j
        return x, y.long()

    def logits(x):
        h = emb(x) + pos
        h = h + (0 * h if name == "none" else mixer(h))
        h = h + mlp(h)
        return head(h.mean(1))

    for _ in range(steps):
        x, y = batch(64)
        loss = F.cross_entropy(logits(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    x, y = batch(512)
    with torch.no_grad():
        return (logits(x).argmax(-1) == y).float().mean().item()


@pytest.mark.parametrize("name,task", [("lion-d", "adjacent"), ("lion-s", "adjacent"), ("lion-lit", "order")])
def test_tiny_classifier_learns(name, task):
    acc = _train_toy(name, task)
    assert acc > 0.9, acc


def test_toy_adjacency_needs_the_mixer():
    assert _train_toy("none", "adjacent", steps=100) < 0.75
