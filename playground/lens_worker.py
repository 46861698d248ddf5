"""The logit lens of a trace, computed a block of rows per hold of the model, in the foreground or the background.

After an analysis, `BackgroundLens` computes the trace's lens whenever no analysis is waiting, a block of rows at a
time; opening the Logit-lens tab then shows it at once, and opening it earlier finishes the rest in the foreground
(`advance_lens` from the tab's request, which picks up the background's job where it stands). Like the batcher, it
never sees the model: it is handed `hold` (a turn at the runner's gate, as a context manager yielding the model).
"""

from __future__ import annotations

import atexit
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from model.lens import ROWS_PER_MATMUL, LogitLens

from .batcher import Hold, Progress
from .errors import PromptError, TraceDropped
from .trace import Trace

BACKGROUND_LENS_JOBS = 4  # traces waiting for a background lens at most; older ones wait until shown
BACKGROUND_LENS_ROWS = 128  # (row, position) pairs per hold of the model in the background: about 0.1 s
BACKGROUND_WAIT_S = 1.0  # the background gives up a block after waiting this long for the model


@dataclass(eq=False)
class LensJob:
    """A logit-lens computation in progress (created on the first block, with the model held)."""

    lens: LogitLens | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


def advance_lens(hold: Hold, trace: Trace, key: str, rows: np.ndarray, wait_s: float,
                 progress: Progress | None = None, blocks: int | None = None,
                 block_rows: int = ROWS_PER_MATMUL) -> None:
    """Compute up to `blocks` blocks of `block_rows` lens rows of the trace's `rows` (R, T, D) (all with None),
    a block per hold of the model; the finished lens goes to trace.lens[key]."""
    with trace.lock:
        job = trace.lens_jobs.get(key)
        if job is None and key not in trace.lens:
            job = trace.lens_jobs[key] = LensJob()
    if job is None:
        return
    with job.lock:  # one thread advances a job at a time; the other waits, then finds it further on
        done = 0
        while key not in trace.lens and (blocks is None or done < blocks):
            if trace.dropped:
                raise TraceDropped()
            with hold(wait_s) as net:
                if job.lens is None:
                    next_ids = torch.tensor(np.append(trace.ids[1:], -1))
                    job.lens = LogitLens(net, torch.from_numpy(rows), next_ids)
                else:
                    job.lens.step(block_rows)
                if job.lens.done:
                    trace.lens[key] = job.lens.result()
                    trace.lens_jobs.pop(key, None)
            done += 1
            if progress is not None and job.lens is not None:
                progress(job.lens.fraction, "Computing the logit lens")


class BackgroundLens:
    """A thread computing the lens ("post" rows: the residual after each layer) of recent traces, newest first,
    a block at a time, only while nobody waits for an analysis."""

    def __init__(self, hold: Hold, busy: Callable[[], bool]) -> None:
        self._hold = hold
        self._busy = busy
        self._later: deque[Trace] = deque(maxlen=BACKGROUND_LENS_JOBS)  # the oldest fall off (computed when shown)
        self._wakeup = threading.Event()
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._work, name="background-lens", daemon=True)
        self._thread.start()
        atexit.register(self.close)  # a daemon thread inside torch at exit aborts the process

    def add(self, trace: Trace) -> None:
        """Compute this trace's lens when the model is idle."""
        self._later.append(trace)
        self._wakeup.set()

    def close(self) -> None:
        """Stop (after the current block)."""
        self._closing.set()
        self._wakeup.set()
        self._thread.join(timeout=10)

    def _work(self) -> None:
        while not self._closing.is_set():
            self._wakeup.wait()
            self._wakeup.clear()
            while self._later and not self._closing.is_set():
                trace = self._later.pop()  # the newest: its visitor is the likeliest to open the tab next
                try:
                    while "post" not in trace.lens and not trace.dropped and not self._closing.is_set():
                        if self._busy():
                            time.sleep(0.05)
                            continue
                        if trace.resid is None:
                            break
                        advance_lens(self._hold, trace, "post", trace.resid, BACKGROUND_WAIT_S, blocks=1,
                                     block_rows=BACKGROUND_LENS_ROWS)
                except PromptError:  # dropped, or the model stayed busy: it will be computed when shown
                    pass
