"""Compare tab: two columns, the same view for one model on two prompts, or for two models on one prompt.

The comparisons are `compare.COMPARISONS`, named pure functions of two sides. Two models are offered when the app
was started with a second one (`--compare-model gemma3-270m`); both sit behind one gate, so a comparison takes its
turns like any other run. The second column's prompt is analysed when the comparison is drawn (a trace of its own,
counted in the visitor's memory like the first), so nothing of one visitor's second prompt reaches another's page.
"""

from __future__ import annotations

import gradio as gr

from .compare import COMPARISONS, Side, compare
from .errors import PromptError
from .runner import ModelRunner
from .trace import Trace
from .ui import MODEL_RUN, Event, Link, TabContext, TabView, intro

TAB_ID = "compare"
PROMPTS, MODELS = "one model, two prompts", "two models, one prompt"
NAMES = {"tokenization": "Tokenization", "attention": "Attention (same relative depth)",
         "lens": "Logit lens (where the answer settles)", "next_token": "Next token",
         "tour": "The tour (a step's caption on each side)"}
DEFAULT_B = "The capital of Germany is"
LINKS = (Link("prompt_b", "cmp-prompt-b", "text"), Link("depth", "cmp-depth", "slider"),
         Link("step", "cmp-step", "slider"))
CSS = """
#cmp-columns { flex-wrap: wrap; }
#cmp-columns > .column { min-width: min(100%, 420px); }
"""


def render(runner: ModelRunner, second: ModelRunner | None, trace: Trace | None, mode: str, prompt_b: str,
           name: str, depth: float, step: int, large: bool):
    """(joint note, left title, left figure, left note, right title, right figure, right note)."""
    empty = ("", "", None, "", "", None, "")
    if trace is None:
        return ("Analyze a prompt first: it is the first column.", *empty[1:])
    try:
        key = next((k for k, label in NAMES.items() if label == name), name)
        if mode == MODELS:
            if second is None:
                raise PromptError("Only one model is loaded: start the app with --compare-model gemma3-270m to "
                                  "compare two models.")
            chat = trace.chat and second.has_chat_template
            right_trace = second.analyze(trace.prompt, chat)
            left, right = Side(runner, trace, runner.cfg.name), Side(second, right_trace, second.cfg.name)
        else:
            left = Side(runner, trace, "prompt A")
            right = Side(runner, runner.analyze(prompt_b, trace.chat), "prompt B")
        state = {"depth": depth} if key == "attention" else {"step": step} if key == "tour" else {}
        shown = compare(key, left, right, large=bool(large), **state)
    except PromptError as e:
        return (f"⚠️ {e}", *empty[1:])
    return (shown.note, f"**{left.label}**", shown.left.figure, shown.left.note, f"**{right.label}**",
            shown.right.figure, shown.right.note)


def build(ctx: TabContext) -> TabView:
    second = ctx.second
    intro("The same view twice, side by side: one model on two prompts, or two models on one prompt "
          "(the analysed prompt is the first column). On a phone the columns stack." +
          ("" if second is not None else " Two models are offered when the app is started with "
                                         "`--compare-model gemma3-270m`."))
    with gr.Row():
        modes = [PROMPTS, MODELS] if second is not None else [PROMPTS]
        mode = gr.Radio(modes, value=MODELS if second is not None else PROMPTS, label="Compare",
                        elem_id="cmp-mode", scale=2)
        name = gr.Dropdown(list(NAMES.values()), value=NAMES["tokenization"], label="View", elem_id="cmp-view",
                           scale=2)
        depth = gr.Slider(0, 1, value=0.5, step=0.05, label="Relative depth (attention: 0 first layer, 1 last)",
                          elem_id="cmp-depth", scale=2)
    with gr.Row():
        prompt_b = gr.Textbox(DEFAULT_B, label="Second prompt (one model, two prompts)", elem_id="cmp-prompt-b",
                              scale=4)
        step = gr.Slider(1, 10, value=1, step=1, label="Tour step", elem_id="cmp-step", scale=2)
    note = gr.Markdown(elem_id="cmp-note")
    with gr.Row(elem_id="cmp-columns"):
        with gr.Column():
            left_title = gr.Markdown(elem_id="cmp-left-title")
            left = gr.Plot(elem_id="cmp-left", show_label=False)
            left_note = gr.Markdown(elem_id="cmp-left-note")
        with gr.Column():
            right_title = gr.Markdown(elem_id="cmp-right-title")
            right = gr.Plot(elem_id="cmp-right", show_label=False)
            right_note = gr.Markdown(elem_id="cmp-right-note")

    def draw(trace, mode, prompt_b, name, depth, step, large):
        return render(ctx.runner, second, trace, mode, prompt_b, name, depth, step, large)

    view = Event(draw, [ctx.trace, mode, prompt_b, name, depth, step, ctx.large],
                 [note, left_title, left, left_note, right_title, right, right_note], runs_model=True)
    for trigger in (mode.input, name.input, depth.release, step.release, prompt_b.submit, ctx.large.change):
        trigger(view.fn, view.inputs, view.outputs, **MODEL_RUN)
    return TabView(render=view, from_query={"prompt_b": prompt_b})


assert set(NAMES) == set(COMPARISONS)  # every comparison has its label
