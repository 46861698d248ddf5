"""Tour tab: a guided walk through one forward pass of the visitor's own prompt, and talks as decks of views.

The tour's ten steps are a table of views (`tour`); a deck (`deck`, a Markdown file) is a list of views, each with
its own prompt; `walk` shows either, step by step, with the next slide's analysis started in the background, and
exports the whole walk as one offline HTML file. Back / Next (← → and a clicker's PgUp / PgDn) step; *Open in its
tab* opens the live view. This module lays the tab out and wires it.
"""

from __future__ import annotations

import gradio as gr

from .deck import built_in_decks
from .runner import ModelRunner
from .text import no_html
from .ui import HEAVY, MODEL_RUN, READ_ONLY, Event, Key, TabContext, TabView, heavy_job, intro, session_state
from .walk import THE_TOUR, Walk, checked_decks, export, load_deck, show

TAB_ID = "tour"
KEYS = (Key(("ArrowRight", "PageDown"), "tour-next", None, "next step"),
        Key(("ArrowLeft", "PageUp"), "tour-back", None, "previous step"))


def exporting(runner: ModelRunner, decks: dict, trace, walk, choice: str, large: bool):
    """The Export button's handler (a visitor's long job): the file to download and a note."""
    path, note = export(runner, decks, trace, walk, choice, large)
    return gr.File(value=None if path is None else str(path), visible=path is not None), note


CSS = "#tour-where { display: none !important; }"
OPEN_JS = """(where) => {
  try { const w = JSON.parse(where);
        if (window.playgroundOpen) window.playgroundOpen(w.tab, w.values || {}, w.prompt); } catch (e) {}
}"""


def build(ctx: TabContext) -> TabView:
    runner = ctx.runner
    decks = {name: load_deck(path.read_text(encoding="utf-8")) for name, path in built_in_decks().items()}
    decks = checked_decks(runner, {**decks, **ctx.decks})
    intro(
        "A guided walk through one forward pass of **your prompt**, step by step: each step is one view of a tab, "
        "with a caption written from this prompt's numbers. Or choose a **deck**: a talk written as a Markdown file "
        "of views (see the README's *Decks*). ← → (or a clicker) step; *Open this view in its tab* opens the live "
        "view."
    )
    choices = [("Your prompt, step by step (the tour)", THE_TOUR)] + [(d.title, name) for name, d in decks.items()]
    with gr.Row():
        choice = gr.Dropdown(choices, value=ctx.deck if ctx.deck in decks else THE_TOUR, label="Walk through",
                             elem_id="tour-deck", scale=3)
        back = gr.Button("← Back", elem_id="tour-back", scale=1)
        forward = gr.Button("Next →", variant="primary", elem_id="tour-next", scale=1)
    with gr.Row(elem_id="tour-slide", equal_height=False):  # the slide: its caption beside its view, one screen
        with gr.Column(scale=2, min_width=300):
            progress = gr.Markdown(elem_id="tour-progress")
            caption = gr.Markdown(elem_id="tour-caption")
        with gr.Column(scale=3, min_width=360):
            figure = gr.Plot(elem_id="tour-figure", show_label=False)
    with gr.Row():
        open_tab = gr.Button("Open this view in its tab", size="sm", elem_id="tour-open")
        export_btn = gr.Button("Export the whole walk as one HTML file (works offline)", size="sm",
                               elem_id="tour-export")
    exported = gr.File(label="Deck", visible=False, elem_id="tour-file", height=90)
    export_note = gr.Markdown(elem_id="tour-export-note")
    problems = [p for d in decks.values() for p in d.problems]
    gr.Markdown(no_html("Deck problems:\n" + "\n".join(f"- {p}" for p in problems)) if problems else "",
                elem_id="tour-problems")
    with gr.Accordion("Speaker notes", open=False):
        notes = gr.Markdown(elem_id="tour-notes")
    where = gr.Textbox(elem_id="tour-where", container=False, show_label=False)  # hidden by CSS: JS reads it
    step = session_state(1)
    walk = session_state(Walk())

    def showing(trace, w, c, s, large):
        return show(runner, decks, trace, w, c, s, large)

    def export_walk(runner, trace, w, c, large):
        return exporting(runner, decks, trace, w, c, large)

    def render(trace, w, c, s, large, progress=gr.Progress()):
        return show(runner, decks, trace, w, c, s, large)

    shown = [progress, caption, figure, notes, where, step]
    inputs = [ctx.trace, walk, choice, step, ctx.large]
    back.click(lambda s: max(1, int(s or 1) - 1), step, step, **READ_ONLY).then(showing, inputs, shown, **MODEL_RUN)
    forward.click(lambda s: int(s or 1) + 1, step, step, **READ_ONLY).then(showing, inputs, shown, **MODEL_RUN)
    choice.input(lambda: 1, None, step, **READ_ONLY).then(showing, inputs, shown, **MODEL_RUN)
    open_tab.click(None, where, None, js=OPEN_JS, **READ_ONLY)
    export_btn.click(heavy_job(export_walk, runner, "an export of the whole walk"),
                     [ctx.trace, walk, choice, ctx.large], [exported, export_note], **HEAVY)
    return TabView(render=Event(render, inputs, shown, runs_model=True), from_query={"deck": choice})
