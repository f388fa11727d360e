"""The Mixer contract, checked for every registered mixer (new families are picked up automatically).

For each name in ``available_mixers()`` (built with d_model=16, n_heads=2, float64, default options):
  * shape in = shape out, finite, at T = 1, 7, 13;
  * padding: the content of padded positions never changes real outputs (left, middle and right
    padding), and a right-padded batch gives each sequence's own unpadded outputs;
  * causal mixers: outputs never depend on later inputs; stepping token by token equals the full
    forward; forward(state=..., return_state=True) prefill in pieces, then step, equals the full forward,
    also after a padded prompt;
  * every form equals the "reference" form on outputs and on gradients (input and parameters);
  * bad input raises a clear exception.

Tolerances are float64-tight (rtol 1e-6, atol 1e-8). A family whose forms are only approximately equal
(e.g. an iteration stopped at a tolerance) may set a class attribute ``contract_tolerance =
{"rtol": ..., "atol": ...}``.
"""

from __future__ import annotations

import pytest
import torch

from recurrences.layers import available_mixers, create_mixer, mixer_spec

D, H = 16, 2
NAMES = available_mixers()
CAUSAL = available_mixers(causal=True)


def make(name: str, seed: int = 0):
    torch.manual_seed(seed)
    return create_mixer(name, d_model=D, n_heads=H).double()


def tol(m) -> dict:
    return dict(getattr(m, "contract_tolerance", None) or {"rtol": 1e-6, "atol": 1e-8})


def data(B: int, T: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, T, D, generator=g, dtype=torch.float64)


def pad_mask(T: int = 13) -> torch.Tensor:
    """Row 0 all real, row 1 left-padded, row 2 padded in the middle and on the right."""
    mask = torch.ones(3, T, dtype=torch.bool)
    mask[1, :4] = False
    mask[2, 5:8] = False
    mask[2, -2:] = False
    return mask


def close(a: torch.Tensor, b: torch.Tensor, m, what: str) -> None:
    torch.testing.assert_close(a, b, **tol(m), msg=lambda s: f"{what}: {s}")


@pytest.mark.parametrize("name", NAMES)
def test_registry_entry(name):
    m = make(name)
    assert m.causal == mixer_spec(name).causal
    assert "reference" in m.forms
    assert m.resolve_form(13) in m.forms


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("T", [1, 7, 13])
def test_shape_in_equals_shape_out(name, T):
    m = make(name)
    x = data(2, T)
    y = m(x)
    assert y.shape == x.shape
    assert bool(torch.isfinite(y).all())


@pytest.mark.parametrize("name", NAMES)
def test_padding_content_never_changes_real_outputs(name):
    m = make(name)
    mask = pad_mask()
    x = data(3, 13)
    g = torch.Generator().manual_seed(7)
    garbage = 50 * torch.randn(x.shape, generator=g, dtype=x.dtype)
    x2 = torch.where(mask.unsqueeze(-1), x, garbage)
    with torch.no_grad():
        y1, y2 = m(x, mask=mask), m(x2, mask=mask)
    assert bool(torch.isfinite(y1).all()) and bool(torch.isfinite(y2).all())
    close(y2[mask], y1[mask], m, f"{name}: real outputs changed with the padding content")


@pytest.mark.parametrize("name", NAMES)
def test_right_padding_equals_unpadded(name):
    m = make(name)
    lengths = [13, 7, 1]
    x = data(3, 13)
    mask = torch.arange(13)[None, :] < torch.tensor(lengths)[:, None]
    with torch.no_grad():
        y = m(x, mask=mask)
        for b, L in enumerate(lengths):
            close(y[b, :L], m(x[b : b + 1, :L])[0], m, f"{name}: sequence {b} (length {L}) in a padded batch")


@pytest.mark.parametrize("name", CAUSAL)
def test_causal_outputs_ignore_the_future(name):
    m = make(name)
    x = data(2, 13)
    x2 = x.clone()
    x2[:, 8:] = data(2, 5, seed=9)
    with torch.no_grad():
        close(m(x2)[:, :8], m(x)[:, :8], m, f"{name}: outputs before t=8 changed with later inputs")


@pytest.mark.parametrize("name", CAUSAL)
def test_step_equals_forward(name):
    m = make(name)
    x = data(2, 7)
    for form in m.forms:
        m.form = form
        with torch.no_grad():
            y = m(x)
            state = m.init_state(2)
            outs = []
            for t in range(x.shape[1]):
                y_t, state = m.step(x[:, t], state)
                outs.append(y_t)
        close(torch.stack(outs, 1), y, m, f"{name} (form {form}): step by step vs full forward")


@pytest.mark.parametrize("name", CAUSAL)
def test_prefill_then_step_equals_forward(name):
    m = make(name)
    x = data(2, 13)
    with torch.no_grad():
        y = m(x)
        y1, s = m(x[:, :4], state=m.init_state(2), return_state=True)
        y2, s = m(x[:, 4:9], state=s, return_state=True)
        outs = [y1, y2]
        for t in range(9, 13):
            y_t, s = m.step(x[:, t], s)
            outs.append(y_t.unsqueeze(1))
    close(torch.cat(outs, 1), y, m, f"{name}: prefill (4 + 5 tokens) then 4 steps vs full forward")


@pytest.mark.parametrize("name", CAUSAL)
def test_padded_prefill_then_step(name):
    m = make(name)
    x = data(3, 13)
    mask = pad_mask()
    mask[2, -2:] = True  # the stepped tokens are real
    with torch.no_grad():
        y = m(x, mask=mask)
        y1, s = m(x[:, :9], mask=mask[:, :9], state=m.init_state(3), return_state=True)
        outs = [y1]
        for t in range(9, 13):
            y_t, s = m.step(x[:, t], s)
            outs.append(y_t.unsqueeze(1))
    close(torch.cat(outs, 1)[mask], y[mask], m, f"{name}: padded prompt prefill then steps vs full forward")


# the state-space mixers carry no positions: for them padding anywhere (left, holes, right) is the same as
# deleting those tokens, for the real outputs and for the state a prefill leaves (conv history included)
SSM_MIXERS = [n for n in ("aussm", "mamba") if n in CAUSAL]


@pytest.mark.parametrize("name", SSM_MIXERS)
def test_ssm_padding_equals_deleting_the_padded_tokens(name):
    m = make(name)
    x, nxt = data(3, 13), data(3, 1, seed=2)[:, 0]
    mask = pad_mask()
    with torch.no_grad():
        y, s = m(x, mask=mask, state=m.init_state(3), return_state=True)
        y_next, _ = m.step(nxt, s)
        for b in range(3):
            xb = x[b : b + 1, mask[b]]
            want, sb = m(xb, state=m.init_state(1), return_state=True)
            close(y[b, mask[b]], want[0], m, f"{name}: row {b} real outputs vs the row without its padding")
            close(y_next[b], m.step(nxt[b : b + 1], sb)[0][0], m, f"{name}: row {b} step after the prefill")


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("T", [7, 13])
def test_every_form_matches_reference(name, T):
    m = make(name)
    x0 = data(3, T, seed=T)
    mask = pad_mask(T) if T == 13 else None
    w = data(3, T, seed=100 + T)
    results = {}
    for form in m.forms:
        m.form = form
        m.zero_grad(set_to_none=True)
        x = x0.clone().requires_grad_(True)
        y = m(x, mask=mask)
        (y * w).sum().backward()
        grads = {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}
        results[form] = (y.detach(), x.grad.clone(), grads)
    y_ref, gx_ref, gp_ref = results["reference"]
    for form, (y, gx, gp) in results.items():
        close(y, y_ref, m, f"{name}: form {form} output vs reference")
        close(gx, gx_ref, m, f"{name}: form {form} input gradient vs reference")
        assert gp.keys() == gp_ref.keys(), f"{name}: form {form} reaches other parameters than the reference"
        for n in gp_ref:
            close(gp[n], gp_ref[n], m, f"{name}: form {form} gradient of {n} vs reference")


@pytest.mark.parametrize("name", NAMES)
def test_bad_input_raises(name):
    m = make(name)
    x = data(2, 7)
    assert m(x[:0]).shape == (0, 7, D)  # an empty batch is fine without a state
    with pytest.raises(ValueError):
        m(x[0])  # rank 2
    with pytest.raises(ValueError):
        m(x[..., :-1])  # wrong d_model
    with pytest.raises(TypeError):
        m(x.long())
    bad = x.clone()
    bad[0, 3, 1] = float("nan")
    with pytest.raises(ValueError):
        m(bad)
    with pytest.raises(ValueError):
        m(x, mask=torch.ones(2, 6, dtype=torch.bool))
    with pytest.raises(TypeError):
        m(x, mask=torch.ones(2, 7))
    with pytest.raises(ValueError):
        m.form = "no-such-form"
    if not m.causal:
        with pytest.raises(ValueError):
            m(x, return_state=True)


@pytest.mark.parametrize("name", CAUSAL)
def test_bad_step_input_raises(name):
    m = make(name)
    x = data(2, 7)
    state = m.init_state(2)
    with pytest.raises(ValueError):
        m.step(x, state)  # (B, T, D) instead of (B, D)
    with pytest.raises(ValueError):
        m.step(x[:, 0, :-1], state)  # wrong d_model
    with pytest.raises((ValueError, TypeError)):
        m.step(x[:, 0], m.init_state(3))  # state for another batch size
    with pytest.raises((ValueError, TypeError)):
        m(x, state=m.init_state(3), return_state=True)
    with pytest.raises(ValueError, match="batch size >= 1"):
        m(x[:0], return_state=True)  # a state needs a sequence (as init_state and step say)
    with pytest.raises((ValueError, TypeError)):  # an empty sequence checks the state too
        m(x[:, :0], state=m.init_state(3), return_state=True)
    with pytest.raises((ValueError, TypeError)):
        m(x[:, :0], state="not a state", return_state=True)
    other = torch.float32 if x.dtype == torch.float64 else torch.float64
    with torch.no_grad(), pytest.raises(TypeError, match="x_t has dtype"):
        m.step(x[:, 0].to(other), None)  # not the weights' dtype (as forward, a clear error)
    with torch.no_grad(), pytest.raises(ValueError, match="batch size 0"):
        m.step(x[:0, 0], None)
