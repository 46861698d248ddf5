"""A visitor's walk through the tour or a deck: each slide's view, the slides' analyses, and the export.

A deck's slide shows its tab's slide view (its module's `SLIDE`, `views.show`) in the slide's state, or a tour step; the
next slide's analysis starts in the background while the current one is shown (`Walk`). `show` is what the Tour tab
draws for a step; `export` writes the whole walk as one offline HTML file (`deck_export`). Captions, notes and titles
are Markdown without raw HTML (`text.no_html` here, escaped in the export).
"""

from __future__ import annotations

import json
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path

from . import compare, views
from .deck import Deck, Slide, built_in_decks, parse_deck
from .deck_export import deck_html
from .runner import ModelRunner, PromptError
from .text import no_html
from .tour import STEPS, tour_step
from .trace import Trace

THE_TOUR = "tour"  # the walk's choice for the tour of the visitor's own prompt
KEPT_TRACES = 4  # a visitor's deck keeps this many slides' analyses (the memory budget still counts them)


def load_deck(text: str) -> Deck:
    """A deck, with the slide tabs' own link parameters as its fields (tabs that cannot be a slide are refused)."""
    return parse_deck(text, {**views.slides(), "compare": compare.SLIDE_FIELDS})


def deck_name(path: Path) -> str:
    """The name a deck file is offered and linked under (?deck=NAME): its file name without .md, with a number
    added when that is the tour's own entry or a built-in deck's name (a talk called tour.md or next-word.md hides
    neither, and neither hides it)."""
    taken = {THE_TOUR, *built_in_decks()}
    name, n = path.stem, 2
    while name in taken:
        name, n = f"{path.stem}-{n}", n + 1
    return name


def slide_view(runner: ModelRunner, trace: Trace, slide: Slide, large: bool) -> tuple[str, object, str, dict]:
    """(caption, figure, the tab it shows, link values) of a deck's slide: its tab's slide view in the slide's state
    (a tour step brings its own caption, used when the slide has none, and names its own tab)."""
    if slide.tab == "tour":
        _, caption, figure, tab, values = tour_step(runner, trace, int(slide.state["step"]), large)
        return slide.caption or caption, figure, tab, values
    if slide.tab == "compare":  # the slide's prompt against its prompt_b, one figure of both
        try:
            note, figure = compare.slide(runner, trace, dict(slide.state), large)
        except PromptError as e:
            raise PromptError(f"slide {slide.title!r}: {e}") from None
        return slide.caption or note, figure, "compare", dict(slide.state)
    module = views.BY_TAB.get(slide.tab)
    if module is None or module.SLIDE is None:
        raise PromptError(f"slide {slide.title!r}: the {slide.tab} tab cannot be a slide")
    try:
        view = views.show(slide.tab, module.SLIDE, runner, trace, dict(slide.state), large)
    except PromptError as e:
        raise PromptError(f"slide {slide.title!r}: {e}") from None
    return slide.caption, view.figure, slide.tab, dict(slide.state)


class Walk:
    """A visitor's walk through the tour or a deck: the slides' analyses, the last few kept, and the next one's
    started in the background (session state: each visitor gets their own from the state's default)."""

    def __init__(self) -> None:
        self._traces: OrderedDict[tuple[str, bool], Trace] = OrderedDict()
        self._mutex = threading.Lock()
        self._pending: dict[tuple[str, bool], threading.Thread] = {}

    def __deepcopy__(self, memo) -> Walk:
        return Walk()

    def trace(self, runner: ModelRunner, prompt: str, chat: bool) -> Trace:
        """The analysis of a slide's prompt: kept, being made in the background (waited for), or made now."""
        key = (prompt, chat)
        with self._mutex:
            pending = self._pending.get(key)
        if pending is not None:
            pending.join()
        with self._mutex:
            kept = self._traces.get(key)
            if kept is not None and not kept.dropped:
                self._traces.move_to_end(key)
                return kept
        return self._analyse(runner, prompt, chat)

    def _analyse(self, runner: ModelRunner, prompt: str, chat: bool) -> Trace:
        key = (prompt, chat)
        trace = runner.analyze(prompt, chat, lens=False)
        with self._mutex:
            self._traces[key] = trace
            while len(self._traces) > KEPT_TRACES:
                self._traces.popitem(last=False)
        return trace

    def prepare(self, runner: ModelRunner, prompt: str, chat: bool) -> None:
        """Start the analysis of the next slide's prompt in the background, if it is not kept already."""
        key = (prompt, chat)
        with self._mutex:
            if key in self._traces or key in self._pending:
                return

        def run() -> None:
            try:
                self._analyse(runner, prompt, chat)
            except PromptError:
                pass  # the slide will say so when shown
            finally:
                with self._mutex:
                    self._pending.pop(key, None)

        thread = threading.Thread(target=run, daemon=True)
        with self._mutex:
            self._pending[key] = thread
        thread.start()


def deck_of(choice: str, decks: dict[str, Deck]) -> Deck | None:
    """The deck chosen (None: the tour of the visitor's own prompt)."""
    return None if choice == THE_TOUR else decks.get(choice)


def total_steps(decks: dict[str, Deck], choice: str) -> int:
    deck = deck_of(choice, decks)
    return len(STEPS) if deck is None else len(deck.slides)


def show(runner: ModelRunner, decks: dict[str, Deck], trace: Trace | None, walk: Walk | None, choice: str, step,
         large: bool):
    """The Tour tab's handler: (progress line, caption, figure, notes, where the view lives (JSON for *Open in its
    tab*), step). Every text is Markdown without raw HTML."""
    walk = walk if walk is not None else Walk()
    total = total_steps(decks, choice)
    if total == 0:
        problems = deck_of(choice, decks).problems
        return "This deck has no slides that load.", no_html("\n".join(problems)), None, "", "", 1
    step = int(min(max(int(step or 1), 1), total))
    try:
        title, caption, figure, notes, where, deck_title = _shown(runner, decks, trace, walk, choice, step, large)
    except (PromptError, ValueError) as e:
        return f"Step {step} of {total}", no_html(f"⚠️ {e}"), None, "", "", step
    progress = f"**Step {step} of {total}** · {title}" + (f" · *{deck_title}*" if deck_title else "")
    return no_html(progress), no_html(caption), figure, no_html(notes), json.dumps(where), step


def _shown(runner, decks, trace, walk, choice, step, large):
    deck = deck_of(choice, decks)
    if deck is None and trace is not None:
        title, caption, figure, tab, values = tour_step(runner, trace, step, large)
        return title, caption, figure, "", {"tab": tab, "values": values}, ""
    if deck is None:
        raise PromptError("Analyze a prompt first: the tour walks through it.")
    slide = deck.slides[step - 1]
    shown = walk.trace(runner, slide.prompt, slide.chat)
    if step < len(deck.slides):  # the next slide's analysis, while this one is shown
        after = deck.slides[step]
        walk.prepare(runner, after.prompt, after.chat)
    caption, figure, tab, values = slide_view(runner, shown, slide, large)
    return slide.title, caption, figure, slide.notes, {"tab": tab, "values": values, "prompt": slide.prompt}, \
        deck.title


def export(runner: ModelRunner, decks: dict[str, Deck], trace: Trace | None, walk: Walk | None, choice: str,
           large: bool) -> tuple[Path | None, str]:
    """The whole walk (every step or slide) as one self-contained HTML file: (its path, or None when nothing could
    be shown, and a note naming what was left out)."""
    walk = walk if walk is not None else Walk()
    deck = deck_of(choice, decks)
    slides, problems = [], []
    for step in range(1, total_steps(decks, choice) + 1):
        try:
            title, caption, figure, notes, _, _ = _shown(runner, decks, trace, walk, choice, step, large)
        except (PromptError, ValueError) as e:
            problems.append(f"step {step}: {e}")
            continue
        slides.append((title, caption, notes, figure))
    if not slides:
        return None, "⚠️ Nothing to export: " + "; ".join(problems)
    name = THE_TOUR if deck is None else choice
    path = Path(tempfile.mkdtemp(prefix="deck-")) / f"{name}.html"
    heading = "A tour of one forward pass" if deck is None else deck.title
    path.write_text(deck_html(heading, slides), encoding="utf-8")
    return path, f"Exported {len(slides)} slides" + (f"; left out: {'; '.join(problems)}" if problems else ".")


def checked_decks(runner: ModelRunner, decks: dict[str, Deck]) -> dict[str, Deck]:
    """The decks with every slide's prompt tokenized: a slide whose prompt the model would refuse (over the token
    cap, say) is left out, with a message naming the slide and the field (in `deck.problems`)."""
    for deck in decks.values():
        kept = []
        for number, slide in enumerate(deck.slides, 1):
            prompts = [("prompt", slide.prompt)] + ([("prompt_b", str(slide.state.get("prompt_b", "")))]
                                                    if slide.tab == "compare" else [])
            try:
                for field, text in prompts:
                    runner.tokenize(text, slide.chat)
                field = "view"
                if slide.tab == "compare" and slide.state.get("view", "tokenization") not in compare.COMPARISONS:
                    raise PromptError(f"must be one of {', '.join(compare.COMPARISONS)}, got "
                                      f"{slide.state['view']!r}")
            except PromptError as e:
                deck.problems.append(f"slide {number} ({slide.title!r}) left out: {field}: {e}")
                continue
            kept.append(slide)
        deck.slides = kept
    return decks
