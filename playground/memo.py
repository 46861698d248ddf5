"""What a deterministic run gave, kept for the next visitor who asks the same: `Memo`.

A room opens the Decoding tab on the same example prompt at once; each comparison (beam search, greedy and a
seeded sample) holds the model for seconds. Their results depend only on the model, whose weights never change,
and on the inputs, so the first request computes and the rest are answered with its result, including those that
ask while it is still being computed (they wait for that run instead of queueing their own). Only results that
are a function of their key belong here: never a timing, never a visitor's state.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import TypeVar

T_ = TypeVar("T_")


class Memo:
    """The last `size` results by key. Callers share what it returns: they must not change it."""

    def __init__(self, size: int = 32):
        self.size = size
        self._done: OrderedDict[Hashable, object] = OrderedDict()
        self._running: dict[Hashable, threading.Event] = {}
        self._guard = threading.Lock()
        self.computed = 0  # how many times `compute` ran (tests read it)

    def get(self, key: Hashable, compute: Callable[[], T_]) -> T_:
        """compute()'s result for key: kept from an earlier call, awaited from one running now, or computed. If
        the run this call waited for failed, this call computes it (and may fail in its own way)."""
        while True:
            with self._guard:
                if key in self._done:
                    self._done.move_to_end(key)
                    return self._done[key]  # type: ignore[return-value]
                running = self._running.get(key)
                if running is None:
                    running = self._running[key] = threading.Event()
                    break
            running.wait()
        try:
            self.computed += 1
            value = compute()
            with self._guard:
                self._done[key] = value
                while len(self._done) > self.size:
                    self._done.popitem(last=False)
            return value
        finally:
            with self._guard:
                del self._running[key]
            running.set()
