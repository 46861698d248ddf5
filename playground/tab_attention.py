"""Attention tab: one head's pattern, its four stages, Q/K/V, grouped-query sharing, every head, head statistics.

Everything is read from the trace; changing layer or head never runs the model. Clicking
a thumbnail in either grid, or a row of the statistics table, opens that head.
"""

from __future__ import annotations

import gradio as gr
import numpy as np
import pandas as pd

from . import READ_ONLY
from .figures import attention_heatmap, axis_labels, gqa_figure, mosaic, mosaic_cell, stages_figure, vectors_figure
from .trace import HEAD_STAT_NAMES, ModelRunner, Trace, attention_stages

LAYER_CELL, OVERVIEW_CELL = 120, 30  # thumbnail sizes in pixels
MAX_DETAIL = 128  # stages and Q/K/V show at most this many positions (the last ones)

SORTS = {
    "layer, head": ("layer", True),
    "first token (attention sinks)": (HEAD_STAT_NAMES[0], False),
    "previous token": (HEAD_STAT_NAMES[1], False),
    "self": (HEAD_STAT_NAMES[2], False),
    "entropy, low to high (focused)": (HEAD_STAT_NAMES[3], True),
    "entropy, high to low (diffuse)": (HEAD_STAT_NAMES[3], False),
}


def stats_table(trace: Trace | None, sort: str, kv_head_of) -> pd.DataFrame:
    columns = ["layer", "head", "kv head", *HEAD_STAT_NAMES]
    if trace is None:
        return pd.DataFrame(columns=columns)
    L, H, _ = trace.head_stats.shape
    rows = [[l, h, kv_head_of(h), *np.round(trace.head_stats[l, h].astype(float), 3)] for l in range(L) for h in range(H)]
    table = pd.DataFrame(rows, columns=columns)
    key, ascending = SORTS.get(sort, SORTS["layer, head"])
    return table.sort_values([key, "layer", "head"], ascending=[ascending, True, True], kind="stable").reset_index(drop=True)


def render_head(trace: Trace | None, layer: int, head: int, large: bool, runner: ModelRunner):
    """Everything that depends on (layer, head): the figures and the layer's clickable grid."""
    cfg = runner.cfg
    layer, head = int(np.clip(layer, 0, cfg.n_layers - 1)), int(np.clip(head, 0, cfg.n_heads - 1))
    scale = 1.5 if large else 1.0
    gqa = gqa_figure(cfg.n_heads, cfg.n_kv_heads, head, font_scale=scale)
    if trace is None:
        return None, None, None, gqa, None, ""
    kv = cfg.kv_head_of(head)
    labels = axis_labels(trace.token_bytes)
    T = trace.n_tokens
    name = f"layer {layer}, head {head} (reads key/value head {kv})"
    heatmap = attention_heatmap(trace.pattern[layer, head], labels, f"Attention pattern, {name}", font_scale=scale)

    start = max(0, T - MAX_DETAIL)
    window = slice(start, T)
    shown = f" — positions {start}–{T - 1} of {T}" if start else ""
    stages = attention_stages(trace, layer, head, kv)
    stages = {k: v[window, window] for k, v in stages.items()}
    stage_fig = stages_figure(stages, labels[window], f"From scores to weights, {name}{shown}", font_scale=scale)
    vectors = {
        f"q head {head}": trace.q[layer, window, head],
        "q after RoPE": trace.rot_q[layer, window, head],
        f"k head {kv}": trace.k[layer, window, kv],
        "k after RoPE": trace.rot_k[layer, window, kv],
        f"v head {kv}": trace.v[layer, window, kv],
    }
    vector_fig = vectors_figure(vectors, labels[window], f"Queries, keys and values (tokens × d_head = {cfg.d_head}){shown}", font_scale=scale)

    group = int(np.sqrt(cfg.n_heads)) if int(np.sqrt(cfg.n_heads)) ** 2 == cfg.n_heads else cfg.n_heads
    layer_grid = mosaic(trace.pattern[layer].reshape(-1, group, T, T), LAYER_CELL, highlight=divmod(head, group))
    stats = trace.head_stats[layer, head]
    summary = (
        f"**{name}** · to first token {stats[0]:.3f} · to previous token {stats[1]:.3f} · "
        f"to self {stats[2]:.3f} · entropy {stats[3]:.2f} bits (uniform over {T} tokens: {np.log2(T):.2f})"
    )
    return heatmap, stage_fig, vector_fig, gqa, layer_grid, summary


def render_overview(trace: Trace | None) -> np.ndarray | None:
    """Every head of every layer as thumbnails: heads down, layers across. Drawn once per Analyze."""
    return None if trace is None else mosaic(trace.pattern.transpose(1, 0, 2, 3), OVERVIEW_CELL)


def build(runner: ModelRunner, trace_state: gr.State, large_mode: gr.Checkbox):
    """Lay out the tab; returns (render function, its inputs, its outputs) for the app to call after Analyze."""
    cfg = runner.cfg
    side = int(np.sqrt(cfg.n_heads)) if int(np.sqrt(cfg.n_heads)) ** 2 == cfg.n_heads else cfg.n_heads
    gr.Markdown(
        "Each head scores every earlier token with q·k, scales by 1/√d_head, masks the future, and "
        "turns scores into weights with softmax. Rows are the tokens attending (queries), columns the "
        "tokens attended to (keys); grey cells are the future, hidden by the causal mask."
    )
    with gr.Row():
        layer = gr.Slider(0, cfg.n_layers - 1, value=0, step=1, label="Layer", elem_id="attn-layer")
        head = gr.Slider(0, cfg.n_heads - 1, value=0, step=1, label="Head", elem_id="attn-head")
    summary = gr.Markdown(elem_id="attn-summary")
    with gr.Row():
        with gr.Column(scale=3):
            heatmap = gr.Plot(label="Attention pattern", elem_id="attn-heatmap", show_label=False)
        with gr.Column(scale=2):
            layer_grid = gr.Image(label="Every head of this layer (click one)", interactive=False, elem_id="attn-layer-grid", buttons=[],
                                  format="png")
    gqa = gr.Plot(label="Grouped-query attention", elem_id="attn-gqa", show_label=False)
    with gr.Accordion("The four stages of this head", open=True):
        stages = gr.Plot(elem_id="attn-stages", show_label=False)
    with gr.Accordion("Q, K and V of this head, before and after RoPE", open=False):
        vectors = gr.Plot(elem_id="attn-vectors", show_label=False)
    with gr.Accordion("All layers × heads (click a thumbnail)", open=False):
        overview = gr.Image(label=f"{cfg.n_heads} heads (rows) × {cfg.n_layers} layers (columns)", interactive=False,
                            elem_id="attn-overview", buttons=[], format="png")
    with gr.Accordion("Head statistics: find previous-token heads, attention sinks, focused heads", open=False):
        sort = gr.Dropdown(list(SORTS), value="previous token", label="Sort by")
        table = gr.Dataframe(interactive=False, elem_id="attn-stats", max_height=420)
        gr.Markdown("Means over query positions (the first query is left out of *first token* and *previous token*). "
                    "Click a row to open that head.")

    head_inputs = [trace_state, layer, head, large_mode]
    head_outputs = [heatmap, stages, vectors, gqa, layer_grid, summary]

    def head_fn(trace, l, h, large):
        return render_head(trace, l, h, large, runner)

    for control in (layer, head, large_mode):
        control.change(head_fn, head_inputs, head_outputs, **READ_ONLY)

    def pick_in_layer(l, evt: gr.SelectData):
        cell = mosaic_cell(evt.index[0], evt.index[1], cfg.n_heads // side, side, LAYER_CELL)
        return gr.update() if cell is None else int(cell[0] * side + cell[1])

    def pick_in_overview(evt: gr.SelectData):
        cell = mosaic_cell(evt.index[0], evt.index[1], cfg.n_heads, cfg.n_layers, OVERVIEW_CELL)
        return (gr.update(), gr.update()) if cell is None else (cell[1], cell[0])

    def pick_row(t: pd.DataFrame, evt: gr.SelectData):
        row = evt.row_value
        return (gr.update(), gr.update()) if not row else (int(row[0]), int(row[1]))

    layer_grid.select(pick_in_layer, [layer], [head], **READ_ONLY)
    overview.select(pick_in_overview, None, [layer, head], **READ_ONLY)
    table.select(pick_row, [table], [layer, head], **READ_ONLY)

    def table_fn(trace, s):
        return stats_table(trace, s, cfg.kv_head_of)

    sort.change(table_fn, [trace_state, sort], [table], **READ_ONLY)

    def fn(trace, l, h, large, s):
        return (*head_fn(trace, l, h, large), render_overview(trace), table_fn(trace, s))

    return fn, [*head_inputs, sort], [*head_outputs, overview, table]
