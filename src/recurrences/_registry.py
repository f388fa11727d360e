"""What the mixer and task registries share: loading a package's built-in modules once, and the error
for an unknown name."""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from collections.abc import Iterable

_LOADED: set[str] = set()


def load_package_modules(package: str) -> None:
    """Import every public module of ``package`` once (except ``base``), so their registrations run."""
    if package in _LOADED:
        return
    _LOADED.add(package)
    pkg = importlib.import_module(package)
    for info in pkgutil.iter_modules(pkg.__path__):
        if info.name != "base" and not info.name.startswith("_"):
            importlib.import_module(f"{package}.{info.name}")


def unknown_name(kind: str, name: object, known: Iterable[str]) -> KeyError:
    """``KeyError("unknown mixer 'lion_s'. Did you mean lion-s? Known mixers: ...")``."""
    known = sorted(known)
    close = difflib.get_close_matches(str(name), known, n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    return KeyError(f"unknown {kind} {name!r}.{hint} Known {kind}s: {', '.join(known)}")
