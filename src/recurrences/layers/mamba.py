"""Mamba (S6 selective state-space) block in pure PyTorch: the recurrent baseline.

Block (Gu & Dao 2023, Alg. 2 and Sec. 3.6), u (B, T, d_model) -> y (B, T, d_model), E = expand * d_model:

    [x, z]      = W_in u                                   (two (B, T, E) halves)
    x           = SiLU(causal depthwise conv1d_k(x))       (kernel d_conv, per channel)
    [dt, Bt, Ct] = W_x x                                   (dt_rank, d_state, d_state)
    delta       = softplus(W_dt dt + b_dt)                 (B, T, E)
    A           = -exp(A_log)                              (E, N), S4D-real init A_log[e, n] = log(n + 1)
    h_t         = exp(delta_t A) * h_{t-1} + delta_t B_t x_t   (per channel e: state in R^N)
    y_t         = <C_t, h_t> + D * x_t
    out         = W_out (y * SiLU(z))

The recurrence is the zero-order-hold discretisation dA = exp(delta A) with the simplified (Euler) input
dB = delta B used by Mamba. Forms: "reference" loops over time (:func:`selective_scan_reference`);
"scan" discretises all steps at once and runs the first-order scan :func:`recurrences.scan.linear_scan`
over the flattened state (B, T, E * N) (:func:`selective_scan`).

Padding (mask False) is the same as deleting those tokens: the conv skips padded positions
(:func:`~recurrences.layers.base.causal_conv_skipping_padding`) and delta is set to 0, so dA = 1 and
dB x = 0 and the state passes through unchanged; outputs at padded positions are zeroed. Left padding,
holes and right padding all give the outputs and state of the unpadded sequence.
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
    "Mamba",
    "MambaState",
    "discretize",
    "selective_scan",
    "selective_scan_reference",
]


# -- the selective scan (pure functions) -------------------------------------------------------------
def _check_scan_args(
    name: str,
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None,
    initial: Tensor | None,
) -> tuple[Tensor, Tensor]:
    """Validate shapes; return B and C as (Bt, T, 1 or E, N) views."""
    for arg, t in (("u", u), ("delta", delta), ("A", A), ("B", B), ("C", C), ("D", D), ("initial", initial)):
        if t is None:
            continue
        if not isinstance(t, Tensor):
            raise TypeError(f"{name}: {arg} must be a torch.Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise TypeError(f"{name}: {arg} must be a real floating tensor, got {t.dtype}")
    if u.dim() != 3:
        raise ValueError(f"{name}: u must have shape (B, T, E), got {tuple(u.shape)}")
    Bt, T, E = u.shape
    if delta.shape != u.shape:
        raise ValueError(f"{name}: delta has shape {tuple(delta.shape)}, expected u's shape {tuple(u.shape)}")
    if A.dim() != 2 or A.shape[0] != E:
        raise ValueError(f"{name}: A must have shape (E={E}, N), got {tuple(A.shape)}")
    N = A.shape[1]
    out = []
    for arg, t in (("B", B), ("C", C)):
        if t.dim() == 3 and tuple(t.shape) == (Bt, T, N):
            t = t.unsqueeze(2)
        elif not (t.dim() == 4 and tuple(t.shape) == (Bt, T, E, N)):
            raise ValueError(
                f"{name}: {arg} must have shape (B, T, N) = ({Bt}, {T}, {N}) or (B, T, E, N), got {tuple(t.shape)}"
            )
        out.append(t)
    if D is not None and tuple(D.shape) != (E,):
        raise ValueError(f"{name}: D must have shape (E,) = ({E},), got {tuple(D.shape)}")
    if initial is not None and tuple(initial.shape) != (Bt, E, N):
        raise ValueError(
            f"{name}: initial must have shape (B, E, N) = ({Bt}, {E}, {N}), got {tuple(initial.shape)}"
        )
    return out[0], out[1]


def discretize(u: Tensor, delta: Tensor, A: Tensor, B: Tensor) -> tuple[Tensor, Tensor]:
    """dA = exp(delta A) and dBx = delta B u, both (Bt, T, E, N).

    u, delta: (Bt, T, E); A: (E, N); B: (Bt, T, 1 or E, N).
    """
    dA = (delta.unsqueeze(-1) * A).exp_()  # in place: the product is a fresh temporary
    dBx = (delta * u).unsqueeze(-1) * B
    return dA, dBx


def selective_scan_reference(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    initial: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """The selective scan as a loop over time, for reading. Returns (y (Bt, T, E), h_last (Bt, E, N)).

        h_t = exp(delta_t A) * h_{t-1} + delta_t B_t u_t,   y_t = sum_n C_t[n] h_t[:, n] + D * u_t

    u, delta: (Bt, T, E); A: (E, N); B, C: (Bt, T, N) (shared by all channels) or (Bt, T, E, N);
    D: (E,) or None; initial: (Bt, E, N) or None (zero state).
    """
    B4, C4 = _check_scan_args("selective_scan_reference", u, delta, A, B, C, D, initial)
    Bt, T, E = u.shape
    dtype = torch.promote_types(u.dtype, A.dtype)
    h = u.new_zeros(Bt, E, A.shape[1], dtype=dtype) if initial is None else initial.to(dtype)
    ys = []
    for t in range(T):
        dA = torch.exp(delta[:, t, :, None] * A)  # (Bt, E, N)
        dBx = (delta[:, t] * u[:, t])[:, :, None] * B4[:, t]  # (Bt, E, N)
        h = dA * h + dBx
        y = (h * C4[:, t]).sum(-1)
        if D is not None:
            y = y + D * u[:, t]
        ys.append(y)
    y = torch.stack(ys, dim=1) if ys else u.new_zeros(Bt, 0, E, dtype=dtype)
    return y, h


def selective_scan(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    initial: Tensor | None = None,
    *,
    method: str = "auto",
    chunk_size: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Same result as :func:`selective_scan_reference`, through :func:`recurrences.scan.linear_scan`.

    All steps are discretised at once (:func:`discretize`), the state is flattened to (Bt, T, E * N)
    and h_t = dA_t * h_{t-1} + dBx_t runs as one first-order scan; ``method`` and ``chunk_size`` are
    passed to it. Memory: a few (Bt, T, E, N) tensors.
    """
    B4, C4 = _check_scan_args("selective_scan", u, delta, A, B, C, D, initial)
    Bt, T, E = u.shape
    N = A.shape[1]
    dA, dBx = discretize(u, delta, A, B4)
    init = None if initial is None else initial.reshape(Bt, E * N)
    # Inputs were checked by the mixer and 0 < dA <= 1, so skip the scan's extra NaN pass.
    h, h_last = linear_scan(
        dA.reshape(Bt, T, E * N),
        dBx.reshape(Bt, T, E * N),
        init,
        method=method,
        chunk_size=chunk_size,
        check_finite=False,
    )
    h = h.view(Bt, T, E, N)
    if C4.shape[2] == 1:  # C shared by all channels: contract without broadcasting C to (Bt, T, E, N)
        y = torch.einsum("bten,btn->bte", h, C4[:, :, 0])
    else:
        y = torch.einsum("bten,bten->bte", h, C4)
    if D is not None:
        y = y + D * u
    return y, h_last.view(Bt, E, N)


_FORMS = {"reference": selective_scan_reference, "scan": selective_scan}


# -- the mixer -------------------------------------------------------------------------------------
class MambaState(NamedTuple):
    """Decoding state of :class:`Mamba`.

    conv: (B, E, d_conv - 1), the last conv inputs (oldest first); ssm: (B, E, N), the scan state h.
    """

    conv: Tensor
    ssm: Tensor


class Mamba(Mixer):
    """Mamba (S6) selective SSM block, pure PyTorch."""

    causal = True
    forms = ("reference", "scan")

    def __init__(
        self,
        d_model: int,
        n_heads: int = 1,
        *,
        d_state: int = 16,
        expand: int = 2,
        d_conv: int = 4,
        dt_rank: int | None = None,
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        dt_init_floor: float = 1e-4,
        conv_bias: bool = True,
        bias: bool = False,
        form: str = "auto",
    ) -> None:
        # n_heads is accepted for the common signature and ignored (Mamba has no heads).
        super().__init__(d_model, 1, form=form)
        for arg, val in (("d_state", d_state), ("expand", expand), ("d_conv", d_conv)):
            if isinstance(val, bool) or not isinstance(val, int) or val < 1:
                raise ValueError(f"Mamba: {arg} must be a positive int, got {val!r}")
        if dt_rank is None:
            dt_rank = math.ceil(d_model / 16)
        if isinstance(dt_rank, bool) or not isinstance(dt_rank, int) or dt_rank < 1:
            raise ValueError(f"Mamba: dt_rank must be a positive int or None, got {dt_rank!r}")
        if not 0 < dt_min <= dt_max:
            raise ValueError(f"Mamba: need 0 < dt_min <= dt_max, got dt_min={dt_min!r}, dt_max={dt_max!r}")
        self.d_state, self.expand, self.d_conv, self.dt_rank = d_state, expand, d_conv, dt_rank
        E = self.d_inner = expand * d_model
        self.in_proj = nn.Linear(d_model, 2 * E, bias=bias)
        self.conv1d = nn.Conv1d(E, E, d_conv, groups=E, bias=conv_bias)  # no padding: history is prepended
        self.x_proj = nn.Linear(E, dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(dt_rank, E, bias=True)
        self.A_log = nn.Parameter(torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(E, 1))
        self.D = nn.Parameter(torch.ones(E))
        self.out_proj = nn.Linear(E, d_model, bias=bias)
        self._init_dt(dt_min, dt_max, dt_init_floor)

    @torch.no_grad()
    def _init_dt(self, dt_min: float, dt_max: float, floor: float) -> None:
        """W_dt ~ U(-r^-1/2, r^-1/2); b_dt = softplus^-1(dt), dt log-uniform in [dt_min, dt_max]."""
        std = self.dt_rank**-0.5
        self.dt_proj.weight.uniform_(-std, std)
        dt = torch.exp(torch.rand(self.d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=floor)
        self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse of softplus

    def resolve_form(self, T: int) -> str:
        """ "auto" -> "scan" (``linear_scan`` itself uses its loop for short T and the chunked form beyond)."""
        return "scan" if self.form == "auto" else self.form

    # -- state ------------------------------------------------------------------------------------
    def init_state(self, batch_size: int, device=None, dtype=None) -> MambaState:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"Mamba.init_state: batch_size must be a positive int, got {batch_size!r}")
        w = self.in_proj.weight
        device = w.device if device is None else device
        dtype = w.dtype if dtype is None else dtype
        return MambaState(
            torch.zeros(batch_size, self.d_inner, self.d_conv - 1, device=device, dtype=dtype),
            torch.zeros(batch_size, self.d_inner, self.d_state, device=device, dtype=dtype),
        )

    def _check_state(self, state: object, B: int) -> MambaState:
        if not isinstance(state, tuple) or len(state) != 2:
            raise TypeError(
                f"Mamba: state must be a MambaState (conv, ssm) from init_state, got {type(state).__name__}"
            )
        conv, ssm = state
        want_conv = (B, self.d_inner, self.d_conv - 1)
        want_ssm = (B, self.d_inner, self.d_state)
        for arg, t, want in (("conv", conv, want_conv), ("ssm", ssm, want_ssm)):
            if not isinstance(t, Tensor) or not t.is_floating_point():
                raise TypeError(f"Mamba: state.{arg} must be a floating tensor of shape {want}")
            if tuple(t.shape) != want:
                raise ValueError(
                    f"Mamba: state.{arg} has shape {tuple(t.shape)}, expected {want} (B, E, ...)"
                )
        return MambaState(conv, ssm)

    # -- forward ----------------------------------------------------------------------------------
    def _ssm_inputs(self, xc: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """From the conv output (..., E): x = SiLU(xc), delta, B, C."""
        x = F.silu(xc)
        dt, Bm, Cm = self.x_proj(x).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = F.softplus(self.dt_proj(dt))
        return x, delta, Bm, Cm

    def _forward(self, x: Tensor, *, mask: Tensor | None, state: MambaState | None, return_state: bool):
        Bt, T, _ = x.shape
        if state is not None:
            state = self._check_state(state, Bt)
        xi, z = self.in_proj(x).chunk(2, dim=-1)
        m = None if mask is None else mask.unsqueeze(-1).to(x.dtype)
        hist = x.new_zeros(Bt, self.d_inner, self.d_conv - 1) if state is None else state.conv.to(x.dtype)
        # padded positions are skipped: the conv window of a real token holds the real tokens before it
        xc, conv_state = causal_conv_skipping_padding(xi, hist, mask, self.conv1d)  # (Bt, T, E)
        xs, delta, Bm, Cm = self._ssm_inputs(xc)
        if m is not None:
            delta = delta * m  # dA = 1, dBx = 0: the state passes through padding unchanged
        A = -torch.exp(self.A_log)
        initial = None if state is None else state.ssm.to(x.dtype)
        y, h_last = _FORMS[self.resolve_form(T)](xs, delta, A, Bm, Cm, self.D, initial)
        out = self.out_proj(y * F.silu(z))
        if m is not None:
            out = out * m
        if not return_state:
            return out
        return out, MambaState(conv_state, h_last)

    def step(self, x_t: Tensor, state: MambaState | None) -> tuple[Tensor, MambaState]:
        """One token: x_t (B, D) -> y_t (B, D); the recurrence written for a single step."""
        check_step_input("Mamba.step", x_t, self.d_model, like=self.in_proj.weight)
        Bt = x_t.shape[0]
        state = self.init_state(Bt, x_t.device, x_t.dtype) if state is None else self._check_state(state, Bt)
        xi, z = self.in_proj(x_t).chunk(2, dim=-1)
        window = torch.cat([state.conv.to(x_t.dtype), xi.unsqueeze(-1)], dim=-1)  # (B, E, d_conv)
        xc = (window * self.conv1d.weight[:, 0]).sum(-1)
        if self.conv1d.bias is not None:
            xc = xc + self.conv1d.bias
        xs, delta, Bm, Cm = self._ssm_inputs(xc)
        A = -torch.exp(self.A_log)
        h = torch.exp(delta.unsqueeze(-1) * A) * state.ssm.to(x_t.dtype) + (delta * xs).unsqueeze(
            -1
        ) * Bm.unsqueeze(1)
        y = (h * Cm.unsqueeze(1)).sum(-1) + self.D * xs
        out = self.out_proj(y * F.silu(z))
        return out, MambaState(window[:, :, 1:], h)

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, d_inner={self.d_inner}, d_state={self.d_state}, d_conv={self.d_conv}, "
            f"dt_rank={self.dt_rank}, form={self.form!r}"
        )


register_mixer("mamba", Mamba, description="Mamba (S6) selective SSM block, pure PyTorch", family="mamba")
