"""RoPE tab on the tiny model's trace: its plots show the traced vectors, and other bases rotate differently."""

from __future__ import annotations

import numpy as np
import torch

from playground import tab_rope


def markers(fig):
    """q before, q after, k before, k after: each pair's (x_2i, x_2i+1) from the hover data."""
    return [np.array(d.customdata)[:, 4:6].reshape(-1) for d in fig.data if d.mode == "markers"]


def test_rope_plots_show_the_traced_vectors(tiny_runner, tiny_trace, tiny_net):
    cfg = tiny_runner.cfg
    layer, head, query = cfg.n_layers - 1, cfg.n_heads - 1, tiny_trace.n_tokens - 1
    kv = cfg.kv_head_of(head)
    names = rf"blocks\.{layer}\.attn\.hook_(q|rot_q|k|attn_scores)$"
    _, cache = tiny_net.run_with_cache(torch.tensor([tiny_trace.ids.tolist()]), names_filter=names)
    log_base = np.log10(cfg.rope_base)
    pairs, angles, decay, scores, relative, note = tab_rope.render(tiny_runner, tiny_trace, layer, head, query, 0,
                                                                   log_base, False)
    q_before, q_after, k_before, _ = markers(pairs)
    hook = f"blocks.{layer}.attn.hook_"
    np.testing.assert_allclose(q_before, cache[hook + "q"][0, query, head].numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(q_after, cache[hook + "rot_q"][0, query, head].numpy(), atol=2e-5)
    np.testing.assert_allclose(k_before, cache[hook + "k"][0, query, kv].numpy(), rtol=1e-6, atol=1e-6)
    with_rope = np.array(scores.data[1].y, dtype=float)
    np.testing.assert_allclose(with_rope, cache[hook + "attn_scores"][0, head, query, : query + 1].numpy(), atol=1e-4)
    assert f"position {query}" in note and "model's base" in pairs.layout.title.text


def test_other_bases_rotate_differently_without_running_the_model(tiny_runner, tiny_trace):
    model_log = np.log10(tiny_runner.cfg.rope_base)
    at_model = tab_rope.render(tiny_runner, tiny_trace, 1, 1, 6, 2, model_log, False)[0]
    other = tab_rope.render(tiny_runner, tiny_trace, 1, 1, 6, 2, model_log - 2, False)[0]
    assert not np.allclose(markers(at_model)[1], markers(other)[1])
    np.testing.assert_array_equal(markers(at_model)[0], markers(other)[0])
    assert "a chosen base" in other.layout.title.text
    scores_at_model = tab_rope.render(tiny_runner, tiny_trace, 1, 1, 6, 2, model_log, False)[3]
    scores_other = tab_rope.render(tiny_runner, tiny_trace, 1, 1, 6, 2, model_log - 2, False)[3]
    assert scores_at_model.data[1].name == "with RoPE (what the model computes)"
    assert "not the model's" in scores_other.data[1].name


def test_after_analyze_moves_the_position_sliders_to_the_end(tiny_runner, tiny_trace):
    query, key, *figures, note = tab_rope.after_analyze(tiny_runner, tiny_trace, 0, 0, 0, 0, 4.0, False)
    last = tiny_trace.n_tokens - 1
    assert query["value"] == last and key["value"] == last - 1 and query["maximum"] == last
    assert f"position {last}" in note
    empty = tab_rope.after_analyze(tiny_runner, None, 0, 0, 0, 0, 4.0, False)
    assert empty[2] is None and empty[4] is not None  # the decay plot needs no prompt
