"""Turns at the model: short requests before long jobs' steps, in order; long jobs hand the model back between steps;
one long job per visitor. Each test is about order (who got the model when), never about how fast."""

from __future__ import annotations

import threading
import time

import pytest

from playground.errors import ModelBusyError, PromptError
from playground.turns import HeavyJobs, ModelGate


def _wait_until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.002)


def _taker(gate: ModelGate, order: list, name: str, heavy: bool) -> threading.Thread:
    """A thread that waits for its turn, notes its name, and gives the model back."""
    def take() -> None:
        gate.acquire(30, heavy=heavy, what=name)
        order.append(name)
        gate.release()
    thread = threading.Thread(target=take)
    thread.start()
    return thread


def test_short_requests_go_before_waiting_long_steps_and_each_line_keeps_its_order():
    gate, order, threads = ModelGate(), [], []
    gate.acquire()  # busy: everyone below waits
    for name, heavy in (("heavy 1", True), ("light 1", False), ("heavy 2", True), ("light 2", False)):
        threads.append(_taker(gate, order, name, heavy))
        _wait_until(lambda n=len(threads): gate.waiting == n)  # arrived in this order
    gate.release()
    for t in threads:
        t.join(10)
    assert order == ["light 1", "light 2", "heavy 1", "heavy 2"]


def test_a_long_job_hands_the_model_to_whoever_waits_between_its_steps():
    gate, order = ModelGate(), []
    assert gate.acquire(heavy=True, what="a sweep")
    assert gate.pause("a sweep") == 0.0 and gate.holder == "a sweep"  # no one waits: it keeps the model
    light = _taker(gate, order, "analysis", heavy=False)
    _wait_until(lambda: gate.waiting == 1)
    assert gate.locked() and order == []  # a step is never interrupted
    away = gate.pause("a sweep")  # between two steps: the analysis goes, then the job's next step
    order.append("sweep step 2")
    light.join(10)
    assert order == ["analysis", "sweep step 2"] and away > 0 and gate.holder == "a sweep"
    gate.release()
    assert not gate.locked() and gate.holder == ""


def test_two_long_jobs_take_turns_a_step_each():
    gate, order, done = ModelGate(), [], set()
    started = threading.Barrier(2)

    def other_waits(name: str) -> None:
        """Until the other job waits for the model (or has finished): a condition, not a pause."""
        deadline = time.monotonic() + 10
        while gate.waiting == 0 and ({"a", "b"} - {name}) - done:
            assert time.monotonic() < deadline
            time.sleep(0.001)

    def job(name: str) -> None:
        started.wait()
        gate.acquire(30, heavy=True, what=name)
        for step in range(3):
            order.append(name)
            other_waits(name)  # the other job has arrived while this step runs
            gate.pause(name)
        done.add(name)
        gate.release()

    threads = [threading.Thread(target=job, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sorted(order) == ["a"] * 3 + ["b"] * 3
    assert all(x != y for x, y in zip(order[1:5], order[2:6]))  # once both wait, they alternate


def test_a_request_that_waits_too_long_hears_what_holds_the_model_and_leaves_the_line():
    gate = ModelGate()
    gate.acquire(heavy=True, what="a patching sweep")
    with pytest.raises(ModelBusyError, match=r"waited 0.05 s, now a patching sweep"):
        gate.acquire(0.05)
    assert gate.waiting == 0
    done = threading.Event()
    assert gate.acquire(5, give_up=lambda: done.set() or True) is False and done.is_set() and gate.waiting == 0
    gate.release()
    assert gate.acquire(0.05) and gate.taken == 2


def test_one_long_job_per_visitor():
    jobs = HeavyJobs()
    with jobs.running("visitor A", "a patching sweep"):
        with pytest.raises(PromptError, match=r"You already have a patching sweep running"):
            jobs.start("visitor A", "a layer sweep")
        with jobs.running("visitor B", "a layer sweep"):  # another visitor may
            assert len(jobs) == 2 and jobs.of("visitor B") == "a layer sweep"
        with jobs.running(None, "a notebook's sweep"), jobs.running(None, "another"):  # no visitor: not counted
            assert len(jobs) == 1
    assert len(jobs) == 0
    with jobs.running("visitor A", "a layer sweep"):  # free again once the first ended
        assert jobs.of("visitor A") == "a layer sweep"


def test_an_analysis_waits_for_one_step_of_a_long_job_not_for_the_job(tiny_net, tiny_enc):
    """The runner's own long-job path (`_each_held`): an analysis that arrives during step 3 of a 10-step job is
    answered before step 5 starts (step 4 may already have been waiting at the gate)."""
    from playground.runner import ModelRunner

    runner = ModelRunner(tiny_net, tiny_enc, background_lens=False)
    log: list[str] = []
    arrived = threading.Event()

    def steps():
        for i in range(10):
            log.append(f"step {i}")
            time.sleep(0.02)  # a step takes a moment (the tiny model's would not)
            if i == 3:
                threading.Thread(target=lambda: (arrived.set(), runner.analyze("the cat sat", lens=False),
                                                 log.append("analysis"))).start()
                _wait_until(lambda: runner.gate.waiting >= 1)  # it waits at the gate while this step runs
            yield i

    assert list(runner._each_held(steps(), "a test job")) == list(range(10))
    _wait_until(lambda: "analysis" in log)
    assert log.index("analysis") < log.index("step 5"), log


def test_a_waiting_analysis_is_told_what_the_model_is_running(tiny_net, tiny_enc):
    from playground.runner import ModelRunner

    gate = ModelGate()
    runner = ModelRunner(tiny_net, tiny_enc, background_lens=False, gate=gate)
    said: list[str] = []
    gate.acquire(heavy=True, what="a patching sweep (resid)")
    waiting = threading.Thread(target=lambda: runner.analyze("the cat", progress=lambda _, what: said.append(what)))
    waiting.start()
    _wait_until(lambda: said)
    gate.release()
    waiting.join(10)
    assert said[0] == "Waiting for the model (now a patching sweep (resid), which lets analyses go first between its " \
                      "steps)", said
