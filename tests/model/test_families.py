"""Other Llama-family checkpoints, each exact against transformers: a tiny random model built by transformers itself
(its config class, random init, `save_pretrained`), loaded through our Hugging Face directory loader, gives the same
logits, hidden states and attention patterns (eager attention, float32)."""

from __future__ import annotations

import json

import pytest
import torch

from model import CheckpointError, load
from model.loaders import read_hf_dir

from ..helpers import tiny_spec, write_hf_tokenizer

COMMON = dict(hidden_size=64, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
              intermediate_size=96, max_position_embeddings=64, rms_norm_eps=1e-6, hidden_act="silu")
PROMPT = "the cat sat on the mat. the cat sat on the mat and the dog"
FAMILIES = {
    # Llama 3.x: rope scaling of type llama3 (an original context short enough for the prompt to cross it), untied
    "llama3": ("LlamaConfig", "LlamaForCausalLM", dict(
        tie_word_embeddings=False, rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                                                    "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                                    "original_max_position_embeddings": 8})),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", dict(tie_word_embeddings=False)),  # biases on q, k, v
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", dict(head_dim=32, tie_word_embeddings=True)),  # q/k norm, head_dim
    "mistral": ("MistralConfig", "MistralForCausalLM", dict(sliding_window=4)),  # sliding-window attention
    "smollm3": ("SmolLM3Config", "SmolLM3ForCausalLM", dict(no_rope_layers=[1, 0, 1])),  # layer 1 without RoPE
}


def build_family(name: str, directory):
    """transformers' own tiny random model of the family, saved as a Hugging Face directory: (the model, the dir)."""
    import transformers

    config_class, model_class, extra = FAMILIES[name]
    spec = tiny_spec()
    config = getattr(transformers, config_class)(vocab_size=len(spec.tokens), bos_token_id=spec.bos_token_id,
                                                 pad_token_id=spec.eos_token_id,
                                                 eos_token_id=spec.eos_token_id, **COMMON, **extra)
    torch.manual_seed(7)
    ref = getattr(transformers, model_class)(config)
    with torch.no_grad():  # weights of realistic scale, norms away from 1, biases not zero
        for param_name, p in ref.named_parameters():
            if "norm" in param_name:
                p.copy_(1 + 0.3 * torch.randn_like(p))
            elif param_name.endswith("bias"):
                p.copy_(0.2 * torch.randn_like(p))
    ref = ref.eval()
    ref.config._attn_implementation = "eager"
    ref.save_pretrained(directory, safe_serialization=True)
    write_hf_tokenizer(spec, directory)
    return ref, directory


@pytest.mark.parametrize("family", list(FAMILIES))
def test_each_family_equals_transformers(tmp_path, family):
    ref, directory = build_family(family, tmp_path / family)
    net, enc = load(directory)
    tokens = torch.tensor([enc.encode(PROMPT)])
    assert tokens.shape[1] > 8  # past Llama 3's original context and Mistral's window
    logits, cache = net.run_with_cache(tokens, names_filter=r"hook_pattern$|hook_resid_post$")
    with torch.no_grad():
        out = ref(tokens, output_attentions=True, output_hidden_states=True)
    torch.testing.assert_close(logits, out.logits, atol=1e-4, rtol=1e-4)
    L = net.cfg.n_layers
    for layer in range(L):
        torch.testing.assert_close(cache[f"blocks.{layer}.attn.hook_pattern"], out.attentions[layer], atol=1e-5,
                                   rtol=1e-5)
        if layer < L - 1:  # transformers' last hidden state is after the final norm
            torch.testing.assert_close(cache[f"blocks.{layer}.hook_resid_post"], out.hidden_states[layer + 1],
                                       atol=1e-4, rtol=1e-4)
    # one token at a time with the KV cache: the same logits (the window and the scaling hold in generation)
    from model import KVCache

    kv = KVCache.for_model(net, 1, tokens.shape[1])
    stepped = torch.cat([net(tokens[:, i : i + 1], kv_cache=kv) for i in range(tokens.shape[1])], dim=1)
    torch.testing.assert_close(stepped, logits, atol=1e-4, rtol=1e-4)


def test_what_each_family_sets(tmp_path):
    cfgs = {f: read_hf_dir(build_family(f, tmp_path / f)[1]).cfg for f in FAMILIES}
    assert cfgs["llama3"].rope_scaling == (8.0, 1.0, 4.0, 8) and not cfgs["llama3"].tie_embeddings
    assert cfgs["qwen2"].qkv_bias and not cfgs["qwen2"].qk_norm
    assert cfgs["qwen3"].qk_norm and cfgs["qwen3"].d_head == 32 and not cfgs["qwen3"].qkv_bias
    assert cfgs["mistral"].sliding_window == 4
    assert cfgs["smollm3"].rope_layers == (True, False, True)


def test_a_family_or_field_we_do_not_model_is_refused(tmp_path):
    _, directory = build_family("qwen2", tmp_path / "q")
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**config, "model_type": "gemma2"}))
    with pytest.raises(CheckpointError, match=r"model_type 'gemma2' is not supported \(supported: llama, mistral"):
        read_hf_dir(directory)
    rope = {"rope_type": "yarn", "factor": 4.0, "rope_theta": 10000.0}
    (directory / "config.json").write_text(json.dumps({**config, "rope_parameters": rope}))
    with pytest.raises(CheckpointError, match="RoPE scaling 'yarn' is not supported"):
        read_hf_dir(directory)
    (directory / "config.json").write_text(json.dumps({**config, "attn_logit_softcapping": 50.0}))
    with pytest.raises(CheckpointError, match="attn_logit_softcapping is not modelled"):
        read_hf_dir(directory)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_routes_and_the_score_split_hold_for_each_family(tmp_path, family):
    """The explanations' own truths on each family: attention terms sum to the attention output, every node's
    parts to 1, and a score split (with Qwen2's bias as one more component, Qwen3's q/k norm scale frozen,
    SmolLM3's no-RoPE layer unrotated) to the model's own score."""
    import numpy as np

    from model.routes import flow, score_split
    from model.views import resid_mid

    _, directory = build_family(family, tmp_path / family)
    net, enc = load(directory)
    ids = torch.tensor([enc.encode(PROMPT)])
    _, cache = net.run_with_cache(ids, names_filter=r"hook_resid_pre$|hook_resid_post$|hook_attn_scores$")
    L, T = net.cfg.n_layers, ids.shape[1]
    resid = torch.stack([cache[f"blocks.{l}.hook_resid_pre"][0] for l in range(L)]
                        + [cache[f"blocks.{L - 1}.hook_resid_post"][0]])
    f = flow(net, resid)
    sums = (f.attn.sum((2, 3)) + f.attn_resid).numpy()
    np.testing.assert_allclose(sums, np.ones_like(sums), atol=1e-5)
    mids = resid_mid(net, resid)
    for layer in range(L):
        for head, i, j in ((0, T - 1, T - 2), (3, T - 1, T - 4), (1, 5, 5)):
            split = score_split(net, resid, mids, layer, head, i, j)
            expected = float(cache[f"blocks.{layer}.attn.hook_attn_scores"][0, head, i, j])
            assert float(split.terms.sum()) == pytest.approx(expected, abs=2e-4), (layer, head, i, j)
            assert split.score == pytest.approx(expected, abs=1e-4)


def test_parameter_counts_include_each_familys_extras(tmp_path):
    from model.arithmetic import parameter_counts

    for family in FAMILIES:
        net, _ = load(build_family(family, tmp_path / family)[1])
        assert sum(parameter_counts(net.cfg).values()) == sum(p.numel() for p in net.parameters()), family


def test_a_model_too_large_for_the_machine_is_refused_with_the_arithmetic_before_loading(tmp_path):
    from model.loaders import check_fits
    from model.transformer import ModelConfig

    llama_70b = ModelConfig(vocab_size=128256, d_model=8192, n_layers=80, n_heads=64, n_kv_heads=8, d_mlp=28672,
                            tie_embeddings=False, name="llama-3.1-70b")
    with pytest.raises(CheckpointError, match=r"llama-3.1-70b: 70.6 B parameters need about 525.\d GB to load .* "
                                              r"this machine has 24.0 GB available"):
        check_fits(llama_70b, available=24 * 2**30)
    check_fits(llama_70b, available=2**50)  # a machine with room for it: no complaint
    _, directory = build_family("qwen2", tmp_path / "q")
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**config, "hidden_size": 16384, "intermediate_size": 65536,
                                                        "num_hidden_layers": 200, "num_attention_heads": 128,
                                                        "num_key_value_heads": 8}))
    (directory / "model.safetensors").write_bytes(b"not read")  # refused before the weights are opened
    with pytest.raises(CheckpointError, match="need about .* GB to load"):
        read_hf_dir(directory)
