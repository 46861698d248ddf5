"""Tab render functions: they read the trace and show its numbers (no browser needed)."""

from __future__ import annotations

import numpy as np

from playground import tab_attention, tab_tokenization


def test_stats_table_sorts_to_find_heads(trace, runner):
    table = tab_attention.stats_table(trace, "previous token", runner.cfg.kv_head_of)
    assert len(table) == 30 * 9
    best = np.unravel_index(np.nanargmax(trace.head_stats[..., 1]), trace.head_stats.shape[:2])
    assert (table.iloc[0]["layer"], table.iloc[0]["head"]) == best
    assert table.iloc[0]["kv head"] == runner.cfg.kv_head_of(int(best[1]))
    focused = tab_attention.stats_table(trace, "entropy, low to high (focused)", runner.cfg.kv_head_of)
    assert focused["entropy (bits)"].is_monotonic_increasing
    assert tab_attention.stats_table(None, "self", runner.cfg.kv_head_of).empty


def test_render_head(trace, runner):
    heatmap, stages, vectors, gqa, grid, summary = tab_attention.render_head(trace, 12, 7, False, runner)
    assert "layer 12, head 7 (reads key/value head 2)" in heatmap.layout.title.text
    np.testing.assert_allclose(np.array(heatmap.data[0].z, dtype=float)[-1], trace.pattern[12, 7, -1], atol=1e-6)
    assert grid.shape == (3 * 122 + 2, 3 * 122 + 2, 3)
    assert f"{trace.head_stats[12, 7, 1]:.3f}" in summary
    assert all(fig is None for fig in tab_attention.render_head(None, 0, 0, False, runner)[:3])


def test_long_prompts_show_a_window_of_the_stages(runner):
    trace = runner.analyze("one two three four five six seven eight nine ten " * 20)
    assert trace.n_tokens > tab_attention.MAX_DETAIL
    _, stages, vectors, *_ = tab_attention.render_head(trace, 0, 0, False, runner)
    assert np.array(stages.data[0].z).shape == (tab_attention.MAX_DETAIL, tab_attention.MAX_DETAIL)
    assert f"of {trace.n_tokens}" in stages.layout.title.text
    assert np.array(vectors.data[0].z).shape == (tab_attention.MAX_DETAIL, 64)


def test_tokenization_render(trace, runner):
    spans, counts, compare = tab_tokenization.render(trace, False, True, ["cl100k_base"], False, runner)
    assert f"**{trace.n_tokens}** tokens" in counts and "mean surprisal" in counts
    assert spans.count('class="tok"') == trace.n_tokens
    assert "cl100k_base" in compare
    assert tab_tokenization.render(None, False, False, [], False, runner)[0] == tab_tokenization.EMPTY
