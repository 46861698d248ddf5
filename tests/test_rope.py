"""The RoPE tab: its formulas equal the model's rotation, and its plots show the traced q and k."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from playground import tab_rope
from playground.figures_rope import (
    absolute_vs_relative_figure, angle_heatmap, decay_curve, rope_thetas, rotate_pairs, sinusoidal_encoding,
)


@pytest.mark.parametrize("layer,head", [(0, 0), (11, 4), (29, 8)])
def test_formula_rotation_equals_the_model(trace, runner, layer, head):
    base, kv = runner.cfg.rope_theta, runner.cfg.kv_head_of(head)
    positions = np.arange(trace.n_tokens)
    np.testing.assert_allclose(rotate_pairs(trace.q[layer, :, head], positions, base), trace.rot_q[layer, :, head], atol=2e-4, rtol=1e-4)
    np.testing.assert_allclose(rotate_pairs(trace.k[layer, :, kv], positions, base), trace.rot_k[layer, :, kv], atol=2e-4, rtol=1e-4)


def test_rope_plots_show_the_traced_vectors(trace, runner):
    layer, head, query = 5, 7, trace.n_tokens - 1
    kv = runner.cfg.kv_head_of(head)
    _, cache = runner.net.run_with_cache(torch.tensor([trace.ids.tolist()]), names_filter=r"blocks\.5\.attn\.hook_(q|rot_q|k|attn_scores)$")
    pairs, angles, decay, scores, relative, note = tab_rope.render(trace, layer, head, query, 0, np.log10(runner.cfg.rope_theta), False, runner)
    markers = [d for d in pairs.data if d.mode == "markers"]  # q before, q after, k before, k after
    q_before = np.array(markers[0].customdata)[:, 4:6].reshape(-1)
    q_after = np.array(markers[1].customdata)[:, 4:6].reshape(-1)
    k_before = np.array(markers[2].customdata)[:, 4:6].reshape(-1)
    np.testing.assert_allclose(q_before, cache["blocks.5.attn.hook_q"][0, query, head].numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(q_after, cache["blocks.5.attn.hook_rot_q"][0, query, head].numpy(), atol=2e-4)
    np.testing.assert_allclose(k_before, cache["blocks.5.attn.hook_k"][0, query, kv].numpy(), rtol=1e-6, atol=1e-6)
    with_rope = np.array(scores.data[1].y, dtype=float)
    np.testing.assert_allclose(with_rope, cache["blocks.5.attn.hook_attn_scores"][0, head, query, : query + 1].numpy(), atol=1e-3)
    assert f"position {query}" in note


def test_other_bases_rotate_differently_without_running_the_model(trace, runner):
    model_log = np.log10(runner.cfg.rope_theta)
    at_model = tab_rope.render(trace, 3, 1, 6, 2, model_log, False, runner)[0]
    other = tab_rope.render(trace, 3, 1, 6, 2, model_log - 2, False, runner)[0]
    after = lambda fig: np.array([d for d in fig.data if d.mode == "markers"][1].customdata)[:, 4:6]  # noqa: E731
    assert not np.allclose(after(at_model), after(other))
    before = lambda fig: np.array([d for d in fig.data if d.mode == "markers"][0].customdata)[:, 4:6]  # noqa: E731
    np.testing.assert_array_equal(before(at_model), before(other))


def test_thetas_and_angles():
    thetas = rope_thetas(64, 1e5)
    assert thetas[0] == 1.0 and thetas[-1] == pytest.approx(1e5 ** (-62 / 64))
    fig = angle_heatmap([f"{i}" for i in range(5)], 64, 1e5, "t")
    z = np.array(fig.data[0].z, dtype=float)
    np.testing.assert_allclose(z, np.mod(np.arange(5)[:, None] * thetas[None, :], 2 * np.pi), atol=1e-5)


def test_decay_curve():
    d = np.array([0, 1, 10, 100, 1000])
    curve = decay_curve(64, 1e5, d)
    assert curve[0] == pytest.approx(1.0) and curve[1] < 1.0
    assert not np.allclose(curve, decay_curve(64, 1e4, d))


def test_rope_score_is_relative_and_the_sinusoidal_one_absolute():
    rng = np.random.default_rng(0)
    q, k = rng.normal(size=64), rng.normal(size=64)
    fig = absolute_vs_relative_figure(q, k, distance=5, base=1e5, max_position=100)
    rope, additive = np.array(fig.data[0].y, dtype=float), np.array(fig.data[1].y, dtype=float)
    assert rope.std() < 1e-9 and additive.std() > 1e-2
    pe = sinusoidal_encoding(np.arange(3), 8)
    np.testing.assert_allclose(pe[0], [0, 1, 0, 1, 0, 1, 0, 1])
