"""Sampler tab: figures from the cached logits, and step-by-step generation with the KV cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.sampling import distribution, stages
from playground import tab_sampler
from playground.tab_sampler import GenSession

CONTROLS = ["HF transformers", 0.8, 40, 0.9, 0.02, 1.0, 1.1, 0.0, 0.0]


def test_render_shows_the_chain_on_cached_logits(trace, runner):
    sess = GenSession.from_trace(trace, runner)
    bars, matrix, orders, export, table, message = tab_sampler.render(sess, CONTROLS, 15, False, runner)
    assert message == ""
    settings = tab_sampler.settings_from(*CONTROLS)
    logits = torch.from_numpy(trace.next_logits)
    final = distribution(logits, settings, trace.ids.tolist())
    ids = table["id"].tolist()
    np.testing.assert_allclose(np.array(bars.data[1].x, dtype=float), final[ids].numpy(), atol=1e-6)
    np.testing.assert_allclose(table["p"].to_numpy(), np.round(final[ids].double().numpy(), 4))
    st = stages(logits, settings, trace.ids.tolist())
    assert [c.split("<br>")[0] for c in matrix.data[0].x] == [s.name for s in st]
    assert "top_k=40" in export and "--top-k 40" in export
    llama = distribution(logits, tab_sampler.settings_from("llama.cpp", *CONTROLS[1:]), trace.ids.tolist())
    np.testing.assert_allclose(np.array(orders.data[1].y, dtype=float), llama[ids].numpy(), atol=1e-6)


def test_bad_settings_get_a_message(trace, runner):
    sess = GenSession.from_trace(trace, runner)
    *_, message = tab_sampler.render(sess, ["HF transformers", float("nan"), 0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.0], 10, False, runner)
    assert "temperature" in message
    *_, message = tab_sampler.render(sess, ["HF transformers", 1.0, 0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0], 10, False, runner)
    assert "top_p" in message


def test_steps_use_the_cache_and_match_a_full_forward(trace, runner):
    sess = GenSession.from_trace(trace, runner)
    for token in (runner.enc.encode(" Berlin")[0], runner.enc.encode(".")[0], 198):
        sess.push(token, 0.5, runner)
    full = runner.net(torch.tensor([trace.ids.tolist() + sess.generated]))[0, -1]
    np.testing.assert_allclose(sess.logits[-1], full.numpy(), atol=1e-3)
    assert sess.cache.length == trace.n_tokens + 3
    sess.pop()
    assert sess.cache.length == trace.n_tokens + 2 and len(sess.logits) == 3
    sess.push(runner.enc.encode(" The")[0], 0.5, runner)  # a different branch after going back
    full = runner.net(torch.tensor([trace.ids.tolist() + sess.generated]))[0, -1]
    np.testing.assert_allclose(sess.logits[-1], full.numpy(), atol=1e-3)
    sess.reset()
    assert sess.generated == [] and sess.cache.length == trace.n_tokens and len(sess.logits) == 1


def test_generation_limit(trace, runner, monkeypatch):
    monkeypatch.setattr(tab_sampler, "MAX_NEW_TOKENS", 2)
    sess = GenSession.from_trace(trace, runner)
    sess.push(5, 0.1, runner)
    sess.push(6, 0.1, runner)
    with pytest.raises(ValueError, match="limit"):
        sess.push(7, 0.1, runner)
