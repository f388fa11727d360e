"""Building blocks of :class:`~recurrences.models.SequenceModel`: RMSNorm, the gated MLP, the residual block."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recurrences.layers.base import Mixer

__all__ = ["RMSNorm", "GatedMLP", "ResidualBlock"]


class RMSNorm(nn.Module):
    """RMSNorm: y = x / sqrt(mean_i x_i^2 + eps) * w  (mean over the last dim; computed in float32)."""

    def __init__(self, d_model: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = float(eps)
        self.weight = nn.Parameter(torch.ones(d_model))

    def forward(self, x: Tensor) -> Tensor:
        xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return y.to(x.dtype) * self.weight.to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


class GatedMLP(nn.Module):
    """SwiGLU MLP: y = W_down (silu(W_gate x) * (W_up x)), hidden width ``d_hidden``, no biases."""

    def __init__(self, d_model: int, d_hidden: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.gate = nn.Linear(d_model, d_hidden, bias=False)
        self.up = nn.Linear(d_model, d_hidden, bias=False)
        self.down = nn.Linear(d_hidden, d_model, bias=False)
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.down(self.dropout(F.silu(self.gate(x)) * self.up(x)))


class ResidualBlock(nn.Module):
    """Pre-norm residual block:  x <- x + mixer(norm1(x), mask);  x <- x + mlp(norm2(x)).

    With ``mlp=None`` (``mlp_ratio = 0``) the second half is skipped. Dropout is applied to each
    residual branch.
    """

    def __init__(
        self, mixer: Mixer, mlp: nn.Module | None, d_model: int, *, dropout: float = 0.0, eps: float = 1e-5
    ):
        super().__init__()
        self.norm1 = RMSNorm(d_model, eps)
        self.mixer = mixer
        self.norm2 = RMSNorm(d_model, eps) if mlp is not None else None
        self.mlp = mlp
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()

    @property
    def causal(self) -> bool:
        return bool(getattr(self.mixer, "causal", False))

    def forward(
        self, x: Tensor, *, mask: Tensor | None = None, state: Any = None, return_state: bool = False
    ) -> Tensor | tuple[Tensor, Any]:
        if state is not None or return_state:
            y, state = self.mixer(self.norm1(x), mask=mask, state=state, return_state=True)
        else:
            y = self.mixer(self.norm1(x), mask=mask)
        x = x + self.dropout(y)
        if self.mlp is not None:
            x = x + self.dropout(self.mlp(self.norm2(x)))
        return (x, state) if return_state else x

    def init_state(self, batch_size: int, device=None, dtype=None) -> Any:
        return self.mixer.init_state(batch_size, device=device, dtype=dtype)

    def step(self, x_t: Tensor, state: Any) -> tuple[Tensor, Any]:
        """One token (B, D): the same maths as :meth:`forward` at a single position."""
        y, state = self.mixer.step(self.norm1(x_t), state)
        x_t = x_t + self.dropout(y)
        if self.mlp is not None:
            x_t = x_t + self.dropout(self.mlp(self.norm2(x_t)))
        return x_t, state
