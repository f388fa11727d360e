"""Compiled CPU kernel of one RAT decoding step (numba): everything between the two projections.

:meth:`recurrences.layers.rat.RAT.step` hands the whole step to :func:`rat_decode_kernel`: one call for what
the eager step does in about thirty small torch calls (at batch 1 each costs more in dispatch than in
arithmetic). It checks that x is finite (writing nothing otherwise), computes u = x W_in^T, runs
:func:`rat_step_kernel` (everything between the projections) and y = zy W_out^T. The two matrix-vector
products stream the weights once per step, row by row for all sequences of the batch; at batch 1 this
is faster than a BLAS call from Python, whose fixed cost is a few microseconds. Per sequence b,
head h (group g = h mod G), channel e of the head (c = h d + e) and chunk index n = pos // L:

    u        = x W_in^T = [z~, v, g~, q^, k^]
    gate     f   = sigmoid(u[2D + c] + b_g[c])
    state    k~  = lerp(k^_g, k~_prev, f),  v~ = lerp(v, v~_prev, f)     ((1 - f) k^, (1 - f) v at a chunk start)
    cache    K_n = R_n k~,  V_n = v~                      (slot n of the buffers, written in place)
    scores   s_j = <R_n q^_g, K_j> / sqrt(d)            (j = 0..n; slots of all-padding chunks skipped)
    output   zy[c] = sigmoid(u[c]) * sum_j softmax(s)_j V_j[e],   y = zy W_out^T

R_n is RoPE at the chunk index in the rotate-half layout, x -> x cos + rotate_half(x) sin. The eager
step (:meth:`RAT._step_eager`) computes the same with torch; tests hold the two equal.

numba is optional (``pip install 'recurrences[fast]'``); rat.py imports this module only when a step uses it.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

# reassoc + contract let LLVM vectorise the dot products over a head's d channels (a sum in another order,
# within float rounding); no nnan/ninf, so infinities and NaNs keep their IEEE meaning.
_OPTIONS = {
    "nogil": True,
    "cache": True,
    "fastmath": {"reassoc", "contract", "nsz"},
    "boundscheck": False,
    "error_model": "numpy",
}


@njit(**_OPTIONS)
def rat_step_kernel(
    u, b_g, k_prev, v_prev, fresh, keys, values, valid, n, masked, cos, sin, G, k_out, v_out, zy
):  # pragma: no cover
    """One RAT step between the projections (see the module docstring).

    u (B, 3D + 2Gd): in_proj output [z~, v, g~, q^, k^]; b_g (D,) the gate bias; k_prev, v_prev (B, H, d) the running state
    (ignored when ``fresh``, the first token of a chunk); keys, values (B, H, cap, d) and valid (B, cap) the
    cache, slot n written here; masked: skip slots j < n with valid False; cos, sin (d,) RoPE at chunk n
    (empty arrays: no RoPE). Writes k_out, v_out (B, H, d) (the new running state) and zy (B, D).
    """
    B, H, d = k_out.shape[0], k_out.shape[1], k_out.shape[2]
    D = H * d
    Gd = G * d
    half = d // 2
    rope = cos.shape[0] > 0
    scale = 1.0 / math.sqrt(d)
    qr = np.empty(d, dtype=zy.dtype)
    acc = np.zeros(d, dtype=zy.dtype)
    zero = acc[0]  # accumulators in the arrays' dtype: float32 sums vectorise as float32
    s = np.empty(n + 1, dtype=zy.dtype)
    for b in range(B):
        valid[b, n] = True  # the step's own token is real
        for h in range(H):
            gq = D * 3 + (h % G) * d  # q^ of the head's group
            gk = gq + Gd  # k^
            c0 = h * d
            # gate, running state, and the state's slot in the cache
            for e in range(d):
                f = 1.0 / (1.0 + math.exp(-(u[b, 2 * D + c0 + e] + b_g[c0 + e])))
                kin, vin = u[b, gk + e], u[b, D + c0 + e]
                if fresh:
                    kr, vr = (1.0 - f) * kin, (1.0 - f) * vin
                else:
                    kr = kin + f * (k_prev[b, h, e] - kin)
                    vr = vin + f * (v_prev[b, h, e] - vin)
                k_out[b, h, e] = kr
                v_out[b, h, e] = vr
                values[b, h, n, e] = vr
            if rope:
                for e in range(half):
                    x1, x2 = k_out[b, h, e], k_out[b, h, e + half]
                    keys[b, h, n, e] = x1 * cos[e] - x2 * sin[e]
                    keys[b, h, n, e + half] = x2 * cos[e + half] + x1 * sin[e + half]
                for e in range(half):
                    x1, x2 = u[b, gq + e], u[b, gq + e + half]
                    qr[e] = (x1 * cos[e] - x2 * sin[e]) * scale
                    qr[e + half] = (x2 * cos[e + half] + x1 * sin[e + half]) * scale
            else:
                for e in range(d):
                    keys[b, h, n, e] = k_out[b, h, e]
                    qr[e] = u[b, gq + e] * scale
            # scores over slots 0..n (the own slot n first: always valid, it starts the running max, which
            # keeps m, p and the sums in the arrays' dtype), then the softmax-weighted sum of the values
            m = zero
            for j in range(n, -1, -1):
                if masked and not valid[b, j]:
                    continue
                t = zero
                for e in range(d):
                    t += qr[e] * keys[b, h, j, e]
                s[j] = t
                if j == n or t > m:
                    m = t
            for e in range(d):
                acc[e] = zero
            den = zero
            for j in range(n + 1):
                if masked and not valid[b, j]:
                    continue
                p = math.exp(s[j] - m)
                den += p
                for e in range(d):
                    acc[e] += p * values[b, h, j, e]
            for e in range(d):
                gz = 1.0 / (1.0 + math.exp(-u[b, c0 + e]))
                zy[b, c0 + e] = gz * (acc[e] / den)


@njit(**_OPTIONS)
def _matmul_rows(x, w_t, out):  # pragma: no cover
    """out (B, N) = x (B, K) @ w_t (K, N), streaming w_t's rows once for all B (axpy order: each out[b, j]
    sums over k in order, vectorised over j)."""
    B, K = x.shape
    N = w_t.shape[1]
    for b in range(B):
        for j in range(N):
            out[b, j] = 0.0
    for k in range(K):
        for b in range(B):
            xk = x[b, k]
            for j in range(N):
                out[b, j] += xk * w_t[k, j]


@njit(**_OPTIONS)
def rat_decode_kernel(
    x,
    w_in_t,
    b_g,
    k_prev,
    v_prev,
    fresh,
    keys,
    values,
    valid,
    n,
    masked,
    cos,
    sin,
    G,
    w_out_t,
    k_out,
    v_out,
    y,
):  # pragma: no cover
    """One whole RAT step: x (B, D) -> y (B, D), with W_in^T (D, 3D + 2Gd) and W_out^T (D, D) row-major;
    the other arguments as in :func:`rat_step_kernel`. Returns False, having written nothing, when x holds
    a NaN or an infinity (the caller raises); True otherwise."""
    B, D = x.shape
    for b in range(B):
        for k in range(D):
            if not math.isfinite(x[b, k]):
                return False
    u = np.empty((B, w_in_t.shape[1]), dtype=y.dtype)
    _matmul_rows(x, w_in_t, u)
    zy = np.empty((B, D), dtype=y.dtype)
    rat_step_kernel(
        u, b_g, k_prev, v_prev, fresh, keys, values, valid, n, masked, cos, sin, G, k_out, v_out, zy
    )
    _matmul_rows(zy, w_out_t, y)
    return True
