"""The Lab's experiments against independent references: each attention pattern against transformers run with the
same additive 4-D mask on the same weights, flash attention's tiles against the whole matrix and the model's own
hook_z, the IO counts against a walk of Algorithm 1's loops, the scaling fits against the papers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from model.lab import (
    PATTERNS, MaskError, MaskSpec, additive_mask, attention_mask, flash_attention, flash_blocks, io_accesses,
    log_offsets, mask_experiment, mask_hooks, sweep_windows, tile_count, window_sweep,
)
from model.scaling import (
    CHINCHILLA, CHINCHILLA_EXPONENTS, KAPLAN, chinchilla_loss, compute_optimal, exponential_fit, kaplan_loss_n,
)

TEXT = ("The first token of a sequence collects attention that has nowhere else to go: StreamingLLM calls it an "
        "attention sink. Take it away and a windowed model loses its footing; keep four of them and it holds.")
SPECS = [MaskSpec("window", window=5), MaskSpec("sinks", window=6, sinks=4), MaskSpec("log"),
         MaskSpec("strided", window=4), MaskSpec("random", seed=3), MaskSpec("window", window=1)]


@pytest.fixture(scope="module")
def ids(real):
    _, enc = real
    return enc.encode(TEXT)


def hf_logits(hf_model, ids: list[int], mask: torch.Tensor | None, layers=None) -> torch.Tensor:
    """transformers' logits with the additive 4-D mask (None: its own causal mask); with `layers`, the mask only
    there and the causal one elsewhere, swapped into each attention module's call."""
    tokens = torch.tensor([ids])
    if mask is None:
        with torch.no_grad():
            return hf_model(tokens).logits[0]
    if layers is None:
        with torch.no_grad():
            return hf_model(tokens, attention_mask=additive_mask(mask)).logits[0]
    causal = additive_mask(torch.ones(len(ids), len(ids), dtype=torch.bool).tril())
    chosen = additive_mask(mask)
    handles = []
    for i, layer in enumerate(hf_model.model.layers):
        def swap(module, args, kwargs, use=chosen if i in layers else causal):
            return args, {**kwargs, "attention_mask": use}
        handles.append(layer.self_attn.register_forward_pre_hook(swap, with_kwargs=True))
    try:
        with torch.no_grad():
            return hf_model(tokens, attention_mask=causal).logits[0]
    finally:
        for handle in handles:
            handle.remove()


def close(ours: torch.Tensor, theirs: torch.Tensor) -> bool:
    """The suite's 1e-3 on logits, relative to their size: a model starved of keys has larger logits (and larger
    residuals, where float32 rounding grows), about 1e-3 here on the unchanged model's scale."""
    return bool((ours - theirs).abs().max() <= 1e-4 * max(10.0, float(theirs.abs().max())))


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.label)
def test_each_pattern_equals_transformers_with_the_same_4d_mask(real, hf_model, ids, spec):
    net, _ = real
    mask = attention_mask(spec, len(ids))
    ours = net.run_with_hooks(torch.tensor([ids]), mask_hooks(mask, range(net.cfg.n_layers)))[0]
    theirs = hf_logits(hf_model, ids, mask)
    assert close(ours, theirs)
    assert (ours - hf_logits(hf_model, ids, None)).abs().max() > 0.1  # the pattern changed the model


def test_a_pattern_in_chosen_layers_equals_transformers_masked_there(real, hf_model, ids):
    net, _ = real
    mask, layers = attention_mask(MaskSpec("window", window=3), len(ids)), (0, 5, 17)
    ours = net.run_with_hooks(torch.tensor([ids]), mask_hooks(mask, layers))[0]
    theirs = hf_logits(hf_model, ids, mask, layers)
    assert close(ours, theirs)
    assert (theirs - hf_logits(hf_model, ids, mask)).abs().max() > 0.1  # not the all-layers run


def test_the_experiment_shows_transformers_numbers(real, hf_model, ids):
    """Surprisal, loss, KL and top-1 changes, each from transformers' two runs."""
    net, _ = real
    spec = MaskSpec("sinks", window=4, sinks=2)
    result = mask_experiment(net, ids, spec)
    p0 = torch.log_softmax(hf_logits(hf_model, ids, None).double(), -1)
    p1 = torch.log_softmax(hf_logits(hf_model, ids, attention_mask(spec, len(ids))).double(), -1)
    target = torch.tensor(ids[1:])
    s0, s1 = -p0[:-1, :].gather(1, target[:, None])[:, 0], -p1[:-1].gather(1, target[:, None])[:, 0]
    np.testing.assert_allclose(result.surprisal, s0.numpy(), atol=2e-3)
    np.testing.assert_allclose(result.surprisal_masked, s1.numpy(), atol=2e-3)
    assert abs(result.loss_masked - float(s1.mean())) < 1e-3
    kl = torch.nn.functional.kl_div(p1, p0, log_target=True, reduction="none").sum(-1)  # KL(p0 || p1)
    np.testing.assert_allclose(result.kl, kl.numpy(), atol=2e-3)
    changed = np.flatnonzero(p0.argmax(-1).numpy() != p1.argmax(-1).numpy())
    assert result.changed.tolist() == changed.tolist() and len(changed) > 0
    causal_keys = len(ids) * (len(ids) + 1) / 2
    assert result.density == pytest.approx(float(attention_mask(spec, len(ids)).sum()) / causal_keys)


def test_the_patterns_say_what_they_are():
    T = 40
    i, j = np.arange(T)[:, None], np.arange(T)[None, :]
    from transformers.masking_utils import sliding_window_causal_mask_function

    for W in (1, 7, T):
        rule = sliding_window_causal_mask_function(W)
        zero = torch.tensor(0)
        theirs = rule(zero, zero, torch.arange(T)[:, None], torch.arange(T)[None, :]).numpy()
        assert (attention_mask(MaskSpec("window", window=W), T).numpy() == theirs).all()
    sinks = attention_mask(MaskSpec("sinks", window=5, sinks=3), T).numpy()
    assert (sinks == ((j <= i) & ((i - j < 5) | (j < 3)))).all()
    log = attention_mask(MaskSpec("log"), T).numpy()
    for row in range(T):
        assert set(np.flatnonzero(log[row])) == {row} | {row - 2**k for k in range(6) if row - 2**k >= 0}
    assert log_offsets(9) == [0, 1, 2, 4, 8]
    strided = attention_mask(MaskSpec("strided", window=4), T).numpy()
    assert strided[20].nonzero()[0].tolist() == [0, 4, 8, 12, 16, 17, 18, 19, 20]
    r1, r2 = (attention_mask(MaskSpec("random", seed=s), T).numpy() for s in (1, 2))
    assert (r1.sum(1) == log.sum(1)).all() and np.diag(r1).all() and not np.triu(r1, 1).any()
    assert (r1 != r2).any() and (r1 == attention_mask(MaskSpec("random", seed=1), T).numpy()).all()
    assert (attention_mask(MaskSpec("causal"), T).numpy() == (j <= i)).all()
    assert set(PATTERNS) == {"causal", "window", "sinks", "log", "strided", "random"}


@pytest.mark.parametrize("spec, T, setting", [
    (MaskSpec("window", window=0), 10, "window 0"), (MaskSpec("window", window=11), 10, "window 11"),
    (MaskSpec("sinks", window=4, sinks=5), 10, "sinks 5"), (MaskSpec("strided", window=0), 10, "stride 0"),
    (MaskSpec("nope"), 10, "pattern"),
])
def test_a_setting_out_of_range_is_named(spec, T, setting):
    with pytest.raises(MaskError, match=setting):
        attention_mask(spec, T)


def test_the_sweeps_windows():
    assert sweep_windows(256) == [2, 4, 8, 16, 32, 64, 128, 256]  # the bench's 8 sizes
    assert sweep_windows(261) == [2, 4, 8, 16, 32, 64, 128, 261] and sweep_windows(2) == [2]


def test_the_sweep_measures_each_window_as_one_masked_run(real, hf_model, ids):
    net, _ = real
    points = list(window_sweep(net, ids, [2, 8, len(ids)], sinks=(0, 4)))
    assert [(p.window, p.sinks) for p in points] == [(2, 0), (8, 0), (len(ids), 0), (8, 4), (len(ids), 4)]
    target = torch.tensor(ids[1:])
    for p in points[:2] + points[3:4]:
        spec = MaskSpec("sinks" if p.sinks else "window", window=p.window, sinks=p.sinks)
        logits = hf_logits(hf_model, ids, attention_mask(spec, len(ids)))
        assert p.loss == pytest.approx(float(torch.nn.functional.cross_entropy(logits[:-1], target)), abs=1e-3)
    unchanged = float(torch.nn.functional.cross_entropy(hf_logits(hf_model, ids, None)[:-1], target))
    assert points[2].loss == pytest.approx(unchanged, abs=1e-3) == points[4].loss


# -- flash attention -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("T, bq, bk, window", [(23, 4, 4, None), (23, 3, 5, None), (23, 1, 1, None), (23, 23, 23, None),
                                              (23, 8, 2, 6), (1, 4, 4, None)])
def test_flash_tiles_equal_the_whole_matrix_step_by_step(T, bq, bk, window):
    g = torch.Generator().manual_seed(T + bq)
    q, k, v = (torch.randn(T, 16, generator=g) * 2 for _ in range(3))
    scale = 1 / 4
    run = flash_attention(q, k, v, scale, bq, bk, window)
    i, j = torch.arange(T)[:, None], torch.arange(T)[None, :]
    see = (j <= i) & ((j > i - window) if window else True)
    scores = (q.double() @ k.double().T * scale).masked_fill(~see, -math.inf)
    whole = torch.nn.functional.scaled_dot_product_attention(q[None], k[None], v[None], attn_mask=see[None],
                                                             scale=scale)[0]
    assert np.abs(run.output - whole.numpy()).max() < 1e-5
    assert len(run.steps) == tile_count(T, bq, bk, window)
    assert len(run.steps) + len(run.skipped) == math.ceil(T / bq) * math.ceil(T / bk)
    for s in run.steps:  # what each step shows, from the scores of the keys seen so far
        seen = scores[s.rows[0]:s.rows[1], :s.keys[1]]
        m = seen.max(-1).values
        np.testing.assert_allclose(s.running_max, m.numpy(), rtol=1e-12)
        some = torch.isfinite(m)  # rows with a key seen so far (a window's rows may have none yet: l = 0)
        assert (s.running_sum[~some.numpy()] == 0).all()
        seen, m = seen[some], m[some]
        np.testing.assert_allclose(s.running_sum[some.numpy()], torch.exp(seen - m[:, None]).sum(-1).numpy(),
                                   rtol=1e-9)
        partial = torch.softmax(seen, -1) @ v.double()[:s.keys[1]]
        np.testing.assert_allclose(s.partial[some.numpy()], partial.numpy(), atol=1e-9)


def test_flash_on_the_model_equals_its_own_attention_output(real):
    net, enc = real
    ids = enc.encode(TEXT)
    _, cache = net.run_with_cache(torch.tensor([ids]), names_filter=r"blocks\.7\.attn\.hook_(rot_q|rot_k|v|z)$")
    head = 5
    group = net.cfg.kv_head_of(head)
    q = cache["blocks.7.attn.hook_rot_q"][0, :, head]
    k, v = (cache[f"blocks.7.attn.hook_{n}"][0, :, group] for n in ("rot_k", "v"))
    run = flash_attention(q, k, v, 1 / net.cfg.attn_scale, 8, 16)
    assert np.abs(run.output - cache["blocks.7.attn.hook_z"][0, :, head].numpy()).max() < 1e-5


def flash_io_simulated(N: int, d: int, sram_elements: int) -> int:
    """Algorithm 1's HBM traffic counted by walking its loops, load by load (the test's independent count)."""
    b_r, b_c = flash_blocks(d, sram_elements)
    moved = N * d + 2 * N  # step 2: O, l, m initialised in HBM
    for j0 in range(0, N, b_c):
        cols = min(b_c, N - j0)
        moved += 2 * cols * d  # step 6: load K_j, V_j
        for i0 in range(0, N, b_r):
            rows = min(b_r, N - i0)
            moved += rows * d + rows * d + 2 * rows  # step 8: load Q_i, O_i, l_i, m_i
            moved += rows * d + 2 * rows  # steps 12-13: write O_i, l_i, m_i
    return moved


def test_io_counts_follow_algorithm_1_and_theorem_2():
    for N, d, M in ((1024, 64, 98304), (1000, 128, 50000), (37, 64, 98304)):
        assert io_accesses(N, d, M)["flash"] == flash_io_simulated(N, d, M)
    # Theorem 2: FlashAttention's traffic ~ N² d² / M: doubling the SRAM about halves it at long N; standard ~ N²
    N, d = 131072, 64
    small, large = io_accesses(N, d, 50000)["flash"], io_accesses(N, d, 100000)["flash"]
    assert 1.9 < small / large < 2.1
    assert io_accesses(2 * N, d, 50000)["standard"] / io_accesses(N, d, 50000)["standard"] == pytest.approx(4, rel=1e-3)


# -- scaling laws ----------------------------------------------------------------------------------------------------

def test_compute_optimal_allocation_is_the_fits_minimum_along_the_budget():
    for C in (1e18, 1.6e21, 5.76e23):
        n_opt, d_opt = compute_optimal(C)
        assert 6 * n_opt * d_opt == pytest.approx(C, rel=1e-9)
        N = np.geomspace(n_opt / 100, n_opt * 100, 200001)  # the minimum found by search, not by the formula
        found = N[np.argmin(chinchilla_loss(N, C / (6 * N)))]
        assert found == pytest.approx(n_opt, rel=1e-3)
    c = CHINCHILLA  # the exponents the paper's Table 2 gives for approach 3 (0.46, 0.54), from the rounded α and β
    assert c["beta"] / (c["alpha"] + c["beta"]) == pytest.approx(CHINCHILLA_EXPONENTS["a"], abs=0.01)
    assert c["alpha"] / (c["alpha"] + c["beta"]) == pytest.approx(CHINCHILLA_EXPONENTS["b"], abs=0.01)
    ratio = [compute_optimal(C)[0] for C in (1e20, 1e22)]
    assert ratio[1] / ratio[0] == pytest.approx(100 ** (c["beta"] / (c["alpha"] + c["beta"])), rel=1e-9)


def test_kaplan_and_the_exponential_that_mimics_it():
    assert kaplan_loss_n(KAPLAN["N_c"]) == pytest.approx(1.0)
    assert kaplan_loss_n(2e9) / kaplan_loss_n(1e9) == pytest.approx(2 ** -KAPLAN["alpha_N"])
    x = np.linspace(1e8, 1e9, 12)  # the tab's dots
    y = kaplan_loss_n(x)
    a, k, c = exponential_fit(x, y)
    fitted = c + a * np.exp(-k * x)
    assert np.abs(fitted - y).max() < 0.05 * np.ptp(y)  # alike on the points ...
    assert kaplan_loss_n(1e11) < c - 0.3  # ... far apart beyond them: the exponential has flattened out
