"""The arithmetic of inference against counting: parameters, FLOPs of the forward's matrix products, KV-cache bytes."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from model import KVCache
from model.arithmetic import forward_flops, kv_cache_bytes, measure_peak_flops, parameter_counts

from ..helpers import random_model, tiny_config


def test_parameter_counts_equal_the_weights(tiny_net, real):
    for net in (tiny_net, real[0]):
        assert sum(parameter_counts(net.cfg).values()) == sum(p.numel() for p in net.parameters())
    untied = random_model(tiny_config(tie_embeddings=False))
    counts = parameter_counts(untied.cfg)
    assert counts["unembedding"] == untied.cfg.vocab_size * untied.cfg.d_model
    assert sum(counts.values()) == sum(p.numel() for p in untied.parameters())


def test_the_flops_formula_counts_the_forwards_matrix_products(tiny_net):
    cfg = tiny_net.cfg
    for T in (1, 7, 20):
        tokens = torch.randint(0, cfg.vocab_size, (1, T), generator=torch.Generator().manual_seed(T))
        # PyTorch's FLOP counter does not count CPU scaled_dot_product_attention, which the plain forward uses: a
        # hook on the pattern makes every layer take the explicit path (q·k, softmax, weights·v), whose matrix
        # products it does count. Without these hooks the attention term would go uncounted and the test fail.
        staged = [(f"blocks.{l}.attn.hook_pattern", lambda x, hook: None) for l in range(cfg.n_layers)]
        with FlopCounterMode(display=False) as counter:
            tiny_net.run_with_hooks(tokens, staged)
        assert counter.get_total_flops() == forward_flops(cfg, T)


def test_kv_cache_bytes_are_what_the_cache_allocates(tiny_cfg):
    for dtype, size in ((torch.float32, 4), (torch.bfloat16, 2)):
        cache = KVCache.empty(tiny_cfg, 1, 37, dtype, "cpu")
        allocated = sum(t.numel() * t.element_size() for t in (*cache.k, *cache.v))
        assert kv_cache_bytes(tiny_cfg, 37, size) == allocated
    multi_head = kv_cache_bytes(tiny_cfg, 1, 4, kv_heads=tiny_cfg.n_heads)
    assert multi_head == tiny_cfg.n_groups * kv_cache_bytes(tiny_cfg, 1, 4)


def test_the_peak_is_measured():
    assert measure_peak_flops(seconds=0.05, size=128) > 1e6


def test_flops_per_token_parts_add_up(real):
    from model.arithmetic import flops_per_token, matmul_weights

    cfg = real[0].cfg
    for context in (1, 128, 4096):
        parts = flops_per_token(cfg, context)
        assert sum(parts.values()) == 2 * matmul_weights(cfg) + 4 * cfg.n_layers * context * cfg.n_heads * cfg.d_head
