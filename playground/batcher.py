"""Analyses waiting for the model, run together as batched forwards.

Analyses that arrive together run as one batched forward: the prompts are padded on the right, which changes
nothing for the real positions (causal attention never looks right), so each trace equals running its prompt
alone. Whoever holds the model next takes the oldest waiting analysis and every other that fits with it in
`MAX_BATCH_TOKENS` padded tokens (`pack`), and runs them. The batcher never sees the model: it is handed `hold`
(a turn at the runner's `ModelGate`, as a context manager that raises `ModelBusyError` after its wait) and `run` (a
batch of requests in, their traces out, called with the model held).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

from .errors import ModelBusyError
from .trace import Trace

MAX_BATCH_TOKENS = 1024  # padded tokens in one batched analysis (its logits alone are 200 MB at this size)
TOKEN_LAYER_S = 6e-5  # seconds per token per layer in a batched run on two AVX2 cores, until measured here

# hold(wait_s, give_up, waiting): the model when it is this request's turn, None if give_up() came true first (checked
# as it waits, calling waiting() too), ModelBusyError after wait_s.
Hold = Callable[[float, Callable[[], bool] | None, Callable[[], None] | None], AbstractContextManager]
Progress = Callable[[float, str], None]  # (fraction done, what is happening)


@dataclass(eq=False)
class PromptRequest:
    """One prompt waiting to be analysed, and what became of it."""

    ids: list[int]
    prompt: str
    chat: bool
    notes: list[str]
    done: threading.Event = field(default_factory=threading.Event)
    trace: Trace | None = None
    error: BaseException | None = None


def pack(waiting: list[PromptRequest], max_tokens: int = MAX_BATCH_TOKENS) -> list[PromptRequest]:
    """The oldest waiting analysis and every later one that still fits: batch size x longest prompt <= max_tokens."""
    if not waiting:
        return []
    batch, longest = [waiting[0]], len(waiting[0].ids)
    for request in waiting[1:]:
        padded = max(longest, len(request.ids))
        if (len(batch) + 1) * padded <= max_tokens:
            batch.append(request)
            longest = padded
    return batch


class Batcher:
    """The waiting list, and batched runs of it by whoever gets the model first."""

    def __init__(self, hold: Hold, run: Callable[[list[PromptRequest]], list[Trace]], n_layers: int,
                 max_tokens: int = MAX_BATCH_TOKENS, busy_with: Callable[[], str] = lambda: "") -> None:
        self._hold = hold
        self._busy_with = busy_with  # what holds the model now, for a waiting visitor
        self._run = run
        self._n_layers = n_layers
        self.max_tokens = max_tokens
        self._waiting: list[PromptRequest] = []
        self._mutex = threading.Lock()
        self._token_layer_s = TOKEN_LAYER_S  # measured on batched runs as they happen, for estimates
        self._last_active = time.monotonic()  # the last arrival or batched run

    @property
    def waiting(self) -> int:
        """Analyses waiting for the model."""
        return len(self._waiting)

    def quiet_for(self) -> float:
        """Seconds since an analysis last arrived or ran (0 while one waits): a burst arrives over a second or
        more, so background work waits for a quiet moment, not just an empty list."""
        return 0.0 if self._waiting else time.monotonic() - self._last_active

    def submit(self, request: PromptRequest, wait_s: float, progress: Progress | None = None) -> Trace:
        """Queue the request and return its trace once a batched run (ours or another request's) has made it;
        ModelBusyError if the model stays busy for wait_s."""
        with self._mutex:
            self._waiting.append(request)
            self._last_active = time.monotonic()
        deadline = time.monotonic() + wait_s
        reported = [None]  # what the visitor was last told (each report is a message to the browser)

        def report() -> None:
            with self._mutex:
                ahead = self._waiting.index(request) if request in self._waiting else 0
            busy = self._busy_with()
            said = (f"Waiting for the model: {ahead} analyses ahead" if ahead else "Waiting for the model") + \
                (f" (now {busy}, which lets analyses go first between its steps)" if busy else "")
            if said != reported[0]:
                progress(0.0, said)
                reported[0] = said

        while not request.done.is_set():
            try:
                with self._hold(max(0.0, deadline - time.monotonic()), request.done.is_set,
                                report if progress is not None else None) as net:
                    if net is not None:  # our turn (None: another run made our trace while we waited)
                        self._serve()
            except ModelBusyError:
                with self._mutex:
                    if request in self._waiting:
                        self._waiting.remove(request)
                        raise ModelBusyError(wait_s, self._busy_with()) from None  # the whole wait, not the last
                request.done.wait()  # already in a batch that is running
        if request.error is not None:
            raise request.error
        return request.trace

    def _serve(self) -> None:
        """With the model held: take a batch off the waiting list and run it."""
        with self._mutex:
            batch = pack(self._waiting, self.max_tokens)
            for request in batch:
                self._waiting.remove(request)
        if not batch:
            return
        try:
            started = time.perf_counter()
            for request, trace in zip(batch, self._run(batch)):
                request.trace = trace
            self.measured(time.perf_counter() - started, len(batch) * max(len(r.ids) for r in batch))
        except Exception as e:  # every visitor in the batch hears of it
            for request in batch:
                request.error = e
        finally:
            self._last_active = time.monotonic()
            for request in batch:
                request.done.set()

    def measured(self, seconds: float, tokens: int) -> None:
        """Learn the time per token-layer from a run of that many tokens through every layer (small runs are
        mostly overhead: not counted)."""
        if tokens >= 128:
            self._token_layer_s = 0.8 * self._token_layer_s + 0.2 * seconds / (tokens * self._n_layers)

    def estimate_seconds(self, token_layers: int) -> float:
        """About how long a run of that many token-layers takes here."""
        return token_layers * self._token_layer_s
