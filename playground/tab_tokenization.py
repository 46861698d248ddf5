"""Tokenization tab: the prompt as the model's tokens, ids, bytes, counts, surprisal, and other tokenizers.

Reads the trace only; comparison encodings (tiktoken, offline) encode the same text.
"""

from __future__ import annotations

import gradio as gr

from model import available_encodings, get_encoding

from .figures import token_spans_html
from .trace import ModelRunner, Trace

EMPTY = "<p class='hint'>Analyze a prompt to see its tokens.</p>"


def counts_markdown(n_tokens: int, text: str) -> str:
    n_chars, n_bytes = len(text), len(text.encode("utf-8"))
    per = f"{n_chars / n_tokens:.2f}" if n_tokens else "–"
    return f"**{n_tokens}** tokens · **{n_chars}** characters · **{n_bytes}** bytes · **{per}** characters per token"


def model_text(trace: Trace, runner: ModelRunner) -> str:
    """The text the model saw: the prompt, or the prompt inside the chat template."""
    return runner.enc.decode(trace.ids.tolist()) if trace.chat else trace.prompt


def render(trace: Trace | None, visible_ws: bool, by_surprisal: bool, compare: list[str], large: bool, runner: ModelRunner):
    if trace is None:
        return EMPTY, "", ""
    spans = token_spans_html(
        trace.token_bytes, trace.ids.tolist(), trace.special, trace.surprisal if by_surprisal else None, visible_ws, large
    )
    text = model_text(trace, runner)
    counts = f"**{runner.cfg.name}** · " + counts_markdown(trace.n_tokens, text)
    if by_surprisal:
        finite = trace.surprisal[1:]
        if len(finite):
            counts += f" · mean surprisal **{finite.mean():.2f}** bits/token"
    blocks = []
    for label in compare or []:
        try:
            other = get_encoding(label)
        except ValueError as e:
            blocks.append(f"<p>{e}</p>")
            continue
        ids = other.encode(text, disallowed_special=())  # special-token strings count as plain text here
        pieces = [other.decode_single_token_bytes(i) for i in ids]
        blocks.append(f"<h4>{label}</h4><p>{counts_markdown(len(ids), text).replace('**', '')}</p>"
                      + token_spans_html(pieces, ids, None, None, visible_ws, large))
    if trace.chat:
        blocks.append("<p class='hint'>In chat mode the comparison tokenizers see the template's markers as plain text.</p>")
    return spans, counts, "".join(blocks)


def build(runner: ModelRunner, trace_state: gr.State, large_mode: gr.Checkbox) -> tuple[callable, list, list]:
    """Lay out the tab; returns (render function, its inputs, its outputs) for the app to call after Analyze."""
    offline = list(available_encodings())
    gr.Markdown(
        "How the text becomes tokens: byte-level BPE splits it into pieces, each with an id. "
        "Hover a token for its id, bytes and text. Pieces of a character split across tokens "
        "(emoji, CJK) show as their raw bytes, e.g. `<F0 9F>`."
    )
    with gr.Row():
        visible_ws = gr.Checkbox(label="Show whitespace (· space, → tab, ↵ newline)", value=False)
        by_surprisal = gr.Checkbox(label="Colour by surprisal (how unexpected each token was to the model)", value=False)
    counts = gr.Markdown(elem_id="token-counts")
    spans = gr.HTML(EMPTY, elem_id="token-spans")
    compare = gr.CheckboxGroup(offline, value=offline[:1], label="Compare with other tokenizers (available offline)")
    compare_html = gr.HTML(elem_id="token-compare")

    inputs = [trace_state, visible_ws, by_surprisal, compare, large_mode]
    outputs = [spans, counts, compare_html]

    def fn(trace, ws, surprisal, comp, large):
        return render(trace, ws, surprisal, comp, large, runner)

    for control in (visible_ws, by_surprisal, compare):
        control.change(fn, inputs, outputs, api_visibility="private", queue=False)
    return fn, inputs, outputs
