"""Inspect a trained one-layer AUSSM cycle-navigation model (checkpoint from explore.py --run-dir).

    python benchmarks/aussm/cycle_angles.py RUN_DIR [--top 8]

Fits, per (channel i, state j), theta_t = sum_{k=0..3} A_k[x_{t-k}] (one-hot tokens over the depthwise
conv's 4 taps) on random move sequences. The total rotation per move type is rot[v] = sum_k A_k[v]
(tokens 0: -1, 1: stay, 2: +1); a counter needs rot[+1] = -rot[-1] = m pi / 5 and rot[stay] = 0 (mod 2 pi)
for some m != 0 (even m counts mod 5; odd m counts mod 10, which a read-out that identifies opposite
phases can also use). Prints, for the pairs closest to such a counter, the errors of the three
rotations (mod 2 pi), and the injection |Delta * SiLU(u)| of the pair's channel at the first tokens and
later (an exact counter must inject at the first token only; see tests/test_layers_aussm.py).
"""

from __future__ import annotations

import argparse
import math

import torch
import torch.nn.functional as F
from angles import core_inputs, wrap  # benchmarks/aussm/angles.py (this script's folder is on sys.path)

TAPS = 4


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run_dir")
    p.add_argument("--top", type=int, default=8)
    p.add_argument("--modulus", type=int, default=5)
    a = p.parse_args(argv)
    x = torch.randint(0, 3, (64, 80), generator=torch.Generator().manual_seed(0))
    got = core_inputs(a.run_dir, x)
    if got is None:
        print(f"no checkpoint in {a.run_dir}")
        return 2
    th, dv, _ = got
    d, n = th.shape[2], th.shape[3]
    oh = F.one_hot(x, 3).double()
    X = torch.cat([oh[:, TAPS - 1 - k : x.shape[1] - k] for k in range(TAPS)], -1).reshape(-1, 3 * TAPS)
    unit = math.pi / a.modulus
    rows = []
    for i in range(d):
        for j in range(n):
            y = th[:, TAPS - 1 :, i, j].reshape(-1, 1)
            sol = torch.linalg.lstsq(X, y).solution[:, 0]
            residual = (X @ sol - y[:, 0]).abs().max().item()
            rot = sol.view(TAPS, 3).sum(0)
            m = round(wrap((rot[2] - rot[1]).item()) / unit)
            if m == 0:
                continue  # not a counter
            errs = (wrap(rot[1].item()), wrap(rot[2].item() - m * unit), wrap(rot[0].item() + m * unit))
            rows.append((sum(abs(e) for e in errs), i, j, m, errs, residual))
    rows.sort()
    print(f"{len(rows)} of {d * n} (channel, state) pairs rotate by a nonzero multiple of pi / {a.modulus}")
    for _, i, j, m, (e0, ep, em), res in rows[: a.top]:
        inj0 = dv[:, 0, i].abs().mean().item()
        inj = dv[:, TAPS:, i].abs().mean().item()
        print(
            f"channel {i:2d} state {j}: {m:+d} pi/{a.modulus} per move, rotation errors stay {e0:+.4f} +1 {ep:+.4f} -1 {em:+.4f} rad "
            f"(fit residual {res:.1e}); |Delta SiLU(u)| first token {inj0:.3g}, later {inj:.3g}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
