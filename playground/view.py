"""What a tab shows, as plain functions: `view(runner, trace, **state) -> View`, and the one check of each setting.

A view is a module-level function of a tab (listed in its `VIEWS`, found by `views.view`) that takes the runner,
a trace and the view's state by name (`layer`, `head`, `pos`, `threshold`, the sampler's settings, ...: the names
prepared links and decks use) and returns a `View`: the figure and the note beside it. Bad state raises
`PromptError` with a message for the person who asked. The tabs' Gradio handlers only adapt views (a ⚠️ line
instead of the error); the tour, decks, the notebook and anything new call the view by name, never another tab's
handler. Every setting is checked here once, with the ranges the tabs' sliders allow, for the tabs, the API and the
notebook alike.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from .errors import PromptError


@dataclass(frozen=True)
class View:
    """A view's figure (a Plotly figure, shown inline in Jupyter and VS Code), the Markdown note beside it, and the
    numbers it shows by name (`facts`: what a tour caption or a test quotes, never computed again elsewhere)."""

    figure: Any
    note: str = ""
    facts: dict = field(default_factory=dict)

    def _repr_mimebundle_(self, include=None, exclude=None):
        return self.figure._repr_mimebundle_(include, exclude)

    def __repr__(self) -> str:
        layout = getattr(self.figure, "layout", None)
        title = layout.title.text if layout is not None else type(self.figure).__name__
        return f"View({title!r}){': ' + self.note if self.note else ''}"


def number(value, name: str, low: float = -math.inf, high: float = math.inf, whole: bool = False) -> float | int:
    """A finite number in [low, high] (whole if asked) from a control, an API argument or a notebook call, else a
    PromptError naming it (sliders keep a browser in range; the API and scripts may send anything)."""
    kind = "a whole number" if whole else "a number"
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or (whole and int(value) != value):
        raise PromptError(f"{name} must be {kind}, got {value!r}")
    if not low <= value <= high:
        raise PromptError(f"{name} must be in {low:g}..{high:g}, got {value!r}")
    return int(value) if whole else float(value)


def layer_of(cfg, value, name: str = "layer") -> int:
    """A layer of the loaded model (0 .. n_layers - 1)."""
    return number(value, name, 0, cfg.n_layers - 1, whole=True)


def head_of(cfg, value, name: str = "head") -> int:
    """A query head of the loaded model (0 .. n_heads - 1)."""
    return number(value, name, 0, cfg.n_heads - 1, whole=True)


def position_of(n_tokens: int, value, name: str = "position") -> int:
    """A token position, negative counting from the end (-1: the last token)."""
    return number(value, name, -n_tokens, n_tokens - 1, whole=True) % n_tokens


def threshold_of(value, name: str = "threshold") -> float:
    """A share strictly between 0 and 1 (the routes' threshold)."""
    value = number(value, name, 0, 1)
    if not 0 < value < 1:
        raise PromptError(f"{name} must be between 0 and 1 (exclusive), got {value:g}")
    return value


def flag_of(value, name: str) -> bool:
    """A yes/no setting: True or False (not 0, None or "yes", which a script might send meaning anything)."""
    if not isinstance(value, bool):
        raise PromptError(f"{name} must be true or false, got {value!r}")
    return value


def text_of(value, name: str = "prompt") -> str:
    """A text argument: a string, else a PromptError (a list, a number or a dict is not text)."""
    if not isinstance(value, str):
        raise PromptError(f"{name} must be text, got {type(value).__name__} {value!r:.60}")
    return value
