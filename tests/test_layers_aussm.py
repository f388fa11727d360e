"""AUSSM (adaptive unitary SSM): forms agree, precision at long T, unitarity, step = forward, a hand-set
parity solver, bf16 autocast, hybrid layer strings, and errors for bad input.

The generic mixer contract (padding, causality, prefill, every form vs reference on the mixer) runs in
tests/test_layers_contract.py; this file checks what is specific to AUSSM.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from recurrences.layers import aussm as aussm_mod
from recurrences.layers import create_mixer
from recurrences.layers.aussm import (
    AUSSM,
    AUSSMState,
    aussm_reference,
    aussm_scan,
    aussm_separable,
    layer_string_to_pattern,
)

F64 = torch.float64


def core_inputs(Bt: int, T: int, d: int, n: int, *, seed: int = 0, dtype=F64, initial: bool = True):
    g = torch.Generator().manual_seed(seed)
    cd = torch.complex128 if dtype == F64 else torch.complex64
    theta = (2 * torch.randn(Bt, T, d, n, generator=g, dtype=F64)).to(dtype)
    dv = torch.rand(Bt, T, d, generator=g, dtype=F64).to(dtype)
    B = torch.randn(n, generator=g, dtype=torch.complex128).to(cd)
    C = torch.randn(n, generator=g, dtype=torch.complex128).to(cd)
    h0 = torch.randn(Bt, d, n, generator=g, dtype=torch.complex128).to(cd) if initial else None
    return theta, dv, B, C, h0


FORMS = {
    "separable": lambda *a: aussm_separable(*a, chunk_size=16),
    "separable-1": lambda *a: aussm_separable(*a, chunk_size=1),
    "separable-5": lambda *a: aussm_separable(*a, chunk_size=5),
    "separable-big": lambda *a: aussm_separable(*a, chunk_size=4096),
    "scan-chunked": lambda *a: aussm_scan(*a, method="chunked"),
    "scan-sequential": lambda *a: aussm_scan(*a, method="sequential"),
}


@pytest.mark.parametrize("T", [1, 7, 37, 63, 100])
@pytest.mark.parametrize("form", sorted(FORMS))
def test_core_forms_match_reference_float64(T, form):
    args = core_inputs(2, T, 5, 4, seed=T, initial=T != 37)
    y_ref, h_ref = aussm_reference(*args)
    y, h = FORMS[form](*args)
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(h, h_ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("form", ["separable", "separable-5", "scan-chunked"])
def test_core_forms_match_reference_float32(form):
    args = core_inputs(2, 37, 5, 4, seed=3, dtype=torch.float32)
    y_ref, h_ref = aussm_reference(*args)
    y, h = FORMS[form](*args)
    torch.testing.assert_close(y, y_ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(h, h_ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("form", ["separable", "separable-5", "scan-chunked"])
def test_core_gradients_match_reference(form):
    """Gradients with respect to theta, dv, B, C and the initial state, float64."""

    def grads(fn):
        theta, dv, B, C, h0 = (t.clone().requires_grad_(True) for t in core_inputs(2, 23, 3, 4, seed=5))
        y, h = fn(theta, dv, B, C, h0)
        g = torch.Generator().manual_seed(11)
        w = torch.randn(y.shape, generator=g, dtype=F64)
        ((y * w).sum() + (h.real * h.imag).sum()).backward()
        return [t.grad for t in (theta, dv, B, C, h0)]

    for a, b, name in zip(grads(FORMS[form]), grads(aussm_reference), ["theta", "dv", "B", "C", "initial"]):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10, msg=lambda s, n=name: f"grad of {n}: {s}")


def test_separable_gradcheck():
    theta, dv, B, C, h0 = (t.clone().requires_grad_(True) for t in core_inputs(1, 9, 2, 3, seed=2))

    def f(theta, dv, B, C, h0):
        y, h = aussm_separable(theta, dv, B, C, h0, chunk_size=4)
        return y, h.real, h.imag

    assert torch.autograd.gradcheck(f, (theta, dv, B, C, h0))


def test_separable_matches_reference_at_16k():
    """T = 16,384, d and n tiny: float32 separable vs the float64 reference (the ground truth), and the
    float64 separable tightly."""
    T = 16384
    theta, dv, B, C, _ = core_inputs(1, T, 1, 2, seed=7, initial=False)
    y_ref, h_ref = aussm_reference(theta, dv, B, C)
    y64, h64 = aussm_separable(theta, dv, B, C)
    torch.testing.assert_close(y64, y_ref, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(h64, h_ref, rtol=1e-9, atol=1e-9)
    y32, h32 = aussm_separable(theta.float(), dv.float(), B.to(torch.complex64), C.to(torch.complex64))
    scale = y_ref.abs().max()
    err = (y32.double() - y_ref).abs().max()
    assert err < 1e-5 * scale * math.sqrt(T), (
        f"float32 separable drifted: max error {err:.3g} (scale {scale:.3g})"
    )


def test_phase_precision_constant_angle_16k():
    """theta = 2 pi / 3 at every step, no input, h_0 = 1: h_T = exp(i 2 pi T / 3) exactly. The float32
    separable form (angles summed in float64, reduced mod 2 pi) keeps the phase within 1e-3 rad."""
    T = 16384
    theta = torch.full((1, T, 1, 1), 2 * math.pi / 3, dtype=torch.float32)
    dv = torch.zeros(1, T, 1)
    one = torch.ones(1, dtype=torch.complex64)
    h0 = torch.ones(1, 1, 1, dtype=torch.complex64)
    y, h = aussm_separable(theta, dv, one, one, h0)
    exact_phase = torch.tensor([2 * math.pi * k / 3 for k in range(1, T + 1)], dtype=F64)
    exact = torch.cos(exact_phase)  # y_t = Re(h_t)
    assert (y[0, :, 0].double() - exact).abs().max() < 1e-3
    gap = (
        torch.angle(h.to(torch.complex128)).squeeze() - math.remainder(2 * math.pi * T / 3, 2 * math.pi)
    ).abs()
    assert float(gap) < 1e-3


@pytest.mark.parametrize("fn", [aussm_reference, aussm_separable, aussm_scan])
def test_zero_input_preserves_the_modulus(fn):
    """No input term: every step is a rotation, |h_t| = |h_0| to rounding (here over 1000 steps)."""
    theta, dv, B, C, h0 = core_inputs(2, 1000, 3, 4, seed=9)
    _, h = fn(theta, torch.zeros_like(dv), B, C, h0)
    torch.testing.assert_close(h.abs(), h0.abs(), rtol=1e-12, atol=0)


def make(seed: int = 0, **options) -> AUSSM:
    torch.manual_seed(seed)
    return create_mixer("aussm", d_model=8, **{"d_state": 4, **options}).double()


def test_mixer_forms_agree_across_chunks_with_padding():
    """Mixer level: T = 50 crosses several chunks of 8; middle and right padding; outputs and gradients."""
    m = make(chunk_size=8)
    g = torch.Generator().manual_seed(3)
    x0 = torch.randn(2, 50, 8, generator=g, dtype=F64)
    mask = torch.ones(2, 50, dtype=torch.bool)
    mask[1, 10:17] = False
    mask[1, 44:] = False
    out = {}
    for form in m.forms:
        m.form = form
        m.zero_grad(set_to_none=True)
        x = x0.clone().requires_grad_(True)
        y = m(x, mask=mask)
        (y * x0).sum().backward()
        out[form] = (y.detach(), x.grad, {k: p.grad for k, p in m.named_parameters()})
    y_ref, gx_ref, gp_ref = out["reference"]
    for form, (y, gx, gp) in out.items():
        torch.testing.assert_close(y, y_ref, rtol=1e-9, atol=1e-10)
        torch.testing.assert_close(gx, gx_ref, rtol=1e-9, atol=1e-10)
        for k in gp_ref:
            torch.testing.assert_close(
                gp[k], gp_ref[k], rtol=1e-9, atol=1e-10, msg=lambda s, k=k, f=form: f"{f} {k}: {s}"
            )


def test_padding_leaves_the_state_unchanged():
    m = make()
    x = torch.randn(2, 9, 8, dtype=F64)
    state = m.init_state(2)
    state = AUSSMState(state.conv, torch.randn(state.ssm.shape, dtype=state.ssm.dtype))
    mask = torch.zeros(2, 9, dtype=torch.bool)
    for form in m.forms:
        m.form = form
        y, s = m(x, mask=mask, state=state, return_state=True)
        assert bool((y == 0).all())
        torch.testing.assert_close(s.ssm, state.ssm, rtol=1e-14, atol=0)  # separable: k = h / B, h = k B


def test_step_equals_forward_long_and_across_chunks():
    m = make(chunk_size=4)
    x = torch.randn(2, 23, 8, dtype=F64)
    with torch.no_grad():
        y = m(x)
        state, outs = None, []
        for t in range(23):
            y_t, state = m.step(x[:, t], state)
            outs.append(y_t)
        y2, s2 = m(x, state=m.init_state(2), return_state=True)
    torch.testing.assert_close(torch.stack(outs, 1), y, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(s2.ssm, state.ssm, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(s2.conv, state.conv)


def test_double_dt_bias_flag():
    """double_dt_bias=True equals double_dt_bias=False with the bias doubled."""
    a = make(seed=4, double_dt_bias=True)
    b = make(seed=4, double_dt_bias=False)
    with torch.no_grad():
        b.dt_proj.bias.mul_(2)
    x = torch.randn(2, 11, 8, dtype=F64)
    torch.testing.assert_close(a(x), b(x))
    with torch.no_grad():
        b.dt_proj.bias.div_(2)
    assert not torch.allclose(a(x), b(x))


def hand_set_parity_mixer() -> AUSSM:
    """d_model = 2 (channel 0 = the bit, channel 1 = a constant 1), d_state = 1, no conv.

    u = bit on channel 0, theta = pi * bit, Delta constant, no D skip: h_t = (-1)^{b_t} h_{t-1} + c b_t
    with c = Delta B SiLU(1), so h_t = c * (number of ones mod 2) exactly; the gate uses channel 1."""
    m = AUSSM(2, d_state=1, conv=False, double_dt_bias=False).double()
    with torch.no_grad():
        for p in m.parameters():
            p.zero_()
        m.in_proj.weight[0, 0] = 1.0  # x -> bit
        m.in_proj.weight[2, 1] = 4.0  # z_0 = 4 (from the constant channel): gate SiLU(4)
        m.angle_proj.weight[0, 0] = math.pi / m.angle_scale  # theta[0, 0] = pi * bit
        m.dt_proj.bias.fill_(1.0)
        m.B_re.fill_(2.0)
        m.C_re.fill_(2.0)
        m.out_proj.weight[0, 0] = 1.0
    return m


@pytest.mark.parametrize("form", ["reference", "separable", "scan"])
def test_hand_set_aussm_solves_parity_at_any_length(form):
    m = hand_set_parity_mixer()
    m.form = form
    g = torch.Generator().manual_seed(0)
    lengths = [1, 2, 3, 40, 257, 1000] + ([] if form == "reference" else [3001])
    for L in lengths:
        bits = torch.randint(0, 2, (4, L), generator=g)
        x = torch.stack([bits.double(), torch.ones(4, L, dtype=F64)], -1)
        with torch.no_grad():
            y = m(x)[:, :, 0]
        unit = y.abs().max()
        pred = (y / unit > 0.5).long() if unit > 0 else torch.zeros_like(bits)
        truth = bits.cumsum(1) % 2
        assert bool((pred == truth).all()), f"form {form}, length {L}: parity read-out wrong"


def hand_set_cycle_navigation_mixer(modulus: int = 5) -> AUSSM:
    """d_model = 5, d_state = 1; inputs [move in {-1, 0, +1}, 1, 0, 0, 0]. An exact counter mod m needs
    a different construction from parity's: with h_0 = 0 and one complex B for every channel, a state
    that depends on the position alone would need the injections of +1 and -1 moves to differ by the
    complex factor -e^{-i omega} (impossible with real Delta * SiLU(u) unless omega = pi). So the state is
    injected once, at the first token, and only rotated afterwards; the first token is found through the
    causal conv's zero padding.

    channel 0: u = move_{t-1} (conv lag 1), drives the angles; channel 1: u = move_t with the D skip, so
    the output shows the last move; channels 2, 3: u = 1 - x_{t-1} with x = 1, i.e. 1 at t = 0 and exactly
    0 later (SiLU(0) = 0: no injection after the first token), theta = omega * move_{t-1}; channel 4:
    u = x_{t-1} - x_{t-2}, 1 at t = 1 only, turns channel 3 by pi/2 once, so that it shows Im where
    channel 2 shows Re. Delta is e^-60 on channels 0, 1, 4 (their states stay ~1e-26)."""
    omega = 2 * math.pi / modulus
    m = AUSSM(5, d_state=1, double_dt_bias=False).double()
    with torch.no_grad():
        for p in m.parameters():
            p.zero_()
        W = m.in_proj.weight  # (10, 5): rows 0-4 -> x, rows 5-9 -> z
        W[0, 0] = W[1, 0] = 1.0  # move
        W[2, 1] = W[3, 1] = W[4, 1] = 1.0  # constant 1
        W[5:, 1] = 4.0  # z = 4: gate SiLU(4) on every channel
        cw, cb = m.conv1d.weight, m.conv1d.bias  # (5, 1, 4); tap 3 = lag 0, tap 2 = lag 1, tap 1 = lag 2
        cw[0, 0, 2] = 1.0
        cw[1, 0, 3] = 1.0
        cw[2, 0, 2] = cw[3, 0, 2] = -1.0
        cb[2] = cb[3] = 1.0
        cw[4, 0, 2], cw[4, 0, 1] = 1.0, -1.0
        A = m.angle_proj.weight  # (5, 5), theta[i] = output i (d_state 1)
        A[2, 0] = A[3, 0] = omega / m.angle_scale
        A[3, 4] = (math.pi / 2) / m.angle_scale
        m.dt_proj.bias.copy_(torch.tensor([-60.0, -60.0, 1.0, 1.0, -60.0], dtype=F64))
        m.B_re.fill_(2.0)
        m.C_re.fill_(2.0)
        m.D[1] = 1.0
        m.out_proj.weight.copy_(torch.eye(5, dtype=F64))
    return m


@pytest.mark.parametrize("form", ["reference", "separable", "scan"])
def test_hand_set_aussm_solves_cycle_navigation_at_any_length(form):
    """Position after every token (from the second on) = round(phase / omega) + the last move, mod 5."""
    mod = 5
    m = hand_set_cycle_navigation_mixer(mod)
    m.form = form
    g = torch.Generator().manual_seed(1)
    gate = F.silu(torch.tensor(4.0, dtype=F64))
    levels = torch.tensor([-1.0, 0.0, 1.0], dtype=F64)
    for L in [2, 3, 41, 256, 1000] + ([] if form == "reference" else [4001]):
        moves = torch.randint(-1, 2, (4, L), generator=g)
        x = torch.zeros(4, L, 5, dtype=F64)
        x[..., 0] = moves.double()
        x[..., 1] = 1.0
        with torch.no_grad():
            y = m(x)[:, 1:]
        phase = torch.atan2(-y[..., 3], y[..., 2])
        before = torch.round(phase / (2 * math.pi / mod)).long()
        last = levels[(y[..., 1, None] / gate - F.silu(levels)).abs().argmin(-1)].long()
        truth = moves.cumsum(1)[:, 1:] % mod
        assert bool(((before + last) % mod == truth).all()), (
            f"form {form}, length {L}: position read-out wrong"
        )


def test_angle_path_stays_float32_under_bf16_autocast(monkeypatch):
    torch.manual_seed(0)
    m = create_mixer("aussm", d_model=16, d_state=4)
    seen = []
    original = aussm_mod._FORMS["separable"]

    def spy(theta, dv, B, C, initial=None, **kw):
        seen.append((theta.dtype, dv.dtype, B.dtype))
        return original(theta, dv, B, C, initial, **kw)

    monkeypatch.setitem(aussm_mod._FORMS, "separable", spy)
    x = torch.randn(2, 300, 16)
    y32 = m(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y16 = m(x)
        y16_step, _ = m.step(x[:, 0], None)
    assert seen[-1] == (torch.float32, torch.float32, torch.complex64)
    assert y16.dtype == torch.bfloat16  # the projections do follow autocast
    rel = (y16.float() - y32).norm() / y32.norm()
    assert rel < 0.05, f"bf16 autocast output too far from float32: relative error {rel:.3g}"
    assert (y16_step.float() - y32[:, 0]).norm() / y32[:, 0].norm() < 0.05


def test_layer_string_to_pattern_and_hybrid_model():
    from recurrences.models import ModelConfig, SequenceModel

    assert layer_string_to_pattern("a|m|m|a") == "aussm|mamba|mamba|aussm"
    assert layer_string_to_pattern(" m | a ") == "mamba|aussm"
    pattern = layer_string_to_pattern("a|m")
    cfg = ModelConfig(
        mixer=pattern, d_model=16, n_layers=2, n_heads=2, vocab_size=5, n_outputs=2, head="classify"
    )
    torch.manual_seed(0)
    model = SequenceModel(cfg)
    kinds = [type(b.mixer).__name__ for b in model.blocks]
    assert kinds == ["AUSSM", "Mamba"]
    tokens = torch.randint(0, 5, (2, 9))
    assert model(tokens).shape == (2, 2)
    for bad in ["", "a|x", "a||m", "am", 3]:
        with pytest.raises(ValueError):
            layer_string_to_pattern(bad)


def test_bad_input_raises():
    with pytest.raises(ValueError, match="d_state"):
        AUSSM(8, d_state=0)
    with pytest.raises(ValueError, match="chunk_size"):
        AUSSM(8, chunk_size=-1)
    for bad_scale in (0.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="angle_scale"):
            AUSSM(8, angle_scale=bad_scale)
    with pytest.raises(TypeError, match="conv"):
        AUSSM(8, conv="yes")
    theta, dv, B, C, h0 = core_inputs(2, 5, 3, 4)
    with pytest.raises(ValueError, match="theta"):
        aussm_separable(theta[0], dv, B, C)
    with pytest.raises(ValueError, match="dv"):
        aussm_reference(theta, dv[:, :4], B, C)
    with pytest.raises(ValueError, match="B"):
        aussm_scan(theta, dv, B.real, C)
    with pytest.raises(ValueError, match="initial"):
        aussm_separable(theta, dv, B, C, h0[:1])
    with pytest.raises(ValueError, match="chunk_size"):
        aussm_separable(theta, dv, B, C, chunk_size=0)
    m = make()
    s = m.init_state(2)
    with pytest.raises(ValueError, match="state.ssm"):
        m(torch.randn(2, 3, 8, dtype=F64), state=AUSSMState(s.conv, s.ssm.real), return_state=True)
    with pytest.raises(TypeError, match="AUSSMState"):
        m.step(torch.randn(2, 8, dtype=F64), "state")
