"""Public entry point of the scan core: argument checking, broadcasting, resets, direction, dtype."""

from __future__ import annotations

import torch
from torch import Tensor

from .._optional import optional_import
from .chunked import chunked_scan
from .reference import sequential_scan

METHODS = ("auto", "sequential", "chunked", "compiled")

_REAL = (torch.float32, torch.float64)
_LOW = (torch.bfloat16, torch.float16)
_COMPLEX = (torch.complex64, torch.complex128)
# Below this length the Python loop of the reference is already as fast as the chunked form.
_AUTO_MIN_T = 32
# From this length "auto" runs the compiled kernel on CPU tensors when numba is installed.
_AUTO_COMPILED_MIN_T = 8
_INSTALL_HINT = "pip install 'recurrences[fast]'"


def _compiled(required: bool):
    """The compiled-kernel module, imported on first use (importing it imports numba, which importing
    recurrences must not). None when numba is missing and ``required`` is False; ImportError naming the
    install extra when it is required."""
    mod = optional_import("recurrences.scan.compiled")
    if not isinstance(mod, Exception):
        return mod
    if required:
        raise ImportError(
            f"linear_scan: method='compiled' needs numba; install it with {_INSTALL_HINT} ({mod})"
        ) from mod
    return None


def all_finite(x: Tensor) -> bool:
    """True when x has no NaN/inf. One cheap reduction; the exact elementwise check only runs when the sum is
    not finite (NaN/inf present, or a legitimate overflow of the sum)."""
    if not (x.is_floating_point() or x.is_complex()):
        return True
    if bool(torch.isfinite(x.sum())):
        return True
    return bool(torch.isfinite(x).all())


def _check_tensor(name: str, x: object) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"linear_scan: {name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in _REAL + _LOW + _COMPLEX:
        raise TypeError(
            f"linear_scan: {name} has dtype {x.dtype}; expected float32/float64 (bf16/fp16 accumulate in "
            "float32) or complex64/complex128"
        )
    return x


def linear_scan(
    a: Tensor,
    b: Tensor,
    initial: Tensor | None = None,
    *,
    reverse: bool = False,
    reset: Tensor | None = None,
    method: str = "auto",
    chunk_size: int | None = None,
    check_finite: bool = True,
) -> tuple[Tensor, Tensor]:
    """Compute h_t = a_t * h_{t-1} + b_t along dim 1 (time) and return ``(h, h_last)``.

    Args:
        a: decays, broadcastable to ``b`` (e.g. (B, T, 1) or (1, T, D) against (B, T, D)).
        b: inputs of shape (B, T, *S) with at least 2 dims.
        initial: state before the first step, broadcastable to (B, *S); zero when None.
        reverse: run backwards in time, h_t = a_t * h_{t+1} + b_t; ``initial`` is then the state after
            the last position and ``h_last`` is h_0.
        reset: bool (B, T) (or broadcastable to b) marking positions where a new segment starts
            (packed sequences, chunk boundaries). The link between t-1 and t is cut: forwards h_t = b_t,
            backwards h_{t-1} = b_{t-1}. Forwards, a reset at t = 0 drops ``initial``; backwards
            ``initial`` always enters at T-1 (no position starts after the end).
        method: "sequential" (the reference loop), "chunked" (two-level parallel form), "compiled" (numba
            CPU kernel, one pass over time; needs ``pip install 'recurrences[fast]'``), or "auto": compiled
            for CPU tensors with T >= 8 when numba is installed, else the loop below T = 32 and the
            chunked form from there.
        chunk_size: chunk length of the chunked form (default ~sqrt(T)).
        check_finite: raise on NaN/inf in a, b or initial (they would poison every later state).

    Real inputs stay real (float32/float64; bf16/fp16 accumulate in float32 and are returned in their
    own dtype); if either of a, b is complex the scan is complex. Autograd works through every method.
    """
    a = _check_tensor("a", a)
    b = _check_tensor("b", b)
    if method not in METHODS:
        raise ValueError(f"linear_scan: unknown method {method!r}; expected one of {METHODS}")
    if b.dim() < 2:
        raise ValueError(
            f"linear_scan: b must have shape (B, T, ...) with at least 2 dims, got {tuple(b.shape)}"
        )
    try:
        shape = torch.broadcast_shapes(a.shape, b.shape)
    except RuntimeError:
        raise ValueError(
            f"linear_scan: a of shape {tuple(a.shape)} is not broadcastable to b of shape {tuple(b.shape)}"
        ) from None
    if shape != b.shape:
        raise ValueError(
            f"linear_scan: a of shape {tuple(a.shape)} would enlarge b of shape {tuple(b.shape)}"
        )
    if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"linear_scan: chunk_size must be a positive int, got {chunk_size!r}")
    if method == "compiled" and b.device.type != "cpu":
        raise ValueError(
            f"linear_scan: method='compiled' runs on CPU tensors only, got b on {b.device}; "
            "use method='chunked' (or 'auto') on this device"
        )

    out_dtype = torch.promote_types(a.dtype, b.dtype)
    if initial is not None:
        initial = _check_tensor("initial", initial)
        out_dtype = torch.promote_types(out_dtype, initial.dtype)
    work = torch.float32 if out_dtype in _LOW else out_dtype

    B, T = b.shape[0], b.shape[1]
    S = b.shape[2:]
    if check_finite:
        for name, x in (("a", a), ("b", b), ("initial", initial)):
            if x is not None and not all_finite(x):
                raise ValueError(
                    f"linear_scan: {name} contains NaN or inf; it would poison every later state"
                )

    # a keeps its own (broadcast) shape, padded to b's number of dims; only the compiled kernel reads it
    # as it is, the other methods get it expanded below
    a = a.to(work).reshape(*([1] * (b.dim() - a.dim())), *a.shape)
    b = b.to(work)
    if reset is not None:
        if not isinstance(reset, Tensor) or reset.dtype != torch.bool:
            raise TypeError("linear_scan: reset must be a bool tensor marking segment starts")
        try:
            r = (
                reset.reshape(*reset.shape, *([1] * (b.dim() - reset.dim())))
                if reset.dim() < b.dim()
                else reset
            )
            r.expand(shape)  # only checks that reset broadcasts to b; r itself stays small
            r = r.expand(r.shape[0], T, *r.shape[2:])
        except RuntimeError:
            raise ValueError(
                f"linear_scan: reset of shape {tuple(reset.shape)} does not match b of shape {tuple(b.shape)}"
            ) from None
        if reverse:
            # backwards, the link cut by a start at t is the one that carries h_t into h_{t-1}
            r = torch.cat([r[:, 1:], torch.zeros_like(r[:, :1])], dim=1)
        a = torch.where(r, torch.zeros((), dtype=work, device=a.device), a)
    if initial is not None:
        try:
            initial = initial.to(work).expand(B, *S)
        except RuntimeError:
            raise ValueError(
                f"linear_scan: initial of shape {tuple(initial.shape)} is not broadcastable to {(B, *S)}"
            ) from None
        initial = initial.reshape(B, -1)

    if T == 0:
        last = torch.zeros(B, *S, dtype=work, device=b.device) if initial is None else initial.reshape(B, *S)
        return b.to(out_dtype).clone(), last.to(out_dtype)
    if method == "auto":
        if b.device.type == "cpu" and T >= _AUTO_COMPILED_MIN_T and _compiled(required=False) is not None:
            method = "compiled"
        else:
            method = "sequential" if T < _AUTO_MIN_T else "chunked"
    if method == "compiled":
        h = _compiled(required=True).compiled_scan(a, b, initial, reverse)
    else:
        a3 = a.expand(shape).reshape(B, T, -1)
        b3 = b.reshape(B, T, -1)
        if method == "sequential":
            if reverse:
                h, _ = sequential_scan(a3.flip(1), b3.flip(1), initial)
                h = h.flip(1)
            else:
                h, _ = sequential_scan(a3, b3, initial)
        else:
            h = chunked_scan(a3, b3, initial, chunk_size, reverse)
        h = h.reshape(B, T, *S)
    last = h[:, 0] if reverse else h[:, -1]
    return h.to(out_dtype), last.to(out_dtype)
