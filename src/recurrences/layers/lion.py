"""LION: bidirectional (non-causal) masked linear attention, in four equal forms (Afzal et al., 2025).

Per head, with positive features q_i = phi(W_q x_i), k_i = phi(W_k x_i), values v_i = W_v x_i and decays
lambda_k in (0, 1] (log-decays a_k = log lambda_k <= 0), LION computes

    y_i = sum_j M_ij (q_i . k_j) v_j / (sum_j M_ij (q_i . k_j) + eps)          (normalised, "SCALE")
    y_i = sum_j M_ij (q_i . k_j) v_j                                            (unscaled variant)

with the bidirectional selective mask (paper Sec. 3; the code/blog indexing, spec A.3 / A.14.1)

    M_ij = prod_{k=j}^{i-1} lambda_k  (i > j),    M_ii = 1,    M_ij = prod_{k=i+1}^{j} lambda_k  (i < j),

built in log space from prefix sums: log M_ij = c_i - c_j (i > j) and C_j - C_i (i < j), where c is the
exclusive and C the inclusive prefix sum of a. The normalisation is applied after masking.

Variants: LION-LIT (lambda = 1, M = all ones), LION-D (one learned lambda_h = sigmoid(a_h) per head, so
M_ij = lambda_h^|i-j|), LION-S (selective lambda_{i,h} = sigmoid(w_h . x_i + b_h) per token and head).

Forms (all take projected tensors of layout (B, T, H, d) and log-decays (B, T, H), and agree on outputs
and gradients):

* ``lion_attention`` ("attention", also the "reference"): the full masked linear attention, O(T^2 d).
* ``lion_rnn`` ("rnn"): Theorem 3.1, a forward and a backward recurrence
  S^F_i = lambda_{i-1} S^F_{i-1} + k_i [v_i, 1]^T and S^B_i = lambda_{i+1} S^B_{i+1} + k_i [v_i, 1]^T, read out as
  q_i^T (S^F_i + S^B_i) - (q_i . k_i)[v_i, 1] (the diagonal counted once). A Python loop: O(T d^2), T steps.
* ``lion_chunk`` ("chunk"): Theorem 3.2 / App. B.10, parallel over queries, looping over key chunks and
  accumulating numerator and denominator; O(T^2 d) time but O(T C) memory.
* ``lion_scan`` ("scan"): O(T) time and memory. Two causal gated linear attentions with receiver gating
  S_t = gamma_t S_{t-1} + k_t [v_t, 1]^T, o_t = q_t^T S_t (log gamma_t = a_{t-1}, a_{-1} = 0), one on the
  sequence and one on its reversal, each computed chunkwise: exact attention inside chunks of length C and the
  chunk-to-chunk state recurrence S_c = Gamma_c S_{c-1} + U_c solved by the scan core
  :func:`recurrences.scan.linear_scan`. Then O = O^F + O^B - (q_i . k_i)[v_i, 1].

Padding (mask False) is made transparent: a padded token gets k = 0 (it contributes nothing) and lambda = 1
(it does not decay the path between two real tokens), so real outputs equal those of the sequence with the
padding removed, in either direction.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..scan import linear_scan
from .base import Mixer, register_mixer

__all__ = [
    "LION_FORMS",
    "lion_attention",
    "lion_rnn",
    "lion_chunk",
    "lion_scan",
    "lion_numden",
    "lion_mask",
    "feature_map",
    "snake_orders",
    "LionMixer",
]

# "reference" and "attention" are the same computation (the full masked linear attention).
LION_FORMS = ("reference", "attention", "rnn", "chunk", "scan")
FEATURE_MAPS = ("silu-norm", "elu")
DECAYS = ("none", "fixed", "selective")
# form="auto": the full attention up to this length, the O(T) scan form beyond. From benchmarks/lion
# (results_short.md: CPU, d_model 256, 4 heads, forward+backward): with a decay the crossover lies between
# T = 256 and 512; without one (LIT: no mask to build) between 512 and 768.
AUTO_ATTENTION_MAX_T = {"none": 640, "fixed": 384, "selective": 384}


# -- helpers --------------------------------------------------------------------------------------------------
def feature_map(x: Tensor, kind: str = "silu-norm") -> Tensor:
    """phi over the last (head) dim: "silu-norm" = (SiLU(x) + 0.5) / ||SiLU(x) + 0.5||_2 (strictly positive,
    since min SiLU ~ -0.2785), or "elu" = elu(x) + 1."""
    if kind == "silu-norm":
        f = F.silu(x) + 0.5
        return f / torch.linalg.vector_norm(f, dim=-1, keepdim=True)
    if kind == "elu":
        return F.elu(x) + 1.0
    raise ValueError(f"feature_map: unknown kind {kind!r}; expected one of {FEATURE_MAPS}")


def _check_qkv(name: str, q: Tensor, k: Tensor, v: Tensor, log_decay: Tensor | None) -> Tensor | None:
    """Validate shapes; return log_decay expanded to (B, T, H) in a float dtype at least float32 (or None)."""
    for n, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name}: {n} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 4:
            raise ValueError(f"{name}: {n} must have shape (B, T, H, d), got {tuple(t.shape)}")
    if q.shape != k.shape:
        raise ValueError(f"{name}: q {tuple(q.shape)} and k {tuple(k.shape)} must have the same shape")
    if v.shape[:3] != q.shape[:3]:
        raise ValueError(f"{name}: v {tuple(v.shape)} must share (B, T, H) = {tuple(q.shape[:3])} with q")
    if log_decay is None:
        return None
    B, T, H = q.shape[:3]
    if not isinstance(log_decay, Tensor):
        raise TypeError(f"{name}: log_decay must be a torch.Tensor of shape (B, T, H) or None")
    try:
        a = log_decay.expand(B, T, H)
    except RuntimeError:
        raise ValueError(
            f"{name}: log_decay of shape {tuple(log_decay.shape)} is not broadcastable to (B, T, H) = {(B, T, H)}"
        ) from None
    with torch.no_grad():
        if not bool(torch.isfinite(log_decay).all()):
            raise ValueError(f"{name}: log_decay contains NaN or inf (decays must lie in (0, 1])")
        if bool((log_decay > 0).any()):
            raise ValueError(f"{name}: log_decay must be <= 0 (decays lambda = exp(log_decay) in (0, 1])")
    return a.to(torch.promote_types(q.dtype, torch.float32))


def _exp(x: Tensor) -> Tensor:
    """exp(x) for x <= 0, with x floored at log(smallest normal) + 1 of its dtype (about -86 in float32, -707
    in float64). Far pairs then get a weight ~1e-37 (float32) instead of an exact 0, an error far below
    rounding, and exp never produces subnormals, on which CPUs run many times slower."""
    return torch.exp(torch.clamp_min(x, math.log(torch.finfo(x.dtype).tiny) + 1.0))


def _prefix_sums(a: Tensor) -> tuple[Tensor, Tensor]:
    """(B, T, H) log-decays -> exclusive c_i = sum_{k<i} a_k and inclusive C_i = sum_{k<=i} a_k, as (B, H, T)."""
    inc = torch.cumsum(a.transpose(1, 2), dim=-1)
    return inc - a.transpose(1, 2), inc


def _log_mask_block(exc: Tensor, inc: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
    """log M[i, j] for rows i and cols j (index vectors) as (B, H, len(rows), len(cols)); every entry <= 0.

    Lower triangle and diagonal c_i - c_j (0 on the diagonal), upper C_j - C_i; the branch not taken (which
    may be large and positive) is discarded *before* exp, so no inf * 0 can appear."""
    lower = exc[..., rows, None] - exc[..., None, cols]
    upper = inc[..., None, cols] - inc[..., rows, None]
    return torch.where(rows[:, None] >= cols[None, :], lower, upper)


def lion_mask(log_decay: Tensor) -> Tensor:
    """The mask M (B, H, T, T) of log-decays (B, T, H): M_ij = prod of the lambdas from key j (inclusive) to
    query i (exclusive), M_ii = 1 (spec A.3), built in log space."""
    exc, inc = _prefix_sums(log_decay)
    idx = torch.arange(log_decay.shape[1], device=log_decay.device)
    return _exp(_log_mask_block(exc, inc, idx, idx))


# -- the four cores: O = (Q K^T (.) M) V for values v of any width e --------------------------------------------
def _attention_core(q: Tensor, k: Tensor, v: Tensor, a: Tensor | None, chunk_size: int) -> Tensor:
    scores = torch.einsum("bihd,bjhd->bhij", q, k)
    if a is not None:
        scores = scores * lion_mask(a).to(scores.dtype)
    return torch.einsum("bhij,bjhe->bihe", scores, v)


def _chunk_core(q: Tensor, k: Tensor, v: Tensor, a: Tensor | None, chunk_size: int) -> Tensor:
    B, T, H, _ = q.shape
    out = torch.zeros(B, T, H, v.shape[-1], dtype=torch.promote_types(q.dtype, v.dtype), device=q.device)
    if a is not None:
        exc, inc = _prefix_sums(a)
        rows = torch.arange(T, device=q.device)
    for s in range(0, T, chunk_size):
        e = min(T, s + chunk_size)
        block = torch.einsum("bihd,bjhd->bhij", q, k[:, s:e])  # (B, H, T, C): all queries, one key chunk
        if a is not None:
            block = block * _exp(_log_mask_block(exc, inc, rows, rows[s:e])).to(block.dtype)
        out = out + torch.einsum("bhij,bjhe->bihe", block, v[:, s:e])
    return out


def _rnn_core(q: Tensor, k: Tensor, v: Tensor, a: Tensor | None, chunk_size: int) -> Tensor:
    B, T, H, d = q.shape
    dt = torch.promote_types(q.dtype, v.dtype)
    lam = None if a is None else torch.exp(a).to(dt)
    outF: list[Tensor] = []
    outB: list[Tensor | None] = [None] * T
    S = torch.zeros(B, H, d, v.shape[-1], dtype=dt, device=q.device)
    for i in range(T):  # S^F_i = lambda_{i-1} S^F_{i-1} + k_i v_i^T
        if lam is not None and i > 0:
            S = S * lam[:, i - 1, :, None, None]
        S = S + k[:, i, :, :, None] * v[:, i, :, None, :]
        outF.append(torch.einsum("bhd,bhde->bhe", q[:, i], S))
    S = torch.zeros_like(S)
    for i in range(T - 1, -1, -1):  # S^B_i = lambda_{i+1} S^B_{i+1} + k_i v_i^T
        if lam is not None and i < T - 1:
            S = S * lam[:, i + 1, :, None, None]
        S = S + k[:, i, :, :, None] * v[:, i, :, None, :]
        outB[i] = torch.einsum("bhd,bhde->bhe", q[:, i], S)
    if T == 0:
        return torch.zeros(B, 0, H, v.shape[-1], dtype=dt, device=q.device)
    diag = (q * k).sum(-1, keepdim=True) * v  # the diagonal, counted by both directions
    return torch.stack(outF, 1) + torch.stack(outB, 1) - diag  # type: ignore[arg-type]


def _causal_chunked(q: Tensor, k: Tensor, v: Tensor, g: Tensor | None, C: int) -> Tensor:
    """Causal gated linear attention o_t = q_t^T S_t, S_t = exp(g_t) S_{t-1} + k_t v_t^T, chunkwise.

    Inside a chunk (G = inclusive prefix sum of g within the chunk):
        o_t = sum_{s<=t in chunk} exp(G_t - G_s)(q_t . k_s) v_s + exp(G_t) q_t^T S_prev,
    and across chunks S_c = exp(G_end) S_{c-1} + sum_s exp(G_end - G_s) k_s v_s^T, solved by linear_scan.
    Every exponent is <= 0, so nothing overflows."""
    B, T, H, d = q.shape
    e = v.shape[-1]
    N = -(-T // C)
    pad = N * C - T
    if pad:  # zeros at the end never change earlier outputs
        q, k, v = (F.pad(t, (0, 0, 0, 0, 0, pad)) for t in (q, k, v))
        if g is not None:
            g = F.pad(g, (0, 0, 0, pad))
    qc = q.reshape(B, N, C, H, d).permute(0, 3, 1, 2, 4)  # (B, H, N, C, d)
    kc = k.reshape(B, N, C, H, d).permute(0, 3, 1, 2, 4)
    vc = v.reshape(B, N, C, H, e).permute(0, 3, 1, 2, 4)
    scores = qc @ kc.transpose(-1, -2)  # (B, H, N, C, C)
    causal = torch.ones(C, C, dtype=torch.bool, device=q.device).tril()
    if g is None:
        scores = scores * causal
        k_end = kc
    else:
        G = torch.cumsum(g.reshape(B, N, C, H).permute(0, 3, 1, 2), dim=-1)  # (B, H, N, C)
        diff = G[..., :, None] - G[..., None, :]
        decay = _exp(torch.where(causal, diff, torch.zeros((), dtype=diff.dtype, device=diff.device)))
        scores = scores * (decay * causal).to(scores.dtype)
        G_end = G[..., -1:]
        k_end = kc * _exp(G_end - G)[..., None].to(kc.dtype)
    out = scores @ vc  # intra-chunk part, (B, H, N, C, e)
    if N > 1:
        U = k_end.transpose(-1, -2) @ vc  # chunk-local end states (B, H, N, d, e)
        U = U.permute(0, 2, 1, 3, 4)  # time (chunks) on dim 1 for the scan: (B, N, H, d, e)
        if g is None:
            gate = torch.ones(B, N, H, 1, 1, dtype=U.dtype, device=U.device)
        else:
            gate = _exp(G_end[..., 0]).permute(0, 2, 1)[..., None, None].to(U.dtype)
        S, _ = linear_scan(gate, U, check_finite=False)
        S_prev = torch.cat([torch.zeros_like(S[:, :1]), S[:, :-1]], dim=1).permute(0, 2, 1, 3, 4)
        q_in = qc if g is None else qc * _exp(G)[..., None].to(qc.dtype)
        out = out + q_in @ S_prev
    out = out.permute(0, 2, 3, 1, 4).reshape(B, N * C, H, e)
    return out[:, :T] if pad else out


def _scan_core(q: Tensor, k: Tensor, v: Tensor, a: Tensor | None, chunk_size: int) -> Tensor:
    B, T = q.shape[:2]
    if T == 0:
        return torch.zeros(
            *q.shape[:3], v.shape[-1], dtype=torch.promote_types(q.dtype, v.dtype), device=q.device
        )
    # Forward and reversed sequences in one batch of 2B: receiver gates log gamma_t = a_{t-1} (0 at the start).
    q2 = torch.cat([q, q.flip(1)], 0)
    k2 = torch.cat([k, k.flip(1)], 0)
    v2 = torch.cat([v, v.flip(1)], 0)
    g2 = None
    if a is not None:
        a2 = torch.cat([a, a.flip(1)], 0)
        g2 = torch.cat([torch.zeros_like(a2[:, :1]), a2[:, :-1]], dim=1)
    o = _causal_chunked(q2, k2, v2, g2, min(chunk_size, T))
    diag = (q * k).sum(-1, keepdim=True) * v
    return o[:B] + o[B:].flip(1) - diag


_CORES = {
    "reference": _attention_core,
    "attention": _attention_core,
    "rnn": _rnn_core,
    "chunk": _chunk_core,
    "scan": _scan_core,
}


def lion_numden(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    log_decay: Tensor | None = None,
    *,
    form: str = "reference",
    normalize: bool = True,
    chunk_size: int = 64,
) -> tuple[Tensor, Tensor | None]:
    """Numerator sum_j M_ij (q_i . k_j) v_j (B, T, H, e) and denominator sum_j M_ij (q_i . k_j) (B, T, H)
    (None when ``normalize`` is False), computed by ``form``. The denominator rides along as an extra
    all-ones value column. q, k: (B, T, H, d); v: (B, T, H, e); log_decay: broadcastable to (B, T, H), <= 0,
    or None (LION-LIT)."""
    if form not in _CORES:
        raise ValueError(f"lion: unknown form {form!r}; expected one of {LION_FORMS}")
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"lion: chunk_size must be a positive int, got {chunk_size!r}")
    a = _check_qkv(f"lion ({form})", q, k, v, log_decay)
    if normalize:
        v = torch.cat([v, torch.ones_like(v[..., :1])], dim=-1)
    o = _CORES[form](q, k, v, a, chunk_size)
    return (o[..., :-1], o[..., -1]) if normalize else (o, None)


def _finish(num: Tensor, den: Tensor | None, eps: float) -> Tensor:
    return num if den is None else num / (den + eps).unsqueeze(-1)


def _make_form(form: str, doc: str):
    def f(
        q: Tensor,
        k: Tensor,
        v: Tensor,
        log_decay: Tensor | None = None,
        *,
        normalize: bool = True,
        eps: float = 1e-6,
        chunk_size: int = 64,
    ) -> Tensor:
        num, den = lion_numden(q, k, v, log_decay, form=form, normalize=normalize, chunk_size=chunk_size)
        return _finish(num, den, eps)

    f.__name__ = f"lion_{form}"
    f.__doc__ = doc
    return f


lion_attention = _make_form(
    "attention",
    "Full masked linear attention Y = SCALE((Q K^T) (.) M) V (the reference form); O(T^2 d) time and memory.",
)
lion_rnn = _make_form(
    "rnn", "Bidirectional RNN (Theorem 3.1): forward + backward recurrences, diagonal counted once; T steps."
)
lion_chunk = _make_form(
    "chunk", "Key-chunked form (Theorem 3.2): accumulate (Q K_[j]^T (.) M_[:, j]) [V_[j], 1] over key chunks."
)
lion_scan = _make_form(
    "scan", "O(T) form: two chunked causal gated linear attentions (states passed by linear_scan), summed."
)


# -- image-patch orderings (LION-D/S natural, spec A.9) -----------------------------------------------------------
def snake_orders(h: int, w: int, n_prefix: int = 0) -> tuple[Tensor, Tensor]:
    """The two orderings of an h x w patch grid (raster indices, after ``n_prefix`` leading tokens such as CLS,
    which stay first): a row-wise snake (even rows left to right, odd rows right to left) and the same snake
    on the transposed grid (column-wise). Each is a permutation ``perm`` with ``x_ordered = x[:, perm]``."""
    rows = []
    for r in range(h):
        cols = range(w) if r % 2 == 0 else range(w - 1, -1, -1)
        rows.extend(r * w + c for c in cols)
    colsnake = []
    for c in range(w):
        rr = range(h) if c % 2 == 0 else range(h - 1, -1, -1)
        colsnake.extend(r * w + c for r in rr)
    pre = list(range(n_prefix))
    return (
        torch.tensor(pre + [n_prefix + i for i in rows]),
        torch.tensor(pre + [n_prefix + i for i in colsnake]),
    )


# -- the mixer ------------------------------------------------------------------------------------------------------
class LionMixer(Mixer):
    """LION bidirectional linear attention: qkv -> phi(q), phi(k) -> masked, normalised linear attention -> proj.

    Args:
        d_model, n_heads: sizes (head dim d = d_model / n_heads).
        decay: "none" (LION-LIT), "fixed" (LION-D: lambda_h = sigmoid(a_h), a_h ~ N(0, 1)) or "selective"
            (LION-S: lambda_{i,h} = sigmoid(w_h . x_i + b_h), in fp32, log lambda = logsigmoid(.)).
        form: "auto" (attention up to AUTO_ATTENTION_MAX_T[decay], scan beyond), "reference" / "attention", "rnn",
            "chunk" or "scan"; all equal.
        feature_map: "silu-norm" (paper default) or "elu" (elu + 1, the released LIT vision code).
        normalize: True for the scaled form; False for the unscaled y = ((Q K^T) (.) M) V, followed by a
            per-head RMS normalisation (``head_norm``) to keep its size independent of T.
        eps: added to the denominator.
        chunk_size: chunk length of the "chunk" and "scan" forms.
        patch_grid: (h, w) to use the two snake orderings of an image-patch grid (LION natural): each ordering
            has its own decays; numerators and denominators of the two are summed (the code's mask average).
            T must be h * w, or h * w + 1 with a leading CLS token.
        qkv_bias: bias of the qkv projection.
    """

    causal = False
    forms = LION_FORMS

    def __init__(
        self,
        d_model: int,
        n_heads: int = 1,
        *,
        decay: str = "selective",
        form: str = "auto",
        feature_map: str = "silu-norm",
        normalize: bool = True,
        head_norm: bool | None = None,
        eps: float = 1e-6,
        chunk_size: int = 64,
        patch_grid: tuple[int, int] | None = None,
        qkv_bias: bool = True,
    ) -> None:
        super().__init__(d_model, n_heads, form=form)
        if decay not in DECAYS:
            raise ValueError(f"LionMixer: decay must be one of {DECAYS}, got {decay!r}")
        if feature_map not in FEATURE_MAPS:
            raise ValueError(f"LionMixer: feature_map must be one of {FEATURE_MAPS}, got {feature_map!r}")
        if not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"LionMixer: chunk_size must be a positive int, got {chunk_size!r}")
        if not (isinstance(eps, (int, float)) and eps >= 0):
            raise ValueError(f"LionMixer: eps must be a float >= 0, got {eps!r}")
        if patch_grid is not None:
            if (
                not isinstance(patch_grid, (tuple, list))
                or len(patch_grid) != 2
                or not all(isinstance(n, int) and n > 0 for n in patch_grid)
            ):
                raise ValueError(f"LionMixer: patch_grid must be (h, w) positive ints, got {patch_grid!r}")
            patch_grid = (int(patch_grid[0]), int(patch_grid[1]))
        self.decay = decay
        self.feature_map = feature_map
        self.normalize = bool(normalize)
        self.head_norm = (not self.normalize) if head_norm is None else bool(head_norm)
        self.eps = float(eps)
        self.chunk_size = chunk_size
        self.patch_grid = patch_grid
        self.head_dim = d_model // n_heads
        n_orders = 2 if patch_grid is not None else 1
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=qkv_bias)
        self.proj = nn.Linear(d_model, d_model)
        if decay == "fixed":
            self.decay_logit = nn.Parameter(torch.randn(n_orders, n_heads))
        elif decay == "selective":
            self.decay_proj = nn.Linear(d_model, n_orders * n_heads)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # trunc-normal(0.02) weights and zero biases for the projections (the ViT init of the paper's code)
        mods = [self.qkv, self.proj] + ([self.decay_proj] if self.decay == "selective" else [])
        for m in mods:
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    def resolve_form(self, T: int) -> str:
        if self.form != "auto":
            return self.form
        return "attention" if AUTO_ATTENTION_MAX_T[self.decay] >= T else "scan"

    def log_decays(self, x: Tensor) -> Tensor | None:
        """log lambda of shape (B, T, n_orders, H) (fp32 or wider), or None for LION-LIT."""
        B, T, _ = x.shape
        n_orders = 2 if self.patch_grid is not None else 1
        wide = torch.promote_types(x.dtype, torch.float32)
        if self.decay == "none":
            return None
        if self.decay == "fixed":
            a = F.logsigmoid(self.decay_logit.to(wide))
            return a.expand(B, T, n_orders, self.n_heads)
        logits = F.linear(x.to(wide), self.decay_proj.weight.to(wide), self.decay_proj.bias.to(wide))
        return F.logsigmoid(logits).reshape(B, T, n_orders, self.n_heads)

    def _orders(self, T: int, device) -> list[Tensor | None]:
        if self.patch_grid is None:
            return [None]
        h, w = self.patch_grid
        n_prefix = T - h * w
        if n_prefix not in (0, 1):
            raise ValueError(
                f"LionMixer: patch_grid={self.patch_grid} needs T = {h * w} (or {h * w + 1} with a CLS token), got T={T}"
            )
        return [p.to(device) for p in snake_orders(h, w, n_prefix)]

    def _forward(self, x: Tensor, *, mask: Tensor | None, state, return_state: bool) -> Tensor:
        B, T, D = x.shape
        H, d = self.n_heads, self.head_dim
        q, k, v = self.qkv(x).reshape(B, T, 3, H, d).unbind(2)
        q = feature_map(q, self.feature_map)
        k = feature_map(k, self.feature_map)
        a = self.log_decays(x)
        if mask is not None:
            m = mask.to(k.dtype)[:, :, None, None]
            k = k * m  # padding contributes nothing ...
            if a is not None:
                a = a * mask.to(a.dtype)[:, :, None, None]  # ... and is transparent (lambda = 1)
        form = self.resolve_form(T)
        num = den = None
        for o, perm in enumerate(self._orders(T, x.device)):
            ao = None if a is None else a[:, :, o]
            qo, ko, vo = q, k, v
            if perm is not None:
                qo, ko, vo = q[:, perm], k[:, perm], v[:, perm]
                ao = None if ao is None else ao[:, perm]
            n_o, d_o = lion_numden(
                qo, ko, vo, ao, form=form, normalize=self.normalize, chunk_size=self.chunk_size
            )
            if perm is not None:
                inv = torch.argsort(perm)
                n_o = n_o[:, inv]
                d_o = None if d_o is None else d_o[:, inv]
            num = n_o if num is None else num + n_o
            den = d_o if den is None else den + d_o
        y = _finish(num, den, self.eps)
        if self.head_norm:
            y = y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + 1e-6)
        y = self.proj(y.reshape(B, T, D).to(x.dtype))
        if mask is not None:
            y = y * mask.to(y.dtype)[:, :, None]
        return y

    def extra_repr(self) -> str:
        return (
            super().extra_repr()
            + f", decay={self.decay!r}, feature_map={self.feature_map!r}, normalize={self.normalize}"
            + (f", patch_grid={self.patch_grid}" if self.patch_grid else "")
        )


def _factory(decay: str):
    def make(d_model: int, n_heads: int = 1, **options) -> LionMixer:
        return LionMixer(d_model, n_heads, decay=decay, **options)

    make.__name__ = f"lion_{decay}"
    return make


register_mixer(
    "lion-lit",
    _factory("none"),
    causal=False,
    family="lion",
    description="LION-LIT: bidirectional linear attention without decay (lambda = 1)",
)
register_mixer(
    "lion-d",
    _factory("fixed"),
    causal=False,
    family="lion",
    description="LION-D: bidirectional linear attention, one learned decay per head (M_ij = lambda^|i-j|)",
)
register_mixer(
    "lion-s",
    _factory("selective"),
    causal=False,
    family="lion",
    description="LION-S: bidirectional linear attention, selective decay per token and head",
)
