"""The errors the app shows a visitor: each carries a message meant for the person who made the request."""

from __future__ import annotations


class PromptError(ValueError):
    """A prompt or request the app will not run, with a message meant for the person who made it."""


class ModelBusyError(PromptError):
    """The shared model stayed busy longer than a request may wait."""

    def __init__(self, wait_s: float, busy_with: str = "") -> None:
        now = f", now {busy_with}" if busy_with else ""
        super().__init__(f"The model is busy with other requests (waited {wait_s:g} s{now}). Try again in a moment.")


class TraceDropped(PromptError):
    """The visitor's trace was released to make room for others."""

    def __init__(self) -> None:
        super().__init__("This analysis was dropped to make room for other visitors' analyses. "
                         "Press Analyze to run it again.")
