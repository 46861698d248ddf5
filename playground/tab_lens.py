"""Logit-lens tab: what each layer would predict if decoding stopped there, at every position.

The lens is computed from the traced residual streams the first time the tab is shown for
a prompt (about 1.5-2.5 s for 128 tokens here, exact float32) and kept in the trace.
"""

from __future__ import annotations

import gradio as gr
import numpy as np
import torch

from model.lens import lens_logits

from . import READ_ONLY
from .figures import axis_labels, token_label
from .figures_lens import STATISTICS, lens_grid, rankings_watch, statistic_values
from .trace import ModelRunner, PromptError, Trace



def watch(trace: Trace, runner: ModelRunner, position: int, with_mid: bool, extra: str, scale: float):
    """Ecco-style rankings watch: the probability of chosen tokens at one position, across the rows."""
    labels, rows = trace.lens_rows(with_mid)
    logits = lens_logits(runner.net, torch.from_numpy(rows[:, position]))  # (R, V)
    probs = logits.softmax(-1)
    final_top = int(logits[-1].argmax())
    tokens = {final_top: f"final prediction {token_label(runner.enc.decode_single_token_bytes(final_top), False)!r}"}
    if position + 1 < trace.n_tokens:
        nxt = int(trace.ids[position + 1])
        tokens.setdefault(nxt, f"actual next {token_label(runner.enc.decode_single_token_bytes(nxt), False)!r}")
    for word in [w for w in (extra or "").split(",") if w.strip()]:
        ids = runner.enc.encode(word.rstrip(), errors="replace")
        if ids:
            tokens.setdefault(ids[0], f"{token_label(runner.enc.decode_single_token_bytes(ids[0]), False)!r}")
    ids = torch.tensor(list(tokens))
    p = probs[:, ids].T.numpy()  # (n, R)
    ranks = (logits[:, None, :] > logits[:, ids][:, :, None]).sum(-1).T.numpy()
    return rankings_watch(labels, p, ranks, list(tokens.values()), axis_labels(trace.token_bytes)[position], font_scale=scale)


def render(trace: Trace | None, statistic: str, with_mid: bool, position: int, extra: str, large: bool, runner: ModelRunner):
    if trace is None:
        return None, None, ""
    scale = 1.5 if large else 1.0
    try:
        row_labels, lens = runner.lens(trace, with_mid)
    except PromptError as e:  # the model stayed busy
        return gr.update(), gr.update(), f"⚠️ {e}"
    colour, shown = statistic_values(statistic, lens.top_probs.numpy(), lens.rank_final.numpy(), lens.rank_next.numpy(),
                                     lens.kl_to_final.numpy(), lens.entropy.numpy())
    next_ids = np.append(trace.ids[1:], -1)
    grid = lens_grid(row_labels, axis_labels(trace.token_bytes), lens.top_ids.numpy(), lens.top_probs.numpy(), colour, shown,
                     statistic, next_ids, lambda i: token_label(runner.enc.decode_single_token_bytes(i), False, 12), font_scale=scale)
    position = int(np.clip(position, 0, trace.n_tokens - 1))
    first_hit = np.argmax(lens.rank_final.numpy() == 0, axis=0)  # first row already predicting the final token
    note = (f"At the last position the final prediction first becomes the top-1 token at row **{row_labels[first_hit[-1]]}**. "
            f"Rows: the residual stream after the embedding and after each layer"
            f"{' (and after each attention block)' if with_mid else ''}, each through the final RMSNorm "
            f"(its own RMS recomputed) and the unembedding.")
    return grid, watch(trace, runner, position, with_mid, extra, scale), note


def build(runner: ModelRunner, trace_state: gr.State, large_mode: gr.Checkbox, tab: gr.Tab, active_tab: gr.State):
    """Lay out the tab; returns (render function, its inputs, its outputs). Rendering waits until the tab is shown."""
    gr.Markdown(
        "The **logit lens** (nostalgebraist, 2020) decodes every layer's residual stream as if it were the last: "
        "final RMSNorm, then the unembedding. Read it bottom to top: where does the model's answer appear? "
        "Each cell shows that layer's top-1 token; hover for its top-10. **Bold** (or a ring, when cells are too small "
        "for text) marks a layer whose top-1 is the token that really comes next."
    )
    with gr.Row():
        statistic = gr.Dropdown(list(STATISTICS), value="probability of the top token", label="Colour by", elem_id="lens-stat")
        with_mid = gr.Checkbox(label="Also after each attention block (resid_mid)", value=False, elem_id="lens-mid")
    note = gr.Markdown(elem_id="lens-note")
    grid = gr.Plot(label="Logit lens", elem_id="lens-grid", show_label=False)
    with gr.Row():
        position = gr.Slider(0, 1, value=1, step=1, label="Position to watch", elem_id="lens-position", scale=2)
        extra = gr.Textbox(label="Also watch these tokens (comma-separated)", placeholder=" Paris, London", elem_id="lens-tokens", scale=2)
    watch_plot = gr.Plot(label="Rankings watch", elem_id="lens-watch", show_label=False)

    inputs = [trace_state, statistic, with_mid, position, extra, large_mode, active_tab]
    outputs = [grid, watch_plot, note]

    def fn(trace, stat, mid, pos, words, large, active):
        if active != "lens":  # computing the lens costs a second or more: only for a visible tab
            return gr.update(), gr.update(), gr.update()
        return render(trace, stat, mid, pos, words, large, runner)

    for control in (statistic, with_mid, position):
        control.input(fn, inputs, outputs, **READ_ONLY)
    large_mode.change(fn, inputs, outputs, **READ_ONLY)
    extra.submit(fn, inputs, outputs, **READ_ONLY)
    tab.select(lambda: "lens", None, active_tab, **READ_ONLY).then(fn, inputs, outputs, concurrency_limit=2, api_visibility="private")

    def after_analyze(trace, stat, mid, pos, words, large, active):
        """New prompt: move the watched position to its end; draw only if this tab is showing."""
        if trace is None:
            return (gr.update(), None, None, "")
        last = trace.n_tokens - 1
        slider = gr.update(maximum=max(last, 1), value=last)
        if active != "lens":
            return (slider, None, None, "Open this tab to compute the lens for the new prompt.")
        return (slider, *fn(trace, stat, mid, last, words, large, active))

    return after_analyze, inputs, [position, *outputs]
