"""Timing and allocation primitives shared by every measurement."""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from typing import Any

# -- measurements --------------------------------------------------------------------------------


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def median_time(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    runs, value = [], None
    for _ in range(repeat):
        gc.collect()
        t, value = timed(fn)
        runs.append(t)
    return statistics.median(runs), value


def peak_alloc_mb(fn: Callable[[], Any]) -> float:
    import tracemalloc

    gc.collect()
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()
