"""The one-token decoding step (`Transformer.step`, taken when no hook is attached) gives the hooked forward's
logits and keys/values, on every shape and family extra, batched, windowed and in bfloat16; with a hook
attached, decoding goes through the hook points as before."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from model import KVCache, generate
from model.transformer import split_linear

from ..helpers import matmul_tolerance, other_config, random_model, tiny_config

SHAPES = {
    "tiny (GQA)": tiny_config(),
    "other (MQA, biases, q/k norm, window 6, a no-RoPE layer, RoPE scaling)": other_config(),
    "multi-head, long window": other_config(n_kv_heads=4, qk_norm=False, qkv_bias=False, sliding_window=40,
                                            rope_layers=None, rope_scaling=None),
}
NOOP = ("blocks.0.hook_resid_pre", lambda x, hook: None)  # one hook attached: every step takes the hooked forward


def decode_both(net, prompt: torch.Tensor, steps: int, dtype=torch.float32):
    """Logits of each one-token step after the prompt, by the step and by the hooked forward, with their caches."""
    out = []
    for hooks in ((), (NOOP,)):
        cache = KVCache.empty(net.cfg, prompt.shape[0], prompt.shape[1] + steps, dtype, "cpu")
        with torch.inference_mode(), net.hooks(hooks):
            net(prompt, kv_cache=cache)
            token, logits = prompt[:, -1:], []
            for _ in range(steps):
                logits.append(net(token, kv_cache=cache))
                token = logits[-1][:, -1].argmax(-1, keepdim=True)
        out.append((torch.cat(logits, 1), cache))
    return out


@pytest.mark.parametrize("cfg", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize("batch", [1, 3])
def test_the_step_gives_the_hooked_forwards_logits_and_cache(cfg, batch):
    net = random_model(cfg, seed=5)
    prompt = torch.randint(0, cfg.vocab_size, (batch, 5), generator=torch.Generator().manual_seed(batch))
    steps = 9  # past the other shape's window of 6: the step slices the keys the window keeps
    (fast, fast_cache), (hooked, hooked_cache) = decode_both(net, prompt, steps)
    head = net.output.weight.T
    final = torch.ones(1, cfg.d_model) * float(net.ln_final.weight.abs().max()) * cfg.d_model ** 0.5
    tol = matmul_tolerance(final, head) * 4  # each layer's last bits carried to the logits, on any x86 CPU
    torch.testing.assert_close(fast, hooked, atol=tol, rtol=1e-4)
    assert torch.equal(fast.argmax(-1), hooked.argmax(-1))
    assert fast_cache.length == hooked_cache.length == 5 + steps
    for layer in range(cfg.n_layers):
        torch.testing.assert_close(fast_cache.k[layer], hooked_cache.k[layer], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(fast_cache.v[layer], hooked_cache.v[layer], atol=1e-4, rtol=1e-4)


def test_the_step_equals_the_uncached_forward_at_each_position():
    """Not only the hooked cached forward: the whole sequence run again, without a cache, gives each step's logits."""
    cfg = other_config()
    net = random_model(cfg, seed=2)
    seq = torch.randint(0, cfg.vocab_size, (2, 14), generator=torch.Generator().manual_seed(0))
    cache = KVCache.empty(cfg, 2, 14, torch.float32, "cpu")
    with torch.inference_mode():
        net(seq[:, :4], kv_cache=cache)
        stepped = torch.cat([net(seq[:, i:i + 1], kv_cache=cache) for i in range(4, 14)], 1)
        whole = net(seq)[:, 4:]
    torch.testing.assert_close(stepped, whole, atol=2e-4, rtol=1e-4)


def test_a_hook_attached_sees_every_decoding_step():
    """The step is only for when nobody looks: a hook on any point still runs on each new token."""
    cfg = tiny_config()
    net = random_model(cfg)
    seen = []
    with net.hooks([("blocks.1.attn.hook_pattern", lambda p, hook: seen.append(p.shape))]):
        tokens = list(generate(net, [1, 2, 3], 4))
    assert len(tokens) == 4 and seen[1:] == [(1, cfg.n_heads, 1, 4 + i) for i in range(3)]
    assert list(generate(net, [1, 2, 3], 4)) == tokens  # and without it, the step decodes the same tokens


def test_forward_takes_the_step_only_for_one_new_token_with_a_cache_and_no_hook(monkeypatch):
    net = random_model(tiny_config())
    calls = []
    real = net.step
    monkeypatch.setattr(net, "step", lambda *a: calls.append(a[0].shape) or real(*a))
    cache = KVCache.for_model(net, 1, 8)
    with torch.inference_mode():
        net(torch.tensor([[1, 2]]), kv_cache=cache)  # a prompt: the forward
        net(torch.tensor([[3]]))  # no cache: the forward
        net(torch.tensor([[3]]), kv_cache=cache)  # the step
        with net.hooks([NOOP]):
            net(torch.tensor([[4]]), kv_cache=cache)  # a hook: the forward
    assert calls == [(1, 1)]


@pytest.mark.parametrize("parts", [1, 2, 3, 4])
@pytest.mark.parametrize("rows", [1, 2])
def test_split_linear_is_the_linear(parts, rows):
    torch.manual_seed(0)
    x = torch.randn(rows, 24)
    linears = (torch.nn.Linear(24, 36), torch.nn.Linear(24, 10, bias=False))  # 10 rows do not split in 3 or 4
    for linear in linears:
        linear.requires_grad_(False)
    for linear, y in zip(linears, split_linear(x, linears, parts)):
        tol = matmul_tolerance(x, linear.weight.T)
        torch.testing.assert_close(y, F.linear(x, linear.weight, linear.bias), atol=tol, rtol=0)
        assert y.shape == (rows, linear.out_features)


def test_the_step_runs_in_bfloat16_close_to_its_hooked_forward():
    cfg = other_config()
    net = random_model(cfg, seed=1).to(torch.bfloat16)
    prompt = torch.randint(0, cfg.vocab_size, (1, 4), generator=torch.Generator().manual_seed(3))
    (fast, _), (hooked, _) = decode_both(net, prompt, 5, torch.bfloat16)
    assert fast.dtype == hooked.dtype == torch.bfloat16
    scale = float(hooked.float().abs().max())
    torch.testing.assert_close(fast.float(), hooked.float(), atol=0.05 * scale, rtol=0)


def test_the_real_model_decodes_the_same_tokens_by_step_and_hooked_forward(real):
    net, enc = real
    prompt = torch.tensor([enc.apply_chat_template("Name three colours.")])
    (fast, _), (hooked, _) = decode_both(net, prompt, 12)
    torch.testing.assert_close(fast, hooked, atol=2e-3, rtol=1e-4)
    assert torch.equal(fast.argmax(-1), hooked.argmax(-1))
