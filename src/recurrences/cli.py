"""The ``recurrences`` command: ``recurrences train | arena | bench | report | constants ...``.

Each verb lives in its own module and is imported only when used, so ``recurrences constants`` never
imports torch.
"""

from __future__ import annotations

import importlib
import os
import sqlite3
import sys

# verb -> (module, function taking argv list and returning an exit code)
VERBS = {
    "train": ("recurrences.train.cli", "train_main"),
    "arena": ("recurrences.train.cli", "arena_main"),
    "report": ("recurrences.train.cli", "report_main"),
    "bench": ("recurrences.train.cli", "bench_main"),
    "constants": ("recurrences.constants.cli", "main"),
}

USAGE = """usage: recurrences <command> [options]

commands:
  arena       train and compare models on a task suite (default: the quick preset)
  train       train one model on one task
  bench       time mixers and forms against a baseline
  report      re-render the arena report from the run store
  constants   formulas for mathematical constants (run, harvest, read, validate, ...)

Run `recurrences <command> --help` for the options of a command."""


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    if argv[0] in ("--version", "-V"):
        from recurrences import __version__

        print(__version__)
        return 0
    verb, rest = argv[0], argv[1:]
    if verb not in VERBS:
        print(f"recurrences: unknown command {verb!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    mod, fn = VERBS[verb]
    try:
        return int(getattr(importlib.import_module(mod), fn)(rest) or 0)
    except KeyboardInterrupt:
        print(f"\nrecurrences {verb}: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    except (ValueError, TypeError, KeyError, OSError, sqlite3.Error) as e:
        # Bad input from the user (a value, a name, a file): one line naming it, not a traceback.
        # RECURRENCES_DEBUG=1 shows the traceback.
        if os.environ.get("RECURRENCES_DEBUG"):
            raise
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"recurrences {verb}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
