"""Turns at the shared model: who runs next (`ModelGate`), and one long job per visitor (`HeavyJobs`).

The model runs one request at a time. Requests wait in two lines: short ones (an analysis, a layer recomputed, one
generation step) and the steps of long jobs (a patching sweep's layer, a decoding strategy's token, a block of the
background lens). Whenever the model is free, the first short request goes; a long job's step goes only when no
short request waits. A long job hands the model back between two steps (`pause`) and waits for another turn at the
back of its line, so two long jobs take turns and a short request waits for one step of one of them at most. Each
holder says what it is, so a waiting visitor reads what they wait for. (A plain lock has no order: the thread that
releases it usually takes it straight back, and a long job starved everyone else.)
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator

from .errors import ModelBusyError, PromptError

GATE_POLL_S = 0.1  # a waiter also wakes this often (a release wakes every waiter at once), to report or give up


class ModelGate:
    """The model, to one holder at a time: short requests first, in the order they came, then long jobs' steps."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._held = False
        self._lines: dict[bool, deque] = {False: deque(), True: deque()}  # heavy? -> waiting tickets, oldest first
        self.holder = ""  # what holds the model now, for those who wait ("" when free or unsaid)
        self.taken = 0  # how many times the model was taken (tests count it)

    @property
    def waiting(self) -> int:
        """Requests waiting for the model."""
        return len(self._lines[False]) + len(self._lines[True])

    def locked(self) -> bool:
        return self._held

    def _turn(self, ticket: object, heavy: bool) -> bool:
        return not self._held and self._lines[heavy][0] is ticket and not (heavy and self._lines[False])

    def acquire(self, timeout: float = math.inf, heavy: bool = False, what: str = "",
                give_up: Callable[[], bool] | None = None, waiting: Callable[[], None] | None = None) -> bool:
        """Wait for this request's turn and take the model: True; False if `give_up()` came true first (checked at
        each wake, when `waiting()` is also called); ModelBusyError after `timeout` seconds."""
        line, ticket = self._lines[heavy], object()
        deadline = time.monotonic() + timeout
        with self._cond:
            line.append(ticket)
            taken = False
            try:
                while not self._turn(ticket, heavy):
                    if give_up is not None and give_up():
                        return False
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise ModelBusyError(timeout, self.holder)
                    if waiting is not None:
                        waiting()
                    self._cond.wait(min(left, GATE_POLL_S))
                line.popleft()
                self._held, self.holder, taken = True, what, True
                self.taken += 1
                return True
            finally:
                if not taken:
                    line.remove(ticket)
                    self._cond.notify_all()  # whoever was behind may be first now

    def release(self) -> None:
        with self._cond:
            self._held, self.holder = False, ""
            self._cond.notify_all()

    def pause(self, what: str = "") -> float:
        """Between two steps of a long job that holds the model: if anyone waits, hand the model over and take it
        back at the job's next turn (at the back of the long jobs' line). The seconds it was away (0 if no one
        waited), so a job that times itself can leave others' turns out."""
        with self._cond:
            if not self.waiting:
                return 0.0
        started = time.monotonic()
        self.release()
        self.acquire(heavy=True, what=what or self.holder)  # no time limit: the job already started, and lines move
        return time.monotonic() - started

    def __enter__(self) -> ModelGate:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class HeavyJobs:
    """The long jobs running, at most one per visitor (a Gradio session): a second is refused, naming the first."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._running: dict[str, tuple[str, float]] = {}  # visitor -> (what, started)

    def __len__(self) -> int:
        return len(self._running)

    def of(self, visitor: str) -> str | None:
        """What the visitor's long job is, if one runs."""
        job = self._running.get(visitor)
        return job[0] if job else None

    def start(self, visitor: str | None, what: str) -> None:
        """The visitor's long job begins (None: no visitor to count, e.g. a notebook); PromptError naming the job
        they already have running."""
        if visitor is None:
            return
        with self._mutex:
            if visitor in self._running:
                other, since = self._running[visitor]
                raise PromptError(f"You already have {other} running (for {time.monotonic() - since:.0f} s): one "
                                  f"long job at a time for each visitor. Wait for it to finish, or press its Stop.")
            self._running[visitor] = (what, time.monotonic())

    def finish(self, visitor: str | None) -> None:
        with self._mutex:
            self._running.pop(visitor, None)

    @contextlib.contextmanager
    def running(self, visitor: str | None, what: str) -> Iterator[None]:
        """The visitor's long job, for as long as the block runs."""
        self.start(visitor, what)
        try:
            yield
        finally:
            self.finish(visitor)
