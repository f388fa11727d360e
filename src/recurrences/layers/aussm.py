"""AUSSM: the adaptive unitary state-space model (Karuvally et al., NeurIPS 2025), pure PyTorch.

Block (spec part C.3), x (B, T, d) -> out (B, T, d); d = ``d_model`` (no expansion), n = ``d_state``:

    [x, z]   = W_in x                                           (two (B, T, d) halves)
    u        = causal depthwise conv1d_k(x)                      (kernel ``d_conv``; pre-SiLU)
    theta_t  = (W_A u_t) / sqrt(d) + b_A                         (B, T, d, n), b_A ~ U(-pi, pi)
    Delta_t  = softplus(W_dt (W_r u_t) + b_dt [+ b_dt])           (B, T, d), low rank r = ``dt_rank`` (= n)
    v_t      = SiLU(u_t)
    h_t      = exp(i theta_t) * h_{t-1} + Delta_t * B * v_t       (complex (B, d, n), h_0 = 0)
    y_t      = [sum_j Re(C_j h_{t,:,j}) + D * v_t] * SiLU(z_t)
    out      = W_out y

B and C are per-state complex constants shared by all channels, parameterised in polar form:
B_j = softplus(B_re_j) * exp(i B_im_j) (likewise C). The angle is *not* multiplied by Delta and uses the
pre-SiLU u. The output index of the angle projection is state-major: theta[..., i, j] is output j*d + i
of W_A. The official code adds the dt bias twice (``double_dt_bias=True``, the default, reproduces it).

Forms of the recurrence (functions below; all return (y_ssm = sum_j Re(C_j h_j), h_last)):

* "reference" (:func:`aussm_reference`): the loop over time, h_t = e^{i theta_t} h_{t-1} + b_t.
* "separable" (:func:`aussm_separable`): with G_t = sum_{r<=t} theta_r the kernel separates,
  e^{i(G_t - G_s)} = e^{iG_t} e^{-iG_s}, so h_t = e^{iG_t} (h_0 + sum_{s<=t} e^{-iG_s} b_s): two prefix
  sums with unit-modulus rotations. It runs in chunks of ``chunk_size`` with a complex carry between
  them; G is accumulated in float64 inside each chunk and reduced mod 2 pi before cos/sin, so precision
  does not drift with length.
* "scan" (:func:`aussm_scan`): :func:`recurrences.scan.linear_scan` with complex decays e^{i theta_t}.

Padding (mask False) is the same as deleting those tokens: the conv skips padded positions
(:func:`~recurrences.layers.base.causal_conv_skipping_padding`), theta = 0 and Delta = 0 there, so the state
passes through unchanged; outputs at padded positions are zeroed.

Precision: the whole SSM core (angle projection, Delta, the recurrence, the read-out) runs with autocast
disabled, in float32 for low-precision inputs (float64 stays float64); only W_in, the conv and W_out
follow autocast.

Hybrids: :func:`layer_string_to_pattern` turns the paper's layer strings ("a|m|m|a") into a
``ModelConfig.mixer`` pattern ("aussm|mamba|mamba|aussm").
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..scan import linear_scan
from .base import Mixer, causal_conv_skipping_padding, check_step_input, register_mixer

__all__ = [
    "AUSSM",
    "AUSSMState",
    "aussm_reference",
    "aussm_separable",
    "aussm_scan",
    "layer_string_to_pattern",
    "LAYER_LETTERS",
]

TWO_PI = 2.0 * math.pi

#: Letters of the paper's layer strings and the registered mixers they stand for.
LAYER_LETTERS = {"a": "aussm", "m": "mamba"}


def layer_string_to_pattern(layers: str) -> str:
    """``"a|m|m|a"`` -> ``"aussm|mamba|mamba|aussm"`` (a = AUSSM block, m = Mamba block, input to output).

    The result is a ``ModelConfig.mixer`` pattern; with ``n_layers`` equal to the number of letters each
    layer gets its own block. Whitespace around letters is ignored.
    """
    if not isinstance(layers, str) or not layers.strip():
        raise ValueError(
            f"layer_string_to_pattern: layers must be a non-empty string like 'a|m', got {layers!r}"
        )
    out = []
    for k, part in enumerate(layers.split("|")):
        letter = part.strip().lower()
        if letter not in LAYER_LETTERS:
            raise ValueError(
                f"layer_string_to_pattern: entry {k} of {layers!r} is {part!r}; expected one of "
                f"{sorted(LAYER_LETTERS)} (a = AUSSM, m = Mamba) separated by '|'"
            )
        out.append(LAYER_LETTERS[letter])
    return "|".join(out)


# -- the recurrence (pure functions) ----------------------------------------------------------------
def _complex_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.complex128 if dtype == torch.float64 else torch.complex64


def _check_core_args(name: str, theta: Tensor, dv: Tensor, B: Tensor, C: Tensor, initial: Tensor | None):
    for arg, t in (("theta", theta), ("dv", dv)):
        if not isinstance(t, Tensor) or not t.is_floating_point():
            raise TypeError(f"{name}: {arg} must be a real floating tensor")
    if theta.dim() != 4:
        raise ValueError(f"{name}: theta must have shape (B, T, d, n), got {tuple(theta.shape)}")
    Bt, T, d, n = theta.shape
    if tuple(dv.shape) != (Bt, T, d):
        raise ValueError(f"{name}: dv must have shape (B, T, d) = ({Bt}, {T}, {d}), got {tuple(dv.shape)}")
    for arg, t in (("B", B), ("C", C)):
        if not isinstance(t, Tensor) or not t.is_complex() or tuple(t.shape) != (n,):
            raise ValueError(f"{name}: {arg} must be a complex tensor of shape (n,) = ({n},)")
    if initial is not None and (not isinstance(initial, Tensor) or tuple(initial.shape) != (Bt, d, n)):
        shape = tuple(initial.shape) if isinstance(initial, Tensor) else type(initial).__name__
        raise ValueError(f"{name}: initial must have shape (B, d, n) = ({Bt}, {d}, {n}), got {shape}")


def _readout(h: Tensor, C: Tensor) -> Tensor:
    """sum_j Re(C_j h[..., j]) over the last axis, without forming the complex product."""
    return h.real @ C.real - h.imag @ C.imag


def aussm_reference(
    theta: Tensor, dv: Tensor, B: Tensor, C: Tensor, initial: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """The AUSSM recurrence as a loop over time. Returns (y (Bt, T, d) real, h_last (Bt, d, n) complex).

        h_t = exp(i theta_t) * h_{t-1} + dv_t * B,    y_t = sum_j Re(C_j h_{t,j})

    theta: (Bt, T, d, n) angles; dv: (Bt, T, d) = Delta_t * SiLU(u_t); B, C: (n,) complex;
    initial: (Bt, d, n) complex or None (zero state).
    """
    _check_core_args("aussm_reference", theta, dv, B, C, initial)
    Bt, T, d, n = theta.shape
    cd = _complex_dtype(theta.dtype)
    B, C = B.to(cd), C.to(cd)
    h = theta.new_zeros(Bt, d, n, dtype=cd) if initial is None else initial.to(cd)
    ys = []
    for t in range(T):
        h = torch.polar(torch.ones_like(theta[:, t]), theta[:, t]) * h + dv[:, t, :, None] * B
        ys.append(_readout(h, C))
    y = torch.stack(ys, 1) if ys else theta.new_zeros(Bt, 0, d)
    return y, h


def aussm_separable(
    theta: Tensor,
    dv: Tensor,
    B: Tensor,
    C: Tensor,
    initial: Tensor | None = None,
    *,
    chunk_size: int = 256,
) -> tuple[Tensor, Tensor]:
    """Same result as :func:`aussm_reference`, by the separable (two prefix sums) form, chunked.

    Inside a chunk starting after state h_prev, with local angles G_t = (sum_{r<=t} theta_r) mod 2 pi
    (accumulated in float64):

        g_t = sum_{s<=t} e^{-iG_s} dv_s B,    h_t = e^{iG_t} (h_prev + g_t)

    The chunks' carries h_prev form a short recurrence over chunks (one step per chunk), solved with
    :func:`recurrences.scan.linear_scan`. Work O(T d n), memory a few (Bt, T, d, n) real tensors.
    Internally the state is divided by B (so the input term is real); B must have no zero entry
    (in the mixer |B_j| = softplus(.) > 0).
    """
    _check_core_args("aussm_separable", theta, dv, B, C, initial)
    if not bool((B != 0).all()):
        raise ValueError("aussm_separable: B must have no zero entry (the state is carried divided by B)")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"aussm_separable: chunk_size must be a positive int, got {chunk_size!r}")
    Bt, T, d, n = theta.shape
    rd = theta.dtype
    cd = _complex_dtype(rd)
    B, C = B.to(cd), C.to(cd)
    if T == 0:
        h0 = theta.new_zeros(Bt, d, n, dtype=cd) if initial is None else initial.to(cd)
        return theta.new_zeros(Bt, 0, d), h0
    L = min(chunk_size, T)
    K = -(-T // L)
    pad = K * L - T
    if pad:  # padded steps rotate by 0 and add 0: they change nothing and are cut off below
        theta = F.pad(theta, (0, 0, 0, 0, 0, pad))
        dv = F.pad(dv, (0, 0, 0, pad))
    th = theta.reshape(Bt, K, L, d, n)
    # local cumulative angle in float64, reduced mod 2 pi, then back to the working precision
    G = torch.remainder(th.to(torch.float64).cumsum(2), TWO_PI).to(rd)
    cos, sin = G.cos(), G.sin()
    # Work with k = h / B (B_j != 0): k_t = e^{i theta_t} k_{t-1} + dv_t has a real input, which saves
    # the broadcasts by B; the read-out then uses C_j B_j.  g = sum_s e^{-iG_s} dv_s = a_re - i a_im.
    w = dv.reshape(Bt, K, L, d, 1)
    a_re = (cos * w).cumsum(2)
    a_im = (sin * w).cumsum(2)
    # carry between chunks: k_end,c = e^{iG_end,c} (k_end,c-1 + g_end,c)
    P_end = torch.complex(cos[:, :, -1], sin[:, :, -1])  # (Bt, K, d, n)
    g_end = torch.complex(a_re[:, :, -1], -a_im[:, :, -1])
    k0 = None if initial is None else initial.to(cd) / B
    first = (k0 if k0 is not None else P_end.new_zeros(Bt, d, n)).unsqueeze(1)
    if K == 1:
        k_prev = first
    else:
        Kc, _ = linear_scan(P_end, P_end * g_end, k0, method="sequential", check_finite=False)
        k_prev = torch.cat([first, Kc[:, :-1]], dim=1)  # state before each chunk
    s_re = a_re + k_prev.real.unsqueeze(2)
    s_im = k_prev.imag.unsqueeze(2) - a_im
    q_re = cos * s_re - sin * s_im  # k = e^{iG} (k_prev + g)
    q_im = sin * s_re + cos * s_im
    CB = C * B
    y = (q_re @ CB.real - q_im @ CB.imag).reshape(Bt, K * L, d)[:, :T]
    # the state after the last step (padding after it leaves the state unchanged anyway)
    h_last = torch.complex(q_re[:, -1, -1], q_im[:, -1, -1]) * B
    return y, h_last


def aussm_scan(
    theta: Tensor,
    dv: Tensor,
    B: Tensor,
    C: Tensor,
    initial: Tensor | None = None,
    *,
    method: str = "auto",
    chunk_size: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Same result as :func:`aussm_reference` through :func:`recurrences.scan.linear_scan` with complex decays
    a_t = e^{i theta_t} and inputs b_t = dv_t B over the flattened state (Bt, T, d * n)."""
    _check_core_args("aussm_scan", theta, dv, B, C, initial)
    Bt, T, d, n = theta.shape
    cd = _complex_dtype(theta.dtype)
    B, C = B.to(cd), C.to(cd)
    a = torch.polar(torch.ones_like(theta), theta).reshape(Bt, T, d * n)
    b = (dv.unsqueeze(-1) * B).reshape(Bt, T, d * n)
    init = None if initial is None else initial.to(cd).reshape(Bt, d * n)
    h, h_last = linear_scan(a, b, init, method=method, chunk_size=chunk_size, check_finite=False)
    y = _readout(h.view(Bt, T, d, n), C)
    return y, h_last.view(Bt, d, n)


# -- the mixer -------------------------------------------------------------------------------------
class AUSSMState(NamedTuple):
    """Decoding state of :class:`AUSSM`.

    conv: (B, d, d_conv - 1) real, the last conv inputs (oldest first; (B, d, 0) without the conv);
    ssm: (B, d, n) complex, the state h.
    """

    conv: Tensor
    ssm: Tensor


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"AUSSM: {name} must be a positive int, got {value!r}")
    return value


class AUSSM(Mixer):
    """Adaptive unitary SSM block: h_t = exp(i theta(u_t)) h_{t-1} + Delta_t B SiLU(u_t) (spec C.3)."""

    causal = True
    forms = ("reference", "scan", "separable")

    def __init__(
        self,
        d_model: int,
        n_heads: int = 1,
        *,
        d_state: int = 16,
        d_conv: int = 4,
        conv: bool = True,
        dt_rank: int | None = None,
        double_dt_bias: bool = True,
        chunk_size: int = 256,
        angle_scale: float | None = None,
        form: str = "auto",
    ) -> None:
        # n_heads is accepted for the common signature and ignored (AUSSM has no heads).
        super().__init__(d_model, 1, form=form)
        self.d_state = _positive_int("d_state", d_state)
        self.d_conv = _positive_int("d_conv", d_conv)
        self.dt_rank = d_state if dt_rank is None else _positive_int("dt_rank", dt_rank)
        self.chunk_size = _positive_int("chunk_size", chunk_size)
        if not isinstance(conv, bool) or not isinstance(double_dt_bias, bool):
            raise TypeError("AUSSM: conv and double_dt_bias must be bools")
        self.double_dt_bias = double_dt_bias
        if angle_scale is None:
            angle_scale = 1.0 / math.sqrt(d_model)  # the official code's use-time scale
        if (
            isinstance(angle_scale, bool)
            or not isinstance(angle_scale, (int, float))
            or not 0 < angle_scale < math.inf
        ):
            raise ValueError(
                f"AUSSM: angle_scale must be a positive finite number or None, got {angle_scale!r}"
            )
        self.angle_scale = float(angle_scale)
        d, n = d_model, d_state
        self.in_proj = nn.Linear(d, 2 * d, bias=False)
        self.conv1d = nn.Conv1d(d, d, d_conv, groups=d, bias=True) if conv else None
        self.x_proj = nn.Linear(d, self.dt_rank, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, d, bias=True)
        self.angle_proj = nn.Linear(d, d * n, bias=True)  # output j*d + i -> theta[..., i, j]
        self.B_re = nn.Parameter(torch.randn(n) * math.sqrt(0.5))  # |B| = softplus(B_re), arg B = B_im
        self.B_im = nn.Parameter(torch.randn(n) * math.sqrt(0.5))
        self.C_re = nn.Parameter(torch.randn(n) * math.sqrt(0.5))
        self.C_im = nn.Parameter(torch.randn(n) * math.sqrt(0.5))
        self.D = nn.Parameter(torch.ones(d))
        self.out_proj = nn.Linear(d, d, bias=False)
        with torch.no_grad():
            self.angle_proj.bias.uniform_(-math.pi, math.pi)

    @property
    def conv_len(self) -> int:
        """Number of past conv inputs kept in the decoding state."""
        return 0 if self.conv1d is None else self.d_conv - 1

    def resolve_form(self, T: int) -> str:
        """ "auto" -> "separable" (exact at every length, and the fastest on CPU)."""
        return "separable" if self.form == "auto" else self.form

    def complex_B_C(self, dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
        """B_j = softplus(B_re_j) e^{i B_im_j} and C likewise, as complex (n,) tensors."""
        B = torch.polar(F.softplus(self.B_re.to(dtype)), self.B_im.to(dtype))
        C = torch.polar(F.softplus(self.C_re.to(dtype)), self.C_im.to(dtype))
        return B, C

    # -- state ------------------------------------------------------------------------------------
    def init_state(self, batch_size: int, device=None, dtype=None) -> AUSSMState:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"AUSSM.init_state: batch_size must be a positive int, got {batch_size!r}")
        w = self.in_proj.weight
        device = w.device if device is None else device
        dtype = w.dtype if dtype is None else dtype
        return AUSSMState(
            torch.zeros(batch_size, self.d_model, self.conv_len, device=device, dtype=dtype),
            torch.zeros(batch_size, self.d_model, self.d_state, device=device, dtype=_complex_dtype(dtype)),
        )

    def _check_state(self, state: object, Bt: int) -> AUSSMState:
        if not isinstance(state, tuple) or len(state) != 2:
            raise TypeError(
                f"AUSSM: state must be an AUSSMState (conv, ssm) from init_state, got {type(state).__name__}"
            )
        conv, ssm = state
        want_conv = (Bt, self.d_model, self.conv_len)
        want_ssm = (Bt, self.d_model, self.d_state)
        if not isinstance(conv, Tensor) or not conv.is_floating_point() or tuple(conv.shape) != want_conv:
            got = tuple(conv.shape) if isinstance(conv, Tensor) else type(conv).__name__
            raise ValueError(
                f"AUSSM: state.conv must be a real floating tensor of shape {want_conv}, got {got}"
            )
        if not isinstance(ssm, Tensor) or not ssm.is_complex() or tuple(ssm.shape) != want_ssm:
            got = tuple(ssm.shape) if isinstance(ssm, Tensor) else type(ssm).__name__
            raise ValueError(f"AUSSM: state.ssm must be a complex tensor of shape {want_ssm}, got {got}")
        return AUSSMState(conv, ssm)

    # -- pieces shared by forward and step -------------------------------------------------------
    def _core_dtype(self, dtype: torch.dtype) -> torch.dtype:
        return torch.float64 if dtype == torch.float64 else torch.float32

    def _ssm_inputs(self, u: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """From the conv output u (..., d), in the core precision (call with autocast off):
        theta (..., d, n), Delta (..., d), v = SiLU(u) (..., d)."""
        n, d = self.d_state, self.d_model
        rd = u.dtype
        W = self.angle_proj.weight.to(rd)
        theta = F.linear(u, W) * self.angle_scale + self.angle_proj.bias.to(rd)
        theta = theta.unflatten(-1, (n, d)).transpose(-1, -2)  # state-major -> (..., d, n)
        b_dt = self.dt_proj.bias.to(rd)
        dt = F.linear(F.linear(u, self.x_proj.weight.to(rd)), self.dt_proj.weight.to(rd), b_dt)
        if self.double_dt_bias:  # the official code adds the bias a second time
            dt = dt + b_dt
        delta = F.softplus(dt)
        return theta, delta, F.silu(u)

    def _conv_weights(self, rd: torch.dtype) -> tuple[Tensor, Tensor | None]:
        assert self.conv1d is not None
        b = None if self.conv1d.bias is None else self.conv1d.bias.to(rd)
        return self.conv1d.weight.to(rd), b

    # -- forward ----------------------------------------------------------------------------------
    def _forward(self, x: Tensor, *, mask: Tensor | None, state: AUSSMState | None, return_state: bool):
        Bt, T, _ = x.shape
        if state is not None:
            state = self._check_state(state, Bt)
        xi, z = self.in_proj(x).chunk(2, dim=-1)
        rd = self._core_dtype(x.dtype)
        dev = x.device.type
        with torch.autocast(device_type=dev, enabled=False):
            xi, z = xi.to(rd), z.to(rd)
            m = None if mask is None else mask.unsqueeze(-1).to(rd)
            if self.conv1d is None:
                u, conv_state = xi, xi.new_zeros(Bt, self.d_model, 0)
            else:
                hist = xi.new_zeros(Bt, self.d_model, self.conv_len) if state is None else state.conv.to(rd)
                w, b = self._conv_weights(rd)
                # padded positions are skipped: the conv window of a real token holds the real tokens before it
                u, conv_state = causal_conv_skipping_padding(
                    xi, hist, mask, lambda seq: F.conv1d(seq, w, b, groups=self.d_model)
                )
            theta, delta, v = self._ssm_inputs(u)
            if m is not None:  # rotate by 0 and add 0: the state passes through padding unchanged
                theta = theta * m.unsqueeze(-1)
                delta = delta * m
            B, C = self.complex_B_C(rd)
            initial = None if state is None else state.ssm.to(_complex_dtype(rd))
            form = self.resolve_form(T)
            fn = _FORMS[form]
            kw = {"chunk_size": self.chunk_size} if form == "separable" else {}
            y_ssm, h_last = fn(theta, delta * v, B, C, initial, **kw)
            y = (y_ssm + self.D.to(rd) * v) * F.silu(z)
            if m is not None:
                y = y * m
        out = self.out_proj(y.to(x.dtype))
        if m is not None:
            out = out * m.to(out.dtype)
        if not return_state:
            return out
        return out, AUSSMState(conv_state.to(x.dtype), h_last)

    def step(self, x_t: Tensor, state: AUSSMState | None) -> tuple[Tensor, AUSSMState]:
        """One token: x_t (B, D) -> y_t (B, D); h = e^{i theta} h + Delta B SiLU(u) written for one step."""
        check_step_input("AUSSM.step", x_t, self.d_model, like=self.in_proj.weight)
        Bt = x_t.shape[0]
        state = self.init_state(Bt, x_t.device, x_t.dtype) if state is None else self._check_state(state, Bt)
        xi, z = self.in_proj(x_t).chunk(2, dim=-1)
        rd = self._core_dtype(x_t.dtype)
        with torch.autocast(device_type=x_t.device.type, enabled=False):
            xi, z = xi.to(rd), z.to(rd)
            window = torch.cat([state.conv.to(rd), xi.unsqueeze(-1)], dim=-1)  # (B, d, conv_len + 1)
            if self.conv1d is None:
                u = xi
            else:
                w, b = self._conv_weights(rd)
                u = (window * w[:, 0]).sum(-1)
                if b is not None:
                    u = u + b
            theta, delta, v = self._ssm_inputs(u)
            B, C = self.complex_B_C(rd)
            h = torch.polar(torch.ones_like(theta), theta) * state.ssm.to(_complex_dtype(rd))
            h = h + (delta * v).unsqueeze(-1) * B
            y = (_readout(h, C) + self.D.to(rd) * v) * F.silu(z)
        out = self.out_proj(y.to(x_t.dtype))
        return out, AUSSMState(window[:, :, 1:].to(x_t.dtype), h)

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, d_state={self.d_state}, d_conv={self.d_conv}, conv={self.conv1d is not None}, "
            f"dt_rank={self.dt_rank}, double_dt_bias={self.double_dt_bias}, form={self.form!r}"
        )


_FORMS = {"reference": aussm_reference, "scan": aussm_scan, "separable": aussm_separable}

register_mixer(
    "aussm",
    AUSSM,
    description="AUSSM: adaptive unitary SSM, h_t = exp(i theta(u_t)) h_{t-1} + Delta_t B SiLU(u_t)",
    family="aussm",
)
