"""Tokenization tab: the prompt as the model's tokens, ids, bytes, counts, surprisal, and other tokenizers.

Reads the trace only; comparison encodings (tiktoken, offline) encode the same text.
"""

from __future__ import annotations

import gradio as gr

from model import available_encodings, get_encoding

from .figures.tokens import TOKENS_CSS, token_label, token_spans_html
from .figures.tour import tokens_table
from .runner import ModelRunner
from .trace import Trace
from .ui import READ_ONLY, Event, TabContext, TabView, bind, font_scale, intro, token_markdown
from .view import View

TAB_ID = "tokenization"

CSS = TOKENS_CSS

EMPTY = "<p class='hint'>Analyze a prompt to see its tokens.</p>"


def counts_markdown(n_tokens: int, text: str) -> str:
    n_chars, n_bytes = len(text), len(text.encode("utf-8"))
    per = f"{n_chars / n_tokens:.2f}" if n_tokens else "–"
    return f"**{n_tokens}** tokens · **{n_chars}** characters · **{n_bytes}** bytes · **{per}** characters per token"


def model_text(runner: ModelRunner, trace: Trace) -> str:
    """The text the model saw: the prompt, or the prompt inside the chat template."""
    return runner.decode(trace.ids.tolist()) if trace.chat else trace.prompt


def words(trace: Trace) -> list[list[int]]:
    """Token positions grouped into the prompt's words (as `str.split` finds them): a token starting with
    whitespace, or following one that ends with it, starts a word; a token of whitespace alone (code's indentation, a
    line break) belongs to none; a special token is a word of its own."""
    groups: list[list[int]] = []
    boundary = True
    for i, data in enumerate(trace.token_bytes):
        if trace.special[i]:
            groups.append([i])
            boundary = True
            continue
        if not data.strip():
            boundary = True
            continue
        if boundary or data[:1].isspace():
            groups.append([i])
        else:
            groups[-1].append(i)
        boundary = data[-1:].isspace()
    return groups


def table(runner: ModelRunner, trace: Trace, large: bool = False) -> View:
    """Every token with its id and bytes as a table, and how the words split: the Tokenization tab's view for a
    slide (the tab itself draws coloured spans in HTML)."""
    groups = words(trace)
    bos = runner.adds_bos and trace.n_tokens > 0 and bool(trace.special[0])  # Gemma: BOS before every prompt
    if bos:
        groups = groups[1:]
    longest = max(groups, key=len) if groups else []
    pieces = " + ".join(token_markdown(runner, int(trace.ids[i])) for i in longest)
    split = (f"The longest word splits into **{len(longest)} pieces**: {pieces}." if len(longest) > 1 else
             "Every word here is a single token.")
    T = trace.n_tokens
    first = (f", after {token_markdown(runner, int(trace.ids[0]))}, which the tokenizer puts before every prompt"
             if bos else "")
    note = (f"The prompt becomes **{T} tokens** ({len(groups)} words{first}): the model never sees letters, only these "
            f"ids from its {runner.cfg.vocab_size:,}-token vocabulary. {split}")
    figure = tokens_table([token_label(b, True, 24) for b in trace.token_bytes], trace.ids.tolist(),
                          [b.hex(" ") for b in trace.token_bytes], f"{T} tokens", font_scale=font_scale(large))
    return View(figure, note, {"tokens": T, "words": len(groups), "longest": len(longest)})


VIEWS = {"table": table}
SLIDE = "table"  # the view a deck's slide of this tab shows


def render(runner: ModelRunner, trace: Trace | None, visible_ws: bool, by_surprisal: bool, compare: list[str],
           large: bool):
    """(token spans, counts, other tokenizers' spans)."""
    if trace is None:
        return EMPTY, "", ""
    spans = token_spans_html(
        trace.token_bytes, trace.ids.tolist(), trace.special, trace.surprisal if by_surprisal else None, visible_ws,
        large
    )
    text = model_text(runner, trace)
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
        pieces = other.decode_tokens_bytes(ids)
        blocks.append(f"<h4>{label}</h4><p>{counts_markdown(len(ids), text).replace('**', '')}</p>"
                      + token_spans_html(pieces, ids, None, None, visible_ws, large))
    if trace.chat:
        blocks.append("<p class='hint'>In chat mode the comparison tokenizers see the template's markers "
                      "as plain text.</p>")
    return spans, counts, "".join(blocks)


def build(ctx: TabContext) -> TabView:
    offline = list(available_encodings())
    if ctx.runner.tokenizer_kind == "sentencepiece":
        intro(
            "How the text becomes tokens: SentencePiece BPE (spaces written ▁, no split at words) merges characters "
            "into pieces, each with an id; a character the vocabulary lacks becomes its UTF-8 bytes, one token a "
            "byte (byte fallback), shown as raw bytes, e.g. `<F0>`. The tokenizer puts `<bos>` first. Hover a "
            "token for its id, bytes and text."
        )
    else:
        intro(
            "How the text becomes tokens: byte-level BPE splits it into pieces, each with an id. "
            "Hover a token for its id, bytes and text. Pieces of a character split across tokens "
            "(emoji, CJK) show as their raw bytes, e.g. `<F0 9F>`."
        )
    with gr.Row():
        visible_ws = gr.Checkbox(label="Show whitespace (· space, → tab, ↵ newline)", value=False)
        by_surprisal = gr.Checkbox(label="Colour by surprisal (how unexpected each token was to the model)",
                                   value=False)
    counts = gr.Markdown(elem_id="token-counts")
    spans = gr.HTML(EMPTY, elem_id="token-spans")
    compare = gr.CheckboxGroup(offline, value=offline[:1], label="Compare with other tokenizers (available offline)")
    compare_html = gr.HTML(elem_id="token-compare")

    view = Event(bind(render, ctx.runner), [ctx.trace, visible_ws, by_surprisal, compare, ctx.large],
                 [spans, counts, compare_html])
    for control in (visible_ws, by_surprisal, compare, ctx.large):
        control.change(view.fn, view.inputs, view.outputs, **READ_ONLY)
    return TabView(render=view)
