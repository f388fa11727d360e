"""The scan core: every method equals the sequential reference (outputs and gradients), and edge cases."""

from __future__ import annotations

import pytest
import torch

from recurrences.scan import linear_scan
from recurrences.scan.chunked import chunked_scan_forward
from recurrences.scan.reference import sequential_scan

LENGTHS = [1, 2, 7, 63, 100]


def naive(a, b, initial=None, reverse=False, reset=None):
    """An independent loop written straight from the definition (per element, no broadcasting tricks)."""
    a = a.expand_as(b).clone()
    B, T = b.shape[:2]
    if reset is not None:
        r = reset.reshape(*reset.shape, *([1] * (b.dim() - reset.dim()))).expand_as(b)
        if reverse:
            r = torch.cat([r[:, 1:], torch.zeros_like(r[:, :1])], 1)
        a = torch.where(r, torch.zeros_like(a), a)
    h = torch.zeros_like(b[:, 0]) if initial is None else initial.expand_as(b[:, 0]).clone()
    out = torch.empty_like(b)
    ts = range(T - 1, -1, -1) if reverse else range(T)
    for t in ts:
        h = a[:, t] * h + b[:, t]
        out[:, t] = h
    return out, h


def _inputs(T, dtype, shape=(3, 4), seed=0):
    g = torch.Generator().manual_seed(seed)
    B, D = shape
    if dtype.is_complex:
        real = torch.float64 if dtype == torch.complex128 else torch.float32
        mod = torch.rand(B, T, D, generator=g, dtype=real)
        ang = torch.rand(B, T, D, generator=g, dtype=real) * 6.28
        a = torch.polar(mod, ang)
        b = torch.complex(
            torch.randn(B, T, D, generator=g, dtype=real), torch.randn(B, T, D, generator=g, dtype=real)
        )
        h0 = torch.complex(
            torch.randn(B, D, generator=g, dtype=real), torch.randn(B, D, generator=g, dtype=real)
        )
    else:
        a = torch.rand(B, T, D, generator=g, dtype=dtype)
        b = torch.randn(B, T, D, generator=g, dtype=dtype)
        h0 = torch.randn(B, D, generator=g, dtype=dtype)
    reset = torch.rand(B, T, generator=g) < 0.15
    return a, b, h0, reset


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
@pytest.mark.parametrize("T", LENGTHS)
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("method", ["sequential", "chunked"])
def test_methods_equal_naive_outputs_and_gradients(dtype, T, reverse, method):
    a, b, h0, reset = _inputs(T, dtype)
    ref_h, ref_last = naive(a, b, h0, reverse, reset)
    for chunk in (None, 3, 4):
        aa, bb, hh = (x.clone().requires_grad_() for x in (a, b, h0))
        h, last = linear_scan(aa, bb, hh, reverse=reverse, reset=reset, method=method, chunk_size=chunk)
        torch.testing.assert_close(h, ref_h, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(last, ref_last, rtol=1e-10, atol=1e-10)
        # gradients against the naive loop's autograd
        g = torch.randn_like(h)
        gl = torch.randn_like(last)
        loss = (h * g.conj()).real.sum() + (last * gl.conj()).real.sum()
        grads = torch.autograd.grad(loss, (aa, bb, hh))
        ra, rb, rh = (x.clone().requires_grad_() for x in (a, b, h0))
        nh, nl = naive(ra, rb, rh, reverse, reset)
        nloss = (nh * g.conj()).real.sum() + (nl * gl.conj()).real.sum()
        ngrads = torch.autograd.grad(nloss, (ra, rb, rh))
        for x, y in zip(grads, ngrads):
            torch.testing.assert_close(x, y, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("reverse", [False, True])
def test_gradcheck_chunked(reverse):
    a, b, h0, reset = _inputs(11, torch.float64, shape=(2, 2))
    a.requires_grad_()
    b.requires_grad_()
    h0.requires_grad_()
    f = lambda a, b, h0: linear_scan(a, b, h0, reverse=reverse, reset=reset, method="chunked", chunk_size=3)  # noqa: E731
    assert torch.autograd.gradcheck(f, (a, b, h0))


def test_gradcheck_complex():
    a, b, h0, _ = _inputs(9, torch.complex128, shape=(1, 2))
    for x in (a, b, h0):
        x.requires_grad_()
    f = lambda a, b, h0: linear_scan(a, b, h0, method="chunked", chunk_size=4)  # noqa: E731
    assert torch.autograd.gradcheck(f, (a, b, h0))


def test_broadcast_decay_and_extra_dims():
    g = torch.Generator().manual_seed(1)
    b = torch.randn(2, 37, 3, 5, generator=g, dtype=torch.float64)
    a = torch.rand(2, 37, 3, 1, generator=g, dtype=torch.float64).requires_grad_()
    h, last = linear_scan(a, b, method="chunked")
    ref, ref_last = naive(a.detach(), b)
    torch.testing.assert_close(h, ref)
    torch.testing.assert_close(last, ref_last)
    h.sum().backward()
    assert a.grad.shape == a.shape
    a2 = a.detach().clone().requires_grad_()
    naive(a2, b)[0].sum().backward()
    torch.testing.assert_close(a.grad, a2.grad)
    # time-invariant decay (1, 1, 1, 1) and scalar-per-channel initial state
    a0 = torch.full((1, 1, 1, 1), 0.5, dtype=torch.float64)
    h0 = torch.ones(3, 5, dtype=torch.float64)
    torch.testing.assert_close(linear_scan(a0, b, h0)[0], naive(a0, b, h0)[0])


def test_float32_and_bf16_accumulate_in_fp32():
    a, b, h0, _ = _inputs(300, torch.float64)
    ref, _ = naive(a, b, h0)
    h32, _ = linear_scan(a.float(), b.float(), h0.float(), method="chunked")
    assert h32.dtype == torch.float32
    torch.testing.assert_close(h32.double(), ref, rtol=1e-4, atol=1e-4)
    hb, lastb = linear_scan(a.bfloat16(), b.bfloat16(), h0.bfloat16())
    assert hb.dtype == torch.bfloat16 and lastb.dtype == torch.bfloat16
    # the only error is the rounding of the inputs and of the output, not an accumulated one
    ref_b, _ = naive(a.bfloat16().double(), b.bfloat16().double(), h0.bfloat16().double())
    torch.testing.assert_close(hb.double(), ref_b, rtol=1e-2, atol=2e-2)


def test_mixed_real_decay_complex_input():
    a, _, _, _ = _inputs(20, torch.float64)
    _, b, h0, _ = _inputs(20, torch.complex128)
    h, _ = linear_scan(a, b, h0)
    assert h.dtype == torch.complex128
    torch.testing.assert_close(h, naive(a.to(torch.complex128), b, h0)[0])


def test_long_sequence_log_space_safe():
    """T = 65,536 with decays in (0, 1], including exact 0 and 1 and tiny values: no NaN, no inf, and the
    result matches the reference loop (no cumulative-product-then-divide)."""
    T = 65_536
    g = torch.Generator().manual_seed(3)
    a = torch.rand(1, T, 4, generator=g)
    a[:, ::97] = 1.0
    a[:, 5::1013] = 0.0
    a[:, 7::31] = 1e-30
    b = torch.randn(1, T, 4, generator=g)
    h, last = linear_scan(a, b, method="chunked")
    assert torch.isfinite(h).all()
    ref, _ = sequential_scan(a.double(), b.double(), None)
    torch.testing.assert_close(h.double(), ref, rtol=1e-4, atol=1e-4)
    # decays of exactly 1 everywhere: a plain cumulative sum
    ones = torch.ones(1, T, 1, dtype=torch.float64)
    bb = torch.randn(1, T, 1, generator=g, dtype=torch.float64)
    torch.testing.assert_close(linear_scan(ones, bb)[0], bb.cumsum(1))


@pytest.mark.parametrize("method", ["chunked", "compiled"])
def test_fast_methods_do_not_save_more_than_reference(method):
    """Memory: a fast method's autograd graph keeps at most what the sequential reference keeps."""
    if method == "compiled":
        pytest.importorskip("numba")

    def saved_bytes(method):
        storages: dict[int, int] = {}

        def pack(t):
            st = t.untyped_storage()
            storages[st.data_ptr()] = st.nbytes()
            return t

        a = torch.rand(2, 512, 64, requires_grad=True)
        b = torch.randn(2, 512, 64, requires_grad=True)
        initial = torch.zeros(2, 64, requires_grad=True)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            h, _ = linear_scan(a, b, initial, method=method)
        return sum(storages.values())

    fast, sequential = saved_bytes(method), saved_bytes("sequential")
    assert fast <= 1.01 * sequential, (fast, sequential)


def test_reset_splits_packed_sequences():
    """Packed sequences with resets equal separate scans of each segment, in both directions."""
    g = torch.Generator().manual_seed(5)
    lens = [5, 9, 1, 12]
    a = torch.rand(1, sum(lens), 3, generator=g, dtype=torch.float64)
    b = torch.randn(1, sum(lens), 3, generator=g, dtype=torch.float64)
    reset = torch.zeros(1, sum(lens), dtype=torch.bool)
    starts = torch.tensor([0, *lens[:-1]]).cumsum(0)
    reset[0, starts] = True
    for reverse in (False, True):
        h, _ = linear_scan(
            a, b, torch.ones(1, 3, dtype=torch.float64), reset=reset, reverse=reverse, chunk_size=4
        )
        pieces = []
        for s, n in zip(starts.tolist(), lens):
            init = torch.ones(1, 3, dtype=torch.float64) if (reverse and s + n == sum(lens)) else None
            pieces.append(naive(a[:, s : s + n], b[:, s : s + n], init, reverse)[0])
        torch.testing.assert_close(h, torch.cat(pieces, 1))


def test_empty_time_axis():
    b = torch.zeros(2, 0, 3)
    h, last = linear_scan(torch.zeros(2, 0, 3), b, torch.ones(2, 3))
    assert h.shape == (2, 0, 3)
    torch.testing.assert_close(last, torch.ones(2, 3))


def test_chunked_forward_matches_reference_directly():
    a, b, h0, _ = _inputs(1000, torch.float64, shape=(2, 3))
    for C in (1, 7, 32, 1000, 4096):
        torch.testing.assert_close(chunked_scan_forward(a, b, h0, C), sequential_scan(a, b, h0)[0])


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"a": [1.0], "b": torch.zeros(1, 2, 1)}, TypeError, "a must be a torch.Tensor"),
        ({"a": torch.zeros(1, 2, 1, dtype=torch.int64), "b": torch.zeros(1, 2, 1)}, TypeError, "dtype"),
        ({"a": torch.zeros(1, 3, 1), "b": torch.zeros(1, 2, 1)}, ValueError, "not broadcastable"),
        ({"a": torch.zeros(2, 2, 4), "b": torch.zeros(1, 2, 4)}, ValueError, "enlarge"),
        ({"a": torch.zeros(3), "b": torch.zeros(3)}, ValueError, "at least 2 dims"),
        ({"a": torch.zeros(1, 2, 1), "b": torch.tensor([[[float("nan")], [0.0]]])}, ValueError, "NaN or inf"),
        ({"a": torch.full((1, 2, 1), float("inf")), "b": torch.zeros(1, 2, 1)}, ValueError, "a contains NaN"),
        (
            {"a": torch.zeros(1, 2, 1), "b": torch.zeros(1, 2, 1), "method": "magic"},
            ValueError,
            "unknown method",
        ),
        (
            {"a": torch.zeros(1, 2, 1), "b": torch.zeros(1, 2, 1), "reset": torch.zeros(1, 2)},
            TypeError,
            "bool",
        ),
        (
            {
                "a": torch.zeros(1, 2, 1),
                "b": torch.zeros(1, 2, 1),
                "reset": torch.zeros(1, 3, dtype=torch.bool),
            },
            ValueError,
            "reset",
        ),
        (
            {"a": torch.zeros(1, 2, 1), "b": torch.zeros(1, 2, 1), "initial": torch.zeros(3, 5)},
            ValueError,
            "initial",
        ),
        ({"a": torch.zeros(1, 2, 1), "b": torch.zeros(1, 2, 1), "chunk_size": 0}, ValueError, "chunk_size"),
    ],
)
def test_bad_input(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        linear_scan(**kwargs)
