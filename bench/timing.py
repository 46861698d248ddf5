"""The benches' one timer: the median of several runs after a warm-up run (the first run pays for allocation)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def median(fn: Callable[[], object], repeats: int) -> float:
    """Seconds: the median of `repeats` runs of fn, after one run not counted."""
    fn()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)
