"""Pure plotting functions: what they draw is exactly the data they were given."""

from __future__ import annotations

import numpy as np
import pytest

from playground.figures import (
    attention_heatmap, axis_labels, gqa_figure, masked_upper, mosaic, mosaic_cell, stages_figure, token_label,
    token_pieces, token_spans_html, vectors_figure,
)
from playground.trace import attention_stages


def test_token_pieces_show_partial_utf8_as_bytes_never_replacement_chars():
    assert token_pieces(b" the") == [(" the", False)]
    assert token_pieces("😀".encode()[:2]) == [("<F0 9F>", True)]
    assert token_pieces(b"a\xe4\xb8") == [("a", False), ("<E4 B8>", True)]
    assert token_pieces(b"\x98\x80b") == [("<98 80>", True), ("b", False)]
    assert "\ufffd" not in token_label("😀".encode()[:3])
    assert token_label(b" a\n") == "·a↵"


def test_token_spans_html_has_ids_bytes_and_escapes_text():
    html = token_spans_html([b"<script>", b" x", "é".encode()[:1]], [10, 20, 30], [False, True, False])
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert html.count('class="tok"') == 2 and html.count('class="tok special"') == 1
    for i in (10, 20, 30):
        assert f'<span class="id">{i}</span>' in html
    assert "bytes 3C 73 63 72 69 70 74 3E" in html
    assert "&lt;C3&gt;" in html  # the lone lead byte of é, shown as bytes
    ws = token_spans_html([b" a\tb\n"], [1], visible_whitespace=True)
    assert "·a→b↵" in ws


def test_token_spans_colour_by_surprisal():
    html = token_spans_html([b"a", b"b", b"c"], [1, 2, 3], surprisal=np.array([np.nan, 1.0, 8.0]))
    assert "surprisal 8.00 bits" in html and "no prefix" in html


def test_attention_heatmap_holds_the_pattern_with_the_future_masked(trace):
    labels = axis_labels(trace.token_bytes)
    fig = attention_heatmap(trace.pattern[3, 2], labels, "t")
    z = np.array(fig.data[0].z, dtype=float)
    np.testing.assert_allclose(z, masked_upper(trace.pattern[3, 2]), atol=1e-7)
    assert np.isnan(z[0, 1:]).all() and not np.isnan(np.tril(z)).any()
    assert list(fig.data[0].x) == labels == list(fig.data[0].y)
    assert len(set(labels)) == len(labels)  # repeated tokens stay distinct on the axes
    assert "%{z:.4f}" in fig.data[0].hovertemplate


def test_stages_figure_shows_each_stage(trace, runner):
    labels = axis_labels(trace.token_bytes)
    stages = attention_stages(trace, 2, 5, runner.cfg.kv_head_of(5))
    fig = stages_figure(stages, labels, "t")
    assert len(fig.data) == 4
    np.testing.assert_allclose(np.array(fig.data[0].z, dtype=float), stages["scores"], rtol=1e-6)
    np.testing.assert_allclose(np.array(fig.data[1].z, dtype=float), stages["scaled"], rtol=1e-6)
    np.testing.assert_allclose(np.array(fig.data[3].z, dtype=float), masked_upper(stages["softmax"]), atol=1e-7)
    assert fig.data[0].zmax == fig.data[1].zmax  # one colour range: scaling shows as paler colours


def test_vectors_figure(trace):
    labels = axis_labels(trace.token_bytes)
    fig = vectors_figure({"q": trace.q[0, :, 0], "q rot": trace.rot_q[0, :, 0]}, labels, "t")
    np.testing.assert_allclose(np.array(fig.data[1].z, dtype=float), trace.rot_q[0, :, 0], rtol=1e-6)
    assert np.array(fig.data[0].z).shape == (trace.n_tokens, 64)


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
    from playground.figures import _colormap

    img = mosaic(np.full((1, 1, 2, 2), value, dtype=np.float32), cell=2, gap=0)
    assert tuple(img[1, 0]) == tuple(_colormap()[expected])
