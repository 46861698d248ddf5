"""figures.interventions: ablation, layer sweep, patching and attribution, as drawn."""

from __future__ import annotations

import numpy as np

from playground.figures.interventions import (
    ablation_figure, attribution_figure, head_attribution_figure, layer_sweep_figure, patching_figure,
)


def test_ablation_shows_before_and_after():
    fig = ablation_figure(["a", "b"], np.array([0.6, 0.3]), np.array([0.2, 0.5]), "t")
    assert list(fig.data[0].x) == [0.6, 0.3] and list(fig.data[1].x) == [0.2, 0.5]
    np.testing.assert_allclose(fig.data[1].customdata, [-0.4, 0.2])


def test_layer_sweep_shows_changes_from_the_unablated_run():
    fig = layer_sweep_figure(np.array([2.0, 3.0]), np.array([2.5, 2.0]), np.array([1.0, 0.0]), np.array([2.0, 3.0]),
                             2.0, 1.5, "a − b", "zero")
    top = {t.name: list(t.y) for t in fig.data if t.yaxis == "y"}
    bottom = {t.name: list(t.y) for t in fig.data if t.yaxis == "y2"}
    assert top == {"attention": [0.0, 1.0], "MLP": [0.5, 0.0]}
    assert bottom == {"attention": [-0.5, -1.5], "MLP": [0.5, 1.5]}
    assert "loss 2.000 nats" in fig.layout.title.text


def test_patching_keeps_unrun_rows_blank_and_centres_on_zero():
    values = np.array([[0.1, 0.9], [np.nan, np.nan]])
    fig = patching_figure(values, ["L0", "L1"], ["p0", "p1"], "t", "position")
    z = np.array(fig.data[0].z, dtype=float)
    assert np.isnan(z[1]).all() and z[0, 1] == np.float32(0.9)
    assert (fig.data[0].zmin, fig.data[0].zmid, fig.data[0].zmax) == (-1.0, 0.0, 1.0)


def test_attribution_parts_and_heads():
    parts = np.array([0.5, -0.25, 1.0])
    fig = attribution_figure(["embed", "L0 attn", "L0 mlp"], parts, 1.25, "a − b")
    assert list(fig.data[0].y) == [0.5, -0.25, 1.0] and "sum to +1.2500" in fig.layout.title.text
    assert len(set(fig.data[0].marker.color)) == 3  # embedding, attention and MLP told apart
    heads = np.array([[0.1, -0.4], [0.2, 0.0]])
    fig = head_attribution_figure(heads)
    assert list(fig.data[0].y) == ["L0", "L1"] and list(fig.data[0].x) == ["H0", "H1"]
    assert fig.data[0].zmax == -fig.data[0].zmin == 0.4
