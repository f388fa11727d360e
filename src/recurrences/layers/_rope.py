"""Rotary position embedding (RoPE), rotate-half layout, shared by every family that rotates q/k.

For a head vector x in R^d (d even) split into halves x = [x1, x2] (each d/2), position p and
frequencies w_i = base^(-2i/d), i = 0..d/2-1:

    R_p x = [x1 * cos(p w) - x2 * sin(p w),  x2 * cos(p w) + x1 * sin(p w)]

so that <R_m q, R_n k> depends only on m - n. Positions may be any real numbers (token indices,
chunk indices for RAT's chunk-level RoPE, absolute offsets while decoding with a cache).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["rope_frequencies", "rope_cos_sin", "rotate_half", "apply_rope"]


def rope_frequencies(dim: int, base: float = 10000.0, *, device=None) -> Tensor:
    """w_i = base^(-2i/dim) for i = 0..dim/2-1, in float64 (angles are formed in float64)."""
    if not isinstance(dim, int) or dim <= 0 or dim % 2:
        raise ValueError(f"rope: head dim must be a positive even int, got {dim!r}")
    if not base > 0:
        raise ValueError(f"rope: base must be positive, got {base!r}")
    i = torch.arange(0, dim, 2, dtype=torch.float64, device=device)
    return base ** (-i / dim)


def rope_cos_sin(positions: Tensor, dim: int, base: float = 10000.0, dtype=None) -> tuple[Tensor, Tensor]:
    """cos(p w) and sin(p w) of shape (*positions.shape, dim), halves repeated (rotate-half layout).

    Angles are computed in float64 (so large positions keep their precision) and returned in ``dtype``
    (default float32).
    """
    if not isinstance(positions, Tensor):
        raise TypeError(f"rope: positions must be a tensor, got {type(positions).__name__}")
    w = rope_frequencies(dim, base, device=positions.device)
    ang = positions.to(torch.float64).unsqueeze(-1) * w  # (..., dim/2)
    ang = torch.cat([ang, ang], dim=-1)
    dtype = dtype or torch.float32
    return ang.cos().to(dtype), ang.sin().to(dtype)


def rotate_half(x: Tensor) -> Tensor:
    """[x1, x2] -> [-x2, x1] on the last dim."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rope(x: Tensor, positions: Tensor, *, base: float = 10000.0) -> Tensor:
    """R_p x for x of shape (B, T, H, d) with positions of shape (T,) or (B, T).

    Returns a tensor of x's shape and dtype.
    """
    if x.dim() != 4:
        raise ValueError(f"apply_rope: x must have shape (B, T, H, d), got {tuple(x.shape)}")
    B, T, _, d = x.shape
    if positions.dim() == 1:
        if positions.shape[0] != T:
            raise ValueError(f"apply_rope: positions has length {positions.shape[0]}, expected T={T}")
    elif positions.dim() == 2:
        if tuple(positions.shape) != (B, T) and tuple(positions.shape) != (1, T):
            raise ValueError(
                f"apply_rope: positions has shape {tuple(positions.shape)}, expected (B, T)=({B}, {T})"
            )
    else:
        raise ValueError(
            f"apply_rope: positions must have shape (T,) or (B, T), got {tuple(positions.shape)}"
        )
    cos, sin = rope_cos_sin(positions, d, base, dtype=x.dtype)
    cos, sin = cos.unsqueeze(-2), sin.unsqueeze(-2)  # broadcast over heads
    return x * cos + rotate_half(x) * sin
