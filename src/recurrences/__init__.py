"""recurrences: recurrent sequence layers from recent research, and the recurrences behind formulas
for mathematical constants.

The torch half lives in :mod:`recurrences.scan`, :mod:`recurrences.layers`, :mod:`recurrences.models`,
:mod:`recurrences.tasks` and :mod:`recurrences.train`; :mod:`recurrences.constants` imports no torch.
Submodules are imported on first use so that ``import recurrences`` stays cheap.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_SUBMODULES = ("scan", "layers", "models", "tasks", "train", "constants")


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"recurrences.{name}")
    raise AttributeError(f"module 'recurrences' has no attribute {name!r}")


__all__ = ["__version__", *_SUBMODULES]
