"""Transformer playground: a Gradio app that shows every intermediate tensor of a real Llama-style model.

`app.py` only assembles and launches: the tabs come from `playground.registry.TABS`, the
model is reached only through `playground.runner.ModelRunner`, and each visitor's analysis
lives in their own `gr.State`. `python app.py --help`. Open
`/?prompt=...&tab=attention&large=1` to start on a given prompt, tab and text size.
"""

from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # nothing leaves the machine, before gradio is imported

import argparse  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
from urllib.parse import urlencode  # noqa: E402

import gradio as gr  # noqa: E402

from model import DEFAULT_MODEL, CheckpointError  # noqa: E402
from model.allocator import keep_freed_memory  # noqa: E402
from model.selection import HUB_MODEL, choose_model  # noqa: E402
from playground import api  # noqa: E402
from playground.registry import TAB_IDS, TABS  # noqa: E402
from playground.runner import MAX_PROMPT_TOKENS, ModelRunner, PromptError  # noqa: E402
from playground.trace import Trace  # noqa: E402
from playground.ui import MODEL_CONCURRENCY, MODEL_RUN, READ_ONLY, TabContext, bind, session_state  # noqa: E402

EXAMPLES = [
    ("Capitals (a fact to recall)", "The capital of France is Paris. The capital of Germany is", False),
    ("Python code",
     "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)", False),
    ("Dates, numbers, emoji", "In 1969, Neil Armstrong walked on the Moon. 🚀 In 2024, 3 + 4 = 7.", False),
    ("A chat question", "Explain what attention does in a transformer, in one sentence.", True),
    ("A novel's first line (repetition)",
     "Mr and Mrs Dursley, of number four, Privet Drive, were proud to say that they were perfectly normal.", False),
]
QUEUE_SIZE = 64  # requests waiting at most; more get Gradio's "queue is full" message

CSS = """
.hint { color: #666; }
#status p { margin: 0.2em 0; }
/* Presenter mode: larger, darker, higher-contrast text everywhere for a projector. */
body.presenter { --body-text-color: #000; --block-label-text-color: #000; }
body.presenter .gradio-container { font-size: 20px !important; }
body.presenter .gradio-container label, body.presenter .gradio-container .prose,
body.presenter .gradio-container button, body.presenter .gradio-container textarea {
  font-size: 20px !important; color: #000; }
body.presenter .tokens .tok { outline: 1px solid #000; }
"""
PRESENTER_JS = "(large) => { document.body.classList.toggle('presenter', !!large); return large; }"


def theme() -> gr.themes.Base:
    """System fonts only, so the page fetches nothing from outside (talks are often offline)."""
    return gr.themes.Default(
        font=["system-ui", "-apple-system", "Segoe UI", "Roboto", "sans-serif"],
        font_mono=["ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace"],
    )


def launch_options() -> dict:
    """What launch() needs besides the address: the theme, and the page's and every tab's CSS."""
    return dict(theme=theme(), css=CSS + "".join(getattr(tab.module, "CSS", "") for tab in TABS))


def analyze(runner: ModelRunner, prompt: str, chat: bool) -> tuple[Trace | None, str]:
    """Run the model on the prompt: (the new trace, a status line)."""
    try:
        trace = runner.analyze(prompt, chat)
    except PromptError as e:
        return None, f"⚠️ {e}"
    notes = " ".join(trace.notes)
    return trace, f"Analyzed **{trace.n_tokens}** tokens{' in the chat template' if chat else ''}. {notes}".strip()


def from_url(request: gr.Request):
    """Prompt, chat, presenter mode and tab from the page's query string, for prepared links."""
    params = dict(request.query_params) if request is not None else {}
    yes = ("1", "true", "yes")
    tab = params.get("tab", TAB_IDS[0])
    tab = tab if tab in TAB_IDS else TAB_IDS[0]
    prompt = params.get("prompt", EXAMPLES[0][1])
    return prompt, params.get("chat", "0") in yes, params.get("large", "0") in yes, gr.Tabs(selected=tab), tab


def link(prompt: str, chat: bool, large: bool, active: str) -> str:
    """A link that opens this view: the prompt, the tab, chat and presenter mode."""
    query = urlencode({"prompt": prompt or "", "tab": active, **({"chat": 1} if chat else {}),
                       **({"large": 1} if large else {})})
    return f"Link to this view: [`?{query[:60]}{'…' if len(query) > 60 else ''}`](?{query})"


def export(trace: Trace | None):
    """The trace's tensors as a downloadable .npz."""
    return gr.File(value=None if trace is None else str(trace.export()), visible=trace is not None)


def create_app(runner: ModelRunner, model_note: str = "") -> gr.Blocks:
    """The app around one loaded model."""
    cfg = runner.cfg
    with gr.Blocks(title="Transformer playground") as app:
        trace = session_state()
        gr.Markdown(
            f"# Transformer playground\n"
            f"**{cfg.name}**: {cfg.n_layers} layers · d_model {cfg.d_model} · {cfg.n_heads} query heads sharing "
            f"{cfg.n_kv_heads} key/value heads · d_head {cfg.d_head} · RoPE base {cfg.rope_base:g} · "
            f"vocabulary {cfg.vocab_size:,}"
            f"{f' · {model_note}' if model_note else ''}. "
            f"Type a prompt and press **Analyze**: the model runs once, and every tab reads that run."
        )
        with gr.Row():
            prompt = gr.Textbox(label=f"Prompt (up to {MAX_PROMPT_TOKENS} tokens)", value=EXAMPLES[0][1], lines=3,
                                scale=4,
                                elem_id="prompt")
            with gr.Column(scale=1, min_width=200):
                chat = gr.Checkbox(label="Wrap in the model's chat template", value=False, elem_id="chat")
                analyze_btn = gr.Button("Analyze", variant="primary", elem_id="analyze")
                large = gr.Checkbox(label="Presenter mode (large, high-contrast text)", value=False, elem_id="large")
        status = gr.Markdown(elem_id="status")
        gr.Examples([[text, is_chat] for _, text, is_chat in EXAMPLES], [prompt, chat], label="Examples",
                    example_labels=[label for label, _, _ in EXAMPLES])

        active = gr.State(TAB_IDS[0])  # which tab is showing: costly tabs draw only when seen
        ctx = TabContext(runner=runner, trace=trace, large=large, active=active)
        views, selected = [], []
        with gr.Tabs(selected=TAB_IDS[0]) as tabs:
            for spec in TABS:
                with gr.Tab(spec.label, id=spec.id) as tab:
                    views.append(spec.module.build(ctx))
                selected.append(tab.select(lambda id=spec.id: id, None, active, **READ_ONLY))
        with gr.Row():
            share = gr.Markdown(elem_id="share-link")
            download_btn = gr.Button("Download this trace's tensors (.npz)", elem_id="download-trace", scale=0,
                                     size="sm")
            trace_file = gr.File(label="Trace tensors", elem_id="trace-file", visible=False, scale=1, height=90)

        show_link = dict(fn=link, inputs=[prompt, chat, large, active], outputs=share, **READ_ONLY)
        for event, view in zip(selected, views):
            (view.on_show.then(event) if view.on_show else event).then(**show_link)
        large.change(None, large, None, js=PRESENTER_JS, **READ_ONLY)
        download_btn.click(export, trace, trace_file, **MODEL_RUN)

        def then_render(event):
            """After an analysis: every tab draws from the new trace, then the link follows."""
            for view in views:
                event = view.render.then(event)
            return event.then(**show_link)

        analyzing = dict(fn=bind(analyze, runner), inputs=[prompt, chat], outputs=[trace, status], **MODEL_RUN)
        for trigger in (analyze_btn.click, prompt.submit):
            then_render(trigger(**analyzing))
        then_render(app.load(from_url, None, [prompt, chat, large, tabs, active], **READ_ONLY).then(**analyzing))
        api.register(runner)
    return app


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None,
                        help=f"preset name, .gguf file, HF model directory or hub id "
                             f"(default: {DEFAULT_MODEL}; on a Space, {HUB_MODEL} from the hub)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--share", action="store_true", help="also serve through a public Gradio share link")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="[%(name)s] %(message)s")
    keep_freed_memory()
    try:
        net, enc, note = choose_model(args.model)
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    app = create_app(ModelRunner(net, enc), note)
    app.queue(default_concurrency_limit=MODEL_CONCURRENCY, max_size=QUEUE_SIZE).launch(
        server_name=args.host, server_port=args.port, share=args.share, **launch_options()
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
