"""Routes and "why here": every importance against an independent implementation of the paper's formula on the
model's own hooks, and every score split against the model's own score."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from model.routes import EPS, flow, residual_components, route_graph, score_split
from model.views import resid_mid as resid_mid_of

from ..conftest import REAL_PROMPT, TINY_PROMPT

HOOKS = r"hook_resid_pre$|hook_resid_mid$|hook_resid_post$|attn\.hook_v$|attn\.hook_z$|hook_pattern$|hook_mlp_out$|" \
        r"hook_attn_out$|hook_attn_scores$|attn\.hook_rot_q$|attn\.hook_rot_k$|ln1_post\.hook_scale$"


def _run(net, ids):
    _, cache = net.run_with_cache(torch.tensor([ids]), names_filter=HOOKS)
    L = net.cfg.n_layers
    resid = torch.stack([cache[f"blocks.{l}.hook_resid_pre"][0] for l in range(L)]
                        + [cache[f"blocks.{L - 1}.hook_resid_post"][0]])
    return resid, cache


def _terms(net, cache, layer):
    """Head h's part from key j at query i, (T, H, T, D), from hook_pattern, hook_v and W_O, in float64; where the
    block norms the attention's output again (Gemma's ln1_post), divided by that norm's own hook_scale at the query
    and times its gain, as TransformerLens's decompositions freeze a norm's scale."""
    cfg = net.cfg
    pattern = cache[f"blocks.{layer}.attn.hook_pattern"][0].double()  # (H, T, T)
    v = cache[f"blocks.{layer}.attn.hook_v"][0].double()  # (T, G, Dh)
    w_o = net.blocks[layer].attn.wo.weight.double().view(cfg.d_model, cfg.n_heads, cfg.d_head)
    terms = torch.stack([torch.stack([pattern[h, :, :, None] * (v[:, h // cfg.n_groups] @ w_o[:, h].T)[None]
                                      for h in range(cfg.n_heads)], dim=1)])[0]  # (T, H, T, D)
    post = net.blocks[layer].ln1_post
    if post is not None:
        scale = cache[f"blocks.{layer}.ln1_post.hook_scale"][0].double()  # (T, 1): at each query
        terms = terms / scale.view(-1, 1, 1, 1) * post.weight.double()
    return terms


def _closeness(whole, part):
    return max(EPS, float(whole.abs().sum() - (whole - part).abs().sum()))


def test_attention_terms_sum_to_the_attention_output_and_z(tiny_net, tiny_enc):
    ids = tiny_enc.encode(TINY_PROMPT)
    _, cache = _run(tiny_net, ids)
    cfg = tiny_net.cfg
    for layer in range(cfg.n_layers):
        terms = _terms(tiny_net, cache, layer)
        np.testing.assert_allclose(terms.sum((1, 2)).numpy(), cache[f"blocks.{layer}.hook_attn_out"][0].numpy(),
                                   atol=1e-5)
        w_o = tiny_net.blocks[layer].attn.wo.weight.double().view(cfg.d_model, cfg.n_heads, cfg.d_head)
        by_head = torch.einsum("thd,mhd->thm", cache[f"blocks.{layer}.attn.hook_z"][0].double(), w_o)
        np.testing.assert_allclose(terms.sum(2).numpy(), by_head.numpy(), atol=1e-5)


def _check_flow_against_hooks(net, ids, queries, atol):
    resid, cache = _run(net, ids)
    f = flow(net, resid)
    T = len(ids)
    for layer in range(net.cfg.n_layers):
        terms = _terms(net, cache, layer)
        pre = cache[f"blocks.{layer}.hook_resid_pre"][0].double()
        mid = cache[f"blocks.{layer}.hook_resid_mid"][0].double()
        post = cache[f"blocks.{layer}.hook_resid_post"][0].double()
        mlp_out = cache[f"blocks.{layer}.hook_mlp_out"][0].double()
        for i in queries:  # the paper's formula, part by part
            close = {(h, j): _closeness(mid[i], terms[i, h, j]) for h in range(net.cfg.n_heads) for j in range(i + 1)}
            resid_close = _closeness(mid[i], pre[i])
            total = sum(close.values()) + resid_close
            expected = np.zeros((net.cfg.n_heads, T))
            for (h, j), c in close.items():
                expected[h, j] = c / total
            np.testing.assert_allclose(f.attn[layer, i].numpy(), expected, atol=atol)
            assert abs(float(f.attn_resid[layer, i]) - resid_close / total) < atol
            m, r = _closeness(post[i], mlp_out[i]), _closeness(post[i], mid[i])
            assert abs(float(f.mlp[layer, i]) - m / (m + r)) < atol
    sums = f.attn.sum((2, 3)) + f.attn_resid  # every node's incoming importances
    np.testing.assert_allclose(sums.numpy(), np.ones_like(sums.numpy()), atol=1e-5)
    later = torch.ones(T, T, dtype=torch.bool).triu(1)  # (query, key): keys after the query
    assert float(f.attn.transpose(1, 2)[..., later].abs().max()) == 0.0  # are no part of its sum
    return f


def test_importances_are_the_papers_proximity_on_the_models_hooks(tiny_net, tiny_enc):
    ids = tiny_enc.encode(TINY_PROMPT)
    _check_flow_against_hooks(tiny_net, ids, range(len(ids)), atol=1e-5)


def test_importances_on_the_real_model(real):
    net, enc = real
    ids = enc.encode(REAL_PROMPT)
    _check_flow_against_hooks(net, ids, [0, 5, len(ids) - 1], atol=2e-5)


def test_the_graph_keeps_edges_above_the_threshold_renormalised_back_from_the_position(tiny_net, tiny_enc):
    ids = tiny_enc.encode(TINY_PROMPT)
    resid, _ = _run(tiny_net, ids)
    f = flow(tiny_net, resid)
    position, tau = len(ids) - 1, 0.04
    graph = route_graph(f, position, tau)
    assert graph.edges and all(e.raw > tau for e in graph.edges)
    into: dict[tuple, float] = {}
    for e in graph.edges:
        node = (2 * e.layer + (1 if e.kind.startswith("attn") else 2), e.target)
        into[node] = into.get(node, 0.0) + e.importance
        raw = float(f.attn[e.layer, e.target, e.head, e.source]) if e.kind == "attn" else \
            float(f.attn_resid[e.layer, e.target]) if e.kind == "attn_resid" else \
            float(f.mlp[e.layer, e.target]) if e.kind == "mlp" else 1 - float(f.mlp[e.layer, e.target])
        assert e.raw == pytest.approx(raw)
    assert all(abs(total - 1) < 1e-6 for total in into.values())  # the kept parts of each node, renormalised
    top = 2 * tiny_net.cfg.n_layers
    assert (top, position) in into and all(pos == position for level, pos in into if level == top)
    # every node with incoming edges is reached from the top: its output feeds a kept edge above it
    sources = {(2 * e.layer + (0 if e.kind.startswith("attn") else 1), e.source) for e in graph.edges}
    assert all(node in sources or node[0] == top for node in into)
    assert route_graph(f, position, 0.999).edges == []  # nothing that large: the graph is just the node


def _split_checks(net, ids, cases, atol):
    resid, cache = _run(net, ids)
    mids = resid_mid_of(net, resid)
    for layer, head, i, j in cases:
        split = score_split(net, resid, mids, layer, head, i, j)
        scores = cache[f"blocks.{layer}.attn.hook_attn_scores"][0]  # masked after j > i: we ask j <= i
        assert float(split.terms.sum()) == pytest.approx(float(scores[head, i, j]), abs=atol)
        q = cache[f"blocks.{layer}.attn.hook_rot_q"][0, i, head]
        k = cache[f"blocks.{layer}.attn.hook_rot_k"][0, j, head // net.cfg.n_groups]
        scale = math.sqrt(net.cfg.query_pre_attn_scalar or net.cfg.d_head)  # Gemma names what scores are divided by
        assert split.score == pytest.approx(float(q @ k) / scale, abs=atol)
        assert float(split.terms.sum()) == pytest.approx(split.score, abs=atol)
        assert split.terms.shape == (1 + 2 * layer,) * 2 and len(split.labels) == 1 + 2 * layer


def test_importances_on_gemma_through_its_post_attention_norm(gemma):
    net, enc = gemma
    ids = enc.encode_prompt(REAL_PROMPT)
    resid, cache = _run(net, ids)
    for layer in (0, 5, 17):  # the frozen-scale terms sum to what the attention adds: hook_attn_out
        np.testing.assert_allclose(_terms(net, cache, layer).sum((1, 2)).numpy(),
                                   cache[f"blocks.{layer}.hook_attn_out"][0].double().numpy(), atol=2e-3, rtol=1e-4)
    _check_flow_against_hooks(net, ids, [0, 5, len(ids) - 1], atol=2e-5)


def test_the_score_split_on_gemma(gemma):
    """Gemma: q and k through their per-head norms with the scale frozen, each layer's own RoPE base (10,000 on
    sliding layers, 1,000,000 on global ones), scores over sqrt(query_pre_attn_scalar)."""
    net, enc = gemma
    ids = enc.encode_prompt(REAL_PROMPT)
    T = len(ids)
    _split_checks(net, ids, [(0, 0, T - 1, 0), (5, 3, T - 1, T - 2), (11, 1, 7, 3), (16, 2, T - 1, 4)], atol=2e-3)


def test_the_score_split_sums_to_the_models_score(tiny_net, tiny_enc):
    ids = tiny_enc.encode(TINY_PROMPT)
    T = len(ids)
    _split_checks(tiny_net, ids, [(l, h, i, j) for l in range(2) for h in (0, 4, 5) for i, j in
                                  ((T - 1, 0), (T - 1, T - 2), (3, 3), (5, 1))], atol=1e-5)


def test_the_score_split_on_the_real_model(real):
    net, enc = real
    ids = enc.encode(REAL_PROMPT)
    T = len(ids)
    _split_checks(net, ids, [(0, 0, T - 1, 0), (14, 4, T - 1, T - 2), (29, 8, 5, 3)], atol=2e-3)


def test_components_sum_to_the_residual(tiny_net, tiny_enc):
    resid, _ = _run(tiny_net, tiny_enc.encode(TINY_PROMPT))
    mids = resid_mid_of(tiny_net, resid)
    for layer in range(tiny_net.cfg.n_layers + 1):
        labels, comps = residual_components(resid, mids, layer)
        assert labels[0] == "embed" and len(labels) == 1 + 2 * layer
        np.testing.assert_allclose(comps.sum(0).numpy(), resid[layer].numpy(), atol=1e-5)
