"""Numeric core: first-order linear recurrences along time.

    h_t = a_t * h_{t-1} + b_t

:func:`linear_scan` is the one entry point; :mod:`recurrences.scan.reference` holds the sequential
ground truth, :mod:`recurrences.scan.chunked` the chunked form and :mod:`recurrences.scan.compiled` the
numba CPU kernel (optional: ``pip install 'recurrences[fast]'``; imported only when first used, so
importing this package never imports numba).
"""

from __future__ import annotations

from .api import METHODS, all_finite, linear_scan

__all__ = ["linear_scan", "all_finite", "METHODS"]
