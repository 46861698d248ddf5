"""The concept tabs' figures (arithmetic, inside a block, BPE, embeddings): each shows the numbers it is given, on
the tiny model's trace where it draws one."""

from __future__ import annotations

import numpy as np

from model.arithmetic import flops_per_token, kv_cache_bytes
from playground.figures.arithmetic import flops_figure, kv_figure
from playground.figures.block import (
    activations_figure, gains_figure, neurons_figure, norm_steps_figure, residual_norms_figure,
)
from playground.figures.bpe import candidates_figure, compression_figure
from playground.figures.embeddings import neighbours_figure, norms_figure, pca_figure, readout_figure


def test_flops_are_stacked_by_part_with_shares_that_add_up(tiny_cfg):
    contexts = np.array([1, 10, 100])
    parts = {name: np.array([flops_per_token(tiny_cfg, int(c))[name] for c in contexts], float)
             for name in flops_per_token(tiny_cfg, 1)}
    fig = flops_figure(contexts, parts, 10)
    stacked = [t for t in fig.data if t.stackgroup == "f"]
    assert [t.name for t in stacked] == list(parts)
    np.testing.assert_allclose(stacked[0].y, parts["MLP"] / 1e6)
    mlp_share, attention_share = (t for t in fig.data if t.yaxis == "y2")
    total = sum(parts.values())
    np.testing.assert_allclose(mlp_share.y, 100 * parts["MLP"] / total)
    attention = parts["attention projections"] + parts["attention over the context"]
    np.testing.assert_allclose(attention_share.y, 100 * attention / total)
    assert fig.layout.shapes[0].x0 == 10  # this prompt's context, dashed


def test_kv_bytes_per_token_and_for_the_context(tiny_cfg):
    layouts = (tiny_cfg.n_heads, tiny_cfg.n_kv_heads, 1)
    per_token = [kv_cache_bytes(tiny_cfg, 1, 4, g) for g in layouts]
    whole = [kv_cache_bytes(tiny_cfg, 64, 4, g) for g in layouts]
    fig = kv_figure(["MHA", "GQA", "MQA"], per_token, whole, 64)
    np.testing.assert_allclose(fig.data[0].y, np.array(per_token) / 2**10)
    np.testing.assert_allclose(fig.data[1].y, np.array(whole) / 2**20)
    assert fig.data[0].y[0] == fig.data[0].y[1] * tiny_cfg.n_groups  # GQA stores 1 / groups of multi-head's


def test_the_residual_norm_grid_is_the_traces(tiny_trace):
    norms = np.linalg.norm(tiny_trace.resid, axis=-1)  # (L + 1, T)
    rows = ["embed"] + [f"L{l}" for l in range(tiny_trace.n_layers)]
    fig = residual_norms_figure(norms, [str(t) for t in range(tiny_trace.n_tokens)], rows)
    np.testing.assert_allclose(np.array(fig.data[0].z, dtype=float), np.log10(norms), rtol=1e-5)
    np.testing.assert_allclose(np.array(fig.data[0].customdata, dtype=float), norms)
    assert list(fig.data[0].y) == rows


def test_rms_norm_steps_and_layer_norm_beside_them():
    x, gain = np.array([1.0, -2.0, 3.0, 0.5]), np.array([0.5, 1.0, 2.0, 1.0])
    scale = float(np.sqrt(np.mean(x**2) + 1e-5))
    fig = norm_steps_figure(x, scale, gain, 1e-5, "t")
    series = {t.name: np.array(t.y) for t in fig.data}
    np.testing.assert_allclose(series["x (the residual)"], x)
    np.testing.assert_allclose(series["x / RMS"], x / scale)
    np.testing.assert_allclose(series["x / RMS × gain (what the block reads)"], x / scale * gain)
    np.testing.assert_allclose(series["LayerNorm: (x − mean) / std"], (x - x.mean()) / np.sqrt(x.var() + 1e-5))


def test_gains_neurons_and_activations(tiny_runner):
    gains = tiny_runner.norm_gains
    fig = gains_figure(gains, [f"r{i}" for i in range(len(gains))])
    np.testing.assert_allclose(np.array(fig.data[0].z, dtype=float), gains, rtol=1e-6)
    assert fig.data[0].zmax == -fig.data[0].zmin == float(np.abs(gains).max())  # symmetric around 0
    ids, size = np.array([7, 3]), np.array([2.0, 1.0])
    gate, up, post = np.array([1.0, -1.0]), np.array([2.0, 0.5]), np.array([1.46, -0.13])
    fig = neurons_figure(ids, size, gate, up, post, "t")
    assert list(fig.data[0].y) == ["n7", "n3"] and list(fig.data[0].marker.color) == ["#1f77b4", "#d62728"]
    np.testing.assert_allclose(np.array(fig.data[0].customdata, dtype=float), np.stack([gate, up, post], -1))
    fig = activations_figure(gate, post)
    silu, gelu, relu, points = fig.data
    np.testing.assert_allclose(points.y, gate / (1 + np.exp(-gate)))  # this token's neurons sit on SiLU
    z = np.array(relu.x)
    np.testing.assert_allclose(relu.y, np.maximum(z, 0))
    assert z.min() <= -6 and z.max() >= 6


def test_bpe_compression_and_candidates():
    fig = compression_figure([4.0, 3.0, 2.5], [257, 258, 259], 2)
    assert list(fig.data[0].x) == [1, 2, 3] and list(fig.data[0].customdata) == [257, 258, 259]
    assert fig.layout.shapes[0].x0 == 2
    fig = candidates_figure(["a+b", "c+d"], [9, 4], [0.1, 0.3], "t")
    assert list(fig.data[0].y) == [9, 4] and list(fig.data[1].y) == [0.1, 0.3] and fig.data[1].yaxis == "y2"


def test_embedding_figures(tiny_runner):
    view = tiny_runner.embeddings([5, 9, 14], k=4)
    labels = [str(t) for t in view.nearest[0]]
    fig = neighbours_figure(labels, view.cosine[0], "t")
    np.testing.assert_allclose(fig.data[0].x, view.cosine[0])
    assert list(fig.data[0].y) == labels
    special = [0, 1]
    fig = norms_figure(view.norms, special, [(5, "five")], "t")
    assert sum(fig.data[0].y) == len(view.norms)  # the histogram counts every token
    np.testing.assert_allclose(fig.data[1].x, view.norms[special])
    assert list(fig.data[2].text) == ["five"] and fig.data[2].x[0] == float(view.norms[5])
    fig = pca_figure(view.pca, ["a", "b", "c"], view.explained)
    np.testing.assert_allclose(fig.data[0].x, view.pca[:, 0])
    assert f"{100 * view.explained[0]:.0f}%" in fig.layout.xaxis.title.text
    fig = readout_figure(["x", "five", "y"], np.array([0.5, 0.3, 0.2]), "five", "t")
    assert list(fig.data[0].marker.color)[1] != list(fig.data[0].marker.color)[0]  # the token itself stands out
