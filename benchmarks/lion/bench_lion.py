"""Benchmark the LION forms against bidirectional softmax attention (time and peak memory vs T).

    python benchmarks/lion/bench_lion.py --out benchmarks/lion/results.json --png benchmarks/lion/results.png

For every length T, pass ("forward" under no_grad, "forward+backward" of sum(y * g)) and target, one
warm-up call and the median of ``--repeats`` timed calls; targets are interleaved per (T, pass) so that the
baseline (``attention-bidir``, the project's SDPA softmax attention; torch SDPA directly if that mixer is
missing) is measured next to the others. ``ratio`` = median / baseline median at the same (T, pass).

Peak memory: one extra untimed call under ``recurrences.train.bench.PeakMemory`` (live bytes of all tensor
storages created by operators; not the inputs, not kernel-internal scratch).

Cells whose predicted time (from the previous length, with the form's known exponent: 2 for the O(T^2)
forms, 1 for the O(T) ones) exceeds ``--max-seconds`` (``--baseline-max-seconds`` for the baseline, so the
ratio at the target length can be measured once), or whose predicted peak memory exceeds ``--max-gb``,
are recorded as skipped with the reason.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from recurrences.layers import available_mixers, create_mixer

EXPONENT = {"attention": 2, "reference": 2, "chunk": 2, "scan": 1, "rnn": 1, "sdpa": 2}
BASELINE = "attention-bidir"


class _SDPA(torch.nn.Module):
    """Fallback baseline: qkv -> torch SDPA (bidirectional) -> out, if attention-bidir is not registered."""

    def __init__(self, d_model: int, n_heads: int) -> None:
        super().__init__()
        self.h = n_heads
        self.qkv = torch.nn.Linear(d_model, 3 * d_model)
        self.out = torch.nn.Linear(d_model, d_model)

    def forward(self, x):
        B, T, D = x.shape
        q, k, v = self.qkv(x).reshape(B, T, 3, self.h, D // self.h).permute(2, 0, 3, 1, 4)
        return self.out(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, T, D))


def build(target: str, d_model: int, n_heads: int) -> torch.nn.Module:
    torch.manual_seed(0)
    if target == BASELINE:
        if BASELINE in available_mixers():
            return create_mixer(BASELINE, d_model=d_model, n_heads=n_heads)
        return _SDPA(d_model, n_heads)
    name, _, form = target.partition(":")
    return create_mixer(name, d_model=d_model, n_heads=n_heads, form=form or "auto")


def peak_bytes(fn) -> int | None:
    try:
        from recurrences.train.bench import PeakMemory
    except ImportError:
        return None
    mode = PeakMemory()
    with mode:
        fn()
    return int(mode.peak)


def run_cell(m, T: int, pass_: str, batch: int, d_model: int, repeats: int, warm: bool, memory: bool):
    g = torch.Generator().manual_seed(T)
    x = torch.randn(batch, T, d_model, generator=g)
    gy = torch.randn(batch, T, d_model, generator=g)
    finite = [True]

    def fwd():
        with torch.no_grad():
            y = m(x)
        finite[0] = finite[0] and bool(torch.isfinite(y).all())

    def both():
        m.zero_grad(set_to_none=True)
        xg = x.clone().requires_grad_(True)
        y = m(xg)
        (y * gy).sum().backward()
        finite[0] = finite[0] and bool(torch.isfinite(y).all()) and bool(torch.isfinite(xg.grad).all())

    fn = fwd if pass_ == "forward" else both
    if warm:
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    peak = peak_bytes(fn) if memory else None
    return times, peak, finite[0]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lengths", default="256,1024,4096,16384,65536")
    p.add_argument(
        "--targets",
        default=f"{BASELINE},lion-s:attention,lion-s:chunk,lion-s:rnn,lion-s:scan,lion-d:scan,lion-lit:scan",
    )
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--d-model", type=int, default=256)
    p.add_argument("--n-heads", type=int, default=4)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--max-seconds", type=float, default=20.0)
    p.add_argument("--baseline-max-seconds", type=float, default=300.0)
    p.add_argument(
        "--long-targets",
        default="lion-s:scan",
        help="targets also allowed --baseline-max-seconds (the one-off O(T) run at the longest length)",
    )
    p.add_argument("--max-gb", type=float, default=6.0)
    p.add_argument("--passes", default="forward,forward+backward")
    p.add_argument("--out", default="benchmarks/lion/results.json")
    p.add_argument("--png", default="benchmarks/lion/results.png")
    p.add_argument("--md", default="benchmarks/lion/results.md", help="markdown tables of the results")
    p.add_argument("--render-only", action="store_true", help="only redraw --png and --md from --out")
    args = p.parse_args(argv)
    if args.render_only:
        result = json.loads(Path(args.out).read_text())
        if args.png:
            plot(result, args.png)
        if args.md:
            Path(args.md).write_text(markdown(result))
        return

    lengths = [int(t) for t in args.lengths.split(",")]
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    passes = args.passes.split(",")
    modules = {t: build(t, args.d_model, args.n_heads) for t in targets}
    last: dict[tuple[str, str], tuple[int, float, int | None]] = {}
    cells = []
    for T in lengths:
        for pass_ in passes:
            for target in targets:
                form = "sdpa" if target == BASELINE else target.partition(":")[2] or "attention"
                ex = EXPONENT.get(form, 2)
                long = target == BASELINE or target in args.long_targets.split(",")
                limit = args.baseline_max_seconds if long else args.max_seconds
                cell = {"target": target, "T": T, "pass": pass_, "status": "ok"}
                est_t = est_m = None
                if (target, pass_) in last:
                    T0, t0, m0 = last[(target, pass_)]
                    est_t = t0 * (T / T0) ** ex
                    est_m = None if m0 is None else m0 * (T / T0) ** ex
                if last.get((target, pass_), (0, 0.0, None))[1] < 0:
                    cell.update(status="skipped", reason="a shorter length was skipped")
                elif est_t is not None and est_t > limit:
                    cell.update(status="skipped", reason=f"predicted {est_t:.0f} s > {limit:g} s")
                elif est_m is not None and est_m > args.max_gb * 2**30:
                    cell.update(
                        status="skipped", reason=f"predicted {est_m / 2**30:.1f} GB > {args.max_gb:g} GB"
                    )
                if cell["status"] != "ok":
                    last[(target, pass_)] = (T, -1.0, None)
                    cells.append(cell)
                    print(f"{target:>18s} T={T:<6d} {pass_:<16s} skipped: {cell['reason']}", flush=True)
                    continue
                slow = est_t is not None and est_t > limit / 4
                reps = 1 if slow else args.repeats
                if slow:
                    cell["note"] = "single timed run, no warm-up, no memory tracking (slow cell)"
                try:
                    times, peak, finite = run_cell(
                        modules[target],
                        T,
                        pass_,
                        args.batch,
                        args.d_model,
                        reps,
                        warm=not slow,
                        memory=not slow,
                    )
                except (RuntimeError, MemoryError) as e:
                    cell.update(status="skipped", reason=f"error: {str(e).splitlines()[0][:160]}")
                    last[(target, pass_)] = (T, -1.0, None)
                    cells.append(cell)
                    print(f"{target:>18s} T={T:<6d} {pass_:<16s} {cell['reason']}", flush=True)
                    continue
                med = statistics.median(times)
                cell.update(median_s=med, times_s=times, peak_bytes=peak, finite=finite)
                last[(target, pass_)] = (T, med, peak if peak is not None else est_m)
                cells.append(cell)
                mb = f"{peak / 2**20:8.1f} MB" if peak else ""
                print(
                    f"{target:>18s} T={T:<6d} {pass_:<16s} {med * 1e3:10.1f} ms {mb} finite={finite}",
                    flush=True,
                )
    for c in cells:
        base = next(
            (b for b in cells if b["target"] == BASELINE and b["T"] == c["T"] and b["pass"] == c["pass"]),
            None,
        )
        if c.get("median_s") and base and base.get("median_s"):
            c["ratio_to_baseline"] = c["median_s"] / base["median_s"]
    result = {
        "command": "python benchmarks/lion/bench_lion.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "baseline": BASELINE,
        "settings": vars(args),
        "environment": {
            "torch": torch.__version__,
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "threads": torch.get_num_threads(),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        },
        "cells": cells,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(args.out).with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1))
    tmp.replace(args.out)
    if args.png:
        plot(result, args.png)
    if args.md:
        Path(args.md).write_text(markdown(result))


def markdown(result: dict) -> str:
    """One table per pass: median time (ratio to the baseline) and peak MB, targets x lengths."""
    cells = result["cells"]
    lengths = sorted({c["T"] for c in cells})
    targets = list(dict.fromkeys(c["target"] for c in cells))
    passes = sorted({c["pass"] for c in cells}, key=len)
    out = [f"Command: `{result['command']}`", "", f"Environment: {result['environment']}", ""]
    for pass_ in passes:
        out += [f"### {pass_}: median time (x baseline) / peak memory", ""]
        out.append("| target | " + " | ".join(f"T={T}" for T in lengths) + " |")
        out.append("|---" * (len(lengths) + 1) + "|")
        for t in targets:
            row = []
            for T in lengths:
                c = next((c for c in cells if c["target"] == t and c["T"] == T and c["pass"] == pass_), None)
                if c is None:
                    row.append("")
                elif c.get("median_s") is None:
                    row.append(f"skipped ({c.get('reason', '')})")
                else:
                    r = c.get("ratio_to_baseline")
                    txt = f"{c['median_s']:.3g} s"
                    if r is not None and t != result["baseline"]:
                        txt += f" (x{r:.2g})"
                    if c.get("peak_bytes"):
                        txt += f" / {c['peak_bytes'] / 2**20:.0f} MB"
                    if c.get("finite") is False:
                        txt += " NON-FINITE"
                    row.append(txt)
            out.append(f"| {t} | " + " | ".join(row) + " |")
        out.append("")
    return "\n".join(out) + "\n"


def plot(result: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    passes = sorted({c["pass"] for c in result["cells"]}, key=len)
    fig, axes = plt.subplots(1, len(passes) + 1, figsize=(5 * (len(passes) + 1), 4))
    targets = list(dict.fromkeys(c["target"] for c in result["cells"]))
    for ax, pass_ in zip(axes, passes):
        for t in targets:
            pts = [
                (c["T"], c["median_s"])
                for c in result["cells"]
                if c["target"] == t and c["pass"] == pass_ and c.get("median_s")
            ]
            if pts:
                ax.loglog(*zip(*pts), marker="o", label=t)
        ax.set_title(f"time, {pass_}")
        ax.set_xlabel("T")
        ax.set_ylabel("seconds (median)")
        ax.grid(True, which="both", alpha=0.3)
    ax = axes[-1]
    for t in targets:
        pts = [
            (c["T"], c["peak_bytes"] / 2**20)
            for c in result["cells"]
            if c["target"] == t and c["pass"] == "forward+backward" and c.get("peak_bytes")
        ]
        if pts:
            ax.loglog(*zip(*pts), marker="o", label=t)
    ax.set_title("peak memory, forward+backward")
    ax.set_xlabel("T")
    ax.set_ylabel("MB")
    ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
