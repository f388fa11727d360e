"""``recurrences constants <verb>``: the formulas-for-constants pipeline from the command line.

Verbs
  run        all stages over a corpus (default: the embedded classic-π corpus), resumable
  validate   evaluate one formula and identify its value, e.g. "PCF(2, (2*n+1)**2)"
  convert    a series' Euler PCF and the canonical form of the result (with the limits carried over)
  canonical  the canonical form of a continued fraction
  dynamics   delta and r of a continued fraction
  read       the formulas the LaTeX reader finds in one equation
  report     re-print the summary and rewrite the histogram and JSON export of a store
Formula strings are parsed with the whitelisting parser (recurrences.constants.safe_parse), never eval.
Imports no torch.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

USAGE = __doc__


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--constant", default="pi", help="pi (default), e, zeta3 or catalan")
    p.add_argument("--digits", type=int, default=50, help="verified digits required (default 50)")
    p.add_argument("--budget", type=float, default=30.0, help="seconds per formula per stage (default 30)")


def _run(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="recurrences constants run", description="Run every stage over a corpus."
    )
    p.add_argument("--corpus", default=None, help="JSONL (harvested.jsonl format), .tex file or folder")
    p.add_argument("--db", default=None, help="SQLite store (default OUT/store.sqlite)")
    p.add_argument("--out", default="constants_out", help="folder for the summary, histogram and JSON export")
    p.add_argument("--jobs", type=int, default=1, help="worker processes (0 = in-process)")
    p.add_argument("--depth", type=int, default=4000, help="dynamics depth N (L from 2N); default 4000")
    p.add_argument(
        "--use-sympy-field", action="store_true", help="read rows from their `sympy` field if present"
    )
    p.add_argument("--retry", action="store_true", help="redo stages that failed or timed out")
    p.add_argument("--limit", type=int, default=None, help="only the first LIMIT corpus rows")
    p.add_argument("--no-progress", action="store_true")
    _common(p)
    args = p.parse_args(argv)
    from .pipeline import Config, load_corpus, run_pipeline
    from .report import delta_histogram, export_json, format_summary, forms_table
    from .store import Store

    cfg = Config(
        constant=args.constant,
        digits=args.digits,
        budget=args.budget,
        depth=args.depth,
        jobs=args.jobs,
        use_sympy_field=args.use_sympy_field,
        progress=not args.no_progress,
    )
    rows = load_corpus(args.corpus, constant=cfg.constant)
    if args.limit is not None:
        rows = rows[: args.limit]
    out = Path(args.out)
    db = Path(args.db) if args.db else out / "store.sqlite"
    with Store(db) as store:
        if args.retry:
            store.retry()
        s = run_pipeline(store, rows, cfg)
        print(format_summary(s))
        print("\ncanonical forms (most formulas first):")
        for r in forms_table(store, 15):
            d = "-" if r["delta"] is None else f"{r['delta']:.4f}"
            rate = "-" if r["rate"] is None else f"{r['rate']:.4f}"
            print(f"  {r['formulas']:>4}  PCF({r['a']}, {r['b']})  = {r['limit']}   delta {d}  r {rate}")
        png = delta_histogram(store, out / "delta_histogram.png")
        js = export_json(store, out / "export.json")
        (out / "summary.json").write_text(json.dumps(s, indent=1))
        print(f"\nstore: {db}\nexport: {js}" + (f"\nhistogram: {png}" if png else ""))
    return 0


def _formula_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("formula", help='e.g. "PCF(2, (2*n+1)**2)" or "Sum((-1)**k/(2*k+1), (k, 0, oo))"')


def _validate(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="recurrences constants validate", description="Evaluate and identify one formula."
    )
    _formula_arg(p)
    p.add_argument("--claimed", default=None, help="the value it should have, e.g. pi/4")
    _common(p)
    args = p.parse_args(argv)
    from .pipeline import convert_text, run_tasks, validate_text

    res: dict = {}
    kw = {"constant": args.constant, "digits": args.digits, "target": args.claimed}
    run_tasks(
        [(0, validate_text, (args.formula,), kw)],
        lambda _k, r, s: res.update(r, seconds=round(s, 3)),
        jobs=1,
        budget=args.budget,
    )
    if res.get("status") == "ok":
        conv = convert_text(res["text"], res.get("mobius"), constant=args.constant)
        res["canonical"] = conv.get("canonical", {}).get("text")
        res["canonical_value"] = conv.get("canonical_value")
    print(json.dumps(res, indent=1))
    return 0 if res.get("status") == "ok" else 1


def _convert(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="recurrences constants convert", description="Euler PCF and canonical form."
    )
    _formula_arg(p)
    _common(p)
    args = p.parse_args(argv)
    from .pipeline import convert_text, validate_text

    v = validate_text(args.formula, constant=args.constant, digits=args.digits)
    res = convert_text(args.formula, v.get("mobius"), constant=args.constant)
    res["value"] = v.get("limit")
    print(json.dumps(res, indent=1))
    return 0 if res.get("status") == "ok" else 1


def _canonical(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="recurrences constants canonical", description="Canonical form of a PCF."
    )
    _formula_arg(p)
    args = p.parse_args(argv)
    from .canonical import canonical_of
    from .pipeline import parse_formula

    f = parse_formula(args.formula)
    if f.kind != "cf":
        from .convert import series_to_pcf

        f = series_to_pcf(f).pcf
    c = canonical_of(f)
    print(json.dumps({"canonical": str(c), "transform": list(c.transform), "notes": list(c.notes)}, indent=1))
    return 0


def _dynamics(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="recurrences constants dynamics", description="delta and r of a PCF.")
    _formula_arg(p)
    p.add_argument("--depth", type=int, default=4000)
    args = p.parse_args(argv)
    from .dynamics import dynamics
    from .pipeline import parse_formula

    f = parse_formula(args.formula)
    if f.kind != "cf":
        from .convert import series_to_pcf

        f = series_to_pcf(f).pcf
    print(json.dumps(dynamics(f.a, f.b, args.depth).to_dict(), indent=1))
    return 0


def _read(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="recurrences constants read", description="Read formulas from LaTeX.")
    p.add_argument("latex")
    args = p.parse_args(argv)
    from .latex import read_latex

    readings = read_latex(args.latex)
    for r in readings:
        print(json.dumps({"formula": str(r.formula), "stated_value": str(r.stated_value), "notes": r.notes}))
    if not readings:
        print(
            "recurrences constants read: no series or continued fraction found in the input", file=sys.stderr
        )
        return 1
    return 0


def _report(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="recurrences constants report", description="Summarise a store.")
    p.add_argument("--db", required=True)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    from .report import delta_histogram, export_json, format_summary, summary
    from .store import Store

    if not Path(args.db).exists():
        print(f"recurrences constants report: --db {args.db}: no such file", file=sys.stderr)
        return 2
    with Store(args.db) as store:
        print(format_summary(summary(store)))
        if args.out:
            delta_histogram(store, Path(args.out) / "delta_histogram.png")
            export_json(store, Path(args.out) / "export.json")
    return 0


VERBS = {
    "run": _run,
    "validate": _validate,
    "convert": _convert,
    "canonical": _canonical,
    "dynamics": _dynamics,
    "read": _read,
    "report": _report,
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    verb, rest = argv[0], argv[1:]
    if verb not in VERBS:
        # verbs provided by the reader modules (e.g. harvest) when they define cli_main
        if verb == "harvest":
            from . import harvest

            fn = getattr(harvest, "cli_main", None)
            if fn is not None:
                return int(fn(rest) or 0)
        print(f"recurrences constants: unknown verb {verb!r}\n{USAGE}", file=sys.stderr)
        return 2
    try:
        return int(VERBS[verb](rest) or 0)
    except (ValueError, FileNotFoundError) as exc:
        print(f"recurrences constants {verb}: {exc}", file=sys.stderr)
        return 2


__all__ = ["main"]
