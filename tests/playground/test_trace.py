"""The trace's summaries: head statistics, the four attention stages, the logit-lens rows, the export."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from playground.trace import HEAD_STAT_NAMES, attention_stages, head_statistics, uniform_entropy


def test_stages_recomputed_from_q_and_k_equal_the_model(tiny_runner, tiny_trace, tiny_net):
    cfg = tiny_net.cfg
    layer = cfg.n_layers - 1
    _, cache = tiny_net.run_with_cache(torch.tensor([tiny_trace.ids.tolist()]),
                                       names_filter=rf"blocks\.{layer}\.attn\.hook_(attn_scores|pattern)$")
    tensors = tiny_runner.layer(tiny_trace, layer)
    for head in range(cfg.n_heads):
        stages = attention_stages(tensors.rot_q[:, head], tensors.rot_k[:, cfg.kv_head_of(head)])
        model_scores = cache[f"blocks.{layer}.attn.hook_attn_scores"][0, head].double().numpy()  # scaled and masked
        np.testing.assert_allclose(stages["masked"], model_scores, atol=1e-4)
        np.testing.assert_allclose(stages["scaled"], stages["scores"] / math.sqrt(cfg.d_head))
        np.testing.assert_allclose(stages["softmax"], tensors.pattern[head], atol=1e-5)


def test_head_statistics_on_known_patterns():
    T = 4
    prev = np.zeros((T, T))
    prev[0, 0] = 1
    prev[np.arange(1, T), np.arange(T - 1)] = 1  # every query looks at the token before it
    uniform = np.tril(np.ones((T, T))) / np.arange(1, T + 1)[:, None]
    stats = head_statistics(np.stack([prev, uniform])[None].astype(np.float32))
    assert stats.shape == (1, 2, len(HEAD_STAT_NAMES))
    first, previous, itself, entropy = stats[0, 0]
    # Query 0 (which can only attend to itself) is left out of all four.
    assert previous == pytest.approx(1.0) and itself == pytest.approx(0.0) and entropy == pytest.approx(0.0)
    assert first == pytest.approx(1 / 3)  # of queries 1-3, only query 1 looks at token 0
    assert stats[0, 1, 3] == pytest.approx(uniform_entropy(T), rel=1e-5)  # the uniform causal head is the reference
    assert uniform_entropy(T) == pytest.approx(np.mean([np.log2(n) for n in range(2, T + 1)]))
    assert stats[0, 1, 2] == pytest.approx(np.mean([1 / 2, 1 / 3, 1 / 4]), rel=1e-5)
    assert stats[0, 1, 0] == pytest.approx(np.mean([1 / 2, 1 / 3, 1 / 4]), rel=1e-5)
    assert np.isnan(head_statistics(np.ones((1, 1, 1, 1), dtype=np.float32))).all()  # one token: nothing to say


def test_previous_token_heads_are_found_in_the_real_model(runner, trace):
    """Induction-style prompts have heads that attend mostly to the previous token."""
    assert np.nanmax(trace.head_stats[..., 1]) > 0.5
    for layer in (0, runner.cfg.n_layers // 2, runner.cfg.n_layers - 1):
        np.testing.assert_allclose(runner.layer(trace, layer).pattern.sum(-1), 1.0, atol=1e-5)
