"""Compiled CPU kernel of the first-order linear scan (numba), with its adjoint.

    forward:  h_t = a_t h_{t-1} + b_t          (reverse: h_t = a_t h_{t+1} + b_t)
    backward: lam_t = g_t + conj(a_{t+1}) lam_{t+1},   dL/db_t = lam_t,
              dL/da_t = lam_t conj(h_{t-1}),           dL/dh_init = conj(a_0) lam_0
              (reverse: lam_t = g_t + conj(a_{t-1}) lam_{t-1}, dL/da_t = lam_t conj(h_{t+1}),
               dL/dh_init = conj(a_{T-1}) lam_{T-1})

One pass over time, sequential in t, with the innermost loop over the contiguous channel axis so that
LLVM vectorises it. The scan is memory bound: the forward reads a and b and writes h once; the backward
is the same kernel run the other way on g with the conjugated, shifted decays (writing lam = dL/db), then
one pass reading lam and h that writes dL/da. Work is split over batch rows (and, when there are fewer
rows than threads, over blocks of channels) and run by ``torch.get_num_threads()`` Python threads calling
the kernel with the GIL released, so OMP_NUM_THREADS=1 means one thread.

Broadcast decays are read in place, never expanded: the state dims of b and a are merged into at most three
groups (P, M, Q) along which a is either full or of size 1, and a is indexed through element strides that
are 0 on broadcast dims (a (B, T, 1) decay against (B, T, D) is one scalar per step; a (1, T, D) decay is
shared by the batch). The gradient of such a decay is summed over the broadcast dims inside the kernel.

Large outputs (h, lam, dL/da) are advised onto transparent huge pages before their first write: mapping a
fresh buffer 4 KiB page by page cost several times the scan itself on the test machine.

numba is an optional dependency (``pip install 'recurrences[fast]'``); this module imports it at import time,
so :mod:`recurrences.scan.api` imports this module only when the compiled method is used.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from numba import njit, uint64
from torch import Tensor
from torch.autograd.function import once_differentiable

from .chunked import _FlushDenormals

_KERNEL_OPTIONS = {
    "nogil": True,
    "cache": True,
    "fastmath": False,
    "boundscheck": False,
    "error_model": "numpy",
}
_DTYPES = (torch.float32, torch.float64, torch.complex64, torch.complex128)
# Channel blocks split between threads are multiples of this (a cache line of float64 and more).
_BLOCK = 32
# Below this many elements of b (1 MiB of float32, a scan of ~0.2 ms) one thread does it all: handing work
# to a second thread costs tens of microseconds on an idle machine and milliseconds on a loaded one.
_MIN_PARALLEL = 1 << 18


# -- kernels -------------------------------------------------------------------------------------------
# Layout: b, h, g, lam are flat views of C-contiguous (B, T, N) arrays with N = P * M * Q and channel
# n = (p * M + m) * Q + q. a is flat, read at i * sa[0] + t * sa[1] + p * sa[2] + m * sa[3] + q * sa[4]
# (0 strides broadcast). A kernel call handles rows [i0, i1), groups p in [p0, p1), all m, q in [q0, q1).
# The innermost loops index with unsigned offsets: numba then skips its negative-index wraparound test
# and LLVM vectorises the loop. A scan backwards in time also walks the channels backwards, so that all
# addresses decrease: the hardware prefetchers follow a monotone stream (a backward scan with ascending
# channels measured 2-3x slower than the forward one on an AMD EPYC; fully descending, the same).


@njit(**_KERNEL_OPTIONS)
def _scan_kernel(
    a, sa, shift, b, h0, h, zero, T, N, M, Q, i0, i1, p0, p1, q0, q1, reverse
):  # pragma: no cover
    """h_t = a_{t+shift} h_{t-1} + b_t (reverse: h_t = a_{t+shift} h_{t+1} + b_t), h_{-1} = h0 (0 if empty).

    shift = 0 is the scan itself; the adjoint lam_t = g_t + conj(a_{t+1}) lam_{t+1} is this kernel run the
    other way with the conjugated decays and shift = +1 (-1 for the adjoint of a reverse scan)."""
    has_h0 = h0.size > 0
    L = uint64(q1 - q0)
    last = L - uint64(1)
    step = -N if reverse else N  # from the state entering t to h_t
    for i in range(i0, i1):
        for s in range(T):
            t = T - 1 - s if reverse else s
            for pj in range(p1 - p0):
                p = p1 - 1 - pj if reverse else p0 + pj
                for mj in range(M):
                    m = M - 1 - mj if reverse else mj
                    n = (p * M + m) * Q + q0
                    o = (i * T + t) * N + n
                    if s > 0:
                        src, po = h, o - step
                    elif has_h0:
                        src, po = h0, i * N + n
                    else:
                        src, po = zero, 0
                    ao = i * sa[0] + (t + shift) * sa[1] + p * sa[2] + m * sa[3] + q0 * sa[4]
                    uo, upo, uao = uint64(o), uint64(po), uint64(ao)
                    if sa[4] == 0 or (s == 0 and not has_h0):
                        # first step without h0: 0 * 0 + b_t (a_{t+shift} may be off the end: not read)
                        av = a[uao] if s > 0 or has_h0 else zero[0]
                        if reverse:
                            uo, upo = uo + last, upo + last
                            for k in range(L):
                                h[uo - k] = av * src[upo - k] + b[uo - k]
                        else:
                            for k in range(L):
                                h[uo + k] = av * src[upo + k] + b[uo + k]
                    elif reverse:
                        uo, upo, uao = uo + last, upo + last, uao + last
                        for k in range(L):
                            h[uo - k] = a[uao - k] * src[upo - k] + b[uo - k]
                    else:
                        for k in range(L):
                            h[uo + k] = a[uao + k] * src[upo + k] + b[uo + k]


@njit(**_KERNEL_OPTIONS)
def _decay_grad_kernel(
    lam, h, h0, da, sd, accumulate, slot, T, N, M, Q, i0, i1, p0, p1, q0, q1, reverse
):  # pragma: no cover
    """dL/da_t = lam_t conj(h_{t-1}) (reverse: lam_t conj(h_{t+1})): the state entering t, h0 at the first
    step; without h0 (empty) the first step is skipped (nothing entered it: the caller zeroes it).

    ``da`` is flat, read at row * sd[0] + t * sd[1] + p * sd[2] + m * sd[3] + q * sd[4]; row = i, or ``slot``
    when slot >= 0 (a decay shared by the batch: one partial sum per thread). ``accumulate``: add into da
    (a broadcast decay: 0 strides sum over the broadcast dims), else store (a has b's shape)."""
    has_h0 = h0.size > 0
    L = uint64(q1 - q0)
    step = -N if reverse else N
    for i in range(i0, i1):
        drow = (i if slot < 0 else slot) * sd[0]
        for t in range(T):  # no recurrence here: ascending order, the fastest stream
            first = t == (T - 1 if reverse else 0)
            if first and not has_h0:
                continue
            for p in range(p0, p1):
                for m in range(M):
                    n = (p * M + m) * Q + q0
                    o = (i * T + t) * N + n
                    if first:
                        src, po = h0, i * N + n
                    else:
                        src, po = h, o - step
                    do = drow + t * sd[1] + p * sd[2] + m * sd[3] + q0 * sd[4]
                    uo, upo, udo = uint64(o), uint64(po), uint64(do)
                    if not accumulate:
                        for k in range(L):
                            da[udo + k] = lam[uo + k] * src[upo + k].conjugate()
                    elif sd[4] == 0:  # one decay for every q: add up the products
                        acc = lam[uo] * src[upo].conjugate()
                        for k in range(uint64(1), L):
                            acc += lam[uo + k] * src[upo + k].conjugate()
                        da[udo] += acc
                    else:
                        for k in range(L):
                            da[udo + k] += lam[uo + k] * src[upo + k].conjugate()


@njit(**_KERNEL_OPTIONS)
def _adjoint_full_kernel(
    a, g, h, h0, lam, da, T, N, M, Q, i0, i1, p0, p1, q0, q1, reverse
):  # pragma: no cover
    """The whole backward in one pass for a decay of b's full shape (no broadcast), fused:

        lam_t = g_t + conj(a_{t+1}) lam_{t+1},   dL/da_t = lam_t conj(h_{t-1})   (h_{-1} = h0, or 0)

    run backwards in time (reverse scan: lam_t = g_t + conj(a_{t-1}) lam_{t-1}, dL/da_t = lam_t conj(h_{t+1}),
    forwards in time). It reads g, a and h once and writes lam and dL/da once: one pass fewer over memory
    than the scan kernel followed by the decay-gradient kernel. Channels run in the time direction's order
    (all addresses decrease when time does)."""
    has_h0 = h0.size > 0
    L = uint64(q1 - q0)
    last = L - uint64(1)
    back = not reverse  # the adjoint of a forward scan runs backwards in time
    step = N if back else -N  # from lam_{t'} (the later step in adjoint order) to lam_t
    for i in range(i0, i1):
        for s in range(T):
            t = T - 1 - s if back else s
            first_state = t == (0 if back else T - 1)  # h entering t is h0 (or nothing)
            for pj in range(p1 - p0):
                p = p1 - 1 - pj if back else p0 + pj
                for mj in range(M):
                    m = M - 1 - mj if back else mj
                    n = (p * M + m) * Q + q0
                    o = (i * T + t) * N + n
                    uo = uint64(o)
                    if s > 0:
                        # lam_t = g_t + conj(a_prev) lam_prev, with prev the step before in adjoint order
                        uq = uint64(o + step)
                        if back:
                            uo, uq = uo + last, uq + last
                            for k in range(L):
                                lam[uo - k] = g[uo - k] + a[uq - k].conjugate() * lam[uq - k]
                        else:
                            for k in range(L):
                                lam[uo + k] = g[uo + k] + a[uq + k].conjugate() * lam[uq + k]
                    elif back:
                        uo = uo + last
                        for k in range(L):
                            lam[uo - k] = g[uo - k]
                    else:
                        for k in range(L):
                            lam[uo + k] = g[uo + k]
                    uo = uint64(o)
                    if first_state:
                        if has_h0:
                            uh = uint64(i * N + n)
                            for k in range(L):
                                da[uo + k] = lam[uo + k] * h0[uh + k].conjugate()
                        else:
                            for k in range(L):
                                da[uo + k] = 0
                    else:
                        uh = uint64(o - (N if back else -N))  # the state entering t
                        if back:
                            uo, uh = uo + last, uh + last
                            for k in range(L):
                                da[uo - k] = lam[uo - k] * h[uh - k].conjugate()
                        else:
                            for k in range(L):
                                da[uo + k] = lam[uo + k] * h[uh + k].conjugate()


# -- layout: merge the state dims of b and a into (P, M, Q) ---------------------------------------------
class _Layout:
    """How b (B, T, *S) and a broadcast decay (Ba, Ta, *Sa) map onto the kernels' (B, T, P, M, Q) view.

    Attributes: B, T, P, M, Q (b's sizes), ashape = (Ba, Ta, Pa, Ma, Qa) (each 1 or b's size), sa (element
    strides of the contiguous a in that view, 0 on broadcast dims) and ``expand``: the state shape a must
    be expanded to first when its broadcast pattern does not fit in three groups (rare; then a is copied).
    """

    def __init__(self, a_shape: tuple[int, ...], b_shape: tuple[int, ...]) -> None:
        B, T, S = b_shape[0], b_shape[1], tuple(b_shape[2:])
        Sa = tuple(a_shape[2:])
        groups: list[list[int]] = []  # [size, full?] runs of state dims with the same broadcast status
        for s, sa in zip(S, Sa):
            if s == 1:
                continue
            full = int(sa == s)
            if groups and groups[-1][1] == full:
                groups[-1][0] *= s
            else:
                groups.append([s, full])
        self.expand: tuple[int, ...] | None = None
        if len(groups) > 3:
            self.expand = S
            groups = [[int(np.prod(S)), 1]]
        groups = [[1, 1]] * (3 - len(groups)) + groups
        (P, fp), (M, fm), (Q, fq) = groups
        self.B, self.T, self.P, self.M, self.Q = B, T, P, M, Q
        Ba = B if a_shape[0] == B else 1
        Ta = T if a_shape[1] == T else 1
        self.ashape = (Ba, Ta, P if fp else 1, M if fm else 1, Q if fq else 1)
        self.full = self.ashape == (B, T, P, M, Q)
        self.sa = _strides(self.ashape)

    @property
    def N(self) -> int:
        return self.P * self.M * self.Q


def _strides(shape: tuple[int, ...]) -> np.ndarray:
    """Element strides of a C-contiguous array of ``shape``, 0 along dims of size 1 (broadcast)."""
    out, step = [], 1
    for n in reversed(shape):
        out.append(step if n > 1 else 0)
        step *= n
    return np.array(out[::-1], dtype=np.int64)


# -- work split between threads ------------------------------------------------------------------------
def _work_items(lay: _Layout, threads: int) -> list[list[tuple[int, ...]]]:
    """Items (i0, i1, p0, p1, q0, q1) grouped per thread. Rows are split first; when that leaves threads
    idle or unbalanced, each row is cut into channel blocks along q (or p), but only along a dim on which
    the decay is not broadcast, so two threads never add into the same dL/da entry."""
    B, P, Q = lay.B, lay.P, lay.Q
    if threads <= 1 or B * lay.T * lay.N < _MIN_PARALLEL:
        return [[(0, B, 0, P, 0, Q)]]
    if B % threads == 0 or 4 * threads <= B:
        k = 1
    else:
        k = threads // np.gcd(B, threads)
    pieces = [(0, P, 0, Q)]
    if k > 1:
        if lay.ashape[4] == Q and Q >= 2 * _BLOCK:
            k = min(k, Q // _BLOCK)
            cuts = [_BLOCK * round(j * Q / (k * _BLOCK)) for j in range(k)] + [Q]
            pieces = [(0, P, cuts[j], cuts[j + 1]) for j in range(k)]
        elif lay.ashape[2] == P and P >= 2:
            k = min(k, P)
            cuts = [round(j * P / k) for j in range(k)] + [P]
            pieces = [(cuts[j], cuts[j + 1], 0, Q) for j in range(k)]
    if len(pieces) == 1:
        n = min(threads, B)
        cuts = [round(j * B / n) for j in range(n)] + [B]
        return [[(cuts[j], cuts[j + 1], 0, P, 0, Q)] for j in range(n)]
    items = [(i, i + 1, *pc) for i in range(B) for pc in pieces]
    n = min(threads, len(items))
    cuts = [round(j * len(items) / n) for j in range(n)] + [len(items)]
    return [items[cuts[j] : cuts[j + 1]] for j in range(n)]


class _Pool:
    """One shared thread pool, grown on demand; a forked child starts without one (the parent's threads
    do not exist there, and an executor that believes it has them would wait forever)."""

    executor: ThreadPoolExecutor | None = None
    workers = 0
    lock = threading.Lock()

    @classmethod
    def get(cls, workers: int) -> ThreadPoolExecutor:
        with cls.lock:
            if cls.executor is None or cls.workers < workers:
                if cls.executor is not None:
                    cls.executor.shutdown(wait=False)
                cls.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="recurrences-scan")
                cls.workers = workers
            return cls.executor

    @classmethod
    def forget(cls) -> None:
        cls.executor, cls.workers, cls.lock = None, 0, threading.Lock()


os.register_at_fork(after_in_child=_Pool.forget)


def _run(groups: list[list[tuple[int, ...]]], call) -> None:
    """Run ``call(slot, item)`` for every item, one thread per group (the caller runs group 0), with
    subnormal numbers flushed to zero in each thread (long products of decays in (0, 1) pass through them)."""

    def work(slot: int) -> None:
        with _FlushDenormals(True):
            for item in groups[slot]:
                call(slot, item)

    if len(groups) == 1:
        work(0)
        return
    futures = [_Pool.get(len(groups) - 1).submit(work, j) for j in range(1, len(groups))]
    try:
        work(0)
    finally:
        for f in futures:
            f.result()


# -- large outputs on huge pages -----------------------------------------------------------------------
def _madvise_hugepage():
    """libc's madvise and MADV_HUGEPAGE, or None where there are none (not Linux, no THP support)."""
    advice = getattr(mmap, "MADV_HUGEPAGE", None)
    if advice is None or not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    fn.restype = ctypes.c_int
    return lambda start, length: fn(start, length, advice)


_HUGE = 2 << 20
_MADVISE = _madvise_hugepage()


def _empty(shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
    """torch.empty, with the 2 MiB-aligned interior of a large buffer advised onto transparent huge pages
    before anything touches it. A fresh large allocation is mapped by the OS page by page on first write;
    with 4 KiB pages that first touch cost 3-4x the scan itself on the (virtualised) test box (32 MiB:
    ~20 ms against ~5 ms), with 2 MiB pages it nearly vanishes. Only the advice changes: the memory is
    still torch's, freed as usual; where THP is off or absent this is a plain torch.empty."""
    t = torch.empty(shape, dtype=dtype)
    nbytes = t.numel() * t.element_size()
    if _MADVISE is not None and nbytes >= 2 * _HUGE:
        start = -(-t.data_ptr() // _HUGE) * _HUGE
        end = (t.data_ptr() + nbytes) // _HUGE * _HUGE
        if end > start:
            _MADVISE(start, end - start)
    return t


# -- torch glue ----------------------------------------------------------------------------------------
def _np(x: Tensor) -> np.ndarray:
    return x.detach().resolve_conj().resolve_neg().contiguous().numpy()


def _initial_rows(initial: Tensor | None, dtype: torch.dtype) -> np.ndarray:
    """The initial state as the kernels take it: flat, or, for none, an empty array of the same dtype (no
    rows), so the kernels' argument types stay the same."""
    if initial is None:
        return np.zeros(0, dtype=torch.empty((), dtype=dtype).numpy().dtype)
    return _np(initial).reshape(-1)


def _flat_a(a: Tensor, lay: _Layout) -> Tensor:
    if lay.expand is not None:
        a = a.expand(*a.shape[:2], *lay.expand)
    return a.contiguous().reshape(-1)


def _forward(a_flat: Tensor, b: Tensor, initial: Tensor | None, lay: _Layout, reverse: bool) -> Tensor:
    B, T, N = lay.B, lay.T, lay.N
    h = _empty((B, T, N), b.dtype)
    _scan(_np(a_flat), 0, _np(b.reshape(B, T, N)), initial, h, lay, reverse)
    return h


def _scan(a_np: np.ndarray, shift: int, b_np: np.ndarray, initial, h: Tensor, lay: _Layout, reverse: bool):
    h_np = h.numpy().reshape(-1)
    h0 = _initial_rows(initial, h.dtype)
    zero = np.zeros(max(lay.Q, 1), dtype=h_np.dtype)  # the state before the first step without h0

    def call(slot: int, item: tuple[int, ...]) -> None:
        i0, i1, p0, p1, q0, q1 = item
        _scan_kernel(
            a_np, lay.sa, shift, b_np.reshape(-1), h0, h_np, zero, lay.T, lay.N, lay.M, lay.Q,
            i0, i1, p0, p1, q0, q1, reverse,
        )  # fmt: skip

    _run(_work_items(lay, torch.get_num_threads()), call)


class _CompiledScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a_flat: Tensor, b: Tensor, initial: Tensor | None, lay: _Layout, reverse: bool):
        h = _forward(a_flat, b, initial, lay, reverse)
        ctx.save_for_backward(a_flat, h, initial)
        ctx.lay, ctx.reverse, ctx.b_shape = lay, reverse, b.shape
        return h

    @staticmethod
    @once_differentiable  # the kernels are not differentiable: double backward needs method="chunked"
    def backward(ctx, grad_h: Tensor):
        a_flat, h, initial = ctx.saved_tensors
        lay, reverse = ctx.lay, ctx.reverse
        need_a, need_b, need_h0 = ctx.needs_input_grad[:3]
        B, T, N = lay.B, lay.T, lay.N
        grad_a = grad_h0 = None
        if need_a and lay.full:  # the common case: one fused pass gives lam and dL/da
            lam, grad_a = _adjoint_full(a_flat, grad_h, h, initial, lay, reverse)
            grad_a = grad_a.reshape(a_flat.shape)
        else:
            # the adjoint: lam_t = g_t + conj(a_{t+1}) lam_{t+1} (reverse: conj(a_{t-1}) lam_{t-1}), the scan
            # kernel run the other way; a complex decay is conjugated into a temporary of a's (broadcast) size
            ac = _np(a_flat.conj()) if a_flat.is_complex() else _np(a_flat)
            lam = _empty((B, T, N), h.dtype)
            _scan(ac, -1 if reverse else 1, _np(grad_h.reshape(B, T, N)), None, lam, lay, not reverse)
            del ac
            if need_a:
                grad_a = _decay_grad(lam, h, initial, lay, reverse).reshape(a_flat.shape)
        if need_h0 and initial is not None:
            # dL/dh_init = conj(a at the first step) lam at the first step
            first = T - 1 if reverse else 0
            a5 = a_flat.view(lay.ashape)
            a_first = a5[:, first if lay.ashape[1] > 1 else 0].expand(B, lay.P, lay.M, lay.Q).reshape(B, N)
            grad_h0 = (a_first.conj() * lam[:, first]).reshape(initial.shape)
        return grad_a, (lam.reshape(ctx.b_shape) if need_b else None), grad_h0, None, None


def _adjoint_full(
    a_flat: Tensor, grad_h: Tensor, h: Tensor, initial: Tensor | None, lay: _Layout, reverse: bool
) -> tuple[Tensor, Tensor]:
    """(lam = dL/db, dL/da) in one fused pass, for a decay of b's full shape."""
    B, T, N = lay.B, lay.T, lay.N
    lam = _empty((B, T, N), h.dtype)
    da = _empty((B * T * N,), h.dtype)
    a_np, g_np = _np(a_flat).reshape(-1), _np(grad_h.reshape(B, T, N)).reshape(-1)
    h0 = _initial_rows(initial, h.dtype)
    lam_np, h_np, da_np = lam.numpy().reshape(-1), h.numpy().reshape(-1), da.numpy()

    def call(slot: int, item: tuple[int, ...]) -> None:
        i0, i1, p0, p1, q0, q1 = item
        _adjoint_full_kernel(
            a_np, g_np, h_np, h0, lam_np, da_np, T, N, lay.M, lay.Q, i0, i1, p0, p1, q0, q1, reverse
        )

    _run(_work_items(lay, torch.get_num_threads()), call)
    return lam, da


def _decay_grad(lam: Tensor, h: Tensor, initial: Tensor | None, lay: _Layout, reverse: bool) -> Tensor:
    """dL/da as a flat tensor of a's (canonical, broadcast) size."""
    B, T, N = lay.B, lay.T, lay.N
    groups = _work_items(lay, torch.get_num_threads())
    shared = lay.ashape[0] < B  # a shared by the batch: one partial sum per thread, added up below
    if lay.full:
        accumulate, sd, da = False, lay.sa, _empty((B * T * N,), h.dtype)
        if initial is None:  # nothing entered the first step
            da.view(B, T, N)[:, -1 if reverse else 0] = 0
    else:
        shape = (len(groups) if shared else B, *lay.ashape[1:])
        accumulate, sd, da = True, _strides(shape), torch.zeros(int(np.prod(shape)), dtype=h.dtype)
        sd[0] = int(np.prod(shape[1:]))
    h0 = _initial_rows(initial, h.dtype)
    lam_np, h_np, da_np = lam.numpy().reshape(-1), h.numpy().reshape(-1), da.numpy()

    def call(slot: int, item: tuple[int, ...]) -> None:
        i0, i1, p0, p1, q0, q1 = item
        _decay_grad_kernel(
            lam_np, h_np, h0, da_np, sd, accumulate, slot if shared else -1, T, N, lay.M, lay.Q,
            i0, i1, p0, p1, q0, q1, reverse,
        )  # fmt: skip

    _run(groups, call)
    return da.view(-1, *lay.ashape[1:]).sum(0) if shared else da


def compiled_scan(a: Tensor, b: Tensor, initial: Tensor | None = None, reverse: bool = False) -> Tensor:
    """h_t = a_t h_{t-1} + b_t (or h_t = a_t h_{t+1} + b_t if ``reverse``) over dim 1, differentiable.

    b: (B, T, *S) on the CPU; a: same number of dims, each of a's dims 1 or b's (a broadcast decay is
    read in place); a, b (and initial) of one dtype among float32, float64, complex64, complex128;
    initial: (B, prod(S)) or None. Returns h with b's shape.
    """
    if b.device.type != "cpu" or a.dtype != b.dtype or b.dtype not in _DTYPES:
        raise TypeError(
            f"compiled_scan: a and b must be CPU tensors of one dtype among {_DTYPES}, got a {a.dtype} on "
            f"{a.device} and b {b.dtype} on {b.device}"
        )
    lay = _Layout(tuple(a.shape), tuple(b.shape))
    a_flat = _flat_a(a, lay)
    if initial is not None:
        initial = initial.reshape(lay.B, lay.N)
    if torch.is_grad_enabled() and any(x is not None and x.requires_grad for x in (a_flat, b, initial)):
        h = _CompiledScan.apply(a_flat, b, initial, lay, reverse)
    else:
        h = _forward(a_flat, b, initial, lay, reverse)
    return h.reshape(b.shape)
