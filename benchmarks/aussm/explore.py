"""One length-generalisation run outside the arena, printing every evaluation (for exploring recipes).

    OMP_NUM_THREADS=1 python benchmarks/aussm/explore.py parity aussm --seed 1 --steps 6000 \
        --curriculum 2500 --weight-decay 0.1 --min-lr-ratio 0.001 --eval-every 1000 [--d-model 32] [--run-dir DIR]

Train lengths 1-40, test 41-256 (7 buckets, 64 sequences each); one layer, d_state 8, batch 64, lr 1e-2
unless told otherwise. The runs quoted in docs/aussm.md ("Without weight decay ...") used this script.
"""

from __future__ import annotations

import argparse
import json
import time

from recurrences.models import ModelConfig
from recurrences.tasks import create_task
from recurrences.train import TrainConfig, train


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("task")
    p.add_argument("mixer")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=6000)
    p.add_argument("--curriculum", type=int, default=2500, help="curriculum_steps (0 = off)")
    p.add_argument("--d-model", type=int, default=16)
    p.add_argument("--layers", type=int, default=1)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--min-lr-ratio", type=float, default=0.1)
    p.add_argument("--eval-every", type=int, default=1000)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--d-state", type=int, default=8)
    p.add_argument("--val", action="store_true", help="validation splits and select='best_val'")
    p.add_argument("--aussm", default="{}", help="extra AUSSM options as JSON, e.g. '{\"conv\": false}'")
    p.add_argument("--run-dir", default=None, help="keep the checkpoint (for angles.py)")
    a = p.parse_args(argv)
    task = create_task(
        a.task,
        train_lengths=(1, 40),
        test_lengths=(41, 256),
        curriculum_steps=a.curriculum,
        eval_examples=64,
        val_examples=64 if a.val else 0,
    )
    io = task.io
    mc = ModelConfig(
        mixer=a.mixer,
        n_layers=a.layers,
        d_model=a.d_model,
        n_heads=1,
        mlp_ratio=2.0,
        vocab_size=io.vocab_size,
        head="classify",
        n_outputs=io.n_outputs,
        pooling="last",
        mixer_options={
            "aussm": {"d_state": a.d_state, **json.loads(a.aussm)},
            "mamba": {"d_state": a.d_state},
        },
    )
    tc = TrainConfig(
        steps=a.steps,
        batch_size=a.batch,
        lr=a.lr,
        weight_decay=a.weight_decay,
        min_lr_ratio=a.min_lr_ratio,
        warmup_steps=20,
        eval_every=a.eval_every,
        eval_batch_size=64,
        log_every=100,
        threads=1,
        seed=a.seed,
        select="best_val" if a.val else "last",
    )
    t0 = time.time()
    r = train(mc, task, tc, progress=False, run_dir=a.run_dir)
    for h in r.history:
        if "eval" in h:
            print(h["step"], f"{h['score']:.3f}", {k: round(v, 2) for k, v in h["eval"].items()})
    print(
        f"{a.task} {a.mixer} seed {a.seed}: score {r.score:.3f} after {r.steps_done} steps, {time.time() - t0:.0f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
