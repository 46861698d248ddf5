"""ui.py: what every tab shares (numbers from controls, clamping, binding a handler, Stop, presenter scaling)."""

from __future__ import annotations

import copy
import inspect
import math

import gradio as gr
import pytest

from playground import ui


@pytest.mark.parametrize("value,kwargs,message", [
    (math.nan, {}, "must be a number"), ("3", {}, "must be a number"), (False, {}, "must be a number"),
    (2.5, dict(whole=True), "must be a whole number"), (7, dict(low=0, high=5), "must be in 0..5"),
])
def test_number_names_the_setting_and_what_it_must_be(value, kwargs, message):
    with pytest.raises(ValueError, match=f"^Top-k {message}"):
        ui.number(value, "Top-k", **kwargs)


def test_number_clamp_and_layer_head(tiny_cfg):
    assert ui.number(4.0, "x", 0, 5, whole=True) == 4 and type(ui.number(4.0, "x", whole=True)) is int
    assert ui.clamp(99, 0, 5) == 5 and ui.clamp(-3, 0, 5) == 0 and ui.clamp(None, 0, 5) == 0
    assert ui.layer_head(tiny_cfg, 99, -1) == (tiny_cfg.n_layers - 1, 0)
    assert ui.grid_side(9) == 3 and ui.grid_side(6) == 6 and ui.grid_side(16) == 4


def test_presenter_scale():
    assert ui.font_scale(False) == 1.0 and ui.font_scale(True) == ui.PRESENTER_SCALE > 1


def test_bind_fixes_the_runner_and_keeps_what_gradio_reads():
    def handler(runner, trace, layer: int, evt: gr.SelectData):
        return runner, trace, layer, evt

    bound = ui.bind(handler, "RUNNER")
    assert list(inspect.signature(bound).parameters) == ["trace", "layer", "evt"]
    assert bound.__annotations__["evt"] is gr.SelectData  # Gradio finds event data by this hint
    assert bound("t", 3, "e") == ("RUNNER", "t", 3, "e")

    def stream(runner, n):
        yield from range(n)

    assert list(ui.bind(stream, None)(3)) == [0, 1, 2] and inspect.isgeneratorfunction(ui.bind(stream, None))


def test_stop_is_per_session_and_says_what_happens():
    flag = ui.StopFlag()
    other = copy.deepcopy(flag)  # Gradio copies a state's default for each new session
    assert other is not flag
    note = ui.pressing(flag, "Measured 2 of 7 drafts.")
    assert flag.pressed and not other.pressed
    assert note.startswith("Measured 2 of 7 drafts.") and note.endswith("⏹ Stopping after the step under way …")
    flag.clear()
    assert not flag.pressed and ui.pressing(None, None) == "⏹ Stopping after the step under way …"


def test_event_kinds_are_what_the_contract_says():
    assert ui.READ_ONLY["concurrency_limit"] is None
    assert ui.LAYER_VIEW["concurrency_limit"] == ui.LAYER_VIEWS_AT_ONCE and ui.LAYER_VIEW["concurrency_id"]
    assert ui.MODEL_RUN["concurrency_limit"] == ui.MODEL_CONCURRENCY
    assert ui.SERVER_THREADS > ui.ANALYSES_AT_ONCE >= 100  # a lecture hall's burst reaches the runner together
    named = ui.scriptable(ui.READ_ONLY, "x")
    assert named["api_name"] == "x" and named["api_visibility"] == "undocumented" and named["concurrency_limit"] is None


class _Request:
    def __init__(self, session_hash: str) -> None:
        self.session_hash = session_hash


def test_heavy_job_runs_one_long_job_per_visitor_and_gradio_sees_the_request_first(tiny_runner):
    def sweep(runner, trace, n: int, *controls):
        for i in range(n):
            yield f"step {i}", controls

    def measure(runner, trace):
        return "measured"

    job = ui.heavy_job(sweep, tiny_runner, "a test sweep")
    params = list(inspect.signature(job).parameters.values())
    assert params[0].name == "request" and params[0].annotation is gr.Request and params[1].name == "trace"
    assert inspect.isgeneratorfunction(job)
    first = job(_Request("A"), None, 3, "x")
    assert next(first) == ("step 0", ("x",))
    with pytest.raises(gr.Error, match="You already have a test sweep running"):
        next(job(_Request("A"), None, 3))
    with pytest.raises(gr.Error, match="You already have a test sweep running"):
        ui.heavy_job(measure, tiny_runner, "a measurement")(_Request("A"), None)
    assert list(job(_Request("B"), None, 2)) == [("step 0", ()), ("step 1", ())]  # another visitor
    first.close()  # the visitor left (Gradio closes the generator)
    assert ui.heavy_job(measure, tiny_runner, "a measurement")(_Request("A"), None) == "measured"
    assert len(tiny_runner.jobs) == 0
