"""Optional modules imported on first use (so that importing recurrences never imports numba)."""

from __future__ import annotations

import importlib
from types import ModuleType

_cache: dict[str, ModuleType | Exception] = {}


def optional_import(name: str) -> ModuleType | Exception:
    """The module ``name``, imported once; the exception instead when the import failed.

    Any exception counts as "missing", not only ImportError: a numba that fails to load (an LLVM or
    NumPy mismatch) must let the callers fall back to their pure-PyTorch path.
    """
    if name not in _cache:
        try:
            _cache[name] = importlib.import_module(name)
        except Exception as err:  # noqa: BLE001 - see the docstring
            _cache[name] = err
    return _cache[name]
