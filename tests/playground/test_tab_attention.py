"""Attention tab handlers on the tiny model's trace: they show the trace's numbers, for any layer and head."""

from __future__ import annotations

import numpy as np

from playground import tab_attention
from playground.figures.attention import mosaic_cell
from playground.ui import grid_side


class Click:
    """What Gradio passes a select handler: the clicked pixel or table row."""

    def __init__(self, index=None, row_value=None):
        self.index, self.row_value = index, row_value


def test_stats_table_sorts_to_find_heads(tiny_runner, tiny_trace):
    cfg = tiny_runner.cfg
    table = tab_attention.stats_table(tiny_runner, tiny_trace, "previous token")
    assert len(table) == cfg.n_layers * cfg.n_heads
    best = np.unravel_index(np.nanargmax(tiny_trace.head_stats[..., 1]), tiny_trace.head_stats.shape[:2])
    assert (table.iloc[0]["layer"], table.iloc[0]["head"]) == best
    assert table.iloc[0]["kv head"] == cfg.kv_head_of(int(best[1]))
    focused = tab_attention.stats_table(tiny_runner, tiny_trace, "entropy, low to high (focused)")
    assert focused["entropy (bits)"].is_monotonic_increasing
    assert tab_attention.stats_table(tiny_runner, None, "self").empty


def test_render_head(tiny_runner, tiny_trace):
    cfg = tiny_runner.cfg
    layer, head = cfg.n_layers - 1, cfg.n_heads - 1
    kv = cfg.kv_head_of(head)
    heatmap, stages, vectors, gqa, grid, summary = tab_attention.render_head(tiny_runner, tiny_trace, layer, head,
                                                                             False)
    assert f"layer {layer}, head {head} (reads key/value head {kv})" in heatmap.layout.title.text
    pattern = tiny_runner.layer(tiny_trace, layer).pattern[head]
    np.testing.assert_allclose(np.array(heatmap.data[0].z, dtype=float)[-1], pattern[-1], atol=1e-6)
    side = grid_side(cfg.n_heads)
    cell = tab_attention.LAYER_CELL + 2
    assert grid.shape == ((cfg.n_heads // side) * cell + 2, side * cell + 2, 3)
    assert f"{tiny_trace.head_stats[layer, head, 1]:.3f}" in summary
    assert all(fig is None for fig in tab_attention.render_head(tiny_runner, None, 0, 0, False)[:3])


def test_out_of_range_layer_and_head_are_clamped(tiny_runner, tiny_trace):
    cfg = tiny_runner.cfg
    heatmap = tab_attention.render_head(tiny_runner, tiny_trace, 99, -4, False)[0]
    assert f"layer {cfg.n_layers - 1}, head 0" in heatmap.layout.title.text


def test_long_prompts_show_a_window_of_the_stages(tiny_runner):
    trace = tiny_runner.analyze("the cat sat on the mat " * 40)
    assert trace.n_tokens > tab_attention.MAX_DETAIL
    _, stages, vectors, *_ = tab_attention.render_head(tiny_runner, trace, 0, 0, False)
    assert np.array(stages.data[0].z).shape == (tab_attention.MAX_DETAIL, tab_attention.MAX_DETAIL)
    assert f"of {trace.n_tokens}" in stages.layout.title.text
    assert np.array(vectors.data[0].z).shape == (tab_attention.MAX_DETAIL, tiny_runner.cfg.d_head)


def test_clicks_open_the_head_under_them(tiny_runner):
    cfg = tiny_runner.cfg
    side = grid_side(cfg.n_heads)
    cell = tab_attention.LAYER_CELL + 2
    for head in range(cfg.n_heads):
        row, col = divmod(head, side)
        x, y = 2 + col * cell + cell // 2, 2 + row * cell + cell // 2
        assert tab_attention.pick_in_layer(tiny_runner, Click(index=[x, y])) == head
    cell = tab_attention.OVERVIEW_CELL + 2
    layer, head = cfg.n_layers - 1, 1
    assert tab_attention.pick_in_overview(tiny_runner, Click(index=[2 + layer * cell + 5,
                                                                    2 + head * cell + 5])) == (layer, head)
    assert mosaic_cell(0, 0, 1, 1, 10) is None
    assert tab_attention.pick_row(Click(row_value=[1, 4, 1, 0.5, 0.1, 0.2, 1.0])) == (1, 4)


def test_render_after_analyze_draws_the_overview(tiny_runner, tiny_trace):
    cfg = tiny_runner.cfg
    *_, overview, table = tab_attention.render(tiny_runner, tiny_trace, 0, 0, False, "layer, head")
    cell = tab_attention.OVERVIEW_CELL + 2
    assert overview.shape == (cfg.n_heads * cell + 2, cfg.n_layers * cell + 2, 3)
    assert len(table) == cfg.n_layers * cfg.n_heads
