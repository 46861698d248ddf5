"""Interventions against doing the same thing by hand: ablation, patching, direct logit attribution, TL hooks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.interventions import (
    ATTRIBUTION_HOOKS, SWEEPS, Ablation, ablation_hooks, direct_logit_attribution, logit_difference, patching_sweep,
    run_from,
)

from ..helpers import matmul_tolerance, other_config, random_model

CLEAN = [116, 257, 261, 263, 265, 258]  # tiny-tokenizer ids: "the cat sat on the"
CORRUPT = [116, 257, 267, 263, 265, 258]  # one token changed


def last_logits(net, tokens, hooks=()):
    return net.run_with_hooks(torch.tensor([tokens]), list(hooks))[0, -1]


def resid_pre(net, tokens):
    _, cache = net.run_with_cache(torch.tensor([tokens]), names_filter=r"hook_resid_pre$")
    return [cache[f"blocks.{l}.hook_resid_pre"][0] for l in range(net.cfg.n_layers)]


def test_zero_ablating_a_head_equals_zeroing_its_z_by_hand(tiny_net):
    layer, head = 1, 4

    def by_hand(z, hook):
        z = z.clone()
        z[:, :, head] = 0
        return z

    expected = last_logits(tiny_net, CLEAN, [(f"blocks.{layer}.attn.hook_z", by_hand)])
    ablation = Ablation(heads=frozenset({(layer, head)}))
    got = run_from(tiny_net, layer, resid_pre(tiny_net, CLEAN)[layer][None], ablation_hooks(ablation))[0]
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(got, last_logits(tiny_net, CLEAN), atol=1e-3)


def test_mean_ablation_writes_the_mean_over_the_prompts_positions(tiny_net):
    seen = {}

    def record(x, hook):
        seen["mlp"] = x.clone()

    ablation = Ablation(mlp=frozenset({0}), attn=frozenset({1}), heads=frozenset({(1, 2)}), mode="mean")
    hooks = ablation_hooks(ablation) + [("blocks.0.hook_mlp_out", record)]
    tiny_net.run_with_hooks(torch.tensor([CLEAN]), hooks)
    _, cache = tiny_net.run_with_cache(torch.tensor([CLEAN]), names_filter="blocks.0.hook_mlp_out")
    mean = cache["blocks.0.hook_mlp_out"].mean(dim=1, keepdim=True)  # over the prompt's positions
    torch.testing.assert_close(seen["mlp"], mean.expand_as(seen["mlp"]))
    with pytest.raises(ValueError, match="mode"):
        Ablation(mode="resample")


def test_patching_nothing_gives_the_corrupted_run_and_everything_the_clean_one(tiny_net):
    clean, corrupt = resid_pre(tiny_net, CLEAN), resid_pre(tiny_net, CORRUPT)
    unpatched = run_from(tiny_net, 0, corrupt[0][None])[0]
    torch.testing.assert_close(unpatched, last_logits(tiny_net, CORRUPT), atol=1e-5, rtol=0)
    sweep = SWEEPS["resid"]
    all_positions = lambda x, hook: clean[0][None].clone()  # noqa: E731  every position at once
    patched = run_from(tiny_net, 0, corrupt[0][None], [("blocks.0.hook_resid_pre", all_positions)])[0]
    torch.testing.assert_close(patched, last_logits(tiny_net, CLEAN), atol=1e-5, rtol=0)
    # One-token prompts: each patch is the whole residual, so every normalised value is exactly 1.
    c1, k1 = resid_pre(tiny_net, CLEAN[:1]), resid_pre(tiny_net, [CORRUPT[2]])
    metric = logit_difference(5, 9)
    clean_d = float(metric(last_logits(tiny_net, CLEAN[:1])[None]))
    corrupt_d = float(metric(last_logits(tiny_net, [CORRUPT[2]])[None]))
    for layer, values in patching_sweep(tiny_net, sweep, k1, c1, metric):
        np.testing.assert_allclose((values.numpy() - corrupt_d) / (clean_d - corrupt_d), 1.0, atol=1e-4)


@pytest.mark.parametrize("kind", ["resid", "attn", "mlp"])
def test_each_position_patch_equals_patching_it_by_hand(tiny_net, kind):
    sweep = SWEEPS[kind]
    names = rf"hook_resid_pre$|{sweep.hook}$"
    _, clean_cache = tiny_net.run_with_cache(torch.tensor([CLEAN]), names_filter=names)
    clean = [clean_cache[f"blocks.{l}.{sweep.hook}"][0] for l in range(tiny_net.cfg.n_layers)]
    corrupt = resid_pre(tiny_net, CORRUPT)
    metric = logit_difference(5, 9)
    results = dict(patching_sweep(tiny_net, sweep, corrupt, clean, metric, batch=4))  # batches of 4 positions
    for layer, position in ((0, 2), (1, 0), (1, 5)):
        def by_hand(x, hook, layer=layer, position=position):
            x = x.clone()
            x[0, position] = clean[layer][position]
            return x
        expected = metric(last_logits(tiny_net, CORRUPT, [(f"blocks.{layer}.{sweep.hook}", by_hand)])[None])
        assert float(results[layer][position]) == pytest.approx(float(expected), abs=1e-4)


def test_each_head_patch_equals_patching_its_z_by_hand(tiny_net):
    sweep = SWEEPS["heads"]
    _, clean_cache = tiny_net.run_with_cache(torch.tensor([CLEAN]), names_filter=r"hook_z$")
    clean = [clean_cache[f"blocks.{l}.attn.hook_z"][0] for l in range(tiny_net.cfg.n_layers)]
    metric = logit_difference(5, 9)
    results = dict(patching_sweep(tiny_net, sweep, resid_pre(tiny_net, CORRUPT), clean, metric))
    assert results[0].shape == (tiny_net.cfg.n_heads,)
    for layer, head in ((0, 1), (1, 5)):
        def by_hand(z, hook, layer=layer, head=head):
            z = z.clone()
            z[0, :, head] = clean[layer][:, head]
            return z
        expected = metric(last_logits(tiny_net, CORRUPT, [(f"blocks.{layer}.attn.hook_z", by_hand)])[None])
        assert float(results[layer][head]) == pytest.approx(float(expected), abs=1e-4)


@pytest.mark.parametrize("which", ["tiny", "real", "gemma"])
def test_direct_logit_attribution_sums_to_the_logit_difference(which, request):
    """Parts sum to the logit difference; each layer's heads to its attention part (Gemma: through ln1_post with
    its scale frozen)."""
    if which == "tiny":
        net, tokens, a, b = request.getfixturevalue("tiny_net"), CLEAN, 5, 9
    else:
        net, enc = request.getfixturevalue(which)
        tokens = enc.encode_prompt("The capital of France is")
        a, b = enc.encode(" Paris")[0], enc.encode(" Rome")[0]
    _, cache = net.run_with_cache(torch.tensor([tokens]), names_filter=ATTRIBUTION_HOOKS)
    direction = net.output.weight[a] - net.output.weight[b]
    attribution = direct_logit_attribution(net, cache, direction)
    logits = last_logits(net, tokens)
    assert attribution.total == pytest.approx(float(logits[a] - logits[b]), abs=1e-4)
    assert float(attribution.parts.sum()) == pytest.approx(attribution.total, abs=1e-4)
    attn = attribution.parts[1::2]  # the L{l} attn parts
    torch.testing.assert_close(attribution.heads.sum(-1), attn, atol=1e-4, rtol=1e-4)
    assert len(attribution.labels) == 1 + 2 * net.cfg.n_layers


# -- TransformerLens's hook contract ------------------------------------------------------------


def test_norm_hooks_mean_what_transformerlens_means(tiny_net):
    """hook_scale is the RMS divisor [B, T, 1]; hook_normalized is x / scale *before* the gain (RMSNorm in
    TransformerLens: scale = hook_scale((x.pow(2).mean(-1, keepdim=True) + eps).sqrt());
    x = hook_normalized(x / scale); return x * w)."""
    _, c = tiny_net.run_with_cache(torch.tensor([CLEAN]))
    eps = tiny_net.cfg.norm_eps
    for layer in range(tiny_net.cfg.n_layers):
        p = f"blocks.{layer}."
        for ln, x in (("ln1", c[p + "hook_resid_pre"]), ("ln2", c[p + "hook_resid_mid"])):
            scale = (x.pow(2).mean(-1, keepdim=True) + eps).sqrt()
            torch.testing.assert_close(c[p + f"{ln}.hook_scale"], scale)
            torch.testing.assert_close(c[p + f"{ln}.hook_normalized"], x / scale)
        weight = tiny_net.blocks[layer].ln1.weight
        q = tiny_net.blocks[layer].attn.wq(c[p + "ln1.hook_normalized"] * weight).view_as(c[p + "attn.hook_q"])
        torch.testing.assert_close(q, c[p + "attn.hook_q"])  # the gain comes after the hook
    final = c[f"blocks.{tiny_net.cfg.n_layers - 1}.hook_resid_post"]
    torch.testing.assert_close(c["ln_final.hook_scale"], (final.pow(2).mean(-1, keepdim=True) + eps).sqrt())


def test_transformerlens_style_logit_attribution_runs_on_our_cache(tiny_net):
    """What a TransformerLens user writes (decompose the residual, apply_ln_to_stack with ln_final.hook_scale, read
    out through W_U) gives the model's logits on our cache."""
    logits, cache = tiny_net.run_with_cache(torch.tensor([CLEAN]))
    L = tiny_net.cfg.n_layers
    stack = torch.stack([cache["hook_embed"]] + [cache[f"blocks.{l}.hook_{part}_out"] for l in range(L)
                                                  for part in ("attn", "mlp")])  # (components, B, T, D)
    scaled = stack / cache["ln_final.hook_scale"]  # TransformerLens's apply_ln_to_stack for RMS normalisation
    W_U = (tiny_net.ln_final.weight[:, None] * tiny_net.output.weight.T)  # the gain folded in, as fold_ln does
    per_component = scaled[:, 0, -1] @ W_U  # (components, V)
    tol = matmul_tolerance(scaled[:, 0, -1].sum(0, keepdim=True), W_U) + 1e-5
    torch.testing.assert_close(per_component.sum(0), logits[0, -1], atol=tol, rtol=0)


def test_a_second_family_keeps_transformerlens_meanings():
    """On the other family's shape (Qwen2's q/k/v biases, Qwen3's q/k norms, Mistral's window, SmolLM3's no-RoPE
    layer), the hooks mean what TransformerLens's do for Qwen3: hook_q/hook_k are the projections with their
    biases (W_Q x + b_Q), `attn.q_norm` / `attn.k_norm` are RMSNorms applied after them (hook_scale, and
    hook_normalized before the gain), hook_rot_q is RoPE of the normed q (or the normed q where a layer has no
    RoPE), and the residual decomposition still reads out the logits through the (untied) unembedding."""
    from model.transformer import apply_rope

    net = random_model(other_config(), seed=4)
    cfg = net.cfg
    tokens = torch.tensor([CLEAN * 2])  # 12 positions: past the window of 6
    logits, c = net.run_with_cache(tokens)
    for layer in range(cfg.n_layers):
        rotations, _ = net.positions(0, tokens.shape[1]).of(layer)
        p, attn = f"blocks.{layer}.", net.blocks[layer].attn
        x = c[p + "ln1.hook_normalized"] * net.blocks[layer].ln1.weight
        for name, w, n, norm in (("q", attn.wq, cfg.n_heads, attn.q_norm), ("k", attn.wk, cfg.n_kv_heads, attn.k_norm)):
            projected = c[p + f"attn.hook_{name}"]
            torch.testing.assert_close(projected, (x @ w.weight.T + w.bias).view_as(projected), atol=1e-5, rtol=1e-5)
            scale = (projected.pow(2).mean(-1, keepdim=True) + cfg.norm_eps).sqrt()
            torch.testing.assert_close(c[p + f"attn.{name}_norm.hook_scale"], scale)
            torch.testing.assert_close(c[p + f"attn.{name}_norm.hook_normalized"], projected / scale)
            normed = c[p + f"attn.{name}_norm.hook_normalized"] * norm.weight
            rotated = apply_rope(normed, rotations) if cfg.uses_rope(layer) else normed
            torch.testing.assert_close(c[p + f"attn.hook_rot_{name}"], rotated, atol=1e-5, rtol=1e-5)
            assert projected.shape[2] == n
        scores = c[p + "attn.hook_attn_scores"][0, 0]
        assert torch.isinf(scores[11, :6]).all() and torch.isfinite(scores[11, 6:]).all()  # the window of 6
    stack = torch.stack([c["hook_embed"]] + [c[f"blocks.{l}.hook_{part}_out"] for l in range(cfg.n_layers)
                                             for part in ("attn", "mlp")])
    scaled = stack / c["ln_final.hook_scale"]
    W_U = net.ln_final.weight[:, None] * net.output.weight.T  # untied: the head's own weight
    assert net.output.weight.data_ptr() != net.tok_embeddings.weight.data_ptr()
    tol = matmul_tolerance(scaled[:, 0, -1].sum(0, keepdim=True), W_U) + 1e-5
    torch.testing.assert_close((scaled[:, 0, -1] @ W_U).sum(0), logits[0, -1], atol=tol, rtol=0)


def test_freezing_hook_scale_is_used_downstream(tiny_net):
    """A hook that replaces hook_scale changes what follows, as in TransformerLens (the norm divides by the hooked
    value): doubling the final scale halves the logits."""
    tokens = torch.tensor([CLEAN])
    plain = tiny_net(tokens)
    doubled = tiny_net.run_with_hooks(tokens, [("ln_final.hook_scale", lambda s, hook: s * 2)])
    torch.testing.assert_close(doubled, plain / 2, atol=1e-5, rtol=1e-5)
