"""Mamba (S6) baseline: the selective scan functions, the block, its init, padding and decoding state."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from recurrences.layers import create_mixer
from recurrences.layers.mamba import (
    Mamba,
    MambaState,
    discretize,
    selective_scan,
    selective_scan_reference,
)

F64 = torch.float64


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


def scan_args(Bt, T, E, N, *, per_channel=False, seed=0):
    u = rand(Bt, T, E, seed=seed)
    delta = F.softplus(rand(Bt, T, E, seed=seed + 1))
    A = -torch.exp(rand(E, N, seed=seed + 2))
    shape = (Bt, T, E, N) if per_channel else (Bt, T, N)
    B, C = rand(*shape, seed=seed + 3), rand(*shape, seed=seed + 4)
    D = rand(E, seed=seed + 5)
    h0 = rand(Bt, E, N, seed=seed + 6)
    return u, delta, A, B, C, D, h0


# -- pure functions --------------------------------------------------------------------------------
def test_reference_by_hand_two_steps():
    # E = 1, N = 2: h1 = d1 B1 u1, h2 = exp(d2 A) h1 + d2 B2 u2, y_t = <C_t, h_t> + D u_t
    u = torch.tensor([[[2.0], [-1.0]]], dtype=F64)
    d = torch.tensor([[[0.5], [0.25]]], dtype=F64)
    A = torch.tensor([[-1.0, -2.0]], dtype=F64)
    B = torch.tensor([[[1.0, 3.0], [2.0, -1.0]]], dtype=F64)
    C = torch.tensor([[[1.0, 1.0], [0.5, 2.0]]], dtype=F64)
    D = torch.tensor([0.1], dtype=F64)
    h1 = 0.5 * 2.0 * B[0, 0]
    h2 = torch.exp(0.25 * A[0]) * h1 + 0.25 * -1.0 * B[0, 1]
    want = torch.stack([(C[0, 0] * h1).sum() + 0.2, (C[0, 1] * h2).sum() - 0.1])
    for fn in (selective_scan_reference, selective_scan):
        y, h = fn(u, d, A, B, C, D)
        torch.testing.assert_close(y[0, :, 0], want)
        torch.testing.assert_close(h[0, 0], h2)


@pytest.mark.parametrize("T", [1, 7, 63, 100])
@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("method", ["sequential", "chunked"])
def test_scan_matches_reference_outputs_and_grads(T, per_channel, method):
    args = [a.requires_grad_(True) for a in scan_args(2, T, 3, 4, per_channel=per_channel, seed=T)]
    w = rand(2, T, 3, seed=50)
    wh = rand(2, 3, 4, seed=51)
    res = []
    for fn, kw in ((selective_scan_reference, {}), (selective_scan, {"method": method, "chunk_size": 8})):
        for a in args:
            a.grad = None
        y, h = fn(*args, **kw)
        ((y * w).sum() + (h * wh).sum()).backward()
        res.append([y.detach(), h.detach(), *[a.grad.clone() for a in args]])
    names = ["y", "h_last", "du", "ddelta", "dA", "dB", "dC", "dD", "dh0"]
    for n, a, b in zip(names, res[1], res[0]):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10, msg=lambda s, n=n: f"{n}: {s}")


def test_gradcheck_tiny():
    args = tuple(a.requires_grad_(True) for a in scan_args(1, 5, 2, 3, seed=3))
    assert torch.autograd.gradcheck(lambda *a: selective_scan(*a, method="chunked", chunk_size=2)[0], args)


def test_scan_without_D_or_initial():
    u, delta, A, B, C, _, _ = scan_args(2, 9, 3, 4)
    y_ref, h_ref = selective_scan_reference(u, delta, A, B, C)
    y, h = selective_scan(u, delta, A, B, C)
    torch.testing.assert_close(y, y_ref)
    torch.testing.assert_close(h, h_ref)


def test_discretize_zero_delta_is_identity():
    u, delta, A, B, _, _, _ = scan_args(1, 4, 3, 2)
    dA, dBx = discretize(u, torch.zeros_like(delta), A, B.unsqueeze(2))
    assert bool((dA == 1).all()) and bool((dBx == 0).all())


@pytest.mark.parametrize("fn", [selective_scan_reference, selective_scan])
def test_scan_bad_shapes_raise(fn):
    u, delta, A, B, C, D, h0 = scan_args(2, 5, 3, 4)
    with pytest.raises(ValueError, match="u must"):
        fn(u[0], delta[0], A, B, C)
    with pytest.raises(ValueError, match="delta"):
        fn(u, delta[:, :4], A, B, C)
    with pytest.raises(ValueError, match="A must"):
        fn(u, delta, A[:2], B, C)
    with pytest.raises(ValueError, match="B must"):
        fn(u, delta, A, B[..., :3], C)
    with pytest.raises(ValueError, match="C must"):
        fn(u, delta, A, B, C[:1])
    with pytest.raises(ValueError, match="D must"):
        fn(u, delta, A, B, C, D[:2])
    with pytest.raises(ValueError, match="initial"):
        fn(u, delta, A, B, C, D, h0[:1])
    with pytest.raises(TypeError, match="u must"):
        fn(u.long(), delta, A, B, C)


# -- the block -------------------------------------------------------------------------------------
def make(d_model=16, seed=0, **kw):
    torch.manual_seed(seed)
    return Mamba(d_model, **kw).double()


def test_init():
    torch.manual_seed(0)
    m = Mamba(64, d_state=8)
    assert (m.d_inner, m.dt_rank, m.d_conv) == (128, 4, 4)
    assert m.in_proj.weight.shape == (256, 64)
    assert m.x_proj.weight.shape == (4 + 16, 128)
    assert m.conv1d.weight.shape == (128, 1, 4)
    torch.testing.assert_close(m.A_log[5], torch.log(torch.arange(1.0, 9.0)))
    assert bool((m.D == 1).all())
    dt = F.softplus(m.dt_proj.bias.detach())
    assert dt.min() >= 1e-3 * (1 - 1e-5) and dt.max() <= 1e-1 * (1 + 1e-5)
    # log-uniform: log dt roughly uniform on [log 1e-3, log 1e-1]
    ld = dt.log()
    assert abs(ld.mean().item() - math.log(1e-2)) < 0.4
    assert (dt < 1e-2).float().mean().item() == pytest.approx(0.5, abs=0.15)
    assert Mamba(17).dt_rank == 2


def test_n_heads_is_ignored():
    m = create_mixer("mamba", d_model=16, n_heads=3)  # 16 is not divisible by 3: fine for Mamba
    assert m.n_heads == 1
    assert m(torch.randn(1, 5, 16)).shape == (1, 5, 16)


@pytest.mark.parametrize("T", [1, 7, 63, 100])
def test_block_forms_match_with_padding(T):
    m = make(d_model=8, d_state=4)
    x0 = rand(2, T, 8, seed=T)
    mask = torch.ones(2, T, dtype=torch.bool)
    mask[0, : T // 3] = False
    mask[1, T // 2 : T // 2 + T // 4] = False
    mask[:, -1] = True
    w = rand(2, T, 8, seed=7)
    res = {}
    for form in ("reference", "scan"):
        m.form = form
        m.zero_grad(set_to_none=True)
        x = x0.clone().requires_grad_(True)
        (m(x, mask=mask) * w).sum().backward()
        res[form] = [x.grad] + [p.grad.clone() for p in m.parameters()]
    for a, b in zip(res["scan"], res["reference"]):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


def test_auto_form():
    m = Mamba(16)
    assert m.resolve_form(1000) == "scan"


def test_left_padding_equals_unpadded():
    m = make()
    x = rand(1, 11, 16, seed=1)
    padded = torch.cat([rand(1, 6, 16, seed=2), x], dim=1)
    mask = torch.ones(1, 17, dtype=torch.bool)
    mask[0, :6] = False
    with torch.no_grad():
        y, s = m(padded, mask=mask, return_state=True)
        y0, s0 = m(x, return_state=True)
    torch.testing.assert_close(y[:, 6:], y0)
    assert bool((y[:, :6] == 0).all())
    torch.testing.assert_close(s.ssm, s0.ssm)
    torch.testing.assert_close(s.conv, s0.conv)


def test_state_passes_through_padding():
    m = make()
    x = rand(2, 9, 16, seed=1)
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[:, 5:] = False
    with torch.no_grad():
        _, s = m(x, mask=mask, return_state=True)
        _, s5 = m(x[:, :5], return_state=True)
    torch.testing.assert_close(s.ssm, s5.ssm)  # the scan state is untouched by trailing padding


def test_step_prefill_and_state_shapes():
    m = make(d_conv=3)
    x = rand(2, 12, 16, seed=3)
    with torch.no_grad():
        y = m(x)
        y1, s = m(x[:, :1], return_state=True)  # shorter than the conv history
        assert isinstance(s, MambaState)
        assert s.conv.shape == (2, 32, 2) and s.ssm.shape == (2, 32, 16)
        y2, s = m(x[:, 1:8], state=s, return_state=True)
        outs = [y1, y2]
        for t in range(8, 12):
            y_t, s = m.step(x[:, t], s)
            outs.append(y_t.unsqueeze(1))
    torch.testing.assert_close(torch.cat(outs, 1), y)


def test_step_from_none_state():
    m = make()
    x = rand(2, 3, 16, seed=3)
    with torch.no_grad():
        y_t, s = m.step(x[:, 0], None)
        torch.testing.assert_close(y_t, m(x[:, :1])[:, 0])


def test_float32_forms_close():
    torch.manual_seed(0)
    m = Mamba(16)
    x = torch.randn(2, 70, 16)
    with torch.no_grad():
        m.form = "reference"
        y_ref = m(x)
        m.form = "scan"
        torch.testing.assert_close(m(x), y_ref, rtol=6e-4, atol=2e-5)


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"d_state": 0}, "d_state"),
        ({"expand": 1.5}, "expand"),
        ({"d_conv": 0}, "d_conv"),
        ({"dt_rank": 0}, "dt_rank"),
        ({"dt_min": 0.2, "dt_max": 0.1}, "dt_min"),
    ],
)
def test_bad_options_raise(kw, match):
    with pytest.raises(ValueError, match=match):
        Mamba(16, **kw)


def test_bad_state_raises():
    m = Mamba(16)
    x = torch.randn(2, 16)
    s = m.init_state(2)
    with pytest.raises(TypeError, match="MambaState"):
        m.step(x, s.ssm)
    with pytest.raises(ValueError, match="state.conv"):
        m.step(x, MambaState(torch.zeros(2, 32, 4), s.ssm))
    with pytest.raises(ValueError, match="state.ssm"):
        m.step(x, MambaState(s.conv, torch.zeros(2, 32, 8)))
    with pytest.raises(TypeError, match="state.ssm"):
        m(x.unsqueeze(1), state=MambaState(s.conv, torch.zeros(2, 32, 16, dtype=torch.long)))
    with pytest.raises(ValueError, match="batch_size"):
        m.init_state(0)
