"""The runner, the one seam to the model: it returns the model's own tensors; bad prompts get clear messages."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from playground.runner import ModelBusyError, ModelRunner, PromptError

from ..conftest import TINY_PROMPT
from ..helpers import BAD_PROMPTS, TINY_MISSING_BYTE


def test_trace_equals_the_model_cache(tiny_runner, tiny_trace, tiny_net, tiny_enc):
    tokens = torch.tensor([tiny_trace.ids.tolist()])
    logits, cache = tiny_net.run_with_cache(tokens)
    assert tiny_trace.ids.tolist() == tiny_enc.encode(TINY_PROMPT) and tiny_trace.prompt == TINY_PROMPT
    for layer in range(tiny_net.cfg.n_layers):
        tensors = tiny_runner.layer(tiny_trace, layer)
        for name, hook in (("q", "attn.hook_q"), ("k", "attn.hook_k"), ("v", "attn.hook_v"),
                           ("rot_q", "attn.hook_rot_q"),
                           ("rot_k", "attn.hook_rot_k"), ("pattern", "attn.hook_pattern")):
            np.testing.assert_allclose(getattr(tensors, name), cache[f"blocks.{layer}.{hook}"][0].numpy(), atol=1e-6,
                                       err_msg=name)
        np.testing.assert_allclose(tiny_trace.resid[layer + 1], cache[f"blocks.{layer}.hook_resid_post"][0].numpy(),
                                   atol=1e-6)
        np.testing.assert_allclose(tiny_trace.resid_mid[layer], cache[f"blocks.{layer}.hook_resid_mid"][0].numpy(),
                                   atol=1e-6)
    np.testing.assert_allclose(tiny_trace.resid[0], cache["hook_embed"][0].numpy())
    np.testing.assert_allclose(tiny_trace.next_logits, logits[0, -1].numpy(), atol=1e-5)
    log_probs = logits[0].log_softmax(-1)
    expected = [-float(log_probs[i - 1, t]) / np.log(2) for i, t in enumerate(tiny_trace.ids.tolist()) if i > 0]
    np.testing.assert_allclose(tiny_trace.surprisal[1:], expected, rtol=1e-4)
    assert np.isnan(tiny_trace.surprisal[0])
    assert b"".join(tiny_trace.token_bytes).decode() == TINY_PROMPT


@pytest.mark.parametrize("prompt,message", BAD_PROMPTS)
def test_bad_prompts_get_clear_messages(tiny_runner, prompt, message):
    with pytest.raises(PromptError, match=message):
        tiny_runner.analyze(prompt)


def test_unencodable_characters_are_replaced_with_a_note(tiny_runner):
    bad = chr(TINY_MISSING_BYTE)
    trace = tiny_runner.analyze(f"bell{bad} and {bad} here")
    assert "2 character(s)" in trace.notes[0] and "replaced by U+FFFD" in trace.notes[0]
    assert "\ufffd" in trace.prompt and bad not in trace.prompt


def test_special_token_text_is_plain_text_but_the_chat_template_is_real(tiny_runner, tiny_enc):
    plain = tiny_runner.analyze("<|im_start|>user")
    assert not plain.special.any()
    chat = tiny_runner.analyze("hello", chat=True)
    assert chat.chat and chat.special.sum() == 3  # <|im_start|> user, <|im_end|>, <|im_start|> assistant
    assert tiny_runner.decode(chat.ids.tolist()) == tiny_enc.render_chat([{"role": "user", "content": "hello"}])


def test_model_busy_is_a_clear_message(tiny_net, tiny_enc):
    busy = ModelRunner(tiny_net, tiny_enc, wait_s=0.05)
    with busy._locked():
        with pytest.raises(ModelBusyError, match="busy"):
            busy.analyze("hello")
        with pytest.raises(ModelBusyError):
            busy.next_logits([1, 2, 3])


def test_next_logits_and_generation_steps_equal_a_full_forward(tiny_runner, tiny_trace, tiny_net):
    ids = tiny_trace.ids.tolist()
    np.testing.assert_allclose(tiny_runner.next_logits(ids), tiny_net(torch.tensor([ids]))[0, -1].numpy(), atol=1e-5)
    cache = tiny_runner.generation_cache(tiny_trace, extra=3)
    assert cache.length == tiny_trace.n_tokens and cache.max_len == tiny_trace.n_tokens + 3
    for token in (5, 77, 101):
        stepped = tiny_runner.step(token, cache)
        ids.append(token)
        np.testing.assert_allclose(stepped, tiny_net(torch.tensor([ids]))[0, -1].numpy(), atol=1e-5)


def test_hooked_runs_leave_the_shared_model_clean(tiny_runner, tiny_trace, tiny_net):
    ids = tiny_trace.ids.tolist()
    zeroed = tiny_runner.run_with_hooks(ids, [("blocks.1.hook_mlp_out", lambda x, hook: torch.zeros_like(x))])
    assert not torch.allclose(zeroed, tiny_net(torch.tensor([ids])))
    assert all(not point.fns for point in tiny_net.hook_points.values())


def test_lens_is_computed_once_per_trace(tiny_runner, tiny_trace, monkeypatch):
    labels, first = tiny_runner.lens(tiny_trace, False)
    assert labels == ["embed"] + [f"L{l}" for l in range(tiny_trace.n_layers)]
    import playground.runner as runner_module

    monkeypatch.setattr(runner_module, "logit_lens", lambda *a, **k: pytest.fail("recomputed"))
    assert tiny_runner.lens(tiny_trace, False)[1] is first


def test_token_text(tiny_runner, tiny_enc):
    ids = tiny_enc.encode(" the cat")
    assert [tiny_runner.token_bytes(i) for i in ids] == [b" the", b" cat"]
    assert tiny_runner.first_token(" cat sat") == ids[1]
    assert tiny_runner.first_token("") is None
    assert tiny_runner.first_token(chr(TINY_MISSING_BYTE)) is not None  # replaced, never an exception
