"""Summaries, the delta histogram and the JSON export of a constants store."""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from pathlib import Path

import sympy as sp

from .canonical import _poly_expr
from .identify import mobius_expr
from .store import Store


def summary(store: Store) -> dict:
    """Counts per stage and status, failure reasons, canonical forms and claim matches."""
    counts = store.stage_counts()
    reasons = store.reason_counts()
    n = len(store.formula_ids())
    matched = unmatched = unknown = target_ok = 0
    by_source: Counter = Counter()
    for fid in store.formula_ids():
        v = store.stage(fid, "validate")
        if v is None or v["status"] != "ok":
            continue
        by_source[v["result"].get("source", "")] += 1
        target_ok += v["result"].get("matches_target") is True
        m = v["result"].get("matches_claim")
        if m is True:
            matched += 1
        elif m is False:
            unmatched += 1
        else:
            unknown += 1
    pcfs = store.pcfs()
    linked = Counter(link["pcf_id"] for link in store.links())
    degrees = Counter(f"({p['deg_a']},{p['deg_b']})" for p in pcfs if linked[p["id"]])
    dyn = Counter(p["dyn_status"] or "pending" for p in pcfs)
    sizes = Counter(linked.values())
    return {
        "formulas": n,
        "stages": counts,
        "failure_reasons": reasons,
        "validated_by_source": dict(by_source),
        "claims": {"matched": matched, "differ": unmatched, "no_claim": unknown},
        "equal_to_stated_or_claimed": target_ok,
        "canonical_forms": sum(1 for p in pcfs if linked[p["id"]]),
        "formulas_per_form": {str(k): v for k, v in sorted(sizes.items())},
        "degrees": dict(degrees.most_common()),
        "dynamics": dict(dyn),
    }


def format_summary(s: dict) -> str:
    lines = [f"formulas: {s['formulas']}"]
    for stage in ("read", "validate", "convert"):
        c = s["stages"].get(stage, {})
        parts = ", ".join(f"{k} {v}" for k, v in sorted(c.items()))
        lines.append(f"  {stage:<9} {parts or '-'}")
        for reason, k in sorted(s["failure_reasons"].get(stage, {}).items(), key=lambda x: -x[1]):
            lines.append(f"      {k:>4}  {reason}")
    cl = s["claims"]
    lines.append(
        f"  validated and equal to the claimed value: {cl['matched']}; differ: {cl['differ']}; no claim: {cl['no_claim']}"
    )
    lines.append(
        f"  validated and equal to the value the equation states (or claims): {s['equal_to_stated_or_claimed']}"
    )
    lines.append(f"canonical forms: {s['canonical_forms']}  (formulas per form: {s['formulas_per_form']})")
    lines.append(f"  degree pairs: {s['degrees']}")
    lines.append(f"  dynamics: {s['dynamics']}")
    return "\n".join(lines)


def forms_table(store: Store, limit: int | None = 20) -> list[dict]:
    """Canonical forms, most formulas first."""
    out = []
    for p in store.pcfs():
        fids = store.pcf_formulas(p["id"])
        if not fids:
            continue
        lim = p["limit_mobius"]
        out.append(
            {
                "a": str(_poly_expr(p["a"])),
                "b": str(sp.factor(_poly_expr(p["b"]))),
                "formulas": len(fids),
                "limit": str(mobius_expr(tuple(lim), p["constant"] or "pi")) if lim else None,
                "delta": p["delta"],
                "rate": p["rate"],
            }
        )
    out.sort(key=lambda r: (-r["formulas"], len(r["a"]) + len(r["b"])))
    return out if limit is None else out[:limit]


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def export_json(store: Store, path: str | Path) -> Path:
    """Everything in the store as one JSON document (formulas with stage results, canonical PCFs)."""
    formulas = []
    for fid in store.formula_ids():
        f = store.formula(fid)
        f["stages"] = {s: store.stage(fid, s) for s in ("read", "validate", "convert")}
        formulas.append(f)
    doc = {"summary": summary(store), "formulas": formulas, "pcfs": store.pcfs(), "links": store.links()}
    path = Path(path)
    _atomic_write(path, json.dumps(doc, indent=1, default=str).encode())
    return path


def delta_histogram(store: Store, path: str | Path) -> Path | None:
    """A PNG histogram of delta over canonical forms (None when no delta is known)."""
    deltas = [p["delta"] for p in store.pcfs() if p["delta"] is not None and store.pcf_formulas(p["id"])]
    if not deltas:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist(deltas, bins=[-1.05 + 0.025 * i for i in range(48)], color="#3a6ea5", edgecolor="white")
    ax.set_xlabel("irrationality measure δ (depth %s)" % (store.pcfs()[0]["depth"] or "?"))
    ax.set_ylabel("canonical PCFs")
    ax.set_title(f"δ of {len(deltas)} canonical PCFs")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)
    return path


__all__ = ["delta_histogram", "export_json", "format_summary", "forms_table", "summary"]
