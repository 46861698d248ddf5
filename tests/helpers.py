"""Shared test helpers: a tiny random model with a tiny real tokenizer, float32 tolerances, bad-input tables."""

from __future__ import annotations

import json

import numpy as np
import torch

from model import ModelConfig, Transformer
from model.loaders import TokenizerSpec
from model.tokenizer import bytes_to_unicode

EPS32 = float(np.finfo(np.float32).eps)

# A byte-level BPE small enough to read: every byte but 0x04 (so one byte is unencodable, as
# in SmolLM2), a few merges, and SmolLM2's special tokens and chat template.
TINY_MERGES = ["Ġ t", "h e", "Ġt he", "Ġ c", "a t", "Ġc at", "Ġ s", "Ġs at", "Ġ o", "Ġo n", "Ġ m", "Ġm at", "e r",
               "i n"]
TINY_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
TINY_MISSING_BYTE = 0x04
TINY_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def tiny_spec() -> TokenizerSpec:
    alphabet = bytes_to_unicode()
    tokens = ["" if b == TINY_MISSING_BYTE else alphabet[b] for b in range(256)]
    tokens += [m.replace(" ", "") for m in TINY_MERGES] + TINY_SPECIALS
    specials = {t: tokens.index(t) for t in TINY_SPECIALS}
    return TokenizerSpec(tokens=tokens, merges=list(TINY_MERGES), special_tokens=specials, pre_tokenizer="smollm",
                         bos_token_id=specials["<|im_start|>"], eos_token_id=specials["<|im_end|>"],
                         chat_template=TINY_CHAT_TEMPLATE, name="tiny")


def tiny_config(**overrides) -> ModelConfig:
    fields = dict(vocab_size=len(tiny_spec().tokens), d_model=48, n_layers=2, n_heads=6, n_kv_heads=2, d_mlp=96,
                  rope_base=10000.0, max_seq_len=64, name="tiny")
    fields.update(overrides)
    return ModelConfig(**fields)


def other_config(**overrides) -> ModelConfig:
    """A second tiny shape, unlike SmolLM2's in every way a tab could assume: 3 layers, 4 query heads on one
    key/value head (MQA), a head size that is not d_model / n_heads, untied embeddings, and every family's extra
    (q/k/v biases, q/k norm, a sliding window, a layer without RoPE, Llama 3's RoPE scaling)."""
    fields = dict(vocab_size=len(tiny_spec().tokens), d_model=40, n_layers=3, n_heads=4, n_kv_heads=1, d_mlp=72,
                  head_dim=12, rope_base=500000.0, max_seq_len=64, tie_embeddings=False, qkv_bias=True, qk_norm=True,
                  sliding_window=6, rope_layers=(True, False, True), rope_scaling=(4.0, 1.0, 4.0, 16), name="other")
    fields.update(overrides)
    return ModelConfig(**fields)


def random_model(cfg: ModelConfig, seed: int = 0) -> Transformer:
    """A model with random weights of realistic scale (and RMSNorm weights away from 1)."""
    torch.manual_seed(seed)
    net = Transformer(cfg)
    with torch.no_grad():
        for name, p in net.named_parameters():
            gains = ("ln1.weight", "ln2.weight", "q_norm.weight", "k_norm.weight")
            if name.endswith(gains) or name == "ln_final.weight":
                p.uniform_(0.5, 1.5)
            else:
                p.normal_(0, 0.2)
    return net.eval().requires_grad_(False)


def matmul_tolerance(a: torch.Tensor, b: torch.Tensor, safety: float = 8.0) -> float:
    """How far float32 a @ b may differ between two correct computations (other CPUs, blockings, batch shapes):
    safety * eps * sqrt(K) * max |a| @ |b|, the usual probabilistic bound on a K-term float32 sum."""
    K = a.shape[-1]
    return safety * EPS32 * K**0.5 * float((a.abs().double() @ b.abs().double()).max())


# Prompts the app refuses, with a phrase its message must contain.
BAD_PROMPTS = [
    ("", "Type a prompt"),
    ("   \n\t  ", "Type a prompt"),
    ("x" * 100_000, "100,000 characters"),
    ("word " * 600, "the limit is"),
]


def raw_call(server: str, endpoint: str, body: str) -> dict:
    """POST a raw JSON body (gradio_client refuses to send NaN or Infinity; a browser or curl can)."""
    import httpx

    base = f"{server}gradio_api/call/{endpoint}"
    event = httpx.post(base, content=body, headers={"content-type": "application/json"}, timeout=30)
    assert event.status_code == 200, event.text
    stream = httpx.get(f"{base}/{event.json()['event_id']}", timeout=120).text
    data = [line[len("data: "):] for line in stream.splitlines() if line.startswith("data: ")]
    return json.loads(data[-1])[0]


def write_hf_tokenizer(spec, directory) -> None:
    """The spec as a Hugging Face tokenizer.json (byte-level BPE, SmolLM2's digit split) and tokenizer_config.json,
    as the tokenizers library writes them."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(spec.tokens) if t},
                               merges=[tuple(m.split(" ")) for m in spec.merges]))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False)])
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(list(spec.special_tokens))
    tok.save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(json.dumps({
        "bos_token": spec.tokens[spec.bos_token_id], "eos_token": spec.tokens[spec.eos_token_id],
        "chat_template": spec.chat_template,
    }))


def attention_parts_from_hooks(net, ids: list[int], layer: int, target: int):
    """(H, target + 1): each head's part from each earlier token in the state after attention at `target`, as a
    share by the LM Transparency Tool's rule (Ferrando & Voita 2024), recomputed here from the model's own hooks:
    the parts are the residual and each head's weight x value through its slice of W_O; a part's importance is
    max(eps, |y|_1 - |y - part|_1), normalised over the parts."""
    from model.routes import EPS

    cfg = net.cfg
    _, cache = net.run_with_cache(torch.tensor([ids]))
    pattern, v = cache[f"blocks.{layer}.attn.hook_pattern"][0], cache[f"blocks.{layer}.attn.hook_v"][0]
    wo = net.blocks[layer].attn.wo.weight.view(cfg.d_model, cfg.n_heads, cfg.d_head)
    whole = cache[f"blocks.{layer}.hook_resid_mid"][0, target]
    parts = [cache[f"blocks.{layer}.hook_resid_pre"][0, target]]
    for h in range(cfg.n_heads):
        parts += [pattern[h, target, j] * (wo[:, h] @ v[j, cfg.kv_head_of(h)]) for j in range(target + 1)]
    closeness = torch.stack([(whole.abs().sum() - (whole - p).abs().sum()).clamp(min=EPS) for p in parts])
    return (closeness / closeness.sum())[1:].view(cfg.n_heads, target + 1).numpy()


def next_token_body(prompt: str = "The capital of France is", **changes) -> str:
    """A REST body for /next_token: every argument in its order (REST takes no defaults), JSON as a browser or curl
    may write it (NaN, Infinity)."""
    import inspect

    from playground import api

    values = {name: p.default for name, p in list(inspect.signature(api.next_token).parameters.items())[2:]}
    values.update(changes)
    return "[" + ", ".join([json.dumps(prompt), *(v if isinstance(v, str) and v[:1] in "NI1[" else json.dumps(v)
                                                  for v in values.values())]) + "]"
