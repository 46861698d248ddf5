"""Attention tab: one head's pattern, its four stages, Q/K/V, grouped-query sharing, every head, head statistics.

Everything is read from the trace; changing layer or head never runs the model. Clicking
a thumbnail in either grid, or a row of the statistics table, opens that head.
"""

from __future__ import annotations

import gradio as gr
import numpy as np
import pandas as pd

from .figures.attention import (
    attention_heatmap, gqa_figure, mosaic, mosaic_cell, mosaic_of_levels, stages_figure, vectors_figure,
)
from .figures.tokens import axis_labels
from .runner import ModelRunner, PromptError
from .trace import HEAD_STAT_NAMES, Trace, attention_stages, uniform_entropy
from .view import View, head_of, layer_of
from .ui import (
    LAYER_VIEW, Link, READ_ONLY, Event, TabContext, TabView, arrows, bind, font_scale, grid_side, intro, layer_head,
    scriptable,
)

TAB_ID = "attention"

KEYS = (*arrows("attn-head", "head"), *arrows("attn-layer", "layer", "ArrowDown", "ArrowUp"))
LINKS = (Link("layer", "attn-layer"), Link("head", "attn-head"))
WHY_JS = "(layer, head) => { if (window.playgroundOpen) window.playgroundOpen('routes', {layer, head}); }"
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


def stats_table(runner: ModelRunner, trace: Trace | None, sort: str) -> pd.DataFrame:
    """Every head's statistics as a table, sorted."""
    columns = ["layer", "head", "kv head", *HEAD_STAT_NAMES]
    if trace is None:
        return pd.DataFrame(columns=columns)
    L, H, _ = trace.head_stats.shape
    kv_head_of = runner.cfg.kv_head_of
    rows = [[l, h, kv_head_of(h), *np.round(trace.head_stats[l, h].astype(float),
                                            3)] for l in range(L) for h in range(H)]
    table = pd.DataFrame(rows, columns=columns)
    key, ascending = SORTS.get(sort, SORTS["layer, head"])
    return table.sort_values([key, "layer", "head"], ascending=[ascending, True, True],
                             kind="stable").reset_index(drop=True)


def pattern(runner: ModelRunner, trace: Trace, layer: int = 0, head: int = 0, large: bool = False) -> View:
    """One head's attention pattern as a heatmap (the causal mask and any sliding window in grey), and its
    statistics: the Attention tab's main view."""
    cfg = runner.cfg
    layer, head = layer_of(cfg, layer), head_of(cfg, head)
    tensors = runner.layer(trace, layer)
    stats = trace.head_stats[layer, head]
    window = cfg.window_of(layer)
    heatmap = attention_heatmap(tensors.pattern[head], axis_labels(trace.token_bytes),
                                f"Attention pattern, {_name(cfg, layer, head)}", font_scale=font_scale(large),
                                window=window)
    summary = (
        f"**{_name(cfg, layer, head)}** · to first token {stats[0]:.3f} · to previous token {stats[1]:.3f} · "
        f"to self {stats[2]:.3f} · entropy {stats[3]:.2f} bits (a causal head spreading evenly: "
        f"{uniform_entropy(trace.n_tokens):.2f})"
    )
    facts = dict(zip(("to_first", "to_previous", "to_self", "entropy_bits"), map(float, stats)))
    reach = window_note(cfg, layer, trace.n_tokens)
    if reach:
        summary += f"  \n{reach}"
    facts["window"] = window
    return View(heatmap, summary, facts)


def window_note(cfg, layer: int, n_tokens: int) -> str:
    """Which keys this layer lets a query see, where that is not simply all before it (Mistral, Gemma 3)."""
    window = cfg.window_of(layer)
    if cfg.sliding_window is None:
        return ""
    full = [l for l in range(cfg.n_layers) if cfg.window_of(l) is None]
    if window is None:
        return (f"Layer {layer} is a **global** layer (as are {', '.join(map(str, full))}): a query sees every key "
                f"before it. The other layers see only their last {cfg.sliding_window} keys.")
    others = f" Global layers, which see every key: {', '.join(map(str, full))}." if full else ""
    fits = (f" All {n_tokens} tokens of this prompt fit in it: nothing is hidden yet." if n_tokens <= window else
            f" Keys further back are greyed: they are hidden from queries past position {window - 1}.")
    return f"Layer {layer} is a **sliding-window** layer: a query sees only its last {window} keys.{fits}{others}"


VIEWS = {"pattern": pattern}
SLIDE = "pattern"  # the view a deck's slide of this tab shows


def _name(cfg, layer: int, head: int) -> str:
    return f"layer {layer}, head {head} (reads key/value head {cfg.kv_head_of(head)})"


def render_head(runner: ModelRunner, trace: Trace | None, layer: int, head: int, large: bool):
    """Everything that depends on (layer, head): the figures and the layer's clickable grid."""
    cfg = runner.cfg
    layer, head = layer_head(cfg, layer, head)
    scale = font_scale(large)
    gqa = gqa_figure(cfg.n_heads, cfg.n_kv_heads, head, font_scale=scale)
    if trace is None:
        return None, None, None, gqa, None, ""
    kv = cfg.kv_head_of(head)
    labels = axis_labels(trace.token_bytes)
    T = trace.n_tokens
    try:
        shown_head = pattern(runner, trace, layer, head, large)
        tensors = runner.layer(trace, layer)
    except PromptError as e:  # dropped to make room, or the model stayed busy
        return gr.update(), gr.update(), gr.update(), gqa, gr.update(), f"⚠️ {e}"
    name = _name(cfg, layer, head)
    start = max(0, T - MAX_DETAIL)
    window = slice(start, T)
    shown = f" — positions {start}–{T - 1} of {T}" if start else ""
    stages = attention_stages(tensors.rot_q[window, head], tensors.rot_k[window, kv], cfg.window_of(layer),
                              cfg.attn_scale)
    stage_fig = stages_figure(stages, labels[window], f"From scores to weights, {name}{shown}", font_scale=scale,
                              window=cfg.window_of(layer))
    vectors = {
        f"q head {head}": tensors.q[window, head],
        "q after RoPE": tensors.rot_q[window, head],
        f"k head {kv}": tensors.k[window, kv],
        "k after RoPE": tensors.rot_k[window, kv],
        f"v head {kv}": tensors.v[window, kv],
    }
    title = f"Queries, keys and values (tokens × d_head = {cfg.d_head}){shown}"
    vector_fig = vectors_figure(vectors, labels[window], title, font_scale=scale)

    side = grid_side(cfg.n_heads)
    layer_grid = mosaic(tensors.pattern.reshape(-1, side, T, T), LAYER_CELL, highlight=divmod(head, side))
    return shown_head.figure, stage_fig, vector_fig, gqa, layer_grid, shown_head.note


def render_overview(trace: Trace | None) -> np.ndarray | None:
    """Every head of every layer as thumbnails kept in the trace: heads down, layers across."""
    if trace is None:
        return None
    return mosaic_of_levels(trace.thumbnails.transpose(1, 0, 2, 3), trace.n_tokens)


def render(runner: ModelRunner, trace: Trace | None, layer: int, head: int, large: bool, sort: str):
    """After Analyze: the head's figures, the overview and the statistics table."""
    return (*render_head(runner, trace, layer, head, large), render_overview(trace),
            stats_table(runner, trace, sort))


def pick_in_layer(runner: ModelRunner, evt: gr.SelectData):
    """A click in the layer's grid: the head under it."""
    side = grid_side(runner.cfg.n_heads)
    cell = mosaic_cell(evt.index[0], evt.index[1], runner.cfg.n_heads // side, side, LAYER_CELL)
    return gr.update() if cell is None else int(cell[0] * side + cell[1])


def pick_in_overview(runner: ModelRunner, evt: gr.SelectData):
    """A click in the overview: (layer, head) under it."""
    cell = mosaic_cell(evt.index[0], evt.index[1], runner.cfg.n_heads, runner.cfg.n_layers, OVERVIEW_CELL)
    return (gr.update(), gr.update()) if cell is None else (cell[1], cell[0])


def pick_row(evt: gr.SelectData):
    """A click on a statistics row: its (layer, head)."""
    row = evt.row_value
    return (gr.update(), gr.update()) if not row else (int(row[0]), int(row[1]))


def build(ctx: TabContext) -> TabView:
    cfg = ctx.runner.cfg
    intro(
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
            why = gr.Button("Why does this head attend where it does? (Routes tab)", size="sm", elem_id="attn-why")
        with gr.Column(scale=2):
            layer_grid = gr.Image(label="Every head of this layer (click one)", interactive=False,
                                  elem_id="attn-layer-grid",
                                  buttons=[], format="png")
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
        gr.Markdown("Means over query positions, the first query left out (it can only attend to itself). "
                    "Click a row to open that head.")

    runner = ctx.runner
    head_inputs = [ctx.trace, layer, head, ctx.large]
    head_outputs = [heatmap, stages, vectors, gqa, layer_grid, summary]
    for control in (layer, head, ctx.large):
        options = scriptable(LAYER_VIEW, "attention_head") if control is layer else LAYER_VIEW
        control.change(bind(render_head, runner), head_inputs, head_outputs, **options)
    layer_grid.select(bind(pick_in_layer, runner), None, [head], **READ_ONLY)
    why.click(None, [layer, head], None, js=WHY_JS, **READ_ONLY)
    overview.select(bind(pick_in_overview, runner), None, [layer, head], **READ_ONLY)
    table.select(pick_row, None, [layer, head], **READ_ONLY)
    sort.change(bind(stats_table, runner), [ctx.trace, sort], [table], **READ_ONLY)
    return TabView(render=Event(bind(render, runner), [*head_inputs, sort], [*head_outputs, overview, table]))
