"""Attention figures: what they draw is exactly the data they were given."""

from __future__ import annotations

import numpy as np
import pytest

from playground.figures.attention import (
    attention_heatmap, gqa_figure, mosaic, mosaic_cell, stages_figure, vectors_figure,
)
from playground.figures.base import masked_upper
from playground.figures.tokens import axis_labels
from playground.trace import attention_stages


def test_attention_heatmap_holds_the_pattern_with_the_future_masked(tiny_runner, tiny_trace):
    labels = axis_labels(tiny_trace.token_bytes)
    pattern = tiny_runner.layer(tiny_trace, 1).pattern[2]
    fig = attention_heatmap(pattern, labels, "t")
    z = np.array(fig.data[0].z, dtype=float)
    np.testing.assert_allclose(z, masked_upper(pattern), atol=1e-7)
    assert np.isnan(z[0, 1:]).all() and not np.isnan(np.tril(z)).any()
    assert list(fig.data[0].x) == labels == list(fig.data[0].y)
    assert len(set(labels)) == len(labels)  # repeated tokens stay distinct on the axes
    assert "%{z:.4f}" in fig.data[0].hovertemplate


def test_stages_figure_shows_each_stage(tiny_runner, tiny_trace):
    labels = axis_labels(tiny_trace.token_bytes)
    t = tiny_runner.layer(tiny_trace, 1)
    head = 5
    stages = attention_stages(t.rot_q[:, head], t.rot_k[:, tiny_runner.cfg.kv_head_of(head)])
    fig = stages_figure(stages, labels, "t")
    assert len(fig.data) == 4
    np.testing.assert_allclose(np.array(fig.data[0].z, dtype=float), stages["scores"], rtol=1e-6)
    np.testing.assert_allclose(np.array(fig.data[1].z, dtype=float), stages["scaled"], rtol=1e-6)
    np.testing.assert_allclose(np.array(fig.data[3].z, dtype=float), masked_upper(stages["softmax"]), atol=1e-7)
    assert fig.data[0].zmax == fig.data[1].zmax  # one colour range: scaling shows as paler colours


def test_vectors_figure(tiny_runner, tiny_trace):
    labels = axis_labels(tiny_trace.token_bytes)
    t = tiny_runner.layer(tiny_trace, 0)
    fig = vectors_figure({"q": t.q[:, 0], "q rot": t.rot_q[:, 0]}, labels, "t")
    np.testing.assert_allclose(np.array(fig.data[1].z, dtype=float), t.rot_q[:, 0], rtol=1e-6)
    assert np.array(fig.data[0].z).shape == (tiny_trace.n_tokens, tiny_runner.cfg.d_head)


def test_gqa_figure_highlights_the_group():
    fig = gqa_figure(9, 3, head=4)
    queries, kvs = fig.data[-2], fig.data[-1]
    assert list(queries.text) == [f"Q{h}" for h in range(9)] and list(kvs.text) == ["KV0", "KV1", "KV2"]
    colours = list(queries.marker.color)
    assert colours[4] != colours[3] == colours[5] != colours[0]  # the head, its group, the rest
    red_lines = [d for d in fig.data[:9] if d.line.color == "#d62728"]
    assert len(red_lines) == 3


def test_mosaic_cells_round_trip():
    rng = np.random.default_rng(0)
    patterns = rng.random((3, 4, 5, 5)).astype(np.float32)
    img = mosaic(patterns, cell=10, gap=2, highlight=(1, 2))
    assert img.shape == (3 * 12 + 2, 4 * 12 + 2, 3) and img.dtype == np.uint8
    for r in range(3):
        for c in range(4):
            assert mosaic_cell(2 + c * 12 + 5, 2 + r * 12 + 5, 3, 4, 10, 2) == (r, c)
    assert mosaic_cell(1, 1, 3, 4, 10, 2) is None
    assert tuple(img[12, 2 * 12 + 1]) == (214, 39, 40)  # the highlight frame
    assert tuple(img[2 + 0, 2 + 9]) == (217, 217, 217)  # top-right of a thumbnail is the masked future


@pytest.mark.parametrize("value,expected", [(0.0, 0), (1.0, 255)])
def test_mosaic_colours_are_the_scale_ends(value, expected):
    from playground.figures.attention import _colormap

    img = mosaic(np.full((1, 1, 2, 2), value, dtype=np.float32), cell=2, gap=0)
    assert tuple(img[1, 0]) == tuple(_colormap()[expected])
