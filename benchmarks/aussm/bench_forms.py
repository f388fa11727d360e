"""Forward + backward time of the AUSSM mixer's forms against the sequential reference and Mamba.

For each length T, one (1, T, d_model) input goes through the whole mixer (projections, conv, the
recurrence, read-out) and ``y.sum().backward()`` runs; the time is the best of ``--repeats`` runs after
one warm-up (the sequential reference runs once, no warm-up). Cells whose predicted time is over
``--max-seconds`` are skipped and marked so. Ratios are against the sequential reference measured in
the same run.

    OMP_NUM_THREADS=1 python benchmarks/aussm/bench_forms.py --out benchmarks/aussm/bench_forms
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

from recurrences.layers import create_mixer


def time_fwd_bwd(m: torch.nn.Module, x: torch.Tensor, repeats: int, warmup: bool) -> float:
    def once() -> float:
        m.zero_grad(set_to_none=True)
        xx = x.detach().requires_grad_(True)
        t0 = time.perf_counter()
        m(xx).sum().backward()
        return time.perf_counter() - t0

    if warmup:
        once()
    return min(once() for _ in range(repeats))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--lengths", type=int, nargs="+", default=[1024, 4096, 16384, 65536])
    p.add_argument("--d-model", type=int, default=16)
    p.add_argument("--d-state", type=int, default=8)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--max-seconds", type=float, default=30.0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None, help="write OUT.json and OUT.md")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    d, n = args.d_model, args.d_state
    models = {
        "aussm/separable": create_mixer("aussm", d_model=d, d_state=n, form="separable"),
        "aussm/scan": create_mixer("aussm", d_model=d, d_state=n, form="scan"),
        "aussm/reference": create_mixer("aussm", d_model=d, d_state=n, form="reference"),
        "mamba/scan": create_mixer("mamba", d_model=d, d_state=n, form="scan"),
    }
    rows: list[dict] = []
    last: dict[str, tuple[int, float]] = {}
    for T in args.lengths:
        x = torch.randn(1, T, d)
        row: dict = {"T": T}
        for name, m in models.items():
            if name in last:
                T0, s0 = last[name]
                predicted = s0 * T / T0
                if predicted > args.max_seconds:
                    row[name] = None
                    row[name + " (skipped)"] = f"predicted {predicted:.0f} s > {args.max_seconds:.0f} s"
                    print(f"T={T:6d} {name:16s} skipped (predicted {predicted:.0f} s)", flush=True)
                    continue
            ref = name.endswith("reference")
            s = time_fwd_bwd(m, x, 1 if ref else args.repeats, warmup=not ref)
            last[name] = (T, s)
            row[name] = s
            print(f"T={T:6d} {name:16s} {s:8.3f} s", flush=True)
        r = row.get("aussm/reference")
        for name in models:
            if r and row.get(name):
                row[f"speedup {name} vs reference"] = r / row[name]
        if row.get("mamba/scan") and row.get("aussm/separable"):
            row["separable / mamba time"] = row["aussm/separable"] / row["mamba/scan"]
        rows.append(row)
    result = {
        "command": "python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]),
        "what": "forward + backward of the whole mixer on a (1, T, d_model) input, best of repeats",
        "d_model": d,
        "d_state": n,
        "threads": args.threads,
        "torch": torch.__version__,
        "machine": platform.platform(),
        "note": "2 CPU cores shared with other jobs; absolute times are noisy, ratios are from the same run",
        "rows": rows,
    }
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
        lines = [
            f"# AUSSM forms: forward + backward time (d_model={d}, d_state={n}, batch 1, {args.threads} thread)",
            "",
            f"Command: `{result['command']}`",
            "",
            "| T | separable (s) | scan (s) | reference (s) | mamba scan (s) | separable speed-up vs reference "
            "| separable / mamba |",
            "|---|---|---|---|---|---|---|",
        ]

        def fmt(v, spec=".3f"):
            return f"skipped (>{args.max_seconds:g}s)" if v is None else format(v, spec)

        for row in rows:
            sp = row.get("speedup aussm/separable vs reference")
            lines.append(
                f"| {row['T']} | {fmt(row.get('aussm/separable'))} | {fmt(row.get('aussm/scan'))} | "
                f"{fmt(row.get('aussm/reference'))} | {fmt(row.get('mamba/scan'))} | "
                f"{'-' if sp is None else f'{sp:.0f}x'} | {fmt(row.get('separable / mamba time'), '.2f')} |"
            )
        lines += ["", result["note"] + "."]
        out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
