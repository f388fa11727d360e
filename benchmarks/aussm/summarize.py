"""Summarise an arena run store as mean +- std of the headline score per (task, model) over seeds.

    python benchmarks/aussm/summarize.py --db /tmp/aussm_formal2/runs.sqlite --out benchmarks/aussm/formal/summary

writes OUT.json (per-seed scores and per-split values too) and OUT.md (the table).
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
from pathlib import Path

from restarts import model_labels  # benchmarks/aussm/restarts.py (this script's folder is on sys.path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--db", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--title", default="AUSSM arena summary")
    args = p.parse_args(argv)
    con = sqlite3.connect(f"file:{args.db}?mode=ro", uri=True)
    rows = con.execute(
        "select task_name, task_config, model_config, seed, status, score, final, seconds from runs order by seed"
    ).fetchall()
    cells: dict[tuple[str, str], dict] = {}
    models = model_labels([json.loads(r[2]) for r in rows])  # runs of two recipes are never pooled
    for model, (task, tcfg, _, seed, status, score, final, seconds) in zip(models, rows):
        tc = json.loads(tcfg)
        label = task if "dataset" not in tc else f"{task}-{tc['dataset']}"
        cell = cells.setdefault((label, model), {"task": label, "model": model, "runs": []})
        fin = json.loads(final) if final else {}
        cell["runs"].append(
            {"seed": seed, "status": status, "score": score, "seconds": seconds, "eval": fin.get("eval", fin)}
        )
    out_rows = []
    for cell in cells.values():
        scores = [r["score"] for r in cell["runs"] if r["status"] == "finished" and r["score"] is not None]
        cell["n_finished"] = len(scores)
        cell["mean"] = statistics.fmean(scores) if scores else None
        cell["std"] = statistics.stdev(scores) if len(scores) > 1 else 0.0 if scores else None
        out_rows.append(cell)
    tasks = sorted({c["task"] for c in out_rows})
    models = sorted({c["model"] for c in out_rows})
    lines = [
        f"# {args.title}",
        "",
        "Headline score (mean accuracy over the unseen-length buckets for formal tasks, test accuracy for UCR),",
        "mean +- sample std over finished seeds (n).",
        "",
        "| task | " + " | ".join(m.replace("|", "\\|") for m in models) + " |",
        "|---|" + "---|" * len(models),
    ]
    for t in tasks:
        cols = []
        for m in models:
            c = cells.get((t, m))
            if not c or c["mean"] is None:
                cols.append("-")
            else:
                cols.append(f"{c['mean']:.3f} +- {c['std']:.3f} ({c['n_finished']})")
        lines.append(f"| {t} | " + " | ".join(cols) + " |")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"title": args.title, "cells": out_rows}, indent=2) + "\n")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
