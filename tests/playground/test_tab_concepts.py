"""The concept tabs (embeddings, inside a block, arithmetic, BPE) on the tiny model: every number is the model's."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from model.arithmetic import flops_per_token, parameter_counts
from model.lens import lens_logits
from playground import tab_arithmetic, tab_block, tab_bpe, tab_embeddings

from ..helpers import tiny_config


def test_embeddings_are_the_models_rows(tiny_runner, tiny_trace, tiny_net):
    token = tiny_runner.first_token(" cat")
    view = tiny_runner.embeddings([token], k=5)
    weight = tiny_net.tok_embeddings.weight
    cosine = F.normalize(weight[token], dim=-1) @ F.normalize(weight, dim=-1).T
    best = cosine.topk(6)
    assert view.nearest[0].tolist() == best.indices[1:].tolist()  # the token itself left out
    np.testing.assert_allclose(view.cosine[0], best.values[1:].numpy(), atol=1e-6)
    np.testing.assert_allclose(view.norms, weight.norm(dim=-1).numpy(), atol=1e-6)
    read_out = lens_logits(tiny_net, weight[token][None]).softmax(-1)[0]
    np.testing.assert_allclose(view.output_p[0], read_out.topk(5).values.numpy(), atol=1e-6)
    note, neighbours, readout, norms, pca, prompt = tab_embeddings.render(tiny_runner, tiny_trace, " cat", 5,
                                                                          " the, on, mat, sat", False)
    assert "embedding norm" in note and len(neighbours.data[0].y) == 5 and pca is not None
    assert "%" in prompt and "embed" in prompt


@pytest.mark.parametrize("text,words,message", [("", " cat", "Type a token"), (" cat", " the", None)])
def test_embeddings_bad_input(tiny_runner, tiny_trace, text, words, message):
    note, *_, pca = tab_embeddings.render_token(tiny_runner, text, 5, words, False)
    if message:
        assert message in note
    else:
        assert pca is None and "at least three tokens" in note  # fewer than three: nothing to project


def test_inside_a_block_is_the_forward_at_one_position(tiny_runner, tiny_trace, tiny_net):
    layer, position = 1, 3
    view = tiny_runner.block(tiny_trace, layer, position)
    _, cache = tiny_net.run_with_cache(torch.tensor([tiny_trace.ids.tolist()]))
    p = f"blocks.{layer}."
    np.testing.assert_allclose(view.resid_pre, cache[p + "hook_resid_pre"][0, position].numpy(), atol=1e-6)
    assert view.scale1 == pytest.approx(float(cache[p + "ln1.hook_scale"][0, position]), rel=1e-6)
    assert view.scale2 == pytest.approx(float(cache[p + "ln2.hook_scale"][0, position]), rel=1e-6)
    np.testing.assert_allclose(view.gate, cache[p + "mlp.hook_pre"][0, position].numpy(), atol=1e-5)
    np.testing.assert_allclose(view.up, cache[p + "mlp.hook_pre_linear"][0, position].numpy(), atol=1e-5)
    np.testing.assert_allclose(view.post, cache[p + "mlp.hook_post"][0, position].numpy(), atol=1e-5)
    np.testing.assert_allclose(view.mlp_out, cache[p + "hook_mlp_out"][0, position].numpy(), atol=1e-5)
    w2 = tiny_net.blocks[layer].mlp.w2.weight.detach().numpy()  # (D, F)
    contributions = view.post[None, :] * w2  # each neuron's write-out
    np.testing.assert_allclose(contributions.sum(-1), view.mlp_out, atol=1e-5)  # the neurons add up to the MLP
    np.testing.assert_allclose(view.w2_norms, np.linalg.norm(w2, axis=0), atol=1e-6)


def test_inside_a_block_renders(tiny_runner, tiny_trace):
    slider, norms, gains, note, steps, neurons, activations = tab_block.after_analyze(tiny_runner, tiny_trace, 1, 0,
                                                                                      False)
    assert slider["value"] == tiny_trace.n_tokens - 1
    np.testing.assert_allclose(np.array(norms.data[0].customdata, dtype=float),
                               np.linalg.norm(tiny_trace.resid, axis=-1),
                               rtol=1e-5)
    assert np.array(gains.data[0].z).shape == (2 * tiny_runner.cfg.n_layers + 1, tiny_runner.cfg.d_model)
    assert "RMSNorm divides" in note and len(neurons.data[0].y) == tab_block.TOP_NEURONS


def test_arithmetic_matches_the_config(tiny_runner, tiny_trace):
    params, flops, flops_plot, kv, kv_plot = tab_arithmetic.render(tiny_runner, tiny_trace, False)
    total = sum(parameter_counts(tiny_runner.cfg).values())
    assert f"**{total:,}**" in params and f"counted from the weights: {total:,}" in params
    assert f"S = {tiny_trace.n_tokens}" in flops
    measured = tab_arithmetic.measure(tiny_runner, tiny_trace)
    assert "GFLOP/s" in measured and measured.count("%**") == 2  # MFU of prefill and decode
    assert "Analyze a prompt" in tab_arithmetic.measure(tiny_runner, None)


@pytest.mark.parametrize("n_kv_heads", [1, 2, 6])
def test_arithmetic_names_both_crossovers(n_kv_heads):
    """Each crossover is the first S where its attention FLOPs reach the MLPs' (with the projections, and over the
    context alone), from the per-token formula; for SmolLM2 they are 1,536 and 2,304."""
    cfg = tiny_config(n_kv_heads=n_kv_heads)
    got = tab_arithmetic.crossovers(cfg)

    def attention(s: int, projections: bool) -> int:
        f = flops_per_token(cfg, s)
        return f["attention over the context"] + (f["attention projections"] if projections else 0)

    for name, projections in (("with its projections", True), ("over the context alone", False)):
        s = got[name]
        mlp = flops_per_token(cfg, s)["MLP"]
        assert attention(s, projections) >= mlp and (s == 0 or attention(s - 1, projections) < mlp)
    smollm2 = tiny_config(vocab_size=49152, d_model=576, n_layers=30, n_heads=9, n_kv_heads=3, d_mlp=1536)
    assert tab_arithmetic.crossovers(smollm2) == {"with its projections": 1536, "over the context alone": 2304}


def test_bpe_tab_trains_and_replays(tiny_runner):
    training, summary, table, compression, step, candidates = tab_bpe.train(tiny_runner, tab_bpe.TEXT, 12, False)
    assert len(table) == 12 and "12 merges" in summary and step["maximum"] == 12 and step["value"] == 1
    assert candidates is not None and len(tab_bpe.step_view(tiny_runner, training, 3, False).data) == 2
    _, message, *_ = tab_bpe.train(tiny_runner, "", 12, False)
    assert "training text" in message
    replayed = tab_bpe.replay(tiny_runner, " the cat")
    assert "·the" in replayed and "·cat" in replayed
    assert "Type a word" in tab_bpe.replay(tiny_runner, "  ")
