"""The per-prompt trace: its numbers equal the model's own hook tensors, and bad prompts get clear messages."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from playground.trace import PromptError, attention_stages, head_statistics


def test_trace_equals_the_model_cache(runner, trace):
    net, enc = runner.net, runner.enc
    tokens = torch.tensor([trace.ids.tolist()])
    logits, cache = net.run_with_cache(tokens)
    assert trace.ids.tolist() == enc.encode(trace.prompt)
    for layer in (0, 7, 29):
        np.testing.assert_allclose(trace.pattern[layer], cache[f"blocks.{layer}.attn.hook_pattern"][0].numpy(), atol=1e-6)
        np.testing.assert_allclose(trace.q[layer], cache[f"blocks.{layer}.attn.hook_q"][0].numpy(), atol=1e-6)
        np.testing.assert_allclose(trace.rot_k[layer], cache[f"blocks.{layer}.attn.hook_rot_k"][0].numpy(), atol=1e-6)
        np.testing.assert_allclose(trace.v[layer], cache[f"blocks.{layer}.attn.hook_v"][0].numpy(), atol=1e-6)
    np.testing.assert_allclose(trace.next_logits, logits[0, -1].numpy(), atol=1e-4)
    log_probs = logits[0].log_softmax(-1)
    expected = [-float(log_probs[i - 1, t]) / np.log(2) for i, t in enumerate(trace.ids.tolist()) if i > 0]
    np.testing.assert_allclose(trace.surprisal[1:], expected, rtol=1e-4)
    assert np.isnan(trace.surprisal[0])
    assert trace.top_next[-1, 0] == int(logits[0, -1].argmax())
    assert b"".join(trace.token_bytes).decode() == trace.prompt


def test_stages_recomputed_from_q_and_k_equal_the_model(runner, trace):
    _, cache = runner.net.run_with_cache(torch.tensor([trace.ids.tolist()]), names_filter=r"blocks\.5\.attn\.hook_(attn_scores|pattern)$")
    for head in (0, 4, 8):
        stages = attention_stages(trace, 5, head, runner.cfg.kv_head_of(head))
        model_scores = cache["blocks.5.attn.hook_attn_scores"][0, head].double().numpy()  # scaled and masked
        np.testing.assert_allclose(stages["masked"], model_scores, atol=1e-4)
        np.testing.assert_allclose(stages["scaled"], stages["scores"] / 8.0)  # d_head 64
        lower = np.tril_indices(trace.n_tokens)
        np.testing.assert_allclose(stages["scaled"][lower], model_scores[lower], atol=1e-4)
        np.testing.assert_allclose(stages["softmax"], trace.pattern[5, head], atol=1e-5)


def test_head_statistics_on_known_patterns():
    T = 4
    prev = np.zeros((T, T))
    prev[0, 0] = 1
    prev[np.arange(1, T), np.arange(T - 1)] = 1  # every query looks at the token before it
    uniform = np.tril(np.ones((T, T))) / np.arange(1, T + 1)[:, None]
    stats = head_statistics(np.stack([prev, uniform])[None].astype(np.float32))
    first, previous, itself, entropy = stats[0, 0]
    assert previous == pytest.approx(1.0) and itself == pytest.approx(0.25) and entropy == pytest.approx(0.0)
    assert first == pytest.approx(1 / 3)  # only query 1 looks at token 0
    expected_entropy = np.mean([np.log2(n) for n in range(1, T + 1)])
    assert stats[0, 1, 3] == pytest.approx(expected_entropy, rel=1e-5)
    assert stats[0, 1, 0] == pytest.approx(np.mean([1 / 2, 1 / 3, 1 / 4]), rel=1e-5)


def test_previous_token_heads_are_found_in_the_real_model(trace):
    """Induction-style prompts have heads that attend mostly to the previous token."""
    assert np.nanmax(trace.head_stats[..., 1]) > 0.5
    np.testing.assert_allclose(trace.pattern.sum(-1), 1.0, atol=1e-5)


@pytest.mark.parametrize("prompt,message", [
    ("", "Type a prompt"),
    ("   \n\t ", "Type a prompt"),
    ("x" * 100_000, "100,000 characters"),
    ("word " * 600, "the limit is 512"),
])
def test_bad_prompts_get_clear_messages(runner, prompt, message):
    with pytest.raises(PromptError, match=message):
        runner.analyze(prompt)


def test_unencodable_characters_are_replaced_with_a_note(runner):
    trace = runner.analyze("bell\x04 and \U00050000 here")
    assert "replaced by U+FFFD" in trace.notes[0]
    assert "\ufffd" in trace.prompt


def test_special_token_text_is_plain_text_but_the_chat_template_is_real(runner):
    plain = runner.analyze("<|im_start|>user")
    assert not plain.special.any()
    chat = runner.analyze("hello", chat=True)
    assert chat.chat and chat.special.sum() == 5  # 3 x <|im_start|>, 2 x <|im_end|>
    assert runner.enc.decode(chat.ids.tolist()).endswith("<|im_start|>assistant\n")
