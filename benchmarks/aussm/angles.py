"""Inspect the angles a trained one-layer AUSSM parity model learnt (checkpoint from explore.py --run-dir).

    python benchmarks/aussm/angles.py RUN_DIR

Fits, per (channel i, state j), theta_t = c + sum_{k=0..3} alpha_k x_{t-k} (the depthwise conv mixes the
last 4 tokens) on random bit strings and prints the pairs whose total rotation per '1' (sum alpha) is
closest to pi, with the constant drift c per token (mod 2 pi): length generalisation to T needs c * T
well below pi / 2.
"""

from __future__ import annotations

import math
import sys

import torch

import recurrences.layers.aussm as aussm
from recurrences.models import ModelConfig, SequenceModel
from recurrences.train.checkpoint import load_checkpoint


def wrap(v: float) -> float:
    """v reduced to [-pi, pi)."""
    return (v + math.pi) % (2 * math.pi) - math.pi


def core_inputs(run_dir: str, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """(theta (B, T, d, n), Delta * SiLU(u) (B, T, d) in float64, C (n,)) that the checkpointed one-layer
    AUSSM model in ``run_dir`` computes on ``tokens`` (B, T); None when there is no checkpoint."""
    loaded = load_checkpoint(run_dir)
    if loaded is None:
        return None
    tensors, meta = loaded
    model = SequenceModel(ModelConfig.from_dict(meta["model_config"]))
    model.load_state_dict({k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")})
    model.eval()
    seen: dict[str, torch.Tensor] = {}
    form = aussm._FORMS["separable"]

    def spy(theta, dv, B, C, initial, **kw):
        seen.update(theta=theta, dv=dv, C=C)
        return form(theta, dv, B, C, initial, **kw)

    aussm._FORMS["separable"] = spy
    try:
        with torch.no_grad():
            model(tokens, torch.ones_like(tokens, dtype=torch.bool))
    finally:
        aussm._FORMS["separable"] = form
    return seen["theta"].double(), seen["dv"].double(), seen["C"]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print(__doc__)
        return 2
    x = torch.randint(0, 2, (64, 60), generator=torch.Generator().manual_seed(0))
    got = core_inputs(args[0], x)
    if got is None:
        print(f"no checkpoint in {args[0]}")
        return 2
    th, dv, C = got
    d, n = th.shape[2], th.shape[3]
    X = torch.stack([x[:, 3 - k : x.shape[1] - k] for k in range(4)], -1).double().reshape(-1, 4)
    X1 = torch.cat([torch.ones(len(X), 1, dtype=torch.float64), X], 1)

    rows = []
    for i in range(d):
        for j in range(n):
            t = th[:, 3:, i, j].reshape(-1, 1)
            coef = torch.linalg.lstsq(X1, t).solution.squeeze(1)
            resid = float((t.squeeze(1) - X1 @ coef).abs().max())
            c, alpha = float(coef[0]), coef[1:]
            rows.append((abs(wrap(float(alpha.sum()) - math.pi)), i, j, wrap(c), alpha, resid))
    rows.sort(key=lambda r: r[0])
    for err, i, j, c, alpha, resid in rows[:8]:
        print(
            f"channel {i:2d} state {j}: sum alpha - pi {err:+.4f}  drift c {c:+.4f}  alphas "
            f"{[round(float(v), 3) for v in alpha]}  fit residual {resid:.1e}  "
            f"|dv| {float(dv[:, 3:, i].abs().mean()):.3f}  |C_j| {float(C[j].abs()):.2f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
