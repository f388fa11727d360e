"""Before/after: per-token step() latency of RAT and attention at an older commit against the working tree.

    python benchmarks/rat/ab_step.py                       # batch 1, positions 1k/4k/16k, commit 37d171a
    python benchmarks/rat/ab_step.py --batch 16 --steps 10 --out ab_step_b16

The older `rat.py` and `attention.py` are read with `git show COMMIT:path`, written to a temporary
directory with their relative imports made absolute and their registrations dropped, and imported
from there. The old and new layers get the same weights and the same prompt, and the four decoders
take turns of ``--block`` steps (as in ``bench_rat.py generate``), so the before/after ratios are
measured under the same load. Results go to results/<out>.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from recurrences.layers import create_mixer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_rat import env_info, save, vars_of  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def load_old(commit: str, path: str, name: str, tmp: Path):
    """Import ``path`` as it was at ``commit`` under the module name ``name``."""
    src = subprocess.run(
        ["git", "show", f"{commit}:{path}"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    src = re.sub(r"^from \.\.(\w)", r"from recurrences.\1", src, flags=re.M)  # from .._optional
    src = re.sub(r"^from \.(\w)", r"from recurrences.layers.\1", src, flags=re.M)  # from ._rope, .base
    src = src.split("\nregister_mixer(")[0]  # the registrations sit at the end of both files
    file = tmp / f"{name}.py"
    file.write_text(src)
    spec = importlib.util.spec_from_file_location(name, file)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


@torch.no_grad()
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--commit", default="37d171a")
    ap.add_argument("--positions", type=int, nargs="+", default=[1024, 4096, 16384])
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--steps", type=int, default=40, help="rounds")
    ap.add_argument("--block", type=int, default=1, help="consecutive steps per decoder per round")
    ap.add_argument("--out", default="ab_step")
    args = ap.parse_args(argv)
    D, H, B, blk = 256, 4, args.batch, args.block
    with tempfile.TemporaryDirectory() as tmp:
        old_rat = load_old(args.commit, "src/recurrences/layers/rat.py", "old_rat", Path(tmp))
        old_att = load_old(args.commit, "src/recurrences/layers/attention.py", "old_attention", Path(tmp))
    torch.manual_seed(0)
    layers = {
        "rat (before)": old_rat.RAT(D, H, chunk_size=16).eval(),
        "rat (after)": create_mixer("rat", d_model=D, n_heads=H, chunk_size=16).eval(),
        "attention step (before)": old_att.Attention(D, H).eval(),
        "attention step (after)": create_mixer("attention", d_model=D, n_heads=H).eval(),
    }
    layers["rat (before)"].load_state_dict(layers["rat (after)"].state_dict())
    layers["attention step (before)"].load_state_dict(layers["attention step (after)"].state_dict())
    rows = []
    for P in args.positions:
        prompt = torch.randn(B, P, D)
        states = {k: m(prompt, return_state=True)[1] for k, m in layers.items()}
        xs = torch.randn(args.steps * blk + 1, B, D)
        outs: dict[str, list[torch.Tensor]] = {k: [] for k in layers}
        times: dict[str, list[float]] = {k: [] for k in layers}
        for k, m in layers.items():  # warm-up
            states[k] = m.step(xs[0], states[k])[1]
        for r in range(args.steps):
            for k, m in layers.items():
                for j in range(blk):
                    x = xs[1 + r * blk + j]
                    t0 = time.perf_counter()
                    y, states[k] = m.step(x, states[k])
                    dt = time.perf_counter() - t0
                    outs[k].append(y)
                    if blk == 1 or j > 0:
                        times[k].append(dt)
        for a, b in (("rat (before)", "rat (after)"), ("attention step (before)", "attention step (after)")):
            torch.testing.assert_close(torch.stack(outs[a]), torch.stack(outs[b]), rtol=1e-4, atol=1e-5)
        med = {k: 1e3 * statistics.median(v) for k, v in times.items()}
        row = {
            "position": P,
            "ms_per_token": med,
            "rat_after_vs_before": med["rat (before)"] / med["rat (after)"],
            "attention_after_vs_before": med["attention step (before)"] / med["attention step (after)"],
            "attention_after_over_rat_after": med["attention step (after)"] / med["rat (after)"],
        }
        print(json.dumps(row), flush=True)
        rows.append(row)
        save(args.out, {"env": env_info(), "config": vars_of(args), "rows": rows})


if __name__ == "__main__":
    main()
