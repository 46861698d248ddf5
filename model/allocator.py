"""Keep freed memory in the process, so each forward pass does not page-fault its activations in again.

glibc hands large allocations (activations, attention patterns) straight to the kernel with
mmap and unmaps them when freed, so every forward pass touches fresh pages: for
`run_with_cache` at 512 tokens that is ~350,000 page faults and about a third of its time.
Raising the mmap and trim thresholds lets freed blocks be reused. The cost: the process
keeps its peak memory instead of returning it. A server that runs forward passes all day
wants that trade; a library should not make it behind your back, so this is opt-in: the app
and the benchmarks call it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3


def keep_freed_memory(mmap_threshold: int = 1 << 30, trim_threshold: int = 1 << 31) -> bool:
    """Tune glibc's malloc for repeated large allocations; False where that is not possible."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mmap_ok = bool(libc.mallopt(M_MMAP_THRESHOLD, mmap_threshold))
        return mmap_ok and bool(libc.mallopt(M_TRIM_THRESHOLD, trim_threshold))
    except (OSError, AttributeError):  # not glibc (musl, ...): nothing to tune
        return False
