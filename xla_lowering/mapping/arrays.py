"""Array helpers the compiler calls on every op.

``np.unique`` of NumPy 2.3+ finds the distinct values of a plain 1-D array by hashing, which on the tile and
key arrays of a ResNet-50 compile is tens of times slower than sorting (seconds of a compile). ``distinct`` gives
the same result through a count over the value range when that range is small (tile numbers) and a sort
otherwise.
"""
from __future__ import annotations

import numpy as np


def distinct(values) -> np.ndarray:
    """The sorted distinct values of a 1-D integer array (``np.unique(values)``)."""
    a = np.asarray(values).reshape(-1)
    if len(a) == 0:
        return a.copy()
    lo, hi = int(a.min()), int(a.max())
    if lo >= 0 and hi < 4 * len(a) + 65536:
        return np.flatnonzero(np.bincount(a, minlength=hi + 1)).astype(a.dtype)
    s = np.sort(a, kind="stable")
    keep = np.empty(len(s), bool)
    keep[0] = True
    np.not_equal(s[1:], s[:-1], out=keep[1:])
    return s[keep]
