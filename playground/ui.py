"""What every tab shares: the contract between a tab and the shell, event options, and small helpers.

A tab is a module with `build(ctx: TabContext) -> TabView` (and, if it styles HTML of its
own, a `CSS` string). The shell hands each tab the same context (the runner, the visitor's
trace, presenter mode, the active tab) and wires
the view it gets back: `render` after every Analyze, `on_show` when the tab is opened.
Handlers are module-level functions whose first argument is the runner; `bind` fixes it
for Gradio, keeping the signature Gradio inspects for event data.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass

import gradio as gr
import numpy as np

from .runner import ModelRunner

# Event options. READ_ONLY: handlers that only read a visitor's own state: no model run, so any
# number may run at once, hidden from the API, no progress spinner. MODEL_RUN: handlers that
# run the shared model: two at a time through Gradio's queue (the runner's lock then orders them).
MODEL_CONCURRENCY = 2
READ_ONLY = dict(concurrency_limit=None, api_visibility="private", show_progress="hidden")
MODEL_RUN = dict(concurrency_limit=MODEL_CONCURRENCY, api_visibility="private")

SESSION_TTL_S = 3600  # a visitor's state is dropped an hour after their last use, or when the page closes
PRESENTER_SCALE = 1.5  # text and figure size in presenter mode


def font_scale(large: bool) -> float:
    """How much bigger text and figures are drawn: presenter mode for a projector, or normal."""
    return PRESENTER_SCALE if large else 1.0


def session_state(value=None) -> gr.State:
    """Per-visitor state, dropped after SESSION_TTL_S of disuse."""
    return gr.State(value, time_to_live=SESSION_TTL_S)


def clamp(value, low: int, high: int) -> int:
    """An index from a control, forced into [low, high] (sliders can send anything over the API)."""
    return int(np.clip(int(value or 0), low, high))


def layer_head(cfg, layer, head) -> tuple[int, int]:
    """A (layer, head) from two controls, clamped to the model."""
    return clamp(layer, 0, cfg.n_layers - 1), clamp(head, 0, cfg.n_heads - 1)


def grid_side(n_heads: int) -> int:
    """Heads per row when a layer's heads are drawn as a grid: square when n_heads is a square (9 -> 3 x 3)."""
    side = int(np.sqrt(n_heads))
    return side if side * side == n_heads else n_heads


@dataclass(frozen=True)
class Event:
    """A handler and the components it reads and writes, for the shell to chain."""

    fn: Callable
    inputs: list
    outputs: list
    runs_model: bool = False  # True: queued as MODEL_RUN; False: READ_ONLY

    def then(self, event):
        """Chain this handler after a Gradio event; returns the new event."""
        return event.then(self.fn, self.inputs, self.outputs, **(MODEL_RUN if self.runs_model else READ_ONLY))


@dataclass(frozen=True)
class TabContext:
    """What the shell gives every tab."""

    runner: ModelRunner
    trace: gr.State  # the visitor's Trace, or None before the first analysis
    large: gr.Checkbox  # presenter mode
    active: gr.State  # id of the tab showing


@dataclass(frozen=True)
class TabView:
    """What a tab gives back: how to redraw it from a new trace, and, for costly tabs, when shown."""

    render: Event  # after every Analyze (inputs[0] is the trace)
    on_show: Event | None = None  # when the visitor opens the tab


def bind(fn: Callable, runner: ModelRunner) -> Callable:
    """fn with its first argument (the runner) fixed, keeping the rest of its signature and type hints."""
    signature = inspect.signature(fn)
    rest = list(signature.parameters.values())[1:]
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def bound(*args, **kwargs):
            yield from fn(runner, *args, **kwargs)
    else:
        @functools.wraps(fn)
        def bound(*args, **kwargs):
            return fn(runner, *args, **kwargs)
    bound.__signature__ = signature.replace(parameters=rest)
    del bound.__wrapped__  # inspect.signature must see the bound signature, not fn's
    # Gradio finds event-data parameters by type hint; resolve them in fn's module, not this one.
    hints = typing.get_type_hints(fn)
    bound.__annotations__ = {name: hint for name,
                             hint in hints.items() if name in bound.__signature__.parameters or name == "return"}
    return bound
