"""Mechanics of the transformer on a tiny random model: hooks, shapes, GQA, RoPE, KV cache, dtypes."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from model import KVCache, generate
from model.loaders import half_split_to_interleaved, interleaved_to_half_split
from model.transformer import apply_rope, repeat_kv, rope_angles, rope_frequencies, rope_rotations

from ..helpers import random_model, tiny_config

B, T = 2, 7


def expected_shapes(cfg, B, T):
    H, G, Dh, D, F_ = cfg.n_heads, cfg.n_kv_heads, cfg.d_head, cfg.d_model, cfg.d_mlp
    shapes = {"hook_embed": (B, T, D), "ln_final.hook_scale": (B, T, 1), "ln_final.hook_normalized": (B, T, D)}
    for l in range(cfg.n_layers):
        p = f"blocks.{l}."
        shapes.update({
            p + "hook_resid_pre": (B, T, D),
            p + "ln1.hook_scale": (B, T, 1),
            p + "ln1.hook_normalized": (B, T, D),
            p + "attn.hook_q": (B, T, H, Dh),
            p + "attn.hook_k": (B, T, G, Dh),
            p + "attn.hook_v": (B, T, G, Dh),
            p + "attn.hook_rot_q": (B, T, H, Dh),
            p + "attn.hook_rot_k": (B, T, G, Dh),
            p + "attn.hook_attn_scores": (B, H, T, T),
            p + "attn.hook_pattern": (B, H, T, T),
            p + "attn.hook_z": (B, T, H, Dh),
            p + "hook_attn_out": (B, T, D),
            p + "hook_resid_mid": (B, T, D),
            p + "ln2.hook_scale": (B, T, 1),
            p + "ln2.hook_normalized": (B, T, D),
            p + "mlp.hook_pre": (B, T, F_),
            p + "mlp.hook_pre_linear": (B, T, F_),
            p + "mlp.hook_post": (B, T, F_),
            p + "hook_mlp_out": (B, T, D),
            p + "hook_resid_post": (B, T, D),
        })
    return shapes


def tokens(cfg, B=B, T=T, seed=1):
    return torch.randint(0, cfg.vocab_size, (B, T), generator=torch.Generator().manual_seed(seed))


def test_every_hook_is_present_with_its_shape(tiny_net, tiny_cfg):
    logits, cache = tiny_net.run_with_cache(tokens(tiny_cfg))
    assert logits.shape == (B, T, tiny_cfg.vocab_size)
    shapes = expected_shapes(tiny_cfg, B, T)
    assert set(cache) == set(shapes)
    for name, shape in shapes.items():
        assert tuple(cache[name].shape) == shape, name
    assert list(cache) == tiny_net.hook_names()  # captured in forward order


def test_cache_tensors_are_consistent_with_each_other(tiny_net, tiny_cfg):
    """The hooked tensors are the ones the forward used: they recombine into each other."""
    _, c = tiny_net.run_with_cache(tokens(tiny_cfg))
    for l in range(tiny_cfg.n_layers):
        p = f"blocks.{l}."
        torch.testing.assert_close(c[p + "hook_resid_mid"], c[p + "hook_resid_pre"] + c[p + "hook_attn_out"])
        torch.testing.assert_close(c[p + "hook_resid_post"], c[p + "hook_resid_mid"] + c[p + "hook_mlp_out"])
        torch.testing.assert_close(c[p + "attn.hook_pattern"], c[p + "attn.hook_attn_scores"].softmax(-1))
        torch.testing.assert_close(c[p + "mlp.hook_post"], F.silu(c[p + "mlp.hook_pre"]) * c[p + "mlp.hook_pre_linear"])
        scores = c[p + "attn.hook_attn_scores"]
        assert torch.isinf(scores.triu(1)[scores.triu(1) != 0]).all()  # causal mask: -inf above the diagonal
        assert torch.isfinite(scores.tril()).all()
    torch.testing.assert_close(c["blocks.0.hook_resid_pre"], c["hook_embed"])


def test_names_filter(tiny_net, tiny_cfg):
    t = tokens(tiny_cfg)
    _, by_regex = tiny_net.run_with_cache(t, names_filter=r"hook_pattern$")
    assert sorted(by_regex) == [f"blocks.{l}.attn.hook_pattern" for l in range(tiny_cfg.n_layers)]
    _, by_list = tiny_net.run_with_cache(t, names_filter=["hook_embed", "blocks.1.mlp.hook_post"])
    assert sorted(by_list) == ["blocks.1.mlp.hook_post", "hook_embed"]
    _, by_fn = tiny_net.run_with_cache(t, names_filter=lambda n: n.startswith("blocks.0.ln"))
    assert sorted(by_fn) == ["blocks.0.ln1.hook_normalized", "blocks.0.ln1.hook_scale", "blocks.0.ln2.hook_normalized",
                             "blocks.0.ln2.hook_scale"]


def test_hooks_are_removed_after_run_with_cache_even_on_error(tiny_net, tiny_cfg):
    tiny_net.run_with_cache(tokens(tiny_cfg))
    assert all(not point.fns for point in tiny_net.hook_points.values())

    def boom(x, hook):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        tiny_net.run_with_hooks(tokens(tiny_cfg), [("blocks.0.hook_resid_pre", boom)])
    assert all(not point.fns for point in tiny_net.hook_points.values())
    with pytest.raises(KeyError):
        tiny_net.run_with_hooks(tokens(tiny_cfg), [("hook_embed", boom), ("no.such.hook", boom)])
    assert all(not point.fns for point in tiny_net.hook_points.values())


def test_hooks_can_replace_a_tensor(tiny_net, tiny_cfg):
    t = tokens(tiny_cfg)
    plain = tiny_net(t)
    ablated = tiny_net.run_with_hooks(t, [("blocks.1.hook_mlp_out", lambda x, hook: torch.zeros_like(x))])
    _, c = tiny_net.run_with_cache(t)
    expected = tiny_net.output(tiny_net.ln_final(c["blocks.1.hook_resid_mid"]))
    torch.testing.assert_close(ablated, expected)
    assert not torch.allclose(ablated, plain)


def test_cache_entries_are_independent_of_each_other_and_of_later_runs(tiny_net, tiny_cfg):
    t = tokens(tiny_cfg)
    _, first = tiny_net.run_with_cache(t)
    resid_pre_1 = first["blocks.1.hook_resid_pre"].clone()
    first["hook_embed"].zero_()  # the same tensor as blocks.0.hook_resid_pre in the forward
    first["blocks.0.hook_resid_post"].zero_()  # the same tensor as blocks.1.hook_resid_pre
    assert first["blocks.0.hook_resid_pre"].abs().sum() > 0
    assert torch.equal(first["blocks.1.hook_resid_pre"], resid_pre_1)
    _, second = tiny_net.run_with_cache(t)
    assert second["hook_embed"].abs().sum() > 0
    assert not first["hook_embed"].requires_grad


def test_fused_attention_equals_the_hooked_stages(tiny_net, tiny_cfg):
    """Without pattern hooks attention runs fused; with them, step by step. Same numbers."""
    t = tokens(tiny_cfg, T=9)
    fused = tiny_net(t)
    staged, cache = tiny_net.run_with_cache(t, names_filter=r"hook_pattern$")
    torch.testing.assert_close(fused, staged, atol=1e-5, rtol=1e-5)
    assert cache  # the staged path really ran


def reference_attention(x, net, layer=0):
    """Plain multi-head attention written out, using torch's own causal SDPA and our RoPE."""
    attn, cfg = net.blocks[layer].attn, net.cfg
    B, T, _ = x.shape
    q = attn.wq(x).view(B, T, cfg.n_heads, cfg.d_head)
    k = attn.wk(x).view(B, T, cfg.n_heads, cfg.d_head)
    v = attn.wv(x).view(B, T, cfg.n_heads, cfg.d_head)
    rotations = rope_rotations(rope_angles(torch.arange(T), cfg.d_head, cfg.rope_base))
    q, k = apply_rope(q, rotations), apply_rope(k, rotations)
    z = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True)
    return attn.wo(z.transpose(1, 2).reshape(B, T, -1))


def test_gqa_with_as_many_kv_heads_as_heads_is_plain_multi_head_attention():
    cfg = tiny_config(n_kv_heads=6)
    net = random_model(cfg, seed=3)
    x = torch.randn(B, T, cfg.d_model)
    _, c = net.run_with_cache(tokens(cfg), names_filter=["blocks.0.ln1.hook_normalized", "blocks.0.hook_attn_out"])
    torch.testing.assert_close(
        c["blocks.0.hook_attn_out"], reference_attention(c["blocks.0.ln1.hook_normalized"] * net.blocks[0].ln1.weight,
                                                         net),
        atol=1e-5, rtol=1e-5
    )
    mask = torch.ones(T, T, dtype=torch.bool).tril()
    rotations = rope_rotations(rope_angles(torch.arange(T), cfg.d_head, cfg.rope_base))
    torch.testing.assert_close(
        net.blocks[0].attn(x, rotations, mask, None, 0), reference_attention(x, net), atol=1e-5, rtol=1e-5
    )


def test_gqa_equals_multi_head_attention_with_shared_kv_heads_repeated():
    """A GQA model equals an MHA model whose K/V projections repeat each KV head for its query group."""
    gqa_cfg = tiny_config(n_heads=6, n_kv_heads=2)
    gqa = random_model(gqa_cfg, seed=5)
    mha = random_model(tiny_config(n_heads=6, n_kv_heads=6), seed=6)
    state = gqa.state_dict()
    for l in range(gqa_cfg.n_layers):
        for w in ("wk", "wv"):
            name = f"blocks.{l}.attn.{w}.weight"
            per_head = state[name].view(gqa_cfg.n_kv_heads, gqa_cfg.d_head, gqa_cfg.d_model)
            state[name] = per_head.repeat_interleave(gqa_cfg.n_groups, dim=0).reshape(-1, gqa_cfg.d_model)
    mha.load_state_dict(state)
    t = tokens(gqa_cfg)
    torch.testing.assert_close(gqa(t), mha(t), atol=1e-5, rtol=1e-5)
    assert [gqa_cfg.kv_head_of(h) for h in range(6)] == [0, 0, 0, 1, 1, 1]


def test_repeat_kv():
    x = torch.randn(2, 3, 5, 4)
    y = repeat_kv(x, 3)
    assert y.shape == (2, 9, 5, 4)
    for h in range(9):
        assert torch.equal(y[:, h], x[:, h // 3])


# -- RoPE ----------------------------------------------------------------------------------


def rope_meta_complex(x, positions, theta):
    """Meta llama's formulation: complex multiplication on interleaved pairs."""
    d = x.shape[-1]
    freqs = 1.0 / (theta ** (torch.arange(0, d, 2)[: d // 2].double() / d))
    cis = torch.polar(torch.ones(len(positions), d // 2, dtype=torch.float64),
                      positions.double()[:, None] * freqs[None])
    xc = torch.view_as_complex(x.double().reshape(*x.shape[:-1], -1, 2))
    return torch.view_as_real(xc * cis[None, :, None, :]).flatten(-2)


def rope_hf_rotate_half(x, positions, theta):
    """Hugging Face's formulation: rotate_half on half-split pairs."""
    d = x.shape[-1]
    inv_freq = 1.0 / (theta ** (torch.arange(0, d, 2).double() / d))
    freqs = positions.double()[:, None] * inv_freq[None]
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos()[None, :, None, :], emb.sin()[None, :, None, :]
    x = x.double()
    rotate_half = torch.cat((-x[..., d // 2 :], x[..., : d // 2]), dim=-1)
    return x * cos + rotate_half * sin


@pytest.mark.parametrize("theta", [10000.0, 100000.0])
def test_rope_matches_reference_formulas_in_both_layouts(theta):
    d, n = 64, 3
    positions = torch.tensor([0, 1, 2, 7, 100, 4095])
    x = torch.randn(1, len(positions), n, d, dtype=torch.float64)
    ours = apply_rope(x, rope_rotations(rope_angles(positions, d, theta)))
    # Angles are float32, as in Hugging Face's Llama; at position 4095 that rounds them by ~2e-4 rad.
    tol = dict(atol=5e-4, rtol=0)
    torch.testing.assert_close(ours, rope_meta_complex(x, positions, theta), **tol)
    # The same rotation in HF's layout: permute the head dims to half-split, rotate, permute back.
    to_half = interleaved_to_half_split(torch.eye(d, dtype=torch.float64), 1)  # rows: half-split order
    x_half = x @ to_half.T
    torch.testing.assert_close(ours @ to_half.T, rope_hf_rotate_half(x_half, positions, theta), **tol)
    near = positions < 128  # where float32 angles are exact to ~1e-5
    torch.testing.assert_close(ours[:, near], rope_meta_complex(x, positions, theta)[:, near], atol=2e-5, rtol=0)
    assert torch.allclose(rope_frequencies(d, theta)[1], torch.tensor(theta ** (-2 / d)))


def test_rope_preserves_norms_and_makes_scores_relative():
    d, theta = 32, 10000.0
    q, k = torch.randn(1, 1, 1, d), torch.randn(1, 1, 1, d)

    def rot(x, m):
        return apply_rope(x, rope_rotations(rope_angles(torch.tensor([m]), d, theta)))

    assert torch.allclose(rot(q, 17).norm(), q.norm(), atol=1e-5)
    s1 = (rot(q, 10) * rot(k, 3)).sum()
    s2 = (rot(q, 107) * rot(k, 100)).sum()  # same distance, 7
    assert torch.allclose(s1, s2, atol=1e-4)


def test_half_split_permutation_round_trips():
    w = torch.randn(6 * 8, 10)
    assert torch.equal(interleaved_to_half_split(half_split_to_interleaved(w, 6), 6), w)
    one_head = half_split_to_interleaved(torch.arange(8.0)[:, None], 1).flatten().tolist()
    assert one_head == [0, 4, 1, 5, 2, 6, 3, 7]  # pair i of half-split (i, i + 4) becomes neighbours


# -- KV cache and generation ----------------------------------------------------------------


def test_kv_cached_forward_equals_uncached(tiny_net, tiny_cfg):
    t = tokens(tiny_cfg, B=2, T=9)
    full = tiny_net(t)
    kv_cache = KVCache.empty(tiny_cfg, 2, 16, torch.float32, "cpu")
    pieces = [tiny_net(t[:, :4], kv_cache=kv_cache), tiny_net(t[:, 4:5], kv_cache=kv_cache),
              tiny_net(t[:, 5:], kv_cache=kv_cache)]
    assert kv_cache.length == 9
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=1e-5)


def test_kv_cache_overflow_is_a_clear_error(tiny_net, tiny_cfg):
    cache = KVCache.empty(tiny_cfg, 1, 4, torch.float32, "cpu")
    with pytest.raises(ValueError, match="KV cache holds 4"):
        tiny_net(tokens(tiny_cfg, B=1, T=5), kv_cache=cache)


def test_greedy_generation_with_the_cache_equals_rerunning_the_whole_sequence(tiny_net, tiny_cfg):
    prompt = tokens(tiny_cfg, B=1, T=5)[0].tolist()
    expected, ids = [], list(prompt)
    for _ in range(12):  # uncached: the whole sequence every step
        nxt = int(tiny_net(torch.tensor([ids]))[0, -1].argmax())
        expected.append(nxt)
        ids.append(nxt)
    assert list(generate(tiny_net, prompt, 12)) == expected  # generate() steps one token at a time with the KV cache
    assert len(set(expected)) > 1  # a sequence that could tell the two apart


def test_generation_stops_at_stop_id(tiny_net, tiny_cfg):
    prompt = tokens(tiny_cfg, B=1, T=5)[0].tolist()
    full = list(generate(tiny_net, prompt, 12))
    stopped = list(generate(tiny_net, prompt, 12, stop_ids=[full[3]]))
    assert stopped == full[: full.index(full[3]) + 1]


def test_generation_rejects_empty_prompt(tiny_net):
    with pytest.raises(ValueError):
        list(generate(tiny_net, [], 3))


def test_bfloat16_runs_and_is_close_to_float32(tiny_cfg):
    net32 = random_model(tiny_cfg)
    net16 = random_model(tiny_cfg).to(torch.bfloat16)
    t = tokens(tiny_cfg)
    logits32, logits16 = net32(t), net16(t)
    assert logits16.dtype == torch.bfloat16
    _, c = net16.run_with_cache(t)
    assert c["blocks.0.attn.hook_pattern"].dtype == torch.bfloat16
    rel = (logits16.float() - logits32).norm() / logits32.norm()
    assert rel < 0.05
    assert list(generate(net16, t[0].tolist(), 4))  # the cache follows the model's dtype


def test_config_rejects_inconsistent_heads():
    with pytest.raises(ValueError):
        tiny_config(n_heads=5)
    with pytest.raises(ValueError):
        tiny_config(n_kv_heads=4)


def test_scores_are_scaled_by_sqrt_d_head(tiny_net, tiny_cfg):
    _, c = tiny_net.run_with_cache(tokens(tiny_cfg), names_filter=r"blocks\.0\.attn\.hook_(rot_q|rot_k|attn_scores)$")
    q, k = c["blocks.0.attn.hook_rot_q"], c["blocks.0.attn.hook_rot_k"]
    k = repeat_kv(k.transpose(1, 2), tiny_cfg.n_groups)
    raw = q.transpose(1, 2) @ k.transpose(-2, -1)
    scores = c["blocks.0.attn.hook_attn_scores"]
    lower = torch.ones(T, T, dtype=torch.bool).tril()
    torch.testing.assert_close(scores[..., lower], raw[..., lower] / math.sqrt(tiny_cfg.d_head))
