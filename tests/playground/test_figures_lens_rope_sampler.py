"""figures.lens, figures.rope and figures.sampler, as drawn: the numbers each is given, where the eye finds them."""

from __future__ import annotations

import numpy as np
import pytest

from playground.figures.lens import LensStat, lens_grid, rankings_watch, statistic_values
from playground.figures.rope import (
    absolute_vs_relative_figure, angle_heatmap, decay_figure, pair_rotation_figure, scores_figure,
)
from playground.figures.sampler import (
    KEPT_COLOUR, attention_row_figure, distribution_bars, generated_html, orders_figure, samples_figure,
    stages_matrix,
)
from playground.rope_formulas import rope_frequencies, rotate_pairs

# -- the logit lens ---------------------------------------------------------------------------


def test_statistics_colour_ranks_on_a_log_scale_and_hide_the_end_of_the_prompt():
    top = np.array([[[0.7, 0.2]], [[0.4, 0.3]]])  # (R=2, T=1, k=2)
    ranks = np.array([[0], [9]])
    colour, shown = statistic_values(LensStat.RANK_FINAL, top, ranks, ranks, ranks * 0.0, ranks * 0.0)
    np.testing.assert_allclose(colour, [[0.0], [1.0]])
    np.testing.assert_array_equal(shown, [[0], [9]])
    _, shown = statistic_values(LensStat.RANK_NEXT, top, ranks, np.array([[-1], [3]]), ranks, ranks)
    assert np.isnan(shown[0, 0]) and shown[1, 0] == 3  # -1: no next token after the prompt's end
    colour, _ = statistic_values(LensStat.TOP_PROB, top, ranks, ranks, ranks, ranks)
    np.testing.assert_allclose(colour, [[0.7], [0.4]])


def test_the_grid_names_each_cells_top_token_and_marks_hits():
    top_ids = np.array([[[1, 2], [3, 1]], [[2, 1], [3, 2]]])  # (R=2, T=2, k=2)
    top_probs = np.full((2, 2, 2), 0.4)
    next_ids = np.array([2, -1])  # position 0 is followed by token 2
    names = {1: "one", 2: "two", 3: "three"}
    fig = lens_grid(["embed", "L0"], ["a", "b"], top_ids, top_probs, top_probs[..., 0], top_probs[..., 0],
                    LensStat.TOP_PROB, next_ids, names.get)
    text = np.array(fig.data[0].text)
    assert text[0, 0] == "one" and text[1, 0] == "<b>two</b>" and text[1, 1] == "three"  # bold: the real next token
    assert "next token: 'two'" in fig.data[0].customdata[0][0]
    assert "(end of prompt)" in fig.data[0].customdata[0][1]


def test_the_watch_follows_each_token_across_layers():
    probs, ranks = np.array([[0.1, 0.9], [0.3, 0.05]]), np.array([[4, 0], [1, 7]])
    fig = rankings_watch(["embed", "L0"], probs, ranks, ["Paris", "Rome"], "5")
    assert [t.name for t in fig.data] == ["Paris", "Rome"]
    np.testing.assert_allclose(fig.data[1].y, [0.3, 0.05])
    np.testing.assert_array_equal(fig.data[1].customdata, [1, 7])

# -- RoPE ----------------------------------------------------------------------------------------


def test_each_pair_turns_by_position_times_its_frequency():
    d, base, position = 8, 10000.0, 3
    q = np.arange(1.0, d + 1)
    after = rotate_pairs(q, position, base)
    fig = pair_rotation_figure({"q": (q, after)}, position, base, "t", columns=4)
    hover = [t for t in fig.data if t.mode == "markers" and t.name is None and t.customdata is not None]
    custom = np.array(hover[1].customdata, dtype=float)  # q after RoPE
    np.testing.assert_allclose(custom[:, 1], rope_frequencies(d, base))
    np.testing.assert_allclose(custom[:, 2], position * rope_frequencies(d, base))
    np.testing.assert_allclose(custom[:, 4], after[0::2])
    np.testing.assert_allclose(custom[:, 5], after[1::2])


def test_angles_decay_scores_and_relative_position():
    fig = angle_heatmap(["a", "b", "c"], 8, 100.0, "t")
    np.testing.assert_allclose(np.array(fig.data[0].z, dtype=float)[2],
                               np.mod(2 * rope_frequencies(8, 100.0), 2 * np.pi), rtol=1e-6)
    fig = decay_figure(8, 1e5, 1e5, 100)
    assert len(fig.data) == 1 and fig.data[0].y[0] == pytest.approx(1.0)  # distance 0: every pair agrees
    assert len(decay_figure(8, 1e5, 1e3, 100).data) == 2  # another base: a second curve
    fig = scores_figure(["k0", "k1"], np.array([0.5, 1.0]), np.array([0.2, 0.1]), "q", model_base=False, base=500)
    assert list(fig.data[0].y) == [0.2, 0.1] and "base 500" in fig.data[1].name
    rng = np.random.default_rng(0)
    q, k = rng.normal(size=16), rng.normal(size=16)
    fig = absolute_vs_relative_figure(q, k, 3, 1e4, 20)
    rope, additive = np.array(fig.data[0].y), np.array(fig.data[1].y)
    assert np.ptp(rope) < 1e-9 and np.ptp(additive) > 1e-3  # relative stays put, absolute wanders

# -- the sampler ---------------------------------------------------------------------------------


def test_bars_colour_each_removed_token_by_the_step_that_removed_it():
    raw, final = np.array([0.5, 0.3, 0.2]), np.array([0.625, 0.375, 0.0])
    fig = distribution_bars(["a", "b", "c"], raw, final, [None, None, "top-k"], "t")
    colours = list(fig.data[0].marker.color)
    assert colours[0] == colours[1] != colours[2]
    assert list(fig.data[0].customdata) == ["kept", "kept", "removed by top-k"]
    assert "removed by top-k" in [t.name for t in fig.data]


def test_stages_orders_samples_and_attention():
    probs = np.array([[0.5, 0.6], [0.3, 0.0]])
    fig = stages_matrix(["a", "b"], probs, ["softmax", "top-k"], [2, 1], [1.0, 0.0], "t")
    assert np.isnan(np.array(fig.data[0].z, dtype=float)[1, 1]) and fig.data[0].text[1][1] == "–"
    assert fig.data[0].x[1].startswith("top-k<br>1 kept")
    fig = orders_figure(["a", "b"], np.array([0.6, 0.4]), np.array([1.0, 0.0]), "t")
    assert list(fig.data[0].x) == ["a", "<b>≠ b</b>"] and "1 token(s) kept by one order only" in fig.layout.title.text
    fig = samples_figure(["a"], np.array([0.7]), np.array([0.69]), 1000, 3)
    assert fig.data[1].name == "1,000 draws, seed 3" and list(fig.data[1].y) == [0.69]
    fig = attention_row_figure(["p", "q", "g"], np.array([0.2, 0.3, 0.5]), 2, "t")
    assert list(fig.data[0].marker.color)[2] == KEPT_COLOUR != list(fig.data[0].marker.color)[1]


def test_generated_text_carries_ids_and_probabilities():
    html = generated_html("The <b>", [" cat", " sat"], [0.5, 0.25], ids=[7, 9])
    assert "The &lt;b&gt;" in html and html.count('class="gtok"') == 2
    assert 'data-id="7"' in html and 'title="step 2: p = 0.2500"' in html
