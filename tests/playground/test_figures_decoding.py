"""figures.decoding: the beam tree, continuations, speculative rounds, DoLa and the KV cache, as drawn."""

from __future__ import annotations

import numpy as np

from playground.figures.decoding import (
    BEST, Continuation, TreeNode, beam_tree_figure, cache_contents_figure, cache_timing_figure, continuations_html,
    premature_figure, speculative_rounds_html, speedup_figure,
)


def test_the_best_path_is_drawn_in_red_and_finished_hypotheses_hang_below():
    nodes = [TreeNode(0, 0, -1, "a", -0.1, True, True), TreeNode(0, 1, -1, "b", -0.5, False, False),
             TreeNode(1, 0, 0, "c", -0.3, True, False), TreeNode(1, 0, 0, "<e>", -0.9, False, False, True, -0.45)]
    fig = beam_tree_figure(nodes, 2, "t")
    red = [t for t in fig.data if t.mode == "lines" and t.line.color == BEST][0]
    assert [x for x in red.x if x is not None] == [-1, 0, 0, 1]  # prompt -> a -> c
    best = [t for t in fig.data if t.name == "the returned best"][0]
    assert list(best.text) == ["a", "c"]
    finished = [t for t in fig.data if t.name == "finished hypothesis"][0]
    assert finished.y[0] < -1 and "score (÷ length^penalty) -0.4500" in finished.hovertext[0]
    dropped = [t for t in fig.data if t.name == "dropped (no beam continues it)"][0]
    assert list(dropped.text) == ["b"]


def test_continuations_show_every_token_with_its_probability():
    html = continuations_html("Once", [Continuation("greedy", [" upon", " a"], [np.log(0.5), np.log(0.25)], 0),
                                       Continuation("beam <2>", [" time"], [np.log(0.9)], 1, "score -0.1")])
    assert html.count('class="dtok"') == 3 and "p = 0.5000" in html and "p = 0.2500" in html
    assert "beam &lt;2&gt;" in html and "<td>2</td><td>-1.040</td><td>0</td>" in html  # tokens, mean log p, repeats


def test_speculative_rounds_mark_kept_rejected_and_unchecked():
    html = speculative_rounds_html([(["a", "b", "c"], 1, "x", [1.0, 0.25])])
    assert html.index("kept") < html.index("rejected") < html.index("unchecked")
    assert "min(1, p/q) = 0.250" in html and "not checked" in html and "✓" in html and "✗" in html


def test_speedup_dola_and_cache_figures():
    fig = speedup_figure([6, 12], [0.1, 0.5], [0.3, 0.6], 4)
    assert list(fig.data[0].y) == [10.0, 50.0] and list(fig.data[1].y) == [0.3, 0.6]
    fig = premature_figure([2, 4], [0.5, 0.1], ["x", "y"], [True, False])
    assert list(fig.data[0].text) == ["L2", "L4"] and list(fig.data[0].x) == ["1 x", "2 y"]
    assert fig.data[0].marker.color[0] == BEST and fig.data[0].marker.color[1] != BEST
    fig = cache_timing_figure([10, 20], [0.01, 0.011], [0.05, 0.09])
    assert list(fig.data[0].y) == [50.0, 90.0] and list(fig.data[1].y) == [10.0, 11.0]


def test_cache_contents_are_keys_and_values_head_by_head():
    G, T, Dh = 2, 3, 4
    keys = np.arange(G * T * Dh, dtype=float).reshape(G, T, Dh)
    values = -keys
    fig = cache_contents_figure(keys, values, ["a", "b", "c"], 1)
    k = np.array(fig.data[0].z)
    assert k.shape == (T, G * Dh)
    np.testing.assert_array_equal(k[1, Dh:], keys[1, 1])  # position 1, head 1's dimensions after head 0's
    np.testing.assert_array_equal(np.array(fig.data[1].z), -k)
    assert len(fig.layout.shapes) == 2 * (G - 1)  # a line between heads, in both panels
