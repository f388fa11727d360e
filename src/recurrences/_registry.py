"""What the mixer and task registries share: loading a package's built-in modules once, and the error
for an unknown name."""

from __future__ import annotations

import difflib
import importlib
import inspect
import pkgutil
from collections.abc import Callable, Iterable
from typing import Any

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


def _accepted_options(factory: Callable[..., Any]) -> set[str] | None:
    """The keyword names ``factory`` accepts, following ``**kwargs`` up a class's ``__init__`` chain; None
    when the set is open (a ``**kwargs`` that reaches no closed signature) or cannot be read."""
    names: set[str] = set()
    chain = (
        [c.__init__ for c in inspect.getmro(factory) if "__init__" in vars(c)]
        if inspect.isclass(factory)
        else [factory]
    )
    for fn in chain:
        try:
            params = inspect.signature(fn).parameters.values()
        except (TypeError, ValueError):
            return None
        names.update(p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            return names - {"self"}
    return None


def bad_options(
    kind: str, name: str, factory: Callable[..., Any], options: dict[str, Any], err: TypeError
) -> TypeError:
    """The error for options that ``factory`` refused: the unknown ones by name, with close matches and the
    known ones, when the signature tells; else the factory's own message."""
    accepted = _accepted_options(factory)
    unknown = sorted(k for k in options if accepted is not None and k not in accepted)
    if not unknown:
        return TypeError(f"create_{kind}({name!r}): bad options {sorted(options)}: {err}")
    hints = []
    for k in unknown:
        close = difflib.get_close_matches(k, sorted(accepted or ()), n=1)
        hints.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    known = ", ".join(sorted(accepted or ()))
    return TypeError(f"create_{kind}({name!r}): unknown option(s) {', '.join(hints)}; known options: {known}")
