"""`Memo`: a result computed once per key, shared with whoever asks meanwhile, the last few kept."""

from __future__ import annotations

import threading
import time
import types

import pytest

from playground.memo import Memo


def test_a_key_is_computed_once_and_the_oldest_is_forgotten():
    memo, calls = Memo(size=2), []

    def compute(key):
        calls.append(key)
        return [key]

    assert memo.get("a", lambda: compute("a")) == ["a"]
    assert memo.get("a", lambda: compute("a")) is memo.get("a", lambda: compute("a"))
    memo.get("b", lambda: compute("b"))
    memo.get("a", lambda: compute("a"))  # a is now the most recent
    memo.get("c", lambda: compute("c"))  # b goes
    memo.get("a", lambda: compute("a"))
    memo.get("b", lambda: compute("b"))
    assert calls == ["a", "b", "c", "b"] and memo.computed == 4


class Waits(threading.Event):
    """The Event a Memo hands to those who wait for a run under way, counting them as they start waiting."""

    waiting = 0
    guard = threading.Lock()

    def wait(self, timeout=None):
        with Waits.guard:
            Waits.waiting += 1
        return super().wait(timeout)


def until_waiting(n: int) -> None:
    """Until n callers wait on the run under way (a condition, not a pause)."""
    deadline = time.monotonic() + 10
    while Waits.waiting < n:
        assert time.monotonic() < deadline, Waits.waiting
        time.sleep(0.001)


@pytest.fixture()
def counted(monkeypatch):
    import playground.memo as memo_module

    Waits.waiting = 0  # only the Memo's own Events count (the tests' own are plain)
    monkeypatch.setattr(memo_module, "threading", types.SimpleNamespace(Event=Waits, Lock=threading.Lock))


def test_who_asks_while_it_is_computed_waits_for_that_run(counted):
    memo, started, release, calls = Memo(), threading.Event(), threading.Event(), []

    def slow():
        calls.append(1)
        started.set()
        release.wait(10)
        return "done"

    answers = []
    first = threading.Thread(target=lambda: answers.append(memo.get("k", slow)))
    first.start()
    assert started.wait(10)
    others = [threading.Thread(target=lambda: answers.append(memo.get("k", slow))) for _ in range(3)]
    for t in others:
        t.start()
    until_waiting(3)  # all three wait on the first run (none computes its own: calls stays [1])
    assert answers == [] and calls == [1]
    release.set()
    for t in [first, *others]:
        t.join(10)
    assert answers == ["done"] * 4 and calls == [1]


def test_a_failed_run_is_not_kept_and_a_waiter_runs_it_again(counted):
    memo, started, release = Memo(), threading.Event(), threading.Event()

    def failing():
        started.set()
        release.wait(10)
        raise RuntimeError("the model was busy")

    errors = []

    def first():
        try:
            memo.get("k", failing)
        except RuntimeError as e:
            errors.append(str(e))

    t = threading.Thread(target=first)
    t.start()
    assert started.wait(10)
    answers = []
    waiter = threading.Thread(target=lambda: answers.append(memo.get("k", lambda: "second try")))
    waiter.start()
    until_waiting(1)  # it waits on the run that will fail, then runs its own
    release.set()
    t.join(10)
    waiter.join(10)
    assert errors == ["the model was busy"] and answers == ["second try"]
    with pytest.raises(ValueError):
        memo.get("other", lambda: (_ for _ in ()).throw(ValueError("bad")))
    assert memo.get("other", lambda: 5) == 5  # nothing kept of the failure
