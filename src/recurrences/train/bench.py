"""Micro-benchmarks: time mixers (and their forms) or the scan methods against a baseline.

For each target and length T the bench measures

    t_fwd(T)  = median over repeats of one forward pass (no autograd graph),
    t_both(T) = median over repeats of forward + backward of  sum(y * g)  for a fixed random g,

after one warm-up call, and reports ``ratio = t / t_baseline`` where the baseline is measured in the
same run on the same shapes (never against numbers from another machine or another day).

Peak memory. On CUDA: ``torch.cuda.max_memory_allocated`` over one call, minus what was allocated
before it. On CPU PyTorch keeps no allocator statistics, so one extra, untimed call runs under a
:class:`PeakMemory` dispatch mode: every tensor storage an operator creates is counted when it is made
and uncounted (through a weakref finaliser) when it is freed, and the peak of the live total is
reported. This counts the tensors of the computation (activations, autograd buffers, gradients) but not
the inputs made before the call, nor scratch memory inside one kernel that never becomes a tensor.

Cells that run out of memory or whose warm-up alone takes longer than ``max_seconds`` are recorded as
skipped (with the reason), and longer lengths of the same target are then skipped too.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import statistics
import time
import weakref
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

__all__ = [
    "BenchCell",
    "BenchResult",
    "PeakMemory",
    "parse_mixer_list",
    "bench_mixers",
    "bench_scan",
    "write_bench",
    "format_table",
]

PASSES = ("forward", "forward+backward")


class PeakMemory(TorchDispatchMode):
    """Track the peak of live bytes of tensor storages created by operators inside the mode.

    ``peak`` = max over time of  sum(nbytes of storages created inside and not yet freed).
    """

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._seen: dict[int, int] = {}

    def _free(self, key: int, n: int) -> None:
        if self._seen.pop(key, None) is not None:
            self.live -= n

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor) or t.device.type == "meta":
                continue
            s = t.untyped_storage()
            n = s.nbytes()
            key = s.data_ptr()
            if n == 0 or key in self._seen:
                continue  # a view of a storage already counted
            self._seen[key] = n
            self.live += n
            self.peak = max(self.peak, self.live)
            weakref.finalize(s, self._free, key, n)
        return out


@dataclass
class BenchCell:
    """One (target, length, pass) measurement. ``status`` is "ok" or "skipped" (see ``reason``)."""

    target: str  # "lion-s:chunk", or a scan method
    T: int
    pass_: str  # "forward" | "forward+backward"
    status: str = "ok"
    median_s: float | None = None
    times_s: list[float] = field(default_factory=list)
    peak_bytes: int | None = None
    ratio: float | None = None  # median_s / baseline median_s at the same T and pass
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["pass"] = d.pop("pass_")
        return d


@dataclass
class BenchResult:
    kind: str  # "mixers" | "scan"
    baseline: str
    targets: list[str]
    lengths: list[int]
    settings: dict[str, Any]
    cells: list[BenchCell]

    def cell(self, target: str, T: int, pass_: str) -> BenchCell | None:
        for c in self.cells:
            if c.target == target and c.T == T and c.pass_ == pass_:
                return c
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "baseline": self.baseline,
            "targets": self.targets,
            "lengths": self.lengths,
            "settings": self.settings,
            "environment": _environment(),
            "cells": [c.to_dict() for c in self.cells],
        }


def _environment() -> dict[str, Any]:
    return {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


# -- argument parsing ------------------------------------------------------------------------------
def parse_mixer_list(spec: str | list[str], *, forms_all: bool = False) -> list[tuple[str, str]]:
    """``"attention,lion-s:chunk"`` -> [("attention", "auto"), ("lion-s", "chunk")].

    A bare name means form "auto"; with ``forms_all`` a bare name expands to every form of the mixer.
    Unknown mixers or forms raise ValueError listing what is known.
    """
    from recurrences.layers import available_mixers

    items = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    if not items:
        raise ValueError("--mixers: expected a comma-separated list of mixer names, got nothing")
    known = available_mixers()
    out: list[tuple[str, str]] = []
    for item in items:
        name, _, form = item.partition(":")
        if name not in known:
            raise ValueError(
                f"--mixers: unknown mixer {name!r}; known mixers: {', '.join(known) or '(none)'}"
            )
        forms = _mixer_forms(name)
        if form:
            if form not in ("auto", *forms):
                raise ValueError(
                    f"--mixers: mixer {name!r} has no form {form!r}; its forms: auto, {', '.join(forms)}"
                )
            out.append((name, form))
        elif forms_all:
            out.extend((name, f) for f in forms)
        else:
            out.append((name, "auto"))
    seen: set[tuple[str, str]] = set()
    return [x for x in out if not (x in seen or seen.add(x))]


def _mixer_forms(name: str) -> tuple[str, ...]:
    from recurrences.layers import create_mixer, mixer_spec

    forms = getattr(mixer_spec(name).factory, "forms", None)
    if isinstance(forms, tuple) and forms:
        return forms
    return tuple(create_mixer(name, d_model=16, n_heads=2).forms)


def target_name(name: str, form: str) -> str:
    return name if form == "auto" else f"{name}:{form}"


# -- timing ------------------------------------------------------------------------------------------
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _is_oom(e: BaseException) -> bool:
    if isinstance(e, (MemoryError, getattr(torch, "OutOfMemoryError", MemoryError))):
        return True
    msg = str(e).lower()
    return "out of memory" in msg or "can't allocate memory" in msg or "defaultcpuallocator" in msg


def _time_cell(
    fn: Callable[[], Any], *, repeats: int, max_seconds: float, device: torch.device, memory: bool
) -> tuple[str, list[float], int | None, str]:
    """Warm up once, then time up to ``repeats`` calls (stopping early once ``max_seconds`` is spent)."""
    try:
        t0 = time.perf_counter()
        fn()
        _sync(device)
        warm = time.perf_counter() - t0
        if warm > max_seconds:
            return "skipped", [], None, f"too slow: warm-up took {warm:.2f}s > max_seconds={max_seconds:g}"
        times: list[float] = []
        spent = warm
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            _sync(device)
            dt = time.perf_counter() - t0
            times.append(dt)
            spent += dt
            if spent > max_seconds and len(times) >= 1:
                break
        peak = _peak_memory(fn, device) if memory else None
        return "ok", times, peak, ""
    except Exception as e:  # an OOM is a result (skipped), anything else is a bug worth seeing
        if _is_oom(e):
            if device.type == "cuda":
                torch.cuda.empty_cache()
            return "skipped", [], None, f"out of memory: {str(e).splitlines()[0][:200]}"
        raise


def _peak_memory(fn: Callable[[], Any], device: torch.device) -> int:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return int(torch.cuda.max_memory_allocated(device) - before)
    mode = PeakMemory()
    with mode:
        fn()
    return int(mode.peak)


def _run_grid(
    kind: str,
    targets: list[str],
    make: Callable[[str, int, str], Callable[[], Any]],
    *,
    lengths: list[int],
    passes: tuple[str, ...],
    baseline: str,
    repeats: int,
    max_seconds: float,
    device: torch.device,
    memory: bool,
    settings: dict[str, Any],
    progress: bool,
) -> BenchResult:
    cells: list[BenchCell] = []
    too_slow: set[tuple[str, str]] = set()
    for target in targets:
        for pass_ in passes:
            for T in lengths:
                if (target, pass_) in too_slow:
                    cells.append(
                        BenchCell(target, T, pass_, "skipped", reason="skipped: a shorter length was skipped")
                    )
                    continue
                fn = make(target, T, pass_)
                status, times, peak, reason = _time_cell(
                    fn, repeats=repeats, max_seconds=max_seconds, device=device, memory=memory
                )
                del fn
                cell = BenchCell(target, T, pass_, status, times_s=times, peak_bytes=peak, reason=reason)
                if times:
                    cell.median_s = statistics.median(times)
                if status != "ok":
                    too_slow.add((target, pass_))
                cells.append(cell)
                if progress:
                    shown = f"{cell.median_s * 1e3:.2f} ms" if cell.median_s is not None else reason
                    print(f"  {target:>24s} T={T:<6d} {pass_:<16s} {shown}", flush=True)
    result = BenchResult(kind, baseline, targets, list(lengths), settings, cells)
    for c in cells:
        base = result.cell(baseline, c.T, c.pass_)
        if c.median_s is not None and base is not None and base.median_s:
            c.ratio = c.median_s / base.median_s
    return result


def _check_lengths(lengths: list[int]) -> list[int]:
    if not lengths or any(not isinstance(T, int) or T < 1 for T in lengths):
        raise ValueError(f"--lengths: expected positive integers, got {lengths!r}")
    return sorted(set(lengths))


def _check_positive(name: str, value: int) -> None:
    if not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: expected a positive integer, got {value!r}")


def _settings(device: torch.device, dtype: torch.dtype, **sizes: Any) -> dict[str, Any]:
    """The settings recorded with a bench result: the sizes given, plus device, dtype and memory method."""
    return {
        **sizes,
        "device": str(device),
        "dtype": str(dtype).replace("torch.", ""),
        "memory_method": "cuda.max_memory_allocated"
        if device.type == "cuda"
        else "dispatch-mode storage tracking",
    }


def bench_mixers(
    mixers: list[tuple[str, str]],
    lengths: list[int],
    *,
    batch: int = 4,
    d_model: int = 256,
    n_heads: int = 4,
    backward: bool = False,
    baseline: str | None = None,
    repeats: int = 5,
    max_seconds: float = 30.0,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    memory: bool = True,
    seed: int = 0,
    progress: bool = True,
) -> BenchResult:
    """Time ``mixer(x)`` (and ``mixer(x)`` + backward) for x of shape (batch, T, d_model)."""
    from recurrences.layers import create_mixer

    lengths = _check_lengths(lengths)
    for name, v in (
        ("--batch", batch),
        ("--d-model", d_model),
        ("--n-heads", n_heads),
        ("--repeats", repeats),
    ):
        _check_positive(name, v)
    if not mixers:
        raise ValueError("--mixers: expected at least one mixer")
    device = torch.device(device)
    targets = [target_name(n, f) for n, f in mixers]
    by_target = dict(zip(targets, mixers))
    baseline = baseline or targets[0]
    if baseline not in by_target:
        # the baseline may be named by a mixer that is not in the list: add it
        extra = parse_mixer_list(baseline)
        mixers = [*mixers, *extra]
        targets = [target_name(n, f) for n, f in mixers]
        by_target = dict(zip(targets, mixers))
        baseline = target_name(*extra[0])
    modules: dict[str, torch.nn.Module] = {}

    def make(target: str, T: int, pass_: str) -> Callable[[], Any]:
        if target not in modules:
            name, form = by_target[target]
            torch.manual_seed(seed)
            m = create_mixer(name, d_model=d_model, n_heads=n_heads)
            m.form = form
            modules[target] = m.to(device=device, dtype=dtype)
        m = modules[target]
        g = torch.Generator().manual_seed(seed + T)
        x = torch.randn(batch, T, d_model, generator=g, dtype=dtype).to(device)
        if pass_ == "forward":

            def fwd():
                with torch.no_grad():
                    return m(x)

            return fwd
        gy = torch.randn(batch, T, d_model, generator=g, dtype=dtype).to(device)
        xg = x.clone().requires_grad_(True)

        def both():
            m.zero_grad(set_to_none=True)
            xg.grad = None
            y = m(xg)
            (y * gy).sum().backward()

        return both

    passes = PASSES if backward else PASSES[:1]
    settings = _settings(
        device,
        dtype,
        batch=batch,
        d_model=d_model,
        n_heads=n_heads,
        backward=backward,
        repeats=repeats,
        max_seconds=max_seconds,
    )
    return _run_grid(
        "mixers",
        targets,
        make,
        lengths=lengths,
        passes=passes,
        baseline=baseline,
        repeats=repeats,
        max_seconds=max_seconds,
        device=device,
        memory=memory,
        settings=settings,
        progress=progress,
    )


def scan_methods() -> list[str]:
    """The explicit methods of :func:`recurrences.scan.linear_scan` ("auto" excluded; "compiled" only when
    numba is installed, ``pip install 'recurrences[fast]'``)."""
    import importlib.util

    from recurrences.scan import METHODS

    have_numba = importlib.util.find_spec("numba") is not None
    return [m for m in METHODS if m != "auto" and (m != "compiled" or have_numba)]


def bench_scan(
    lengths: list[int],
    *,
    batch: int = 8,
    d: int = 256,
    methods: list[str] | None = None,
    backward: bool = False,
    baseline: str = "sequential",
    repeats: int = 5,
    max_seconds: float = 30.0,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    memory: bool = True,
    seed: int = 0,
    progress: bool = True,
) -> BenchResult:
    """Time ``linear_scan(a, b, method=m)`` with a = sigmoid(N(0,1)) in (0, 1), b ~ N(0, 1), shape (batch, T, d)."""
    from recurrences.scan import linear_scan

    lengths = _check_lengths(lengths)
    for name, v in (("--batch", batch), ("--d", d), ("--repeats", repeats)):
        _check_positive(name, v)
    known = scan_methods()
    methods = list(methods) if methods else known
    for m in [*methods, baseline]:
        if m not in known and m != "auto":
            raise ValueError(f"scan method {m!r} unknown; known methods: {', '.join(known)}")
    if baseline not in methods:
        methods = [baseline, *methods]
    device = torch.device(device)

    def make(method: str, T: int, pass_: str) -> Callable[[], Any]:
        g = torch.Generator().manual_seed(seed + T)
        a = torch.sigmoid(torch.randn(batch, T, d, generator=g, dtype=dtype)).to(device)
        b = torch.randn(batch, T, d, generator=g, dtype=dtype).to(device)
        if pass_ == "forward":

            def fwd():
                with torch.no_grad():
                    return linear_scan(a, b, method=method, check_finite=False)

            return fwd
        gh = torch.randn(batch, T, d, generator=g, dtype=dtype).to(device)
        ag = a.clone().requires_grad_(True)
        bg = b.clone().requires_grad_(True)

        def both():  # the scan and its backward alone: dL/dh = gh is fed in, no loss is computed
            ag.grad = bg.grad = None
            h, _ = linear_scan(ag, bg, method=method, check_finite=False)
            h.backward(gh)

        return both

    passes = PASSES if backward else PASSES[:1]
    settings = _settings(
        device, dtype, batch=batch, d=d, backward=backward, repeats=repeats, max_seconds=max_seconds
    )
    return _run_grid(
        "scan",
        methods,
        make,
        lengths=lengths,
        passes=passes,
        baseline=baseline,
        repeats=repeats,
        max_seconds=max_seconds,
        device=device,
        memory=memory,
        settings=settings,
        progress=progress,
    )


# -- output --------------------------------------------------------------------------------------------
def _fmt_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def format_table(result: BenchResult) -> str:
    """A plain-text table: one row per (target, pass), one column group per length."""
    lines = [f"baseline: {result.baseline}   ({result.kind}; {_settings_line(result.settings)})"]
    header = f"{'target':<26s} {'pass':<17s}" + "".join(f"{'T=' + str(T):>28s}" for T in result.lengths)
    lines += [header, "-" * len(header)]
    for target in result.targets:
        for pass_ in PASSES:
            row = [result.cell(target, T, pass_) for T in result.lengths]
            if all(c is None for c in row):
                continue
            parts = []
            for c in row:
                if c is None or c.median_s is None:
                    parts.append(f"{'skipped':>28s}")
                else:
                    ratio = f"x{c.ratio:.2f}" if c.ratio is not None else ""
                    parts.append(f"{c.median_s * 1e3:>10.2f}ms {ratio:>7s} {_fmt_bytes(c.peak_bytes):>8s}")
            lines.append(f"{target:<26s} {pass_:<17s}" + "".join(parts))
    lines.append("(each cell: median time, ratio to the baseline, peak memory)")
    return "\n".join(lines)


def _settings_line(s: dict[str, Any]) -> str:
    keys = [k for k in ("batch", "d_model", "d", "n_heads", "repeats", "device", "dtype") if k in s]
    return ", ".join(f"{k}={s[k]}" for k in keys)


def plot_bench(result: BenchResult, path: Path) -> Path | None:
    """Log-log plot of median time against T, one line per target, one panel per pass."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    passes = [p for p in PASSES if any(c.pass_ == p for c in result.cells)]
    fig, axes = plt.subplots(1, len(passes), figsize=(6 * len(passes), 4.5), squeeze=False)
    for ax, pass_ in zip(axes[0], passes):
        for target in result.targets:
            pts = [
                (c.T, c.median_s)
                for c in result.cells
                if c.target == target and c.pass_ == pass_ and c.median_s
            ]
            if not pts:
                continue
            xs, ys = zip(*pts)
            style = "--" if target == result.baseline else "-"
            label = target + (" (baseline)" if target == result.baseline else "")
            # matplotlib hides legend labels that start with "_"
            ax.plot(xs, ys, style, marker="o", label="\u200b" + label if label.startswith("_") else label)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("sequence length T")
        ax.set_ylabel("median time (s)")
        ax.set_title(pass_)
        ax.grid(True, which="both", alpha=0.3)
        if ax.get_lines():
            ax.legend(fontsize=8)
    fig.suptitle(f"{result.kind} bench: {_settings_line(result.settings)}", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def write_bench(result: BenchResult, out_dir: str | Path, *, command: str | None = None) -> dict[str, Path]:
    """Write ``bench.json`` (+ ``bench.png`` when matplotlib is installed) into ``out_dir`` atomically."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = result.to_dict()
    if command:
        data["command"] = command
    path = out / "bench.json"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=_json_default) + "\n")
    os.replace(tmp, path)
    files = {"json": path}
    png = plot_bench(result, out / "bench.png")
    if png is not None:
        files["png"] = png
    return files


def _json_default(o: Any) -> Any:
    if isinstance(o, float) and not math.isfinite(o):
        return None
    return str(o)
