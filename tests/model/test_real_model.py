"""The real default model against Hugging Face transformers loading the same GGUF."""

from __future__ import annotations

import pytest
import torch

from model import generate

PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return",
    "In 1969, 3 astronauts flew 384,400 km to the Moon. Café ☕ and 日本語!",
    "  Whitespace\t\tand\n\nnewlines   ",
]


@pytest.fixture(scope="module")
def cases(real):
    net, enc = real
    ids = [enc.encode(p) for p in PROMPTS] + [enc.apply_chat_template("Explain attention in one sentence.")]
    return [torch.tensor([i]) for i in ids]


def test_config_is_smollm2(real):
    cfg = real[0].cfg
    assert (cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.d_head, cfg.vocab_size) == (30, 576, 9, 3, 64,
                                                                                                    49152)
    assert cfg.rope_base == 100000.0 and cfg.tie_embeddings
    assert real[0].output.weight is real[0].tok_embeddings.weight


def test_logits_and_attention_match_transformers(real, hf_model, cases):
    net, _ = real
    for tokens in cases:
        with torch.no_grad():
            ref = hf_model(tokens, output_attentions=True, output_hidden_states=True)
        logits, cache = net.run_with_cache(tokens, names_filter=r"hook_pattern$|hook_resid_post$")
        assert (logits - ref.logits).abs().max() < 1e-3
        assert torch.equal(logits.argmax(-1), ref.logits.argmax(-1))
        for layer in range(net.cfg.n_layers):
            assert (cache[f"blocks.{layer}.attn.hook_pattern"] - ref.attentions[layer]).abs().max() < 1e-4
        for layer in range(net.cfg.n_layers - 1):  # HF's last hidden state is after the final norm
            ours, theirs = cache[f"blocks.{layer}.hook_resid_post"], ref.hidden_states[layer + 1]
            # float32 rounding grows with the residual's size (the first token's reaches hundreds): relative
            assert (ours - theirs).abs().max() <= 1e-5 * theirs.abs().max(), layer


def test_greedy_generation_matches_transformers_generate(real, hf_model):
    net, enc = real
    prompt = enc.apply_chat_template("Name three colours.")
    ours = list(generate(net, prompt, 24))
    tokens = torch.tensor([prompt])
    with torch.no_grad():  # an explicit mask: HF's pad id is 2, <|im_end|>, and it would mask those out
        ref = hf_model.generate(tokens, attention_mask=torch.ones_like(tokens), max_new_tokens=24, do_sample=False,
                                eos_token_id=None)
    assert ours == ref[0, len(prompt):].tolist()


def test_chat_template_matches_transformers(real, gguf_path):
    from transformers import AutoTokenizer

    _, enc = real
    hf_tok = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    messages = [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello!"},
                {"role": "user", "content": "Count: 1 2 3"}]
    text = hf_tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert enc.render_chat(messages) == text
    assert enc.apply_chat_template(messages) == enc.encode(text, allowed_special="all")


def test_bfloat16_agrees_with_float32(real, cases):
    from model import load

    net16, _ = load(dtype=torch.bfloat16)
    net, _ = real
    tokens = cases[0]
    logits16 = net16(tokens).float()
    logits32 = net(tokens)
    assert net16.tok_embeddings.weight.dtype == torch.bfloat16
    assert torch.equal(logits16[0, -1].topk(1).indices, logits32[0, -1].topk(1).indices)
    assert (logits16.softmax(-1) - logits32.softmax(-1)).abs().max() < 0.05
