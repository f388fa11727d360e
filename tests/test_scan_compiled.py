"""The compiled (numba) scan kernel equals the sequential reference: outputs and gradients, every dtype,
both directions, resets, initial states, broadcast decays, threads, long sequences; auto routing and errors."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

pytest.importorskip("numba")

from recurrences import _optional  # noqa: E402
from recurrences.scan import api, linear_scan  # noqa: E402
from recurrences.scan import compiled as compiled_mod  # noqa: E402
from recurrences.scan.reference import sequential_scan  # noqa: E402

TIGHT = {torch.float64: 1e-10, torch.complex128: 1e-10, torch.float32: 2e-4, torch.complex64: 2e-4}


@pytest.fixture
def threads(monkeypatch):
    """Run a block with a given torch thread count (the kernel splits its work by it, here even for small
    inputs), then restore."""
    monkeypatch.setattr(compiled_mod, "_MIN_PARALLEL", 0)
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


def _rand(shape, dtype, g, decay=False):
    real = {torch.complex64: torch.float32, torch.complex128: torch.float64}.get(dtype, dtype)
    if decay:
        mod = torch.rand(shape, generator=g, dtype=torch.float64).to(real)
        if not dtype.is_complex:
            return mod
        return torch.polar(mod, torch.rand(shape, generator=g, dtype=torch.float64).to(real) * 6.28)
    x = torch.randn(shape, generator=g, dtype=torch.float64).to(real)
    return (
        torch.complex(x, torch.randn(shape, generator=g, dtype=torch.float64).to(real))
        if dtype.is_complex
        else x
    )


def _compare(a, b, h0, *, rtol, reset=None, reverse=False, grad_out=None):
    """compiled vs sequential through linear_scan: h, h_last and the gradients wrt a, b, h0 of a random
    real loss on h and h_last (only for the inputs that require grad)."""
    out = {}
    for method in ("compiled", "sequential"):
        xs = [None if x is None else x.detach().clone().requires_grad_(x.requires_grad) for x in (a, b, h0)]
        h, last = linear_scan(*xs, reverse=reverse, reset=reset, method=method)
        g = torch.Generator().manual_seed(7)
        gh = _rand(h.shape, h.dtype, g) if grad_out is None else grad_out
        gl = _rand(last.shape, last.dtype, g)
        loss = (h * gh.conj()).real.sum() + (last * gl.conj()).real.sum()
        wrt = [x for x in xs if x is not None and x.requires_grad]
        out[method] = (h, last, *torch.autograd.grad(loss, wrt)) if wrt else (h, last)
    for x, y in zip(out["compiled"], out["sequential"]):
        assert x.shape == y.shape and x.dtype == y.dtype
        torch.testing.assert_close(x, y, rtol=rtol, atol=rtol)


@pytest.mark.parametrize("dtype", list(TIGHT))
@pytest.mark.parametrize("reverse", [False, True])
def test_equals_reference_every_dtype(dtype, reverse):
    g = torch.Generator().manual_seed(0)
    for T in (1, 7, 63, 100):
        a = _rand((3, T, 5), dtype, g, decay=True).requires_grad_()
        b = _rand((3, T, 5), dtype, g).requires_grad_()
        h0 = _rand((3, 5), dtype, g).requires_grad_()
        reset = torch.rand(3, T, generator=g) < 0.15
        _compare(a, b, h0, rtol=TIGHT[dtype], reset=reset, reverse=reverse)
        _compare(a, b, None, rtol=TIGHT[dtype], reverse=reverse)


@pytest.mark.parametrize(
    "a_shape, b_shape",
    [
        ((3, 33, 1), (3, 33, 40)),  # one decay per step (Mamba-2 style)
        ((1, 33, 40), (3, 33, 40)),  # shared by the batch
        ((1, 1, 1), (3, 33, 40)),  # one number
        ((3, 33, 2, 1), (3, 33, 2, 20)),  # per head, extra state dims
        ((3, 33, 1, 20), (3, 33, 2, 20)),
        ((1, 33, 2, 1, 4), (3, 33, 2, 3, 4)),  # RAT style: three groups, middle one broadcast
        ((3, 33, 2, 1, 3, 1), (3, 33, 2, 2, 3, 2)),  # four groups: a is expanded first
        ((33, 40), (3, 33, 40)),  # fewer dims than b
    ],
)
@pytest.mark.parametrize("n_threads", [1, 2])
def test_broadcast_decay(a_shape, b_shape, n_threads, threads):
    """A broadcast decay is read in place; its gradient is summed to its own shape, also when the work is
    split between threads (by rows, by channel blocks, or with one partial sum per thread)."""
    threads(n_threads)
    g = torch.Generator().manual_seed(1)
    a = _rand(a_shape, torch.float64, g, decay=True).requires_grad_()
    for B in (b_shape[0], 1):
        shape = (B, *b_shape[1:])
        if a.shape[0] != 1 and len(a_shape) == len(b_shape):
            a = a.detach()[:B].requires_grad_()
        b = _rand(shape, torch.float64, g).requires_grad_()
        h0 = _rand((B, *shape[2:]), torch.float64, g).requires_grad_()
        reset = torch.rand(B, shape[1], generator=g) < 0.1
        for reverse in (False, True):
            _compare(a, b, h0, rtol=1e-10, reverse=reverse)
            _compare(a, b, None, rtol=1e-10, reverse=reverse, reset=reset)


def test_broadcast_decay_is_not_expanded():
    """The autograd graph of a (B, T, 1) decay saves a (B, T, 1) tensor, not a (B, T, D) copy."""
    saved: list[int] = []

    def pack(t):
        saved.append(t.numel())
        return t

    a = torch.rand(2, 50, 1, requires_grad=True)
    b = torch.randn(2, 50, 64, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        linear_scan(a, b, method="compiled", check_finite=False)
    assert sorted(saved) == [100, 2 * 50 * 64], saved


@pytest.mark.parametrize("n_threads", [1, 2, 3])
def test_work_items_cover_every_entry_once(n_threads, monkeypatch):
    """The split between threads covers every (row, channel) exactly once and never splits a dim along
    which the decay is broadcast (two threads would add into the same dL/da entry)."""
    cases = [((1, 9, 1, 1, 256), (1, 9, 1, 1, 256)), ((3, 9, 4, 1), (3, 9, 4, 70)), ((1, 9, 1), (5, 9, 300))]
    cases += [((2, 9, 1), (2, 9, 100)), ((1, 9, 3, 1, 64), (1, 9, 3, 2, 64))]
    monkeypatch.setattr(compiled_mod, "_MIN_PARALLEL", 0)
    for a_shape, b_shape in cases:
        lay = compiled_mod._Layout(a_shape, b_shape)
        groups = compiled_mod._work_items(lay, n_threads)
        assert 1 <= len(groups) <= n_threads
        seen = torch.zeros(lay.B, lay.P, lay.M, lay.Q, dtype=torch.int64)
        for group in groups:
            for i0, i1, p0, p1, q0, q1 in group:
                seen[i0:i1, p0:p1, :, q0:q1] += 1
                assert (q0, q1) == (0, lay.Q) or lay.ashape[4] == lay.Q
                assert (p0, p1) == (0, lay.P) or lay.ashape[2] == lay.P
        assert bool((seen == 1).all()), (a_shape, b_shape)


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
def test_gradcheck(dtype):
    g = torch.Generator().manual_seed(2)
    a = _rand((2, 6, 3), dtype, g, decay=True).requires_grad_()
    a1 = _rand((2, 6, 1), dtype, g, decay=True).requires_grad_()
    b = _rand((2, 6, 3), dtype, g).requires_grad_()
    h0 = _rand((2, 3), dtype, g).requires_grad_()
    reset = torch.tensor([[False, False, True, False, False, False], [False] * 6])
    for reverse in (False, True):
        for decay in (a, a1):

            def f(a, b, h0, reverse=reverse):
                return linear_scan(a, b, h0, reverse=reverse, reset=reset, method="compiled")

            assert torch.autograd.gradcheck(f, (decay, b, h0))


def test_long_sequence_decays_zero_one_tiny():
    """T = 65,536 with exact 0 and 1 decays and 1e-30 (products underflow through the subnormals): finite
    and equal to the float64 reference loop, both directions."""
    T = 65_536
    g = torch.Generator().manual_seed(3)
    a = torch.rand(1, T, 4, generator=g)
    a[:, ::97] = 1.0
    a[:, 5::1013] = 0.0
    a[:, 7::31] = 1e-30
    a[:, 40000:41000] = 0.5
    b = torch.randn(1, T, 4, generator=g)
    b[:, 40000:41000] = 0.0  # the state decays geometrically through the subnormal range
    ref, _ = sequential_scan(a.double(), b.double(), None)
    h, _ = linear_scan(a, b, method="compiled")
    assert torch.isfinite(h).all()
    torch.testing.assert_close(h.double(), ref, rtol=1e-4, atol=1e-4)
    hr, _ = linear_scan(a.flip(1), b.flip(1), reverse=True, method="compiled")
    torch.testing.assert_close(hr.flip(1), h)
    ones = torch.ones(1, T, 1, dtype=torch.float64)
    torch.testing.assert_close(linear_scan(ones, b.double(), method="compiled")[0], b.double().cumsum(1))


def test_large_outputs_on_huge_pages():
    """Outputs of 4 MiB and more are advised onto huge pages before the kernel writes them: same results
    (against the chunked form, itself held to the reference in test_scan.py)."""
    g = torch.Generator().manual_seed(8)
    a = torch.rand(1, 1 << 17, 8, generator=g, dtype=torch.float64)  # 8 MiB per tensor
    b = torch.randn(1, 1 << 17, 8, generator=g, dtype=torch.float64)
    out = {}
    for method in ("compiled", "chunked"):
        aa, bb = a.clone().requires_grad_(), b.clone().requires_grad_()
        h, _ = linear_scan(aa, bb, method=method, check_finite=False)
        h.backward(b)
        out[method] = (h.detach(), aa.grad, bb.grad)
    for x, y in zip(out["compiled"], out["chunked"]):
        torch.testing.assert_close(x, y)
    t = compiled_mod._empty((3, 1 << 20), torch.float32)
    t.fill_(2.0)
    assert t.shape == (3, 1 << 20) and float(t.sum()) == 6 * (1 << 20)


def test_bf16_and_mixed_dtypes():
    g = torch.Generator().manual_seed(4)
    a, b = torch.rand(2, 40, 8, generator=g), torch.randn(2, 40, 8, generator=g)
    hb, lastb = linear_scan(a.bfloat16(), b.bfloat16(), method="compiled")
    ref, ref_last = linear_scan(a.bfloat16(), b.bfloat16(), method="sequential")
    assert hb.dtype == lastb.dtype == torch.bfloat16
    torch.testing.assert_close(hb, ref)
    torch.testing.assert_close(lastb, ref_last)
    bc = torch.complex(b, torch.randn(2, 40, 8, generator=g)).to(torch.complex128)
    hc, _ = linear_scan(a.double(), bc, method="compiled")  # real decay, complex input
    assert hc.dtype == torch.complex128
    torch.testing.assert_close(hc, linear_scan(a.double(), bc, method="sequential")[0])


def test_non_contiguous_inputs_and_grad_output():
    g = torch.Generator().manual_seed(5)
    a = torch.rand(20, 3, 6, generator=g, dtype=torch.float64).transpose(0, 1).requires_grad_()
    b = torch.randn(3, 6, 40, generator=g, dtype=torch.float64)[:, :, ::2].transpose(1, 2)
    b = b.requires_grad_()
    h0 = torch.randn(6, 3, generator=g, dtype=torch.float64).t().requires_grad_()
    assert not (a.is_contiguous() or b.is_contiguous() or h0.is_contiguous())
    go = torch.randn(3, 20, 12, generator=g, dtype=torch.float64)[:, :, ::2]
    _compare(a, b, h0, rtol=1e-10, grad_out=go)
    _compare(a, b, h0, rtol=1e-10, reverse=True, grad_out=torch.ones(()).double().expand(3, 20, 6))
    # conjugate-view inputs
    ac = torch.polar(torch.rand(2, 9, 4, dtype=torch.float64), torch.randn(2, 9, 4, dtype=torch.float64))
    bc = torch.randn(2, 9, 4, dtype=torch.complex128)
    torch.testing.assert_close(
        linear_scan(ac.conj(), bc.conj(), method="compiled")[0],
        linear_scan(ac.conj().resolve_conj(), bc.conj().resolve_conj(), method="sequential")[0],
    )


def test_requires_grad_subsets_and_no_grad():
    g = torch.Generator().manual_seed(6)
    a = torch.rand(2, 15, 4, generator=g, dtype=torch.float64)
    b = torch.randn(2, 15, 4, generator=g, dtype=torch.float64)
    h0 = torch.randn(2, 4, generator=g, dtype=torch.float64)
    for which in ((0,), (1,), (2,), (0, 2)):
        xs = [x.clone().requires_grad_(k in which) for k, x in enumerate((a, b, h0))]
        _compare(*xs, rtol=1e-10)
    with torch.no_grad():
        h, last = linear_scan(a.requires_grad_(), b, h0, method="compiled")
    assert h.grad_fn is None and not h.requires_grad
    torch.testing.assert_close(h, linear_scan(a.detach(), b, h0, method="sequential")[0])
    with torch.inference_mode():
        linear_scan(a, b, h0, method="compiled")


def test_double_backward_is_refused():
    a = torch.rand(1, 9, 2, dtype=torch.float64, requires_grad=True)
    b = torch.randn(1, 9, 2, dtype=torch.float64, requires_grad=True)
    h, _ = linear_scan(a, b, method="compiled")
    (ga,) = torch.autograd.grad(h.pow(2).sum(), a, create_graph=True)
    with pytest.raises(RuntimeError, match="differentiate twice"):
        ga.sum().backward()


def test_auto_picks_compiled_on_cpu_from_threshold(monkeypatch):
    calls: list[int] = []
    real = compiled_mod.compiled_scan

    def spy(a, b, *args):
        calls.append(b.shape[1])
        return real(a, b, *args)

    monkeypatch.setattr(compiled_mod, "compiled_scan", spy)
    T0 = api._AUTO_COMPILED_MIN_T
    for T in (1, T0 - 1, T0, 100):
        linear_scan(torch.rand(2, T, 3), torch.randn(2, T, 3))
    assert calls == [T0, 100]
    # tensors off the CPU never go to numba ("meta" stands in for a GPU here)
    linear_scan(torch.rand(2, 50, 3, device="meta"), torch.randn(2, 50, 3, device="meta"), check_finite=False)
    assert calls == [T0, 100]


def test_compiled_rejects_non_cpu_tensors():
    a, b = torch.rand(1, 4, 2, device="meta"), torch.randn(1, 4, 2, device="meta")
    with pytest.raises(ValueError, match="CPU tensors only"):
        linear_scan(a, b, method="compiled", check_finite=False)


def test_without_numba(monkeypatch):
    """numba missing: method='compiled' names the install extra, 'auto' falls back to the chunked form."""
    monkeypatch.setitem(sys.modules, "numba", None)  # makes `import numba` raise ImportError
    monkeypatch.delitem(sys.modules, "recurrences.scan.compiled")
    monkeypatch.delattr(sys.modules["recurrences.scan"], "compiled")
    monkeypatch.setattr(_optional, "_cache", {})
    a, b = torch.rand(2, 50, 3, dtype=torch.float64), torch.randn(2, 50, 3, dtype=torch.float64)
    with pytest.raises(ImportError, match=r"pip install 'recurrences\[fast\]'"):
        linear_scan(a, b, method="compiled")
    torch.testing.assert_close(linear_scan(a, b)[0], linear_scan(a, b, method="sequential")[0])


def test_importing_recurrences_does_not_import_numba():
    code = (
        "import sys, torch, recurrences, recurrences.scan\n"
        "from recurrences.scan import linear_scan\n"
        "linear_scan(torch.rand(1, 3, 2), torch.rand(1, 3, 2))\n"  # short: auto stays off the kernel
        "assert 'numba' not in sys.modules, 'numba imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
