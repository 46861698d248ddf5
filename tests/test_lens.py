"""The logit lens against direct computation on the real model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.lens import count_greater, lens_logits, top_k
from model.transformer import rms_norm
from playground import tab_lens
from playground.figures_lens import STATISTICS


@pytest.fixture(scope="module")
def lens_case(runner, trace):
    labels, lens = runner.lens(trace, with_mid=False)
    return labels, lens


def test_last_row_equals_the_model_output(runner, trace, lens_case):
    labels, lens = lens_case
    assert labels[0] == "embed" and labels[-1] == "L29" and len(labels) == 31
    logits = runner.net(torch.tensor([trace.ids.tolist()]))[0]
    p = logits.softmax(-1)
    top = p.topk(10)
    np.testing.assert_allclose(lens.top_probs[-1].numpy(), top.values.numpy(), atol=1e-5)
    assert torch.equal(lens.top_ids[-1], top.indices)
    entropy = -(p * p.clamp_min(1e-30).log2()).sum(-1)
    np.testing.assert_allclose(lens.entropy[-1].numpy(), entropy.numpy(), atol=1e-3)
    assert lens.kl_to_final[-1].abs().max() < 1e-4 and (lens.rank_final[-1] == 0).all()


def test_each_row_recomputes_its_own_rms(runner, trace, lens_case):
    """A test that fails if the final layer's RMS scale were reused for earlier rows."""
    _, lens = lens_case
    net = runner.net
    w, eps = net.ln_final.weight, net.cfg.norm_eps
    for row in (1, 10, 20):
        resid = torch.from_numpy(trace.resid[row])
        own = (rms_norm(resid, w, eps) @ net.output.weight.T).softmax(-1)
        final_rms = torch.rsqrt(torch.from_numpy(trace.resid[-1]).pow(2).mean(-1, keepdim=True) + eps)
        reused = ((resid * final_rms * w) @ net.output.weight.T).softmax(-1)
        np.testing.assert_allclose(lens.top_probs[row, :, 0].numpy(), own.max(-1).values.numpy(), atol=1e-5)
        assert (reused.max(-1).values - own.max(-1).values).abs().max() > 1e-2  # the two really differ


def test_ranks_and_kl_match_direct_computation(runner, trace, lens_case):
    _, lens = lens_case
    logits_all = lens_logits(runner.net, torch.from_numpy(trace.resid))  # (R, T, V)
    final = logits_all[-1]
    for row in (0, 12, 25):
        z = logits_all[row]
        rank_final = (z > z.gather(-1, final.argmax(-1, keepdim=True))).sum(-1)
        assert torch.equal(lens.rank_final[row], rank_final)
        nxt = torch.tensor(trace.ids[1:])
        rank_next = (z[:-1] > z[:-1].gather(-1, nxt[:, None])).sum(-1)
        assert torch.equal(lens.rank_next[row, :-1], rank_next) and lens.rank_next[row, -1] == -1
        kl = (final.softmax(-1) * (final.log_softmax(-1) - z.log_softmax(-1))).sum(-1) / np.log(2)
        np.testing.assert_allclose(lens.kl_to_final[row].numpy(), kl.clamp(min=0).numpy(), atol=2e-3, rtol=1e-3)


def test_resid_mid_rows_interleave(runner, trace):
    labels, lens = runner.lens(trace, with_mid=True)
    assert labels[:4] == ["embed", "L0 attn", "L0", "L1 attn"] and len(labels) == 61
    direct = lens_logits(runner.net, torch.from_numpy(trace.resid_mid[3])).softmax(-1).max(-1).values
    np.testing.assert_allclose(lens.top_probs[labels.index("L3 attn"), :, 0].numpy(), direct.numpy(), atol=1e-5)


def test_fast_top_k_is_exact():
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(16, 49152, generator=gen) * 4
    values, ids, row_max = top_k(z, 10)
    ref = z.topk(10)
    assert torch.equal(values, ref.values) and torch.equal(ids, ref.indices)
    assert torch.equal(row_max, z.max(-1).values)
    z[3, 100:164] += 50  # all the top values inside one chunk
    assert torch.equal(top_k(z, 10)[1], z.topk(10).indices)
    odd = torch.randn(4, 1000, generator=gen)  # not a multiple of the chunk: falls back to torch.topk
    assert torch.equal(top_k(odd, 5)[1], odd.topk(5).indices)


def test_count_greater():
    z = torch.tensor([[1.0, 3.0, 2.0, 3.0], [0.0, -1.0, 5.0, 4.0]])
    assert count_greater(z, torch.tensor([[2.0], [4.0]])).tolist() == [2, 1]


def test_tab_render(runner, trace):
    for statistic in STATISTICS:
        grid, watch, note = tab_lens.render(trace, statistic, False, trace.n_tokens - 1, " the, cat", False, runner)
        assert np.array(grid.data[0].z).shape == (31, trace.n_tokens)
    labels, lens = runner.lens(trace, False)
    grid, watch, _ = tab_lens.render(trace, "probability of the top token", False, 3, " mat", False, runner)
    np.testing.assert_allclose(np.array(grid.data[0].z, dtype=float), lens.top_probs[..., 0].numpy(), atol=1e-6)
    assert "<b>" in "".join(str(t) for t in np.array(grid.data[0].text).ravel())  # some layer predicts the next token
    names = [d.name for d in watch.data]
    assert any(n.startswith("final prediction") for n in names) and any(n.startswith("actual next") for n in names)
    p_row = lens_logits(runner.net, torch.from_numpy(trace.resid[:, 3])).softmax(-1)
    final_top = int(p_row[-1].argmax())
    np.testing.assert_allclose(np.array(watch.data[0].y, dtype=float), p_row[:, final_top].numpy(), atol=1e-6)


def test_lens_is_computed_once_per_trace(runner, trace, monkeypatch):
    runner.lens(trace, False)
    import playground.trace as trace_module

    monkeypatch.setattr(trace_module, "logit_lens", lambda *a, **k: pytest.fail("recomputed"))
    runner.lens(trace, False)
