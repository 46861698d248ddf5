"""Embeddings tab: one matrix in and out (tied), a token's neighbours, every token's norm, a projection, the read-out.

SmolLM2 uses the same matrix to embed tokens and to unembed the last residual. So a token's
row is also an output direction: read out through the final norm (as the logit lens's "embed"
row is), it usually predicts the token itself, because its logit is a sum of squares.
"""

from __future__ import annotations

import gradio as gr

from .figures.embeddings import neighbours_figure, norms_figure, pca_figure, readout_figure
from .runner import ModelRunner
from .trace import Trace
from .ui import LAYER_VIEW, Event, TabContext, TabView, bind, clamp, font_scale, intro, token_markdown, token_text
from .view import View, number, position_of

TAB_ID = "embeddings"

WORDS = (" Paris, London, Berlin, Rome, France, England, Germany, Italy, cat, dog, horse, mouse, 1, 2, 3, 7, red, "
         "blue, green")


def word_token(runner: ModelRunner, word: str) -> int | None:
    """The token a word stands for: its first token, or its second when the first is only the space before it
    (SmolLM2 splits " 7" into " " and "7")."""
    ids = runner.tokens(word)
    if len(ids) > 1 and not runner.token_bytes(ids[0]).strip():
        return ids[1]
    return ids[0] if ids else None


def nearest(runner: ModelRunner, trace: Trace, pos: int = -1, k: int = 6, large: bool = False) -> View:
    """The tokens whose embedding rows are nearest (by cosine) to the row of the token at `pos`: the Embeddings
    tab's main view for a prompt."""
    token = int(trace.ids[position_of(trace.n_tokens, pos)])
    view = runner.embeddings([token], number(k, "k", 3, 30, whole=True))
    near = ", ".join(token_markdown(runner, int(t)) for t in view.nearest[0] if int(t) != token)
    note = f"{token_markdown(runner, token)} sits closest to {near} (cosine of their embedding rows)."
    return View(_neighbours_figure(runner, view, token, font_scale(large)), note)


VIEWS = {"nearest": nearest}
SLIDE = "nearest"  # the view a deck's slide of this tab shows


def _neighbours_figure(runner: ModelRunner, view, token: int, scale: float):
    return neighbours_figure([token_text(runner, t) for t in view.nearest[0]], view.cosine[0],
                             f"Nearest tokens to {token_text(runner, token)} by cosine of their embedding rows",
                             font_scale=scale)


def render(runner: ModelRunner, trace: Trace | None, text: str, k: int, words: str, large: bool):
    """A new prompt: (note, neighbours, read-out, norms, projection, the prompt's embed row)."""
    return (*render_token(runner, text, k, words, large), self_prediction(runner, trace))


def render_token(runner: ModelRunner, text: str, k: int, words: str, large: bool):
    """(note, neighbours, read-out, norms, projection) for the token and the words typed."""
    scale, k = font_scale(large), clamp(k, 3, 30)
    token = runner.first_token(text) if text and text.strip() else None
    if token is None:
        return "⚠️ Type a token (its first token is used), e.g. ` Paris`.", None, None, None, None
    firsts = (word_token(runner, w) for w in (words or "").split(",") if w.strip())
    chosen = [t for t in dict.fromkeys(firsts) if t is not None]
    view = runner.embeddings([token, *chosen], k)
    name = token_text(runner, token)
    neighbours = _neighbours_figure(runner, view, token, scale)
    norms = view.norms
    rank = int((norms > norms[token]).sum())
    note = (f"Token {token_markdown(runner, token)} (id {token}): embedding norm {norms[token]:.3f}, larger than "
            f"{100 * (1 - rank / len(norms)):.1f}% of the {len(norms):,} tokens. Read out through the final norm, it "
            f"predicts {'itself first' if view.self_rank[0] == 0 else f'itself at rank {int(view.self_rank[0])}'}.")
    readout = readout_figure([token_text(runner, t) for t in view.output[0]], view.output_p[0], name,
                             f"{name} read out as an output (final norm, then "
                             f"{'W_U = W_E' if runner.cfg.tie_embeddings else 'W_U, its own matrix'})",
                             font_scale=scale)
    specials = runner.special_ids
    marked = [(token, name)]
    norms_fig = norms_figure(norms, specials, marked, "Every token's embedding norm (special tokens: diamonds)",
                             font_scale=scale)
    pca = None
    if len(chosen) < 3:
        note += " Type at least three tokens to project (comma-separated)."
    else:  # the projection is of the chosen tokens only (the first row is the token above)
        rows = runner.embeddings(chosen, 1)
        pca = pca_figure(rows.pca, [token_text(runner, t) for t in chosen], rows.explained, font_scale=scale)
    return note, neighbours, readout, norms_fig, pca


def self_prediction(runner: ModelRunner, trace: Trace | None) -> str:
    """For the analysed prompt: how often the logit lens's "embed" row predicts the input token itself, and when not."""
    if trace is None:
        return ""
    ids = trace.ids.tolist()
    view = runner.embeddings(ids, 1)
    misses = [(i, t, int(view.output[i, 0])) for i, t in enumerate(ids) if view.self_rank[i] != 0]
    share = 1 - len(misses) / len(ids)
    lines = [f"In the analysed prompt, the embedding row read out predicts the input token itself at "
             f"**{100 * share:.0f}%** of the {len(ids)} positions (the logit lens's *embed* row). Its logit is "
             f"(e·g/rms)·e, a weighted sum of squares, so it usually wins; another token wins when its row points the "
             f"same way and is longer."]
    if misses:
        shown = ", ".join(f"{token_markdown(runner, t)} → {token_markdown(runner, o)}" for _, t, o in misses[:8])
        lines.append(f"Where it does not: {shown}{' …' if len(misses) > 8 else ''}.")
    return " ".join(lines)


def build(ctx: TabContext) -> TabView:
    tied = ctx.runner.cfg.tie_embeddings
    intro(
        (f"{ctx.runner.cfg.name} **ties** its embeddings: one matrix turns token ids into vectors at the bottom and "
         "vectors into logits at the top. " if tied else
         f"{ctx.runner.cfg.name} does **not** tie its embeddings: one matrix turns token ids into vectors at the "
         "bottom, another turns vectors into logits at the top. ") +
        "Type a token to see its nearest neighbours, how its norm compares with every token's "
        "(special tokens stand out), and what its row predicts when read out as an output."
    )
    with gr.Row():
        text = gr.Textbox(" Paris", label="Token (its first token is used)", elem_id="emb-token", scale=1)
        k = gr.Slider(3, 30, value=12, step=1, label="Neighbours shown", elem_id="emb-k", scale=1)
        words = gr.Textbox(WORDS, label="Tokens to project in 2-D (comma-separated)", elem_id="emb-words", scale=3)
    note = gr.Markdown(elem_id="emb-note")
    with gr.Row():
        neighbours = gr.Plot(elem_id="emb-neighbours", show_label=False)
        readout = gr.Plot(elem_id="emb-readout", show_label=False)
    with gr.Row():
        norms = gr.Plot(elem_id="emb-norms", show_label=False)
        pca = gr.Plot(elem_id="emb-pca", show_label=False)
    prompt_note = gr.Markdown(elem_id="emb-prompt")

    view = Event(bind(render, ctx.runner), [ctx.trace, text, k, words, ctx.large],
                 [note, neighbours, readout, norms, pca,
                                                                                       prompt_note])
    for trigger in (text.submit, words.submit, k.release, ctx.large.change):
        trigger(view.fn, view.inputs, view.outputs, **LAYER_VIEW)
    return TabView(render=view)

