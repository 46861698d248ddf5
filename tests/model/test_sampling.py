"""Samplers against Hugging Face transformers' logits processors, and a llama.cpp-order reference."""

from __future__ import annotations

import collections

import numpy as np
import pytest
import torch
from transformers import (
    EpsilonLogitsWarper, EtaLogitsWarper, LogitsProcessorList, MinPLogitsWarper, RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper, TypicalLogitsWarper,
)

from model import generate
from model.sampler_export import to_hf_kwargs, to_llama_cpp_flags
from model.sampling import (
    SamplerSettings, chain, distribution, draw, recent_window, sample, stages,
)

from ..conftest import REAL_PROMPT

V = 500


def hf_reference(logits: torch.Tensor, s: SamplerSettings, history: list[int]) -> torch.Tensor:
    """transformers' processors, in generate()'s order, on (V,) logits."""
    procs = LogitsProcessorList()
    if s.repetition_penalty != 1.0:
        procs.append(RepetitionPenaltyLogitsProcessor(s.repetition_penalty))
    if s.greedy:
        out = procs(torch.tensor([history or [0]]), logits[None].clone())[0]
        return torch.nn.functional.one_hot(out.argmax(), logits.shape[-1]).float()
    if s.temperature != 1.0:
        procs.append(TemperatureLogitsWarper(s.temperature))
    if s.top_k:
        procs.append(TopKLogitsWarper(s.top_k))
    if s.top_p < 1.0:
        procs.append(TopPLogitsWarper(s.top_p))
    if s.min_p > 0:
        procs.append(MinPLogitsWarper(s.min_p))
    if s.typical_p < 1.0:
        procs.append(TypicalLogitsWarper(s.typical_p))
    if s.epsilon > 0:
        procs.append(EpsilonLogitsWarper(s.epsilon))
    if s.eta > 0:
        procs.append(EtaLogitsWarper(s.eta))
    ids = torch.tensor([history]) if history else torch.zeros((1, 0), dtype=torch.long)
    return procs(ids, logits[None].clone())[0].softmax(-1)


def llama_reference(logits: np.ndarray, s: SamplerSettings, history: list[int]) -> np.ndarray:
    """llama.cpp's default chain written from its source (src/llama-sampling.cpp) on plain numpy: the penalties
    sampler holds the last penalty_last_n accepted tokens, prompt included (llama-completion accepts the prompt)."""
    z = logits.astype(np.float64).copy()
    n = s.repeat_last_n
    window = history if n == -1 else history[-n:] if n > 0 else []
    for t in set(window):  # llama_sampler_penalties_apply
        z[t] = z[t] * s.repetition_penalty if z[t] <= 0 else z[t] / s.repetition_penalty
        z[t] -= window.count(t) * s.frequency_penalty + s.presence_penalty
    if s.top_n_sigma > 0:  # llama_sampler_top_n_sigma_apply: max - n * (population) std of the finite logits
        z[z < z.max() - s.top_n_sigma * z.std()] = -np.inf
    cand = sorted((t for t in range(len(z)) if np.isfinite(z[t])), key=lambda t: (-z[t], t))  # most likely first

    def probs(c):
        e = np.exp(np.array([z[t] for t in c]) - max(z[t] for t in c))
        return e / e.sum()

    if s.top_k:
        cand = cand[: s.top_k]
    if s.typical_p < 1.0:
        p = probs(cand)
        ent = -(p * np.log(p)).sum()
        by_typical = sorted(range(len(cand)), key=lambda i: abs(-np.log(p[i]) - ent))
        total, keep = 0.0, []
        for i in by_typical:
            keep.append(cand[i])
            total += p[i]
            if total > s.typical_p:
                break
        cand = sorted(keep, key=lambda t: (-z[t], t))
    if s.top_p < 1.0:
        p = probs(cand)
        total, keep = 0.0, []
        for t, pt in zip(cand, p):
            keep.append(t)
            total += pt
            if total >= s.top_p:
                break
        cand = keep
    if s.min_p > 0:
        p = probs(cand)
        cand = [t for t, pt in zip(cand, p) if pt >= s.min_p * p.max()]
    out = np.zeros(len(z))
    if s.temperature == 0:
        out[cand[0]] = 1.0
        return out
    zc = np.array([z[t] for t in cand]) / s.temperature
    e = np.exp(zc - zc.max())
    out[cand] = e / e.sum()
    return out


SETTINGS = [
    SamplerSettings(),
    SamplerSettings(temperature=0.0),
    SamplerSettings(temperature=0.7),
    SamplerSettings(temperature=1.6, top_k=40),
    SamplerSettings(top_k=1),
    SamplerSettings(top_k=V),
    SamplerSettings(top_k=10**6),
    SamplerSettings(top_p=0.9),
    SamplerSettings(top_p=1e-6),
    SamplerSettings(min_p=0.05),
    SamplerSettings(min_p=1.0),
    SamplerSettings(typical_p=0.5),
    SamplerSettings(typical_p=0.95, temperature=0.8),
    SamplerSettings(repetition_penalty=1.3),
    SamplerSettings(repetition_penalty=0.8, temperature=0.9, top_p=0.8),
    SamplerSettings(temperature=0.8, top_k=50, top_p=0.9, min_p=0.02, typical_p=0.9, repetition_penalty=1.2),
    SamplerSettings(epsilon=3e-3),
    SamplerSettings(eta=5e-3, temperature=1.2),
    SamplerSettings(epsilon=1e-3, eta=2e-3, top_p=0.95, repetition_penalty=1.1),
    SamplerSettings(epsilon=0.9),  # above every probability: the top token stays
]


def random_logits(seed: int, scale: float = 3.0) -> torch.Tensor:
    return torch.randn(V, generator=torch.Generator().manual_seed(seed)) * scale


@pytest.mark.parametrize("settings", SETTINGS, ids=str)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hf_order_matches_transformers(settings, seed):
    logits = random_logits(seed)
    history = [3, 17, 17, 99, 250]
    ours = distribution(logits, settings, prompt_ids=history[:3], generated_ids=history[3:])
    ref = hf_reference(logits, settings, history)
    assert 0.5 * (ours - ref).abs().sum() < 1e-5


def test_hf_order_on_real_logits(real):
    net, enc = real
    history = enc.encode(REAL_PROMPT)
    logits = net(torch.tensor([history]))[0, -1]
    for settings in SETTINGS:
        ours = distribution(logits, settings, prompt_ids=history)
        ref = hf_reference(logits, settings, history)
        assert 0.5 * (ours - ref).abs().sum() < 1e-5, settings


LLAMA_ONLY = [  # settings with no epsilon or eta, which llama.cpp does not have
    *[SamplerSettings(**{**s.__dict__, "order": "llama.cpp"}) for s in SETTINGS if not (s.epsilon or s.eta)],
    SamplerSettings(order="llama.cpp", presence_penalty=0.8, frequency_penalty=0.3, temperature=0.9),
    SamplerSettings(order="llama.cpp", presence_penalty=-0.5, repetition_penalty=1.1, top_k=20, top_p=0.7, min_p=0.1,
                    typical_p=0.8),
    SamplerSettings(order="llama.cpp", presence_penalty=0.6, frequency_penalty=0.4, repeat_last_n=3),
    SamplerSettings(order="llama.cpp", presence_penalty=0.6, repetition_penalty=1.3, repeat_last_n=-1),
    SamplerSettings(order="llama.cpp", presence_penalty=0.6, repetition_penalty=1.3, repeat_last_n=0),
    SamplerSettings(order="llama.cpp", top_n_sigma=1.5, temperature=0.7),
    SamplerSettings(order="llama.cpp", top_n_sigma=0.5, top_k=40, repetition_penalty=1.2),
]


@pytest.mark.parametrize("settings", LLAMA_ONLY, ids=str)
def test_llama_order_matches_reference(settings):
    for seed in (0, 1):
        logits = random_logits(seed)
        prompt, generated = [3, 17, 17, 250], [99, 250, 99]  # 17 and 250 also in the prompt: counted too
        ours = distribution(logits, settings, prompt, generated).numpy()
        ref = llama_reference(logits.numpy(), settings, prompt + generated)
        assert 0.5 * np.abs(ours - ref).sum() < 1e-5


def test_llama_penalties_count_the_prompt_in_their_window():
    logits = torch.zeros(V)
    logits[[5, 6, 7]] = 2.0
    settings = SamplerSettings(order="llama.cpp", presence_penalty=1.0, frequency_penalty=0.5, repeat_last_n=4)
    ((name, step),) = chain(settings, prompt_ids=[5, 6, 6, 7], generated_ids=[7])  # window: 6, 6, 7, 7
    out = step(logits)
    assert name == "penalties" and out[5] == 2.0  # 5 fell out of the window
    assert out[6] == pytest.approx(2.0 - 2 * 0.5 - 1.0) and out[7] == pytest.approx(2.0 - 2 * 0.5 - 1.0)


def ring_buffer(history: list[int], n: int) -> list[int]:
    """llama.cpp's window, as its samplers keep it: a ring buffer of capacity n (penalty_last_n,
    dry_penalty_last_n; -1 means the context size, here longer than any history; 0 turns the sampler off)
    that every accepted token is pushed into, the oldest dropped when full."""
    if n == 0:
        return []
    capacity = 10**6 if n == -1 else n
    buffer: collections.deque[int] = collections.deque(maxlen=capacity)
    for token in history:
        buffer.append(token)
    return list(buffer)


@pytest.mark.parametrize("n", [-1, 0, 1, 64])
@pytest.mark.parametrize("length", [0, 1, 20, 31, 32, 33, 37, 63, 64, 65, 130])
def test_penalty_and_dry_windows_hold_what_llama_cpps_ring_buffer_holds(n, length):
    """Histories shorter than n/2, between n/2 and n, equal to n and longer: the window is the last min(len, n)."""
    history = [1000 + i for i in range(length)]  # every token distinct, so counts name the window exactly
    expected = ring_buffer(history, n)
    assert recent_window(history, n) == expected
    # The penalties step reads that window: a frequency penalty of 1 lowers exactly the tokens in it, by 1 each.
    split = length // 3
    settings = SamplerSettings(order="llama.cpp", frequency_penalty=1.0, repeat_last_n=n, top_k=0)
    out = distribution_logits(torch.zeros(2000), settings, history[:split], history[split:])
    assert sorted(torch.nonzero(out < 0)[:, 0].tolist()) == expected


def distribution_logits(logits: torch.Tensor, settings: SamplerSettings, prompt_ids, generated_ids) -> torch.Tensor:
    z = logits.clone()
    for _, step in chain(settings, prompt_ids, generated_ids):
        z = step(z)
    return z


def test_dry_searches_the_whole_history_when_it_is_shorter_than_its_window():
    """10 tokens with dry_last_n = 16: DRY sees all of them, so the earlier "1 2 3" makes 3 extend a repeat of 2."""
    history = [1, 2, 3, 10, 11, 12, 13, 14, 1, 2]
    settings = SamplerSettings(order="llama.cpp", dry_multiplier=1.0, dry_base=1.75, dry_allowed_length=2,
                               dry_last_n=16)
    out = distribution_logits(torch.zeros(20), settings, history[:4], history[4:])
    assert out[3] == pytest.approx(-1.0) and int((out != 0).sum()) == 1


def test_orders_differ_where_they_should():
    logits = random_logits(5)
    hf = distribution(logits, SamplerSettings(temperature=2.0, top_p=0.5))
    ll = distribution(logits, SamplerSettings(temperature=2.0, top_p=0.5, order="llama.cpp"))
    assert (hf > 0).sum() > (ll > 0).sum()  # HF flattens before top-p, so more tokens are needed to reach p


def test_every_filter_keeps_at_least_one_token():
    logits = random_logits(3)
    extreme = SamplerSettings(top_k=1, top_p=1e-9, min_p=1.0, typical_p=1e-9, temperature=0.01)
    for order in ("hf", "llama.cpp"):
        probs = distribution(logits, SamplerSettings(**{**extreme.__dict__, "order": order}))
        assert (probs > 0).sum() == 1 and int(probs.argmax()) == int(logits.argmax())


def test_stages_report_what_each_step_removed():
    logits = random_logits(4)
    s = SamplerSettings(temperature=0.8, top_k=50, top_p=0.9, min_p=0.05)
    st = stages(logits, s)
    assert [x.name for x in st] == ["softmax", "temperature", "top-k", "top-p", "min-p"]
    assert st[0].kept == V and st[2].kept == 50 and st[2].removed.sum() == V - 50
    assert st[-1].kept == int((distribution(logits, s) > 0).sum())
    removed_total = sum(int(x.removed.sum()) for x in st)
    assert removed_total == V - st[-1].kept
    torch.testing.assert_close(st[-1].probs, distribution(logits, s))
    assert st[1].entropy_bits < st[0].entropy_bits  # cooler is sharper


def test_seeded_sampling_repeats():
    logits = random_logits(6)
    s = SamplerSettings(temperature=1.2, top_p=0.95)
    a = [int(sample(logits, s, torch.Generator().manual_seed(7))) for _ in range(5)]
    b = [int(sample(logits, s, torch.Generator().manual_seed(7))) for _ in range(5)]
    assert a == b
    probs = distribution(logits, s)
    assert torch.equal(draw(probs, 1000, seed=3), draw(probs, 1000, seed=3))
    counts = torch.bincount(draw(probs, 20000, seed=11), minlength=V).float() / 20000
    assert 0.5 * (counts - probs).abs().sum() < 0.05  # the empirical histogram follows the distribution
    assert (counts[probs == 0] == 0).all()


def test_generate_with_settings_is_seeded(real):
    net, enc = real
    prompt = enc.apply_chat_template("Tell me a story.")
    s = SamplerSettings(temperature=0.9, top_p=0.9, repetition_penalty=1.1)
    a = list(generate(net, prompt, 12, s, seed=5))
    b = list(generate(net, prompt, 12, s, seed=5))
    c = list(generate(net, prompt, 12, s, seed=6))
    assert a == b and len(a) == 12 and a != c
    assert list(generate(net, prompt, 8, SamplerSettings(temperature=0))) == list(generate(net, prompt, 8))


@pytest.mark.parametrize("bad", [
    dict(temperature=-1), dict(temperature=float("nan")), dict(temperature=float("inf")), dict(top_k=-3),
    dict(top_k=2.5),
    dict(top_p=0), dict(top_p=1.5), dict(min_p=-0.1), dict(typical_p=0), dict(repetition_penalty=0),
    dict(presence_penalty=float("nan")), dict(order="vllm"), dict(epsilon=1.0), dict(eta=-0.1), dict(top_n_sigma=-1.0),
    dict(repeat_last_n=-2), dict(repeat_last_n=2.5),
])
def test_out_of_range_settings_are_refused_naming_the_setting(bad):
    (name, value), = bad.items()
    with pytest.raises(ValueError, match=f"^{name} must be .*, got {value!r}$"):
        SamplerSettings(**bad)


def test_exports():
    s = SamplerSettings(temperature=0.7, top_k=40, top_p=0.9, min_p=0.05, repetition_penalty=1.1, presence_penalty=0.5,
                        epsilon=1e-3, repeat_last_n=128, top_n_sigma=1.0)
    kwargs = to_hf_kwargs(s)
    assert kwargs == {"do_sample": True, "temperature": 0.7, "top_k": 40, "top_p": 0.9, "min_p": 0.05,
                      "epsilon_cutoff": 1e-3, "repetition_penalty": 1.1}
    assert to_hf_kwargs(SamplerSettings(temperature=0)) == {"do_sample": False}
    flags = to_llama_cpp_flags(s)
    for flag in ("--temp 0.7", "--top-k 40", "--top-p 0.9", "--min-p 0.05", "--repeat-penalty 1.1",
                 "--presence-penalty 0.5",
                 "--repeat-last-n 128", "--top-n-sigma 1",
                 "'penalties;top_n_sigma;top_k;typ_p;top_p;min_p;temperature'"):
        assert flag in flags
    from model.sampler_export import hf_leaves_out, llama_cpp_leaves_out

    assert hf_leaves_out(s) == ["presence_penalty", "top_n_sigma"] and llama_cpp_leaves_out(s) == ["epsilon"]


# -- XTC and DRY: llama.cpp's own test vectors (tests/test-sampling.cpp), same inputs, same expected outputs --------


def _probs_after(step, probs: list[float]) -> list[float]:
    """Apply a step to logits log(probs) and read what llama.cpp's test checks: the softmax of what is left, listed
    in the order of llama.cpp's sorted candidates (most likely first) and only for the tokens kept."""
    out = step(torch.tensor(probs).log()).softmax(-1)
    return [float(p) for p in out if p > 0]


@pytest.mark.parametrize("probs,expected,threshold", [
    ([0.4, 0.3, 0.2, 0.1], [0.1], 0.09),
    ([0.4, 0.3, 0.2, 0.1], [0.2, 0.1], 0.19),
    ([0.4, 0.3, 0.2, 0.1], [0.3, 0.2, 0.1], 0.29),
    ([0.4, 0.3, 0.2, 0.1], [0.4, 0.3, 0.2, 0.1], 0.39),  # "XTC should not": one token above the threshold
])
def test_xtc_matches_llama_cpp_vectors(probs, expected, threshold):
    from model.sampling import xtc_filter

    kept = step_probs = _probs_after(lambda z: xtc_filter(z, threshold), probs)
    # llama.cpp's test reads p as XTC's softmax before truncation: renormalise the expected values to compare
    np.testing.assert_allclose(kept, np.array(expected) / sum(expected), atol=1e-6)
    assert len(step_probs) == len(expected)


@pytest.mark.parametrize("probs,last_tokens,expected,multiplier,base,allowed,last_n,breakers", [
    ([0.25] * 4, [0, 1], [0.25] * 4, 1.0, 1.1, 2, 4, []),
    ([0.25] * 4, [0, 1, 2, 0, 1], [0.296923, 0.296923, 0.109232, 0.296923], 1.0, 1.1, 2, 5, []),
    ([0.2] * 5, [0, 1, 3, 4, 0, 1], [0.2] * 5, 1.0, 1.1, 2, 6, [3]),
    ([0.2] * 5, [0, 1, 2, 0, 1], [0.241818, 0.241818, 0.032727, 0.241818, 0.241818], 2.0, 1.1, 2, 5, []),
    ([0.2] * 5, [0, 1, 2, 3, 4, 0, 1], [0.2] * 5, 1.0, 1.1, 4, 7, []),
])
def test_dry_matches_llama_cpp_vectors(probs, last_tokens, expected, multiplier, base, allowed, last_n, breakers):
    s = SamplerSettings(order="llama.cpp", dry_multiplier=multiplier, dry_base=base, dry_allowed_length=allowed,
                        dry_last_n=last_n, dry_breakers=tuple(breakers))
    got = distribution(torch.tensor(probs).log(), s, prompt_ids=last_tokens[:2], generated_ids=last_tokens[2:])
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-5)


def test_dry_longer_repeats_cost_more_and_breakers_stop_them():
    from model.sampling import dry_breaker_ids, dry_penalty

    z = torch.zeros(10)
    window = [1, 2, 3, 4, 9, 1, 2, 3]  # "1 2 3" repeats: 4 would extend a 3-token repeat
    out = dry_penalty(z, window, 0.8, 1.75, 2, ())
    assert float(out[4]) == pytest.approx(-0.8 * 1.75 ** (3 - 2)) and float(out[3]) == 0.0
    assert torch.equal(dry_penalty(z, window, 0.8, 1.75, 2, (9,)), out)  # the breaker is before the repeat
    assert torch.equal(dry_penalty(z, window, 0.8, 1.75, 2, (2,)), z)  # a breaker inside it: repeat of 1 < 2
    assert dry_breaker_ids(["a", "b\n", "x:y", "q", '"', "**"]) == (1, 2, 4, 5)


def test_xtc_distribution_is_the_exact_mixture():
    logits = torch.tensor([0.4, 0.3, 0.2, 0.1]).log()
    s = SamplerSettings(order="llama.cpp", xtc_probability=0.25, xtc_threshold=0.15)
    got = distribution(logits, s)
    fired = torch.tensor([0.0, 0.0, 2 / 3, 1 / 3])  # 0.4 and 0.3 removed, 0.2 kept as the least likely above 0.15
    torch.testing.assert_close(got, 0.25 * fired + 0.75 * torch.tensor([0.4, 0.3, 0.2, 0.1]))
    st = stages(logits, s)
    assert st[-1].name == "XTC (fires 25% of the time)"
    assert torch.equal(distribution(logits, SamplerSettings(order="hf", xtc_probability=1.0)), logits.softmax(-1))
    counts = torch.bincount(torch.stack([sample(logits, s, torch.Generator().manual_seed(i)) for i in range(4000)]),
                            minlength=4).float() / 4000
    assert 0.5 * (counts - got).abs().sum() < 0.03


def test_xtc_and_dry_exports_and_ranges():
    s = SamplerSettings(order="llama.cpp", xtc_probability=0.5, xtc_threshold=0.1, dry_multiplier=0.8)
    flags = to_llama_cpp_flags(s)
    for flag in ("--xtc-probability 0.5", "--xtc-threshold 0.1", "--dry-multiplier 0.8", "--dry-base 1.75",
                 "--dry-allowed-length 2", "--dry-penalty-last-n -1",
                 "'penalties;dry;top_k;typ_p;top_p;min_p;xtc;temperature'"):
        assert flag in flags
    from model.sampler_export import hf_leaves_out

    assert hf_leaves_out(s) == ["xtc", "dry"]
    for bad in (dict(xtc_probability=1.5), dict(xtc_threshold=-0.1), dict(dry_multiplier=-1), dict(dry_base=0.5),
                dict(dry_allowed_length=0), dict(dry_last_n=-2)):
        with pytest.raises(ValueError, match=next(iter(bad))):
            SamplerSettings(**bad)
