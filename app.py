"""Transformer playground: a Gradio app that shows every intermediate tensor of a real Llama-style model.

`app.py` only assembles and launches: the model is loaded once and handed to each tab
read-only; each visitor's analysis lives in their own `gr.State`. `python app.py --help`.
"""

from __future__ import annotations

import argparse
import sys

import gradio as gr

from model import CheckpointError, load
from model.allocator import keep_freed_memory
from playground import tab_attention, tab_lens, tab_rope, tab_sampler, tab_tokenization
from playground.figures import TOKENS_CSS
from playground.figures_sampler import GENERATION_CSS
from playground.trace import MAX_PROMPT_TOKENS, ModelRunner, PromptError, Trace

EXAMPLES = [
    ["The capital of France is Paris. The capital of Germany is", False],
    ["def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)", False],
    ["In 1969, Neil Armstrong walked on the Moon. 🚀 In 2024, 3 + 4 = 7.", False],
    ["Explain what attention does in a transformer, in one sentence.", True],
    ["Mr and Mrs Dursley, of number four, Privet Drive, were proud to say that they were perfectly normal.", False],
]

CSS = TOKENS_CSS + GENERATION_CSS + """
.hint { color: #666; }
#status p { margin: 0.2em 0; }
"""

SESSION_TTL_S = 3600  # a visitor's trace is dropped an hour after their last analysis, or when the tab closes


def theme() -> gr.themes.Base:
    """System fonts only, so the page fetches nothing from outside (talks are often offline)."""
    return gr.themes.Default(
        font=["system-ui", "-apple-system", "Segoe UI", "Roboto", "sans-serif"],
        font_mono=["ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace"],
    )


def launch_options() -> dict:
    return dict(theme=theme(), css=CSS)


def create_app(runner: ModelRunner) -> gr.Blocks:
    """The app around one loaded model."""
    cfg = runner.cfg

    def analyze(prompt: str, chat: bool) -> tuple[Trace | None, str]:
        try:
            trace = runner.analyze(prompt, chat)
        except PromptError as e:
            return None, f"⚠️ {e}"
        notes = " ".join(trace.notes)
        return trace, f"Analyzed **{trace.n_tokens}** tokens{' in the chat template' if chat else ''}. {notes}".strip()

    with gr.Blocks(title="Transformer playground") as app:
        trace_state = gr.State(None, time_to_live=SESSION_TTL_S)
        gr.Markdown(
            f"# Transformer playground\n"
            f"**{cfg.name}**: {cfg.n_layers} layers · d_model {cfg.d_model} · {cfg.n_heads} query heads sharing "
            f"{cfg.n_kv_heads} key/value heads · d_head {cfg.d_head} · RoPE base {cfg.rope_theta:g} · vocabulary {cfg.vocab_size:,}. "
            f"Type a prompt and press **Analyze**: the model runs once, and every tab reads that run."
        )
        with gr.Row():
            prompt = gr.Textbox(label=f"Prompt (up to {MAX_PROMPT_TOKENS} tokens)", value=EXAMPLES[0][0], lines=3, scale=4, elem_id="prompt")
            with gr.Column(scale=1, min_width=200):
                chat = gr.Checkbox(label="Wrap in the model's chat template", value=False, elem_id="chat")
                analyze_btn = gr.Button("Analyze", variant="primary", elem_id="analyze")
                large = gr.Checkbox(label="Large text (projector)", value=False, elem_id="large")
        status = gr.Markdown(elem_id="status")
        gr.Examples(EXAMPLES, [prompt, chat], label="Examples")
        active_tab = gr.State("tokenization")  # which tab is showing: the logit lens is computed only when seen
        quiet = dict(api_visibility="private", show_progress="hidden", concurrency_limit=None)
        with gr.Tabs():
            with gr.Tab("Tokenization", id="tokenization") as tok_tab:
                tok_fn, tok_in, tok_out = tab_tokenization.build(runner, trace_state, large)
            with gr.Tab("Attention", id="attention") as att_tab:
                att_fn, att_in, att_out = tab_attention.build(runner, trace_state, large)
            with gr.Tab("RoPE", id="rope") as rope_tab:
                rope_fn, rope_in, rope_out = tab_rope.build(runner, trace_state, large)
            with gr.Tab("Logit lens", id="lens") as lens_tab:
                lens_fn, lens_in, lens_out = tab_lens.build(runner, trace_state, large, lens_tab, active_tab)
            with gr.Tab("Sampler", id="sampler") as sampler_tab:
                samp_fn, samp_in, samp_out = tab_sampler.build(runner, trace_state, large)
        for tab, name in ((tok_tab, "tokenization"), (att_tab, "attention"), (rope_tab, "rope"), (sampler_tab, "sampler")):
            tab.select(lambda name=name: name, None, active_tab, **quiet)

        for trigger in (analyze_btn.click, prompt.submit, app.load):
            (
                trigger(analyze, [prompt, chat], [trace_state, status], api_visibility="private", concurrency_limit=2)
                .then(tok_fn, tok_in, tok_out, **quiet)
                .then(att_fn, att_in, att_out, **quiet)
                .then(rope_fn, rope_in, rope_out, **quiet)
                .then(samp_fn, samp_in, samp_out, **quiet)
                .then(lens_fn, lens_in, lens_out, api_visibility="private", concurrency_limit=2)
            )

        def tokenize(prompt: str, chat: bool = False) -> dict:
            """Tokens of a prompt: ids, bytes (hex) and text, with counts."""
            try:
                ids, _, notes = runner.tokenize(prompt, chat)
            except PromptError as e:
                return {"error": str(e)}
            pieces = [runner.enc.decode_single_token_bytes(i) for i in ids]
            return {
                "model": cfg.name, "ids": ids, "bytes": [p.hex() for p in pieces],
                "text": [p.decode("utf-8", errors="replace") for p in pieces], "n_tokens": len(ids), "notes": notes,
            }

        def attention(prompt: str, layer: int, head: int, chat: bool = False) -> dict:
            """One head's attention pattern for a prompt: weights[query][key], and the tokens."""
            if not (0 <= layer < cfg.n_layers and 0 <= head < cfg.n_heads):
                return {"error": f"layer must be in 0..{cfg.n_layers - 1} and head in 0..{cfg.n_heads - 1}"}
            try:
                trace = runner.analyze(prompt, chat)
            except PromptError as e:
                return {"error": str(e)}
            return {
                "model": cfg.name, "layer": layer, "head": head, "kv_head": cfg.kv_head_of(head), "ids": trace.ids.tolist(),
                "text": [b.decode("utf-8", errors="replace") for b in trace.token_bytes],
                "weights": trace.pattern[layer, head].round(6).tolist(),
                "head_stats": dict(zip(("first_token", "previous_token", "self", "entropy_bits"), map(float, trace.head_stats[layer, head]))),
            }

        gr.api(tokenize, api_name="tokenize")
        gr.api(attention, api_name="attention", concurrency_limit=2)
    return app


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="preset name, .gguf file, HF model directory or hub id (default: SmolLM2-135M-Instruct)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--share", action="store_true", help="also serve through a public Gradio share link")
    args = parser.parse_args()
    keep_freed_memory()
    try:
        net, enc = load(args.model)
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    app = create_app(ModelRunner(net, enc))
    app.queue(default_concurrency_limit=2).launch(server_name=args.host, server_port=args.port, share=args.share, **launch_options())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
