"""Multi-head softmax attention: the quadratic baseline (causal, bidirectional, sliding window, KV cache).

Per head h, with q_i, k_j, v_j in R^{d_h} (d_h = d_model / n_heads) and RoPE R_p applied to q and k
at their absolute positions (``rope=True``):

    o_i = sum_j softmax_j( <R_i q_i, R_j k_j> / sqrt(d_h) + M_ij ) v_j,   y = W_o [o^1; ...; o^H]

with the additive mask M_ij = 0 where key j is visible to query i and -inf elsewhere:
  * causal: j <= i;  bidirectional: all j;
  * sliding ``window`` w: causal  0 <= i - j < w  (the last w keys, itself included);
                           bidirectional |i - j| < w;
  * padding: keys at padded positions (mask False) are never visible.

Forms (plain functions on (B, T, H, d) tensors): "reference" writes softmax(QK^T / sqrt(d) + M) V out in
plain torch; "sdpa" calls :func:`torch.nn.functional.scaled_dot_product_attention` (fused kernels where
available). ``step()`` decodes one token with a KV cache (:class:`KVCache`), bounded to the last
``window - 1`` keys when a window is set. Under ``torch.no_grad()`` the cache lives in preallocated
buffers that ``step()`` appends to in place (capacity doubling, so amortised O(1) copying per token; with
a window the kept slice slides along the buffer and is moved back to its start when it reaches the end).
With gradients enabled ``step()`` concatenates instead, so autograd never sees an in-place write.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._rope import apply_rope, rope_cos_sin
from .base import Mixer, check_step_input, register_mixer

__all__ = [
    "Attention",
    "KVCache",
    "attention_mask",
    "softmax_attention_reference",
    "softmax_attention_sdpa",
]


# -- masks -----------------------------------------------------------------------------------------
def attention_mask(
    q_pos: Tensor,
    k_pos: Tensor,
    *,
    causal: bool,
    window: int | None = None,
    key_valid: Tensor | None = None,
    query_valid: Tensor | None = None,
) -> Tensor:
    """Boolean visibility mask allowed[b, i, j] (True = query i may attend to key j).

    Args:
        q_pos: (Tq,) absolute positions of the queries; k_pos: (Tk,) absolute positions of the keys.
        causal: keep only k_pos[j] <= q_pos[i].
        window: keep only q - k < window (causal) or |q - k| < window (bidirectional).
        key_valid: (B, Tk) bool, False for padded keys (never visible).
        query_valid: (B, Tq) bool, False for padded queries. A padded query is allowed its own key
            (the one at the same position), so that no row is empty and the softmax stays finite; its
            output is meaningless and is zeroed by the mixer.

    Returns a (B, Tq, Tk) tensor, or (1, Tq, Tk) when neither validity mask is given.
    """
    diff = q_pos[:, None] - k_pos[None, :]  # (Tq, Tk) = i - j
    allowed = torch.ones_like(diff, dtype=torch.bool)
    if causal:
        allowed &= diff >= 0
    if window is not None:
        allowed &= (diff < window) if causal else (diff.abs() < window)
    allowed = allowed.unsqueeze(0)
    if key_valid is not None:
        allowed = allowed & key_valid[:, None, :]
    if query_valid is not None:
        own = (diff == 0).unsqueeze(0) & ~query_valid[:, :, None]
        allowed = allowed | own
    return allowed


# -- forms -----------------------------------------------------------------------------------------
def _check_qkv(name: str, q: Tensor, k: Tensor, v: Tensor, allowed: Tensor | None, causal: bool) -> None:
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(
            f"{name}: q, k, v must have shape (B, T, H, d), got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )
    if k.shape != v.shape or q.shape[0] != k.shape[0] or q.shape[2:] != k.shape[2:]:
        raise ValueError(f"{name}: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)} do not match")
    Tq, Tk = q.shape[1], k.shape[1]
    if allowed is not None and (
        allowed.dtype != torch.bool
        or allowed.dim() != 3
        or tuple(allowed.shape[1:]) != (Tq, Tk)
        or allowed.shape[0] not in (1, q.shape[0])
    ):
        raise ValueError(
            f"{name}: allowed must be a bool (B or 1, Tq={Tq}, Tk={Tk}) tensor, got {tuple(allowed.shape)}"
        )
    if causal and Tq != Tk:
        raise ValueError(f"{name}: causal=True needs Tq == Tk (pass an explicit `allowed` mask with a cache)")


def softmax_attention_reference(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    allowed: Tensor | None = None,
    *,
    causal: bool = False,
    scale: float | None = None,
) -> Tensor:
    """o = softmax(Q K^T * scale + M) V per head, written out; (B, Tq, H, d) from q (B, Tq, H, d), k, v (B, Tk, H, d).

    ``allowed`` (B or 1, Tq, Tk) bool sets M = -inf where False; ``causal`` additionally keeps j <= i
    (Tq == Tk). ``scale`` defaults to 1/sqrt(d). A row with no visible key gives a zero output.
    """
    _check_qkv("softmax_attention_reference", q, k, v, allowed, causal)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = torch.einsum("bihd,bjhd->bhij", q, k) * scale
    if causal:
        tril = torch.ones(q.shape[1], k.shape[1], dtype=torch.bool, device=q.device).tril()
        allowed = tril[None] if allowed is None else allowed & tril
    if allowed is not None:
        hidden = ~allowed[:, None]  # broadcast over heads
        scores = scores.masked_fill(hidden, float("-inf"))
    w = torch.softmax(scores, dim=-1)
    if allowed is not None:
        w = w.masked_fill(hidden, 0.0)  # an empty row is NaN after softmax; make it 0
    return torch.einsum("bhij,bjhd->bihd", w, v)


def softmax_attention_sdpa(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    allowed: Tensor | None = None,
    *,
    causal: bool = False,
    scale: float | None = None,
) -> Tensor:
    """Same result as :func:`softmax_attention_reference` through ``F.scaled_dot_product_attention``.

    Rows with no visible key are not supported here (the fused kernels return NaN); the mixer never
    builds one.
    """
    _check_qkv("softmax_attention_sdpa", q, k, v, allowed, causal)
    mask = None
    if allowed is not None:
        if causal:
            allowed = allowed & torch.ones(q.shape[1], k.shape[1], dtype=torch.bool, device=q.device).tril()
            causal = False
        mask = allowed[:, None]
    o = F.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask, is_causal=causal, scale=scale
    )
    return o.transpose(1, 2)


_FORMS = {"reference": softmax_attention_reference, "sdpa": softmax_attention_sdpa}


# -- the mixer -------------------------------------------------------------------------------------
@dataclass
class KVCache:
    """Decoding state of :class:`Attention`: the last S keys (RoPE already applied) and values.

    k, v: (B, S, H, d); valid: (B, S) bool (False for padded prompt positions); pos: the absolute
    position of the next token (the cached entries sit at pos - S .. pos - 1).

    Storage (filled in by :meth:`Attention.step` and :meth:`Attention.init_state`; a cache built from
    plain tensors has none and gets it on its first step): ``k``, ``v`` and ``valid`` are then views
    ``k_buf[:, :, start:start + S].transpose(1, 2)``, ``v_buf[...]``, ``valid_buf[:, start:start + S]``
    of buffers k_buf, v_buf (B, H, C, d) and valid_buf (B, C) with spare capacity after the view, into
    which the next step writes in place. ``all_valid`` caches ``bool(valid.all())`` (None = unknown).
    Because of the in-place writes, :meth:`clone` a cache before branching it into several continuations.
    """

    k: Tensor
    v: Tensor
    valid: Tensor
    pos: int
    k_buf: Tensor | None = field(default=None, repr=False)
    v_buf: Tensor | None = field(default=None, repr=False)
    valid_buf: Tensor | None = field(default=None, repr=False)
    start: int = 0
    all_valid: bool | None = None

    def clone(self) -> KVCache:
        """An independent copy (plain tensors; the copy allocates its own buffers on its next step)."""
        return KVCache(self.k.clone(), self.v.clone(), self.valid.clone(), self.pos, all_valid=self.all_valid)

    def _storage(self) -> tuple[Tensor, Tensor, Tensor, int] | None:
        """(k_buf, v_buf, valid_buf, start) when the views sit in the buffers with room for one more entry."""
        kb, vb, ob, start = self.k_buf, self.v_buf, self.valid_buf, self.start
        if kb is None or vb is None or ob is None:
            return None
        end = start + self.k.shape[1]
        if (
            end >= kb.shape[2]
            or kb.shape != vb.shape
            or ob.shape[1] != kb.shape[2]
            or kb.dtype != self.k.dtype
            or vb.dtype != self.v.dtype
        ):
            return None
        row = kb.shape[3] * kb.element_size()
        if end > start and (  # (an empty view has no data pointer to compare)
            self.k.data_ptr() != kb.data_ptr() + start * row
            or self.v.data_ptr() != vb.data_ptr() + start * row
            or self.valid.data_ptr() != ob.data_ptr() + start * ob.element_size()
        ):
            return None  # the views were replaced: do not write into buffers they no longer belong to
        return kb, vb, ob, start


def _new_storage(
    B: int, H: int, d: int, capacity: int, dtype: torch.dtype, device: torch.device
) -> tuple[Tensor, Tensor, Tensor]:
    kb = torch.empty(B, H, capacity, d, dtype=dtype, device=device)
    return kb, torch.empty_like(kb), torch.empty(B, capacity, dtype=torch.bool, device=device)


class Attention(Mixer):
    """Multi-head softmax attention (causal or bidirectional, optional sliding window and RoPE)."""

    forms = ("reference", "sdpa")

    def __init__(
        self,
        d_model: int,
        n_heads: int = 1,
        *,
        causal: bool = True,
        window: int | None = None,
        rope: bool = True,
        rope_base: float = 10000.0,
        bias: bool = False,
        form: str = "auto",
    ) -> None:
        super().__init__(d_model, n_heads, form=form)
        if not isinstance(causal, bool):
            raise TypeError(f"Attention: causal must be a bool, got {causal!r}")
        if window is not None and (isinstance(window, bool) or not isinstance(window, int) or window < 1):
            raise ValueError(f"Attention: window must be None or a positive int, got {window!r}")
        self.causal = causal
        self.window = window
        self.head_dim = d_model // n_heads
        if rope and self.head_dim % 2:
            raise ValueError(
                f"Attention: rope=True needs an even head dim, got d_model/n_heads = {self.head_dim}"
            )
        if not rope_base > 0:
            raise ValueError(f"Attention: rope_base must be positive, got {rope_base!r}")
        self.rope = bool(rope)
        self.rope_base = float(rope_base)
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=bias)
        self.out = nn.Linear(d_model, d_model, bias=bias)
        self._rope_table: tuple | None = (
            None  # step(): (first position, cos, signed sin, base), 256 positions
        )

    def resolve_form(self, T: int) -> str:
        """ "auto" -> "sdpa" (fused kernels; never slower than the written-out reference)."""
        return "sdpa" if self.form == "auto" else self.form

    # -- state ------------------------------------------------------------------------------------
    def init_state(self, batch_size: int, device=None, dtype=None) -> KVCache:
        if not self.causal:
            return super().init_state(batch_size, device, dtype)
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"Attention.init_state: batch_size must be a positive int, got {batch_size!r}")
        w = self.qkv.weight
        device = w.device if device is None else device
        dtype = w.dtype if dtype is None else dtype
        kb, vb, ob = _new_storage(batch_size, self.n_heads, self.head_dim, 16, dtype, device)
        return KVCache(
            kb[:, :, :0].transpose(1, 2), vb[:, :, :0].transpose(1, 2), ob[:, :0], 0, kb, vb, ob, 0, True
        )

    def _check_state(self, state: object, B: int) -> KVCache:
        if not isinstance(state, KVCache):
            raise TypeError(
                f"Attention: state must be a KVCache (from init_state), got {type(state).__name__}"
            )
        S = state.k.shape[1] if state.k.dim() == 4 else -1
        want = (B, S, self.n_heads, self.head_dim)
        if tuple(state.k.shape) != want or tuple(state.v.shape) != want:
            raise ValueError(
                f"Attention: state.k/state.v have shapes {tuple(state.k.shape)}/{tuple(state.v.shape)}, "
                f"expected (B, S, H, d) = (B={B}, S, {self.n_heads}, {self.head_dim})"
            )
        if state.valid.dtype != torch.bool or tuple(state.valid.shape) != (B, S):
            raise ValueError(
                f"Attention: state.valid must be bool of shape (B, S) = ({B}, {S}), got {tuple(state.valid.shape)}"
            )
        if not isinstance(state.pos, int) or state.pos < S:
            raise ValueError(
                f"Attention: state.pos must be an int >= the cache length {S}, got {state.pos!r}"
            )
        return state

    # -- forward ----------------------------------------------------------------------------------
    def _forward(self, x: Tensor, *, mask: Tensor | None, state: KVCache | None, return_state: bool):
        B, T, D = x.shape
        H, d = self.n_heads, self.head_dim
        if state is None and return_state:
            state = self.init_state(B, device=x.device, dtype=x.dtype)
        if state is not None:
            state = self._check_state(state, B)
        q, k, v = self.qkv(x).view(B, T, 3, H, d).unbind(2)
        pos0 = 0 if state is None else state.pos
        q_pos = torch.arange(pos0, pos0 + T, device=x.device)
        if self.rope:
            q = apply_rope(q, q_pos, base=self.rope_base)
            k = apply_rope(k, q_pos, base=self.rope_base)
        valid = mask
        if state is not None and state.k.shape[1] > 0:
            S = state.k.shape[1]
            k = torch.cat([state.k.to(k.dtype), k], dim=1)
            v = torch.cat([state.v.to(v.dtype), v], dim=1)
            own = torch.ones(B, T, dtype=torch.bool, device=x.device) if mask is None else mask
            valid = torch.cat([state.valid, own], dim=1)
        else:
            S = 0
        k_pos = torch.arange(pos0 - S, pos0 + T, device=x.device)
        plain = valid is None and self.window is None and S == 0
        if plain:  # no mask to build: let the form use its own causal path (fast SDPA kernels)
            allowed, causal_flag = None, self.causal
        else:
            key_valid = None if valid is None or bool(valid.all()) else valid
            query_valid = None if mask is None else mask
            allowed = attention_mask(
                q_pos,
                k_pos,
                causal=self.causal,
                window=self.window,
                key_valid=key_valid,
                query_valid=query_valid,
            )
            causal_flag = False
        o = _FORMS[self.resolve_form(T)](q, k, v, allowed, causal=causal_flag)
        y = self.out(o.reshape(B, T, D))
        if mask is not None:
            y = y * mask.unsqueeze(-1).to(y.dtype)  # outputs at padding are meaningless; make them 0
        if not return_state:
            return y
        if valid is None:
            valid = torch.ones(B, k.shape[1], dtype=torch.bool, device=x.device)
        keep = k.shape[1] if self.window is None else min(k.shape[1], self.window - 1)
        start = k.shape[1] - keep
        return y, KVCache(k[:, start:], v[:, start:], valid[:, start:], pos0 + T)

    def step(self, x_t: Tensor, state: KVCache | None) -> tuple[Tensor, KVCache]:
        """Decode one token: x_t (B, D) -> y_t (B, D), attending to the cache plus itself.

        o = softmax(R_p q [R k_cache; R_p k]^T / sqrt(d) + M) [v_cache; v] with M = -inf at padded cache
        entries; the new key and value are appended to the cache (in place under no_grad).
        """
        if not self.causal:
            return super().step(x_t, state)
        check_step_input("Attention.step", x_t, self.d_model, like=self.qkv.weight)
        B = x_t.shape[0]
        st = self.init_state(B, device=x_t.device, dtype=x_t.dtype) if state is None else state
        st = self._check_state(st, B)
        if torch.is_grad_enabled() or st.k.dtype != x_t.dtype or st.v.dtype != x_t.dtype:
            # the general path: concatenation, nothing written in place
            y, new = self._forward(x_t.unsqueeze(1), mask=None, state=st, return_state=True)
            return y[:, 0], new
        H, d, pos = self.n_heads, self.head_dim, st.pos
        qkv = self.qkv(x_t).view(B, 3, H, d)
        if self.rope:
            qk = self._rope_one(qkv[:, :2], pos)  # (B, 2, H, d)
            q, k = qk[:, 0], qk[:, 1]
        else:
            q, k = qkv[:, 0], qkv[:, 1]
        size = st.k.shape[1]
        storage = st._storage()
        if storage is None:  # no buffers, or full: move the cache into fresh ones with room to grow
            kb, vb, ob = _new_storage(B, H, d, max(16, 2 * (size + 1)), x_t.dtype, x_t.device)
            kb[:, :, :size] = st.k.transpose(1, 2)
            vb[:, :, :size] = st.v.transpose(1, 2)
            ob[:, :size] = st.valid
            start = 0
        else:
            kb, vb, ob, start = storage
        if self.window is not None and size >= self.window:  # a longer cache than the window needs
            start, size = start + size - (self.window - 1), self.window - 1
        end = start + size
        kb[:, :, end] = k
        vb[:, :, end] = qkv[:, 2]
        ob[:, end] = True
        all_valid = st.all_valid
        if all_valid is None:
            all_valid = bool(st.valid.all())
        mask = None if all_valid else ob[:, None, None, start : end + 1]
        o = F.scaled_dot_product_attention(
            q.unsqueeze(2), kb[:, :, start : end + 1], vb[:, :, start : end + 1], attn_mask=mask
        )  # (B, H, 1, d)
        y = self.out(o.reshape(B, self.d_model))
        end += 1
        if self.window is not None and end - start > self.window - 1:
            start = end - (self.window - 1)
        new = KVCache(
            kb[:, :, start:end].transpose(1, 2),
            vb[:, :, start:end].transpose(1, 2),
            ob[:, start:end],
            pos + 1,
            kb,
            vb,
            ob,
            start,
            all_valid,
        )
        return y, new

    def _rope_one(self, x: Tensor, pos: int) -> Tensor:
        """R_pos x for x (..., d) at one position, from a table of cos/sin over a block of positions.

        Uses rotate_half(x) = roll(x, d/2) * [-1, 1] so that R_p x = x cos + roll(x) * [-sin, sin].
        """
        tab = self._rope_table
        if (
            tab is None
            or not (tab[0] <= pos < tab[0] + tab[1].shape[0])
            or tab[1].dtype != x.dtype
            or tab[3] != self.rope_base
        ):
            p0 = pos - pos % 256
            cos, sin = rope_cos_sin(
                torch.arange(p0, p0 + 256, device=x.device), self.head_dim, self.rope_base, dtype=x.dtype
            )
            h = self.head_dim // 2
            ssin = torch.cat([-sin[:, :h], sin[:, h:]], dim=-1)
            tab = self._rope_table = (p0, cos, ssin, self.rope_base)
        p0, cos, ssin, _ = tab
        if cos.device != x.device:
            cos, ssin = cos.to(x.device), ssin.to(x.device)
            self._rope_table = (p0, cos, ssin, self.rope_base)
        i = pos - p0
        return torch.addcmul(x * cos[i], x.roll(self.head_dim // 2, -1), ssin[i])

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, window={self.window}, rope={self.rope}"


register_mixer(
    "attention",
    Attention,
    defaults={"causal": True},
    description="Causal multi-head softmax attention (SDPA, RoPE, KV cache)",
    family="attention",
)
register_mixer(
    "attention-bidir",
    Attention,
    defaults={"causal": False},
    description="Bidirectional multi-head softmax attention (SDPA, RoPE)",
    family="attention",
)
register_mixer(
    "swa",
    Attention,
    defaults={"causal": True, "window": 64},
    description="Causal sliding-window softmax attention (window 64 by default, bounded KV cache)",
    family="attention",
)
