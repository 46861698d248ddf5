"""The arithmetic of inference, from a model's config: parameters, FLOPs per token, KV-cache bytes, and the peak.

After kipply's "Transformer Inference Arithmetic", Adam Casson's "Transformer FLOPs" and
PaLM's model FLOPs utilisation. A forward over T tokens does, per token, 2 FLOPs for every
weight of a matrix product (multiply and add) and, per layer, 4 * S * H * Dh for attention
over S keys (2 * S * H * Dh for the scores q.k, as many for the weighted sum of values).
Kaplan et al. write the scores as 2 * n_layer * n_ctx * d_attn. The embedding is a lookup,
no FLOPs; the unembedding is a matrix product even when its weight is the embedding's.
"""

from __future__ import annotations

import time

import torch

from .transformer import KVCache, ModelConfig, Transformer


def parameter_counts(cfg: ModelConfig) -> dict[str, int]:
    """Parameters by component; with tied embeddings the unembedding adds none."""
    D, H, G, Dh, F, L, V = cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.d_head, cfg.d_mlp, cfg.n_layers, cfg.vocab_size
    return {
        "embedding": V * D,
        # wq, wk, wv, wo, and Qwen2's biases on q, k and v
        "attention": L * (D * H * Dh + 2 * D * G * Dh + H * Dh * D + (H * Dh + 2 * G * Dh) * cfg.qkv_bias),
        "MLP": L * 3 * D * F,  # w1 (gate), w3 (up), w2 (down)
        # ln1, ln2 per layer, the final norm; Qwen3's and Gemma's q/k norms; Gemma's ln1_post and ln2_post
        "norms": (2 * L + 1) * D + L * 2 * Dh * cfg.qk_norm + L * 2 * D * cfg.post_norms,
        "unembedding": 0 if cfg.tie_embeddings else V * D,
    }


def matmul_weights(cfg: ModelConfig) -> int:
    """Weights that take part in a matrix product for every token: every layer's projections and the unembedding."""
    counts = parameter_counts(cfg)
    return counts["attention"] + counts["MLP"] + cfg.vocab_size * cfg.d_model


def flops_per_token(cfg: ModelConfig, context: int) -> dict[str, int]:
    """FLOPs for one token that attends to `context` keys, by part: the MLPs, the attention projections (q, k, v, o),
    attention over the context (scores and weighted values) and the unembedding. They sum to 2 x matmul_weights
    plus the attention term. A sliding-window layer (Mistral, Gemma 3) attends to at most its window of keys."""
    counts = parameter_counts(cfg)
    keys = sum(min(context, cfg.window_of(l) or context) for l in range(cfg.n_layers))  # L x context without windows
    return {"MLP": 2 * counts["MLP"], "attention projections": 2 * counts["attention"],
            "attention over the context": 4 * keys * cfg.n_heads * cfg.d_head,
            "unembedding": 2 * cfg.vocab_size * cfg.d_model}


def forward_flops(cfg: ModelConfig, tokens: int) -> int:
    """FLOPs of one forward over `tokens` new tokens with no cache, as the matrix products compute them: every
    query against every key (the causal mask hides the future; it does not skip the work)."""
    return tokens * 2 * matmul_weights(cfg) + 4 * cfg.n_layers * cfg.n_heads * cfg.d_head * tokens * tokens


def kv_cache_bytes(cfg: ModelConfig, tokens: int, bytes_per_value: int, kv_heads: int | None = None) -> int:
    """Bytes the KV cache holds for `tokens` positions: keys and values, every layer, each key/value head."""
    G = cfg.n_kv_heads if kv_heads is None else kv_heads
    return 2 * cfg.n_layers * G * cfg.d_head * tokens * bytes_per_value


def measure_peak_flops(seconds: float = 0.5, size: int = 1024) -> float:
    """FLOP/s of float32 matrix products on this machine now (a micro-benchmark: size x size by size x size)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b  # warm up
    runs, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        a @ b
        runs += 1
    return runs * 2 * size**3 / (time.perf_counter() - started)


@torch.no_grad()
def measure_speed(net: Transformer, ids: list[int], decode_steps: int = 16) -> dict[str, float]:
    """Measured here, now: the float32 matmul peak (a micro-benchmark), prefill tokens/s over `ids` (the best of
    three), and decode tokens/s with the KV cache. About two seconds."""
    peak = measure_peak_flops(0.5)
    tokens = torch.tensor([ids])
    net(tokens)
    prefill = min(_timed(lambda: net(tokens)) for _ in range(3))
    kv_cache = KVCache.for_model(net, 1, len(ids) + decode_steps + 1)
    net(tokens, kv_cache=kv_cache)
    step = torch.tensor([[ids[-1]]])
    decode = _timed(lambda: [net(step, kv_cache=kv_cache) for _ in range(decode_steps)])
    return {"peak_flops": peak, "prefill_tokens_per_s": len(ids) / prefill,
            "decode_tokens_per_s": decode_steps / decode, "context": len(ids)}


def _timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started
