"""Count canonical forms in a pipeline store and explain the differences with the upstream rule.

Upstream (euler2ai) grouped PCFs by the exact (a, b) pair: series PCFs from Euler's conversion
deflated (``deflate_all``), continued fractions as extracted (no inflation/deflation, no sign rule).
Our canonical form also deflates continued fractions and makes a's leading coefficient positive. This
script recomputes, for the same validated formulas, the upstream-style key next to ours and lists every
group of upstream-style forms that our canonical form merges, with the reason.

    python benchmarks/constants/canonical_count.py --db OUT/store.sqlite --out benchmarks/constants/canonical_count.json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict

from recurrences.constants.canonical import canonical_form
from recurrences.constants.convert import series_to_pcf
from recurrences.constants.pipeline import parse_formula
from recurrences.constants.store import Store


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--db", required=True)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    ours: dict[str, list[int]] = defaultdict(list)
    upstream: dict[str, list[int]] = defaultdict(list)
    up_of: dict[int, str] = {}
    our_of: dict[int, str] = {}
    source: dict[int, str] = {}
    with Store(args.db) as st:
        total = len(st.formula_ids())
        for fid in st.formula_ids():
            c = st.stage(fid, "convert")
            if c is None or c["status"] != "ok":
                continue
            v = st.stage(fid, "validate")["result"]
            f = parse_formula(v["text"])
            source[fid] = v.get("source", "")
            if f.kind == "series":
                e = series_to_pcf(f)
                up = canonical_form(e.a, e.b, fix_sign=False)  # upstream: deflate_all, no sign rule
                up_key = up.key
            else:
                up_key = json.dumps([str(f.a), str(f.b)])  # upstream: continued fractions as extracted
            key = c["result"]["canonical"]["key"]
            ours[key].append(fid)
            upstream[up_key].append(fid)
            up_of[fid], our_of[fid] = up_key, key
    merges = []
    for key, fids in ours.items():
        ups = sorted({up_of[f] for f in fids})
        if len(ups) > 1:
            merges.append({"canonical": key, "upstream_forms": ups, "formulas": fids})
    doc = {
        "formulas_in_store": total,
        "formulas_converted": len(up_of),
        "from_sympy_field": sum(1 for s in source.values() if s == "sympy"),
        "from_latex": sum(1 for s in source.values() if s != "sympy"),
        "canonical_forms_ours": len(ours),
        "forms_upstream_rule": len(upstream),
        "merged_by_our_canonical_form": len(upstream) - len(ours),
        "merges": merges,
        "singleton_forms_ours": sum(1 for f in ours.values() if len(f) == 1),
        "largest_form": max(len(f) for f in ours.values()) if ours else 0,
        "forms_only_from_latex_readings": sum(
            1 for f in ours.values() if all(source[x] != "sympy" for x in f)
        ),
    }
    print(json.dumps({k: v for k, v in doc.items() if k != "merges"}, indent=1))
    for m in merges:
        print("merged:", m["canonical"], "<-", m["upstream_forms"])
    if args.out:
        with open(args.out, "w") as f:
            json.dump(doc, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
