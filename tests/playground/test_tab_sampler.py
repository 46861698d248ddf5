"""Sampler tab on the tiny model's trace: figures from cached logits, and generation step by step with the KV cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.sampling import distribution, stages
from playground import tab_sampler
from playground.gen_session import GenSession

CONTROLS = ["HF transformers", 0.8, 40, 0.9, 0.02, 1.0, 1.1, 0.0, 0.0, 0.0, 0.0, 0.0, 64, 0.0, 0.1, 0.0, 1.75, 2]


class Click:
    def __init__(self, row_value):
        self.row_value = row_value


def test_render_shows_the_chain_on_cached_logits(tiny_runner, tiny_trace):
    sess = GenSession.start(tiny_runner, tiny_trace)
    bars, matrix, orders, export, table, message = tab_sampler.render(tiny_runner, sess, *CONTROLS, 15, False)
    assert message == ""
    settings = tab_sampler.settings_from(*CONTROLS)
    logits = torch.from_numpy(tiny_trace.next_logits)
    final = distribution(logits, settings, tiny_trace.ids.tolist())
    ids = table["id"].tolist()
    np.testing.assert_allclose(np.array(bars.data[1].x, dtype=float), final[ids].numpy(), atol=1e-6)
    np.testing.assert_allclose(table["p"].to_numpy(), np.round(final[ids].double().numpy(), 4))
    st = stages(logits, settings, tiny_trace.ids.tolist())
    assert [c.split("<br>")[0] for c in matrix.data[0].x] == [s.name for s in st]
    assert "top_k=40" in export and "--top-k 40" in export
    llama = distribution(logits, tab_sampler.settings_from("llama.cpp", *CONTROLS[1:]), tiny_trace.ids.tolist())
    np.testing.assert_allclose(np.array(orders.data[1].y, dtype=float), llama[ids].numpy(), atol=1e-6)


@pytest.mark.parametrize("index,value,name", [(1, float("nan"), "temperature"), (3, 0.0, "top_p"), (2, "x", "top_k"),
                                              (6, -1.0, "repetition_penalty")])
def test_bad_settings_get_a_message(tiny_runner, tiny_trace, index, value, name):
    sess = GenSession.start(tiny_runner, tiny_trace)
    controls = list(CONTROLS)
    controls[index] = value
    *_, message = tab_sampler.render(tiny_runner, sess, *controls, 10, False)
    assert message.startswith("⚠️") and name in message


def test_steps_use_the_cache_and_match_a_full_forward(tiny_runner, tiny_trace, tiny_net):
    sess = GenSession.start(tiny_runner, tiny_trace)
    assert sess.kv_cache is None  # nothing is held until the first step

    def full():
        return tiny_net(torch.tensor([tiny_trace.ids.tolist() + sess.generated]))[0, -1].numpy()

    for token in (5, 77, 101):
        sess.push(tiny_runner, token, 0.5)
    np.testing.assert_allclose(sess.logits, full(), atol=1e-5)
    assert sess.kv_cache.length == tiny_trace.n_tokens + 3
    sess.pop(tiny_runner)
    assert sess.kv_cache.length == tiny_trace.n_tokens + 2 and sess.generated == [5, 77]
    np.testing.assert_allclose(sess.logits, full(), atol=1e-5)  # the logits after 77 again
    sess.push(tiny_runner, 9, 0.5)  # a different branch after going back
    np.testing.assert_allclose(sess.logits, full(), atol=1e-5)
    sess.drop()  # the memory budget took its cache: the next step rebuilds it
    sess.push(tiny_runner, 11, 0.5)
    np.testing.assert_allclose(sess.logits, full(), atol=1e-5)
    sess.reset()
    assert sess.generated == [] and sess.kv_cache.length == tiny_trace.n_tokens
    np.testing.assert_array_equal(sess.logits, tiny_trace.next_logits)


def test_sample_greedy_force_back_and_reset(tiny_runner, tiny_trace):
    sess = GenSession.start(tiny_runner, tiny_trace)
    settings = tab_sampler.settings_from(*CONTROLS)
    expected = int(sess.distribution(settings).argmax())
    sess, text, message = tab_sampler.take_greedy(tiny_runner, sess, 0, False, *CONTROLS)
    assert message == "" and sess.generated == [expected] and 'class="gtok"' in text
    sess, _, _ = tab_sampler.force_token(tiny_runner, sess, 0, False, Click([" cat", 261, 0.1, 0.1]), *CONTROLS)
    assert sess.generated[-1] == 261
    a, _, _ = tab_sampler.sample_next(tiny_runner, sess, 3, False, *CONTROLS)
    drawn = a.generated[-1]
    tab_sampler.back(tiny_runner, sess, False)
    assert tab_sampler.sample_next(tiny_runner, sess, 3, False, *CONTROLS)[0].generated[-1] == drawn  # seeded
    sess, text, _ = tab_sampler.reset(tiny_runner, sess, False)
    assert sess.generated == [] and 'class="gtok"' not in text


def test_generate_streams_until_the_limit(tiny_runner, tiny_trace, monkeypatch):
    from playground import gen_session

    for module in (tab_sampler, gen_session):
        monkeypatch.setattr(module, "MAX_NEW_TOKENS", 4)
    sess = GenSession.start(tiny_runner, tiny_trace)
    results = list(tab_sampler.generate_n(tiny_runner, sess, 10, 1, 0, 0, False, *CONTROLS))  # more than the limit
    assert tiny_runner.eos_token_id not in sess.generated  # seed 1 does not end the text: the limit stops it
    assert [r[1].count('class="gtok"') for r in results] == [1, 2, 3, 4]  # one more token per update, up to 4
    assert results[-1][2] == ""
    *_, (_, _, message, _) = tab_sampler.generate_n(tiny_runner, sess, 1, 1, 0, 0, False, *CONTROLS)
    assert "limit" in message and len(sess.generated) == 4


def test_generate_stops_at_the_end_of_text(tiny_runner, tiny_trace):
    sess = GenSession.start(tiny_runner, tiny_trace)
    eos = tiny_runner.eos_token_id
    forced = list(CONTROLS)
    forced[1] = 0.0  # greedy, from logits where end-of-text is made the most likely
    sess.logits = sess.logits.copy()
    sess.logits[eos] = sess.logits.max() + 10
    results = list(tab_sampler.generate_n(tiny_runner, sess, 10, 1, 0, 0, False, *forced))
    assert sess.generated == [eos] and len(results) == 1 and results[-1][2] == ""


def test_draw_samples_follow_the_distribution(tiny_runner, tiny_trace):
    sess = GenSession.start(tiny_runner, tiny_trace)
    fig = tab_sampler.draw_samples(tiny_runner, sess, 20_000, 7, 10, False, *CONTROLS)
    probs, drawn = np.array(fig.data[0].y, dtype=float), np.array(fig.data[1].y, dtype=float)
    assert np.abs(probs - drawn).max() < 0.02
    assert tab_sampler.draw_samples(tiny_runner, None, 10, 0, 10, False, *CONTROLS) is None


def test_the_new_tokens_attention_is_the_models(tiny_runner, tiny_trace, tiny_net):
    """While generating: the new token's attention row, for any layer and head, equals the last row of the pattern
    of a full forward over the prompt and the generated tokens."""
    sess = GenSession.start(tiny_runner, tiny_trace)
    assert tab_sampler.attention_view(tiny_runner, sess, 0, 0, False) is None  # nothing generated yet
    for token in (5, 77):
        sess.push(tiny_runner, token, 0.5)
    ids = torch.tensor([tiny_trace.ids.tolist() + sess.generated])
    _, cache = tiny_net.run_with_cache(ids, names_filter="hook_pattern")
    for layer, head in ((0, 0), (1, 4)):
        fig = tab_sampler.attention_view(tiny_runner, sess, layer, head, False)
        np.testing.assert_allclose(np.array(fig.data[0].y, dtype=float),
                                   cache[f"blocks.{layer}.attn.hook_pattern"][0, head, -1].numpy(), atol=1e-6)
        assert f"layer {layer}, head {head}" in fig.layout.title.text
    sess.pop(tiny_runner)  # going back shows the previous token's attention again
    _, cache = tiny_net.run_with_cache(ids[:, :-1], names_filter="hook_pattern")
    fig = tab_sampler.attention_view(tiny_runner, sess, 1, 4, False)
    np.testing.assert_allclose(np.array(fig.data[0].y, dtype=float),
                               cache["blocks.1.attn.hook_pattern"][0, 4, -1].numpy(),
                               atol=1e-6)


def test_xtc_and_dry_are_stages_and_exported(tiny_runner, tiny_trace):
    sess = GenSession.start(tiny_runner, tiny_trace)
    llama = ["llama.cpp", *CONTROLS[1:13], 0.5, 0.05, 0.8, 1.75, 2]
    bars, matrix, orders, export, table, message = tab_sampler.render(tiny_runner, sess, *llama, 10, False)
    assert message == ""
    stage_names = [column.split("<br>")[0] for column in matrix.data[0].x]  # the matrix's columns, one per stage
    assert stage_names[0] == "softmax" and stage_names[-1] == "temperature"
    assert stage_names[-2] == "XTC (fires 50% of the time)" and "DRY" in stage_names
    assert "--xtc-probability 0.5" in export and "--dry-multiplier 0.8" in export
    settings = tab_sampler.settings_from(*llama, breakers=tiny_runner.dry_breakers)
    assert settings.dry_breakers == tiny_runner.dry_breakers and tiny_runner.dry_breakers  # the tiny vocab has '\n'
    ids = [t for t in tiny_runner.dry_breakers]
    assert all(any(c in tiny_runner.token_bytes(t).decode("utf-8", "replace") for c in '\n:"*') for t in ids)
