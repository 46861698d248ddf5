"""The one-token decoding step (`Transformer.step`, taken when no hook is attached) gives the hooked forward's
logits and keys/values, on every shape and family extra, batched, windowed and in bfloat16; with a hook
attached, decoding goes through the hook points as before."""

from __future__ import annotations

import tempfile

import pytest
import torch
import torch.nn.functional as F

from model import KVCache, generate
from model.layout import Product, beside, lay_out_for_decoding

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
@pytest.mark.parametrize("laid_out", [False, True], ids=["weights as built", "weights laid out for decoding"])
def test_the_step_gives_the_hooked_forwards_logits_and_cache(cfg, batch, laid_out):
    net = random_model(cfg, seed=5)
    if laid_out:
        lay_out_for_decoding(net)
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


@pytest.mark.parametrize("cfg", [tiny_config(), other_config()], ids=["plain RoPE", "Llama 3 scaling"])
def test_the_steps_rope_turns_are_the_forwards_bit_for_bit(cfg):
    """The step turns q and k by polar(1, position * theta) from its plan: the same bits as `positions`."""
    from model.layout import plan_for
    from model.transformer import rope_frequencies

    net = random_model(cfg, seed=0)
    plan = plan_for(net, 1, lambda: rope_frequencies(cfg.d_head, cfg.rope_base, cfg.rope_scaling))
    for start in (0, 1, 7, 511, 4095, 131_071):
        assert torch.equal(torch.polar(plan.ones, plan.theta * start), net.positions(start, 1).of(0)[0].view(-1)), start


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
@pytest.mark.parametrize("layout", ["as built", "transposed", "transposed side by side"])
def test_a_product_is_the_linears_side_by_side(parts, rows, layout):
    torch.manual_seed(0)
    x = torch.randn(rows, 24)
    linears = tuple(torch.nn.Linear(24, n, bias=True).requires_grad_(False) for n in (36, 12, 10))  # 10: no split
    if layout == "transposed":
        for linear in linears:
            linear.weight = torch.nn.Parameter(linear.weight.T.contiguous().T, requires_grad=False)
    elif layout == "transposed side by side":
        buffer = torch.cat([linear.weight.T for linear in linears], dim=1)  # (24, 58)
        for linear, (a, b) in zip(linears, ((0, 36), (36, 48), (48, 58))):
            linear.weight = torch.nn.Parameter(buffer[:, a:b].T, requires_grad=False)
        assert beside([linear.weight for linear in linears]) is not None
        assert beside([linears[0].weight, linears[2].weight]) is None  # not next to each other
    expected = torch.cat([F.linear(x, linear.weight, linear.bias) for linear in linears], -1)
    tol = max(matmul_tolerance(x, linear.weight.T) for linear in linears)
    torch.testing.assert_close(Product(linears, parts)(x), expected, atol=tol, rtol=0)
    torch.testing.assert_close(Product(linears[2:], parts)(x), expected[:, 48:], atol=tol, rtol=0)
    kinds = {kind for kind, _ in Product(linears, parts).blocks}
    if parts in (2, 4):  # K = 24 splits; a transposed weight is split along K, one as built into row blocks
        assert kinds == {"columns"} if layout != "as built" else "rows" in kinds and "columns" not in kinds


@pytest.mark.parametrize("cfg", [tiny_config(), other_config()], ids=["tied", "untied"])
def test_lay_out_for_decoding_changes_no_value_and_takes_no_memory(cfg):
    net = random_model(cfg, seed=1)
    before = {name: t.clone() for name, t in net.state_dict().items()}
    bytes_before = sum(p.untyped_storage().nbytes() for p in net.parameters())
    tokens = torch.tensor([[1, 5, 9, 2, 7]])
    logits = net(tokens)
    lay_out_for_decoding(net)
    after = net.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
    storages = {p.untyped_storage().data_ptr(): p.untyped_storage().nbytes() for p in net.parameters()}
    assert sum(storages.values()) == bytes_before  # the same bytes, in fewer buffers
    for block in net.blocks:
        a, m = block.attn, block.mlp
        joined = beside([a.wq.weight, a.wk.weight, a.wv.weight])
        assert joined is not None and joined.T.is_contiguous()
        assert joined.untyped_storage().nbytes() == joined.numel() * 4  # one buffer, no more
        assert beside([m.w1.weight, m.w3.weight]) is not None
        assert a.wo.weight.is_contiguous() and m.w2.weight.is_contiguous()  # these two keep their rows
        assert not a.wq.weight.requires_grad
    assert net.output.weight.T.is_contiguous()  # the head is transposed too (the embedding with it, when tied)
    assert Product((net.output,), 2).blocks[0][0] == "columns"
    assert torch.equal(net.tok_embeddings(tokens), before["tok_embeddings.weight"][tokens])  # rows read by stride
    assert (net.tok_embeddings.weight is net.output.weight) == cfg.tie_embeddings
    final = torch.ones(1, cfg.d_model) * float(net.ln_final.weight.abs().max()) * cfg.d_model ** 0.5
    tol = matmul_tolerance(final, net.output.weight.T) * 4  # MKL reads a transposed weight in another order
    torch.testing.assert_close(net(tokens), logits, atol=tol, rtol=1e-4)
    from safetensors.torch import load_file, save_file

    with tempfile.TemporaryDirectory() as folder:  # saved as safetensors wants (contiguous), it loads back the same
        save_file({k: v.contiguous() for k, v in net.state_dict().items()  # a tied head is saved once, as ours is
                   if not (cfg.tie_embeddings and k == "output.weight")}, f"{folder}/w.safetensors")
        assert all(torch.equal(t, before[k]) for k, t in load_file(f"{folder}/w.safetensors").items())
        torch.save(net.state_dict(), f"{folder}/w.pt")  # and torch.save takes it as it is
        assert all(torch.equal(t, before[k]) for k, t in torch.load(f"{folder}/w.pt").items())
    converted = net.to(torch.bfloat16)  # a conversion undoes the joining: the step reads the weights one by one
    assert beside([converted.blocks[0].attn.wq.weight, converted.blocks[0].attn.wk.weight]) is None
    assert converted(tokens).dtype == torch.bfloat16


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
    assert beside([net.blocks[0].attn.wq.weight, net.blocks[0].attn.wk.weight, net.blocks[0].attn.wv.weight]) \
        is not None  # the loader lays them out
    prompt = torch.tensor([enc.apply_chat_template("Name three colours.")])
    (fast, _), (hooked, _) = decode_both(net, prompt, 12)
    torch.testing.assert_close(fast, hooked, atol=2e-3, rtol=1e-4)
    assert torch.equal(fast.argmax(-1), hooked.argmax(-1))


def test_the_steps_plan_follows_weights_replaced_edited_or_converted_and_the_thread_count():
    """The step reads weights through a plan made once; a weight replaced, edited in place or converted, or
    another thread count, and the step still gives the hooked forward's logits."""
    cfg = tiny_config()
    net = lay_out_for_decoding(random_model(cfg, seed=3))
    prompt = torch.tensor([[3, 1, 4, 1, 5]])

    def check():
        (fast, _), (hooked, _) = decode_both(net, prompt, 3)
        torch.testing.assert_close(fast, hooked, atol=1e-4, rtol=1e-4)
        return fast

    first = check()
    net.blocks[0].attn.wo.weight = torch.nn.Parameter(torch.randn_like(net.blocks[0].attn.wo.weight) * 0.2,
                                                      requires_grad=False)
    second = check()
    assert not torch.allclose(first, second)
    with torch.no_grad():
        net.blocks[1].mlp.w2.weight.mul_(2)  # in place: the plan's views see it
        net.blocks[1].attn.wq.weight.mul_(-1)  # a view of the q/k/v buffer
    assert not torch.allclose(check(), second)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        check()
    finally:
        torch.set_num_threads(threads)
    net.to(torch.float64)  # converted: new data, a new plan (the hooked norms' scale is float32, hence the tolerance)
    (fast, _), (hooked, _) = decode_both(net, prompt.clone(), 3, torch.float64)
    assert fast.dtype == torch.float64
    torch.testing.assert_close(fast, hooked, atol=1e-5, rtol=1e-5)
