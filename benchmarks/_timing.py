"""Timing loop shared by the benchmark scripts (run as ``python benchmarks/NAME.py``)."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np


def timeit(fn: Callable[[], object], runs: int, warmup: int = 10) -> np.ndarray:
    """Milliseconds per call of ``fn``, ``runs`` times after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    out = np.empty(runs)
    for i in range(runs):
        t0 = time.perf_counter()
        fn()
        out[i] = time.perf_counter() - t0
    return out * 1e3
