"""Best-of-restarts on validation: per model, seeds grouped in blocks of R, each block reporting its run
with the best validation mean (the test buckets are never used to choose).

    python benchmarks/aussm/restarts.py --db /tmp/aussm_20k/runs.sqlite --task cycle_navigation \
        --restarts 3 --out benchmarks/aussm/formal_protocol_20k_restarts/restarts

Only finished runs of the named task whose train config matches the others' are used; a block is
reported once all its R seeds have finished. Writes OUT.json (every run's seed, validation mean and test
score, and the choice per block) and OUT.md (the table: mean +- sample std over the blocks, next to the
plain mean over the first block's seeds without selection).
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
from pathlib import Path


def _mean_std(xs: list[float]) -> str:
    if not xs:
        return "-"
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{statistics.fmean(xs):.3f} +- {sd:.3f}"


def _flat(d: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = json.dumps(v)
    return out


def model_labels(configs: list[dict]) -> list[str]:
    """A label per model config: the mixer, its layer count when not 1, and, where configs with the same
    mixer and layer count differ, the settings that tell them apart (e.g. "aussm (d_state=16)"), so that
    runs of two recipes in one store are never pooled."""
    bases = [
        c["mixer"] if c.get("n_layers", 1) == 1 else f"{c['mixer']} ({c['n_layers']} layers)" for c in configs
    ]
    flats = [_flat(c) for c in configs]
    labels = []
    for base, flat, cfg in zip(bases, flats, configs):
        group = [f for b, f in zip(bases, flats) if b == base]
        keys = sorted({k for f in group for k in f if len({g.get(k) for g in group}) > 1})
        prefix = f"mixer_options.{cfg['mixer']}."
        diff = [f"{k.removeprefix(prefix)}={json.loads(flat[k]) if k in flat else '-'}" for k in keys]
        labels.append(base if not diff else f"{base} ({', '.join(diff)})")
    return labels


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--db", required=True)
    p.add_argument("--task", required=True)
    p.add_argument("--restarts", type=int, default=3)
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    if a.restarts < 1:
        p.error("--restarts must be positive")
    con = sqlite3.connect(f"file:{a.db}?mode=ro", uri=True)
    rows = con.execute(
        "select model_config, train_config, seed, score, final from runs where task_name = ? and status = 'finished'",
        (a.task,),
    ).fetchall()
    if not rows:
        print(f"no finished runs of task {a.task!r} in {a.db}")
        return 2
    train_cfgs = {json.dumps({k: v for k, v in json.loads(tc).items() if k != "seed"}, sort_keys=True)
                  for _, tc, _, _, _ in rows}  # fmt: skip
    if len(train_cfgs) != 1:
        print(
            f"task {a.task!r}: runs with {len(train_cfgs)} different train configs; use one store per recipe"
        )
        return 2
    per_model: dict[str, dict[int, dict]] = {}
    labels = model_labels([json.loads(r[0]) for r in rows])
    for model, (_, _, seed, score, final) in zip(labels, rows):
        ev = json.loads(final)
        val = [v for k, v in ev.items() if k.startswith("val_")]
        if not val:
            print(f"{model} seed {seed}: no validation splits in its final evaluation (val_examples = 0?)")
            return 2
        per_model.setdefault(model, {})[seed] = {"seed": seed, "val": statistics.fmean(val), "score": score}
    R = a.restarts
    out: dict[str, dict] = {}
    for model, runs in sorted(per_model.items()):
        blocks = []
        for b in range(max(runs) // R + 1):
            seeds = list(range(b * R, (b + 1) * R))
            if not all(s in runs for s in seeds):
                continue
            best = max((runs[s] for s in seeds), key=lambda r: (r["val"], -r["seed"]))  # earliest on ties
            blocks.append(
                {"seeds": seeds, "chosen": best["seed"], "val": best["val"], "score": best["score"]}
            )
        plain = [runs[s]["score"] for s in range(R) if s in runs]
        out[model] = {
            "runs": [runs[s] for s in sorted(runs)],
            "blocks": blocks,
            "plain_first_block": plain,
            "plain_all": [runs[s]["score"] for s in sorted(runs)],
        }
    lines = [
        f"# {a.task}: best of {R} restarts on validation",
        "",
        f"Each block of {R} seeds reports its run with the best mean validation accuracy (validation",
        "buckets drawn from a separate stream); the score is that run's mean test accuracy over the unseen",
        f"lengths. 'no selection' is the plain mean over seeds 0..{R - 1}, and over every finished seed.",
        "",
        f"| model | blocks | best of {R} on validation (mean +- std) | chosen runs' scores "
        f"| no selection, seeds 0..{R - 1} | no selection, all seeds (n) |",
        "|---|---|---|---|---|---|",
    ]
    for model, o in out.items():
        scores = [b["score"] for b in o["blocks"]]
        chosen = ", ".join(f"{b['score']:.3f} (seed {b['chosen']})" for b in o["blocks"]) or "-"
        lines.append(
            f"| {model} | {len(o['blocks'])} | {_mean_std(scores)} | {chosen} "
            f"| {_mean_std(o['plain_first_block'])} | {_mean_std(o['plain_all'])} ({len(o['plain_all'])}) |"
        )
    base = Path(a.out)
    base.parent.mkdir(parents=True, exist_ok=True)
    for suffix, text in ((".json", json.dumps({"task": a.task, "restarts": R, "models": out}, indent=2)),
                         (".md", "\n".join(lines))):  # fmt: skip
        tmp = base.with_name(base.name + suffix + ".tmp")
        tmp.write_text(text + "\n")
        tmp.replace(base.with_name(base.name + suffix))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
