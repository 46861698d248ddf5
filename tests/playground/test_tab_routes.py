"""The Routes tab: what it draws and says is the model's routes and score split, and bad input gets a message."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from model.routes import route_graph
from playground import tab_routes
from playground.figures.routes import routes_figure, split_figure
from playground.runner import ModelRunner
from playground.ui import token_markdown

from ..helpers import attention_parts_from_hooks
from ..conftest import TINY_PROMPT


def _none(*args, **kwargs) -> None:
    return None


def _head_shares_from_hooks(runner, trace, target: int) -> np.ndarray:
    """(L, H): each head's share of the state after attention at `target`, from the model's hooks."""
    return np.stack([attention_parts_from_hooks(runner._net, trace.ids.tolist(), l, target).sum(-1)
                     for l in range(runner.cfg.n_layers)])


@pytest.fixture
def shown(tiny_runner):
    trace = tiny_runner.analyze(TINY_PROMPT, lens=False)
    return trace, tab_routes.render(tiny_runner, trace, 1, 0.04, 0, 0, 1, 0, False, progress=_none)


def test_the_graph_drawn_is_the_route_graph_with_heads_merged(tiny_runner, shown):
    trace, out = shown
    position, threshold, layer, head, query, key, figure, note, why, why_note, details = out
    last = trace.n_tokens - 1
    assert position["value"] == last and query["value"] == last
    graph = route_graph(trace.routes, last, 0.04)
    heads = [e for e in graph.edges if e.kind == "attn"]
    merged = {(e.layer, e.source, e.target) for e in heads}
    marks = next(d for d in figure.data if d.name == "attention")
    assert sorted(json.loads(c)["attn"] for c in marks.customdata) == sorted(list(m) for m in merged)
    assert f"({len(marks.customdata)} of them attention edges from a key to a query)" in note  # as drawn, merged
    assert f"**{len(graph.edges) - len(heads) + len(merged)} edges**" in note
    assert "3 query heads share each key/value head" in note  # the tiny model: 6 query heads, 2 key/value heads
    nodes = next(d for d in figure.data if d.name == "residual state")
    assert json.dumps({"node": [2 * tiny_runner.cfg.n_layers, last]}) in nodes.customdata  # the top node
    # the why-here view opens on the head that moves the most into the last position, at the key it attends most:
    # each head's share recomputed here from the model's own hooks by the paper's rule (Ferrando & Voita 2024)
    shares = _head_shares_from_hooks(tiny_runner, trace, last)
    assert (layer["value"], head["value"]) == tuple(int(v) for v in np.unravel_index(int(shares.argmax()),
                                                                                      shares.shape))
    _, cache = tiny_runner._net.run_with_cache(torch.tensor([trace.ids.tolist()]))
    pattern = cache[f"blocks.{layer['value']}.attn.hook_pattern"][0, head["value"], last]
    assert key["value"] == int(pattern.argmax())
    assert why is not None and "is the sum of the grid's cells" in why_note


def test_the_why_view_shows_the_models_own_score(tiny_runner, tiny_net, shown):
    trace, _ = shown
    figure, note = tab_routes.why_view(tiny_runner, trace, 1, 4, 9, 3, False)
    _, cache = tiny_net.run_with_cache(torch.tensor([trace.ids.tolist()]), names_filter=r"hook_attn_scores$")
    score = float(cache["blocks.1.attn.hook_attn_scores"][0, 4, 9, 3])
    assert f"**{score:+.3f}**" in note
    assert float(np.sum(figure.data[0].z)) == pytest.approx(score, abs=1e-4)
    key, figure2, note2 = tab_routes.why_most(tiny_runner, trace, 1, 4, 9, False)
    assert key["value"] == int(tiny_runner.layer(trace, 1).pattern[4, 9].argmax())


def test_clicks_open_a_node_an_edge_and_an_mlp(tiny_runner, shown):
    trace, _ = shown
    details, *moved = tab_routes.pick(tiny_runner, trace, json.dumps({"node": [3, 4]}) + "#1", 0, 0, 1, 0)
    probs = tiny_runner.lens_logits(trace.resid_mid[1, 4]).softmax(-1).numpy()
    best = int(probs.argmax())
    assert "after L1 attention" in details and f"{token_markdown(tiny_runner, best)} {probs[best]:.3f}" in details
    last = trace.n_tokens - 1
    f = trace.routes
    layer, target = 1, last
    source = int(f.attn[layer, target].sum(0).argmax())
    details, *moved = tab_routes.pick(tiny_runner, trace, json.dumps({"attn": [layer, source, target]}) + "#2",
                                      0, 0, 1, 0)
    strongest = int(f.attn[layer, target, :, source].argmax())
    assert moved == [layer, strongest, target, source]
    assert f"**L{layer}H{strongest}**" in details and "promotes" in details
    details, *moved = tab_routes.pick(tiny_runner, trace, json.dumps({"mlp": [0, 2]}) + "#3", 0, 0, 1, 0)
    _, cache = tiny_runner._net.run_with_cache(torch.tensor([trace.ids.tolist()]))
    writes = cache["blocks.0.mlp.hook_post"][0, 2].abs() * tiny_runner._net.blocks[0].mlp.w2.weight.norm(dim=0)
    assert "L0 MLP" in details and f"n{int(writes.argmax())} " in details  # the neuron that writes the most


def test_head_logits_are_the_heads_output_through_the_unembedding(tiny_runner, tiny_net, shown):
    trace, _ = shown
    ids = torch.tensor([trace.ids.tolist()])
    _, cache = tiny_net.run_with_cache(ids, names_filter=r"blocks\.1\.attn\.hook_z$|ln_final\.hook_scale$")
    cfg = tiny_net.cfg
    w_o = tiny_net.blocks[1].attn.wo.weight.view(cfg.d_model, cfg.n_heads, cfg.d_head)
    out = w_o[:, 2] @ cache["blocks.1.attn.hook_z"][0, 5, 2]
    scale = cache["ln_final.hook_scale"][0, 5]
    expected = tiny_net.output.weight @ (out * tiny_net.ln_final.weight / scale)
    np.testing.assert_allclose(tiny_runner.head_logits(trace, 1, 2, 5), expected.numpy(), atol=1e-4)


@pytest.mark.parametrize("position,threshold,message", [
    (99, 0.04, "position must be in"), (3, 0.0, "between 0 and 1"), (3, 1.0, "between 0 and 1"),
    (3, float("nan"), "threshold must be a number"),
])
def test_bad_settings_get_a_message(tiny_runner, shown, position, threshold, message):
    trace, _ = shown
    figure, note = tab_routes.graph_view(tiny_runner, trace, position, threshold, False, progress=_none)
    assert figure is None and message in note
    assert "key must be in" in tab_routes.why_view(tiny_runner, trace, 0, 0, 2, 5, False)[1]


def test_a_prompt_over_the_routes_cap_is_told_so(tiny_net, tiny_enc, monkeypatch):
    import playground.runner as runner_module
    import playground.tab_routes as tab

    monkeypatch.setattr(runner_module, "ROUTES_MAX_TOKENS", 4)
    runner = ModelRunner(tiny_net, tiny_enc, background_lens=False)
    trace = runner.analyze(TINY_PROMPT, lens=False)
    out = tab.render(runner, trace, 1, 0.04, 0, 0, 1, 0, False, progress=_none)
    assert "up to 4 tokens" in out[7] and out[6] is None
    assert "up to 4 tokens" in tab.graph_view(runner, trace, 1, 0.04, False, progress=_none)[1]


def test_routes_are_kept_with_the_trace_and_counted_in_its_memory(tiny_net, tiny_enc):
    runner = ModelRunner(tiny_net, tiny_enc, background_lens=False)
    trace = runner.analyze(TINY_PROMPT, lens=False)
    before = trace.nbytes
    f = runner.routes(trace)
    assert runner.routes(trace) is f and trace.nbytes == before + f.nbytes
    trace.drop()
    assert trace.routes is None


def test_figures_carry_what_a_click_needs():
    edges = [("attn", 0, 0, 2, 0.6, "a"), ("attn_resid", 0, 2, 2, 0.4, "r"), ("mlp", 0, 2, 2, 0.3, "m"),
             ("mlp_resid", 0, 2, 2, 0.7, "r")]
    fig = routes_figure(edges, 1, ["a", "b", "c"], 2, 0.04)
    names = {d.name: d for d in fig.data if d.name}
    assert json.loads(names["attention"].customdata[0]) == {"attn": [0, 0, 2]}
    assert json.loads(names["MLP"].customdata[0]) == {"mlp": [0, 2]}
    assert {tuple(json.loads(c)["node"]) for c in names["residual state"].customdata} == {(0, 0), (0, 2), (1, 2),
                                                                                           (2, 2)}
    split = split_figure(np.array([[1.0, -2.0], [0.5, 0.25]]), ["embed", "L0 attn"], "q", "k", -0.25, "why")
    assert split.data[0].z.tolist() == [[1.0, -2.0], [0.5, 0.25]] and "score -0.250" in split.layout.title.text
