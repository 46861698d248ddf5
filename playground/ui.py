"""What every tab shares: the contract between a tab and the shell, event options, and small helpers.

A tab is a module with `build(ctx: TabContext) -> TabView` (and, if it styles HTML of its
own, a `CSS` string). The shell hands each tab the same context (the runner, the visitor's
trace, presenter mode, the active tab) and runs the `render` it gets back when the tab
shows a trace it has not drawn yet (`TabDrawing`).
Handlers are module-level functions whose first argument is the runner; `bind` fixes it
for Gradio, keeping the signature Gradio inspects for event data.
"""

from __future__ import annotations

import functools
import inspect
import threading
import typing
from collections.abc import Callable
from dataclasses import dataclass, field

import gradio as gr
import numpy as np

from .figures.tokens import markdown_token, token_label
from .runner import ModelRunner, PromptError
from .view import number  # noqa: F401 (the tabs' one check of a number, re-exported)

# Event options, one per kind of handler (tests/playground/test_registry.py checks the first):
# READ_ONLY: handlers that only read a visitor's own state and never take the model, so any
#   number may run at once; hidden from the API, no progress spinner.
# LAYER_VIEW: handlers that may hold the model for milliseconds (one layer or block recomputed
#   from the trace's residual, an embedding row read out, a lens already mostly computed): at most
#   LAYER_VIEWS_AT_ONCE of them at a time over the whole app (one concurrency group), so a crowd
#   dragging sliders cannot pile up behind a long run; no spinner, as for READ_ONLY.
# MODEL_RUN: handlers that run the shared model for longer: two at a time per event through
#   Gradio's queue (the runner's gate then orders them).
# ANALYZE: analyses, up to ANALYSES_AT_ONCE at a time, so that a burst reaches the runner together
#   and runs as one batched forward (the runner's gate still runs the model once at a time).
# HEAVY: a visitor's long job (a sweep, a decoding comparison, a generation), wrapped by `heavy_job`: at most
#   HEAVY_JOBS_AT_ONCE over the whole app (one concurrency group; more wait in Gradio's queue, their place shown)
#   and one per visitor; each hands the model back between its steps (`playground.turns`).
MODEL_CONCURRENCY = 2
HEAVY_JOBS_AT_ONCE = 2
MAX_SWEEP_S = 120  # a patching sweep (tab or API) estimated to take longer is refused, with the estimate
LAYER_VIEWS_AT_ONCE = 4
ANALYSES_AT_ONCE = 128  # a lecture hall's burst reaches the runner together, and packs into few batched forwards
SERVER_THREADS = ANALYSES_AT_ONCE + 32  # Gradio's worker threads (its default, 40, would cap the analyses at once)
READ_ONLY = dict(concurrency_limit=None, api_visibility="private", show_progress="hidden")
LAYER_VIEW = dict(concurrency_limit=LAYER_VIEWS_AT_ONCE, concurrency_id="layer_view", api_visibility="private",
                  show_progress="hidden")
MODEL_RUN = dict(concurrency_limit=MODEL_CONCURRENCY, api_visibility="private")
ANALYZE = dict(concurrency_limit=ANALYSES_AT_ONCE, api_visibility="private")
HEAVY = dict(concurrency_limit=HEAVY_JOBS_AT_ONCE, concurrency_id="heavy_job", api_visibility="private")


def scriptable(options: dict, name: str) -> dict:
    """The same event, callable by name from gradio_client but kept out of the API docs (for bench_audience)."""
    return {**options, "api_visibility": "undocumented", "api_name": name}

SESSION_TTL_S = 3600  # a visitor's state is dropped an hour after their last use, or when the page closes
PRESENTER_SCALE = 1.5  # text and figure size in presenter mode


def font_scale(large: bool) -> float:
    """How much bigger text and figures are drawn: presenter mode for a projector, or normal."""
    return PRESENTER_SCALE if large else 1.0


def intro(*args, **kwargs) -> gr.Markdown:
    """A tab's opening explanation: in presenter mode it folds to one line, and a click opens it."""
    return gr.Markdown(*args, elem_classes=["intro"], **kwargs)


def session_state(value=None) -> gr.State:
    """Per-visitor state, dropped after SESSION_TTL_S of disuse."""
    return gr.State(value, time_to_live=SESSION_TTL_S)


class StopFlag:
    """One visitor's Stop for their long runs (a speculative sweep, a patching sweep), kept in their session state:
    a run clears it when it starts and looks at it between two steps, so it ends there, the model free and what
    was measured still shown. (Gradio's `cancels=` would drop the run mid-step and leave the next click waiting.)"""

    def __init__(self) -> None:
        self._pressed = threading.Event()

    def press(self) -> None:
        self._pressed.set()

    def clear(self) -> None:
        self._pressed.clear()

    @property
    def pressed(self) -> bool:
        return self._pressed.is_set()

    def __deepcopy__(self, memo) -> StopFlag:  # each session gets its own from the state's default
        return StopFlag()


def stop_state() -> gr.State:
    """A session's StopFlag."""
    return session_state(StopFlag())


def pressing(flag: StopFlag | None, note: str | None) -> str:
    """The Stop button's handler: the flag pressed, and the note saying the run stops after its current step."""
    if flag is not None:
        flag.press()
    return f"{note or ''}\n\n⏹ Stopping after the step under way …".strip()


def stop_button(button: gr.Button, flag: gr.State, note: gr.Markdown) -> None:
    """A Stop button: presses the session's flag (any time, never waiting for the model)."""
    button.click(pressing, [flag, note], note, **READ_ONLY)


def token_text(runner: ModelRunner, token: int, max_len: int = 20) -> str:
    """A token as a one-line label for figures and tables: its bytes as text, whitespace visible, long ones cut."""
    return token_label(runner.token_bytes(int(token)), True, max_len)


def token_markdown(runner: ModelRunner, token: int) -> str:
    """A token as a Markdown code span, for notes."""
    return markdown_token(runner.token_bytes(int(token)))


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
class Key:
    """A keyboard shortcut a tab offers (presenter stepping): the keys, the control it works (a slider's or a
    button's elem_id), the step on the slider (None: click the button), and what it does, for the help overlay."""

    keys: tuple[str, ...]  # KeyboardEvent.key values, e.g. ("ArrowRight", "PageDown")
    target: str
    step: int | None
    says: str


@dataclass(frozen=True)
class Link:
    """A control a prepared link may set (`?layer=3&head=5`): the query parameter, the control's elem_id and its
    kind ("slider", "radio", "number" or "text"). The page applies the link's values once the tab has drawn, and
    "link to this view" carries their current values."""

    param: str
    target: str
    kind: str = "slider"
    source: str = ""  # a CSS selector: the current value is the data-id of each element it finds, comma-joined
    last: bool = False  # applied after the tab's other link values (it depends on them)


def arrows(target: str, what: str, back: str = "ArrowLeft", forward: str = "ArrowRight") -> tuple[Key, Key]:
    """The previous/next pair on a slider; Left/Right also answer a presenter's clicker (PageUp/PageDown)."""
    clicker = {"ArrowLeft": ("PageUp",), "ArrowRight": ("PageDown",)}
    return (Key((back, *clicker.get(back, ())), target, -1, f"previous {what}"),
            Key((forward, *clicker.get(forward, ())), target, 1, f"next {what}"))


@dataclass(frozen=True)
class Event:
    """A handler and the components it reads and writes, for the shell to chain."""

    fn: Callable
    inputs: list
    outputs: list
    runs_model: bool = False  # True: queued as MODEL_RUN; False: READ_ONLY

    def then(self, event, name: str | None = None):
        """Chain this handler after a Gradio event (callable by `name` if given); returns the new event."""
        options = MODEL_RUN if self.runs_model else READ_ONLY
        return event.then(self.fn, self.inputs, self.outputs, **(scriptable(options, name) if name else options))


@dataclass(frozen=True)
class TabContext:
    """What the shell gives every tab."""

    runner: ModelRunner
    trace: gr.State  # the visitor's Trace, or None before the first analysis
    large: gr.Checkbox  # presenter mode
    active: gr.State  # id of the tab showing
    decks: dict = field(default_factory=dict)  # decks given at start-up (`--deck`), by name (`playground.deck`)
    deck: str = ""  # the one the Tour opens on ("" for the tour of the visitor's prompt)
    second: ModelRunner | None = None  # a second model, for the Compare tab (`--compare-model`), sharing the gate


@dataclass(frozen=True)
class TabView:
    """What a tab gives back: how to draw it from a new trace (inputs[0] is the trace). The shell runs it for the
    tab on show after an Analyze, and for the others when they are first opened (`TabDrawing.on_open`)."""

    render: Event  # its fn returns a tuple: one value per output
    from_query: dict = field(default_factory=dict)  # query parameter -> component the page's link sets on load


NEVER = "never"  # a tab that has drawn no trace yet


class TabDrawing:
    """Every tab's render as one event, run for the tab showing: after an Analyze it draws the new trace and the
    other tabs draw it when first opened (once per trace; `drawn` remembers which trace each tab shows), so a
    visitor pays only for what they look at, and an Analyze costs the server two events, not one per tab.
    A `footer` (fn(showing, *inputs) -> one value, such as the link to this view) is refreshed with it."""

    def __init__(self, ids: list[str], renders: list[Event], trace: gr.State, active: gr.State, drawn: gr.State,
                 footer: Event | None = None):
        self.ids, self.renders, self.footer = ids, renders, footer
        self.trace, self.active, self.drawn = trace, active, drawn
        self.takes_progress = ["progress" in inspect.signature(r.fn).parameters for r in renders]
        self.outputs = [drawn, *(c for r in renders for c in r.outputs), *(footer.outputs if footer else [])]
        self.values = [c for r in renders for c in r.inputs[1:]] + (list(footer.inputs) if footer else [])

    def draw(self, showing: str, trace, shown: dict, values: tuple, progress) -> tuple:
        key = None if trace is None else trace.serial
        out, shown = [], dict(shown or {})
        for tab_id, render, progressive in zip(self.ids, self.renders, self.takes_progress):
            own, values = values[: len(render.inputs) - 1], values[len(render.inputs) - 1 :]
            if tab_id != showing or shown.get(tab_id, NEVER) == key:
                out += [gr.update()] * len(render.outputs)  # hidden, or already showing this trace
                continue
            out += list(render.fn(trace, *own, **({"progress": progress} if progressive else {})))
            shown[tab_id] = key
        if self.footer:
            out.append(self.footer.fn(showing, *values))
        return (shown, *out)

    def after_analyze(self) -> Event:
        """The tab showing draws the new trace."""
        def draw_showing(trace, shown: dict, showing: str, *values, progress=gr.Progress()):
            return self.draw(showing, trace, shown, values, progress)
        return Event(draw_showing, [self.trace, self.drawn, self.active, *self.values], self.outputs, runs_model=True)

    def on_open(self, tab_id: str) -> Event:
        """The tab becomes the one showing, and draws the trace if it has not yet."""
        def open_tab(trace, shown: dict, *values, progress=gr.Progress()):
            return (tab_id, *self.draw(tab_id, trace, shown, values, progress))
        return Event(open_tab, [self.trace, self.drawn, *self.values], [self.active, *self.outputs], runs_model=True)


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


def visitor(request: gr.Request | None) -> str | None:
    """Who asked: their Gradio session (one per open page or gradio_client Client), None when called directly."""
    return getattr(request, "session_hash", None) if request is not None else None


def heavy_job(fn: Callable, runner: ModelRunner, what: str) -> Callable:
    """bind(fn, runner) run as the visitor's long job (`runner.jobs`): while it runs, another long job from the same
    visitor is refused with a message naming this one (gr.Error). Gradio passes the request as the first argument."""
    bound = bind(fn, runner)

    def start(request: gr.Request | None) -> str | None:
        try:
            runner.jobs.start(visitor(request), what)
        except PromptError as e:
            raise gr.Error(str(e), print_exception=False) from None
        return visitor(request)

    if inspect.isgeneratorfunction(fn):
        @functools.wraps(bound)
        def job(request: gr.Request, *args, **kwargs):
            who = start(request)
            try:
                yield from bound(*args, **kwargs)
            finally:  # also when Gradio closes the generator: the visitor left, or Stop
                runner.jobs.finish(who)
    else:
        @functools.wraps(bound)
        def job(request: gr.Request, *args, **kwargs):
            who = start(request)
            try:
                return bound(*args, **kwargs)
            finally:
                runner.jobs.finish(who)
    signature = inspect.signature(bound)
    first = inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=gr.Request)
    job.__signature__ = signature.replace(parameters=[first, *signature.parameters.values()])
    del job.__wrapped__
    job.__annotations__ = {"request": gr.Request, **bound.__annotations__}
    return job
