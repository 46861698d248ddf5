"""The logit lens against direct computation on the real model's residual streams."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.lens import count_greater, lens_logits, logit_lens, normalize_like_final, top_k
from model.transformer import rms_norm

from ..conftest import REAL_PROMPT
from ..helpers import matmul_tolerance


@pytest.fixture(scope="module")
def case(real):
    """(net, ids, residual streams (L + 1, T, D), resid_mid (L, T, D), the lens over the post-layer rows)."""
    net, enc = real
    ids = torch.tensor([enc.encode(REAL_PROMPT)])
    _, cache = net.run_with_cache(ids, names_filter=r"hook_embed$|hook_resid_post$|hook_resid_mid$")
    L = net.cfg.n_layers
    resid = torch.stack([cache["hook_embed"][0]] + [cache[f"blocks.{l}.hook_resid_post"][0] for l in range(L)])
    mid = torch.stack([cache[f"blocks.{l}.hook_resid_mid"][0] for l in range(L)])
    next_ids = torch.cat([ids[0, 1:], torch.tensor([-1])])
    return net, ids, resid, mid, logit_lens(net, resid, next_ids)


def test_last_row_equals_the_model_output(case):
    net, ids, resid, _, lens = case
    assert lens.top_ids.shape[:2] == (net.cfg.n_layers + 1, ids.shape[1])
    logits = net(ids)[0]
    # The lens and the forward unembed the same vectors in differently shaped matmuls: they may differ by
    # float32 rounding, which depends on the CPU. Bound it from the magnitudes, then carry it to probabilities.
    logit_tol = matmul_tolerance(normalize_like_final(net, resid[-1]), net.output.weight.T)
    p = logits.softmax(-1)
    top = p.topk(10)
    np.testing.assert_allclose(lens.top_probs[-1].numpy(), top.values.numpy(), rtol=2 * logit_tol, atol=0)
    assert torch.equal(lens.top_ids[-1], top.indices)
    entropy = -(p * p.clamp_min(1e-30).log2()).sum(-1)
    np.testing.assert_allclose(lens.entropy[-1].numpy(), entropy.numpy(), atol=2 * logit_tol / np.log(2) + 1e-5)
    assert lens.kl_to_final[-1].abs().max() < 1e-4 and (lens.rank_final[-1] == 0).all()


def test_each_row_recomputes_its_own_rms(case):
    """A test that fails if the final layer's RMS scale were reused for earlier rows."""
    net, _, resid, _, lens = case
    w, eps = net.ln_final.weight, net.cfg.norm_eps
    for row in (1, 10, 20):
        own = (rms_norm(resid[row], w, eps) @ net.output.weight.T).softmax(-1)
        final_rms = torch.rsqrt(resid[-1].pow(2).mean(-1, keepdim=True) + eps)
        reused = ((resid[row] * final_rms * w) @ net.output.weight.T).softmax(-1)
        tol = 2 * matmul_tolerance(rms_norm(resid[row], w, eps), net.output.weight.T)
        np.testing.assert_allclose(lens.top_probs[row, :, 0].numpy(), own.max(-1).values.numpy(), rtol=tol, atol=0)
        assert (reused.max(-1).values - own.max(-1).values).abs().max() > 1e-2  # the two really differ


def test_ranks_and_kl_match_direct_computation(case):
    net, ids, resid, _, lens = case
    logits_all = lens_logits(net, resid)  # (R, T, V)
    final = logits_all[-1]
    for row in (0, 12, 25):
        z = logits_all[row]
        rank_final = (z > z.gather(-1, final.argmax(-1, keepdim=True))).sum(-1)
        assert torch.equal(lens.rank_final[row], rank_final)
        nxt = ids[0, 1:]
        rank_next = (z[:-1] > z[:-1].gather(-1, nxt[:, None])).sum(-1)
        assert torch.equal(lens.rank_next[row, :-1], rank_next) and lens.rank_next[row, -1] == -1
        kl = (final.softmax(-1) * (final.log_softmax(-1) - z.log_softmax(-1))).sum(-1) / np.log(2)
        np.testing.assert_allclose(lens.kl_to_final[row].numpy(), kl.clamp(min=0).numpy(), atol=2e-3, rtol=1e-3)


def test_rows_may_be_any_residuals(case):
    """resid_mid rows decode through the same lens (what the tab's 'after each attention block' shows)."""
    net, ids, _, mid, _ = case
    lens = logit_lens(net, mid[3:4], torch.full((ids.shape[1],), -1))
    direct = lens_logits(net, mid[3]).softmax(-1).max(-1).values
    tol = 2 * matmul_tolerance(normalize_like_final(net, mid[3]), net.output.weight.T)
    np.testing.assert_allclose(lens.top_probs[0, :, 0].numpy(), direct.numpy(), rtol=tol, atol=0)
    assert (lens.rank_next == -1).all()


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
