"""Decoding strategies against references: transformers' beam search on the same weights, plain greedy decoding,
the speculative accept/resample rule computed exactly, and DoLa and contrastive search written again here from the
papers' equations (transformers moved both to hub-only code that cannot be reached offline)."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from model.contrast import contrastive, dola, jensen_shannon
from model.decoding import (
    beam_search,
    early_exit,
    greedy,
    repeated_ngrams,
    residual_distribution,
    sampled,
    speculative,
    speculative_output_distribution,
    time_kv_cache,
    token_log_probs,
)
from model.sampling import SamplerSettings
from model.transformer import KVCache

from ..conftest import REAL_PROMPT

EOS = 2  # SmolLM2's <|im_end|>


# -- beam search -------------------------------------------------------------------------------


def _hf_beams(hf_model, prompt, num_beams, max_new, length_penalty, early_stopping):
    tokens = torch.tensor([prompt])
    out = hf_model.generate(tokens, attention_mask=torch.ones_like(tokens), num_beams=num_beams,
                            num_return_sequences=num_beams, length_penalty=length_penalty,
                            early_stopping=early_stopping, do_sample=False, max_new_tokens=max_new, eos_token_id=EOS,
                            pad_token_id=EOS, return_dict_in_generate=True, output_scores=True)
    return [s[len(prompt):].tolist() for s in out.sequences], out.sequences_scores.tolist()


@pytest.mark.parametrize("num_beams,length_penalty,early_stopping,chat", [
    (4, 1.0, False, True),
    (3, 2.0, True, True),
    (4, 0.5, "never", False),
    (2, -1.0, False, False),
])
def test_beam_search_matches_transformers_generate(real, hf_model, num_beams, length_penalty, early_stopping, chat):
    net, enc = real
    prompt = enc.apply_chat_template("What is the capital of France?") if chat else enc.encode(REAL_PROMPT)
    ours = beam_search(net, prompt, num_beams, 14, length_penalty, early_stopping, stop_ids=[EOS])
    sequences, scores = _hf_beams(hf_model, prompt, num_beams, 14, length_penalty, early_stopping)
    for mine, theirs in zip(ours.sequences, sequences, strict=True):
        # transformers pads finished beams with the pad token (here EOS) to the longest one
        assert theirs[: len(mine)] == mine and set(theirs[len(mine):]) <= {EOS}
    np.testing.assert_allclose(ours.scores, scores, rtol=1e-4, atol=1e-4)
    if chat:  # the chat answer finishes with EOS, so finished hypotheses are recorded in the tree
        assert any(step.finished for step in ours.steps)
        assert all(seq[-1] == EOS for seq in ours.sequences[:2])


def test_beam_steps_are_cumulative_log_probs_of_their_paths(tiny_net):
    prompt, beams = [5, 9, 14, 3], 3
    result = beam_search(tiny_net, prompt, beams, 5)
    paths = [[t] for t in result.steps[0].tokens]
    for step in result.steps[1:]:
        paths = [paths[parent] + [token] for parent, token in zip(step.parents, step.tokens, strict=True)]
    last = result.steps[-1]
    for path, score in zip(paths, last.scores, strict=True):
        assert score == pytest.approx(sum(token_log_probs(tiny_net, prompt, path)), abs=1e-4)
    # step 0 keeps the most likely first tokens
    first = F.log_softmax(tiny_net(torch.tensor([prompt]))[0, -1], -1).topk(beams)
    assert result.steps[0].tokens == first.indices.tolist()
    # no EOS: every beam runs to the end, and the finished ones are scored by length ** length_penalty
    assert all(len(s) == 5 for s in result.sequences)
    assert result.scores[0] == pytest.approx(max(last.scores) / 5, abs=1e-4)
    assert [score for _, score, _ in last.finished] == pytest.approx([s / 5 for s in last.scores], abs=1e-4)
    assert [log_p for _, _, log_p in last.finished] == pytest.approx(last.scores, abs=1e-5)


# -- speculative decoding -------------------------------------------------------------------------


def test_early_exit_is_the_logit_lens_row(tiny_net):
    tokens = torch.tensor([[5, 9, 14, 3, 7]])
    _, cache = tiny_net.run_with_cache(tokens)
    lens_row = tiny_net.output(tiny_net.ln_final(cache["blocks.0.hook_resid_post"]))
    kv = KVCache.empty(tiny_net.cfg, 1, 8, torch.float32, "cpu")
    first = early_exit(tiny_net, tokens[:, :3], 1, kv)
    rest = early_exit(tiny_net, tokens[:, 3:], 1, kv)  # the draft keeps its own cache
    torch.testing.assert_close(torch.cat([first, rest], 1), lens_row, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("draft_layers,gamma", [(1, 1), (1, 4), (2, 3)])
def test_greedy_speculative_equals_greedy_tiny(tiny_net, draft_layers, gamma):
    prompt = [5, 9, 14, 3]
    plain, _ = greedy(tiny_net, prompt, 20)
    result = speculative(tiny_net, prompt, draft_layers, gamma, 20)
    assert result.tokens == plain
    assert sum(r.accepted + 1 for r in result.rounds) >= len(plain)


def test_greedy_speculative_equals_greedy_real(real):
    net, enc = real
    prompt = enc.apply_chat_template("Name three colours.")
    plain, _ = greedy(net, prompt, 24, stop_ids=[EOS])
    for layers in (8, 28):
        result = speculative(net, prompt, layers, 4, 24, stop_ids=[EOS])
        assert result.tokens == plain
        assert all(len(r.drafted) <= 4 and r.accepted <= len(r.drafted) for r in result.rounds)
        if layers == 8:
            shallow = result.acceptance
    # the deeper draft agrees with the model more often (8 layers' early exit almost never does)
    assert 0 < result.acceptance <= 1 and result.acceptance > shallow


def _draft_logits_without_cache(net, ids: list[int], layers: int) -> torch.Tensor:
    """The draft's next-token logits on the true context, from a plain forward with no cache at all: the residual
    after `layers` blocks through the final norm and the unembedding."""
    _, acts = net.run_with_cache(torch.tensor([ids]), names_filter=f"blocks.{layers - 1}.hook_resid_post")
    return net.output(net.ln_final(acts[f"blocks.{layers - 1}.hook_resid_post"]))[0, -1]


def _check_drafts_against_uncached_early_exit(net, prompt, result, layers):
    """Every drafted token is the argmax of the first `layers` layers' early exit on prompt + output so far +
    the drafted prefix; returns how many rounds kept every draft."""
    ids, all_kept = list(prompt), 0
    for r in result.rounds:
        agree = 0  # the acceptance shown: drafts kept while the whole model's argmax (no cache) agrees
        for i, token in enumerate(r.drafted):
            expected = int(_draft_logits_without_cache(net, ids + r.drafted[:i], layers).argmax())
            assert token == expected, f"round drafted {token}, the draft model says {expected}"
            if agree == i and int(net(torch.tensor([ids + r.drafted[:i]]))[0, -1].argmax()) == token:
                agree += 1
        assert r.accepted == agree
        all_kept += bool(r.drafted) and r.accepted == len(r.drafted)
        ids += r.drafted[: r.accepted] + [r.extra]
    return all_kept


@pytest.mark.parametrize("draft_layers,gamma", [(1, 1), (1, 3), (2, 2), (2, 4)])
def test_greedy_drafts_are_the_uncached_early_exit_tiny(tiny_net, draft_layers, gamma):
    """With all layers as the draft every draft is kept, so each round starts after a token the draft never ran."""
    for prompt in ([5, 9, 14, 3], [7, 7, 7, 7, 7, 7], [11]):
        result = speculative(tiny_net, prompt, draft_layers, gamma, 16)
        kept = _check_drafts_against_uncached_early_exit(tiny_net, prompt, result, draft_layers)
        if draft_layers == tiny_net.cfg.n_layers:
            assert kept == len([r for r in result.rounds if r.drafted])
        again = speculative(tiny_net, prompt, draft_layers, gamma, 16)
        assert again.rounds == result.rounds


def test_greedy_drafts_are_the_uncached_early_exit_real(real):
    """A reproduction (k 24, gamma 2, 16 tokens, most rounds keep every draft): the acceptance rate is 10/11 on every
    run, not whatever an unwritten cache slot held."""
    net, enc = real
    prompt = enc.encode("1, 2, 3, 4, 5, 6,")
    result = speculative(net, prompt, 24, 2, 16)
    kept = _check_drafts_against_uncached_early_exit(net, prompt, result, 24)
    again = speculative(net, prompt, 24, 2, 16)
    assert again.rounds == result.rounds
    assert kept >= 3 and result.acceptance == pytest.approx(10 / 11)


def test_accept_and_resample_reproduce_the_target_distribution():
    gen = torch.Generator().manual_seed(0)
    for trial in range(50):
        p = F.softmax(torch.randn(40, generator=gen) * (1 + trial % 5), -1)
        q = F.softmax(torch.randn(40, generator=gen) * 3, -1)
        if trial % 3 == 0:  # a draft that puts no mass on some tokens the target likes, and the reverse
            q[:5] = 0
            q /= q.sum()
            p[5:10] = 0
            p /= p.sum()
        torch.testing.assert_close(speculative_output_distribution(p, q), p, atol=1e-6, rtol=0)
    p = F.softmax(torch.randn(10, generator=gen), -1)
    torch.testing.assert_close(speculative_output_distribution(p, p), p)  # a perfect draft is always kept
    torch.testing.assert_close(residual_distribution(p, p), p)


@pytest.mark.parametrize("draft_layers", [1, 2])
def test_sampled_speculative_rounds_use_the_models_distributions(tiny_net, draft_layers):
    """Every accept probability is min(1, p/q) with p the whole model and q the first layers, recomputed here from
    full forwards over the text as it stood (with both layers as the draft, every round keeps every draft)."""
    prompt, temperature = [5, 9, 14, 3], 0.8
    result = speculative(tiny_net, prompt, draft_layers, 3, 12, temperature=temperature, seed=3)
    assert len(result.tokens) == 12
    ids = list(prompt)
    for r in result.rounds:
        for i, token in enumerate(r.drafted[: r.accepted + 1]):
            context = torch.tensor([ids + r.drafted[:i]])
            logits, cache = tiny_net.run_with_cache(context)
            p = F.softmax(logits[0, -1] / temperature, -1)
            draft = cache[f"blocks.{draft_layers - 1}.hook_resid_post"]
            q = F.softmax(tiny_net.output(tiny_net.ln_final(draft))[0, -1] / temperature, -1)
            assert r.accept_p[i] == pytest.approx(min(1.0, float(p[token] / q[token])), rel=1e-4)
        ids += r.drafted[: r.accepted] + [r.extra]
    assert ids[len(prompt):][:12] == result.tokens
    again = speculative(tiny_net, prompt, draft_layers, 3, 12, temperature=temperature, seed=3)
    assert again.tokens == result.tokens and again.rounds == result.rounds  # seeded


# -- DoLa and contrastive search, references from the papers ---------------------------------------


def _softmax(x):
    e = np.exp(x - x.max())
    return e / e.sum()


def _jsd(p, q):
    m = (p + q) / 2
    kl = lambda a, b: float(np.sum(np.where(a > 0, a * (np.log(np.where(a > 0, a, 1)) - np.log(b)), 0)))  # noqa: E731
    return kl(p, m) / 2 + kl(q, m) / 2


def _dola_reference(net, prompt, steps, layers, alpha, repetition=1.0):
    """Chuang et al. 2023, eq. 2-4: M = argmax_j JSD(q_N || q_j) over the candidate layers; the next token is the
    argmax over V_head = {x : q_N(x) >= alpha max_w q_N(w)} of log q_N(x) - log q_M(x), where q_j is the softmax of the
    early exit of layer j (its residual through the final norm and the output head). transformers' DoLa then applies
    its logits processors to those scores: a repetition penalty divides a seen token's positive score, multiplies a
    negative one."""
    ids = list(prompt)
    for _ in range(steps):
        logits, cache = net.run_with_cache(torch.tensor([ids]))
        final = logits[0, -1].double().numpy()
        exits = {}
        for j in layers:
            resid = cache["hook_embed"] if j == 0 else cache[f"blocks.{j - 1}.hook_resid_post"]
            exits[j] = net.output(net.ln_final(resid))[0, -1].double().numpy()
        q_n = _softmax(final)
        divergence = {j: _jsd(q_n, _softmax(exits[j])) for j in layers}
        m = max(divergence, key=divergence.get)
        head = q_n >= alpha * q_n.max()
        score = np.where(head, np.log(q_n) - np.log(_softmax(exits[m])), -np.inf)
        for seen in set(ids):
            score[seen] = score[seen] * repetition if score[seen] < 0 else score[seen] / repetition
        ids.append(int(score.argmax()))
        yield ids[-1], m, divergence[m]


def test_dola_matches_the_paper_tiny(tiny_net):
    prompt = [5, 9, 14, 3]
    ours = dola(tiny_net, prompt, 6, [0, 1], alpha=0.1)
    ref = list(_dola_reference(tiny_net, prompt, 6, [0, 1], 0.1))
    assert [(s.token, s.premature) for s in ours] == [(t, m) for t, m, _ in ref]
    np.testing.assert_allclose([s.divergence for s in ours], [d for _, _, d in ref], rtol=1e-4)


def test_dola_repetition_penalty_is_transformers_on_the_contrast_tiny(tiny_net):
    prompt = [5, 9, 14, 3, 5, 9]
    for repetition in (1.8, 1.2):
        ours = dola(tiny_net, prompt, 12, [0, 1], alpha=0.1, repetition=repetition)
        ref = list(_dola_reference(tiny_net, prompt, 12, [0, 1], 0.1, repetition))
        assert [(s.token, s.premature) for s in ours] == [(t, m) for t, m, _ in ref]
    plain = [s.token for s in dola(tiny_net, prompt, 12, [0, 1], alpha=0.1)]
    assert plain != [s.token for s in ours]  # the penalty changed the text here (it repeated itself without)


def test_transformers_dola_divergence_can_choose_another_layer_real(real):
    """What the tab and README say: transformers' "JSD" (KL(m||p) and KL(m||q), averaged over the vocabulary) is
    not the paper's JSD, and on SmolLM2 it picks another premature layer at some steps."""
    from model.contrast import _exit_names, dola_candidate_layers
    from model.lens import lens_logits

    net, enc = real
    prompt = enc.apply_chat_template("Name three colours.")
    layers = dola_candidate_layers(net.cfg.n_layers, net.cfg.tie_embeddings)["low"]
    steps = dola(net, prompt, 8, layers, 0.1, repetition=1.2)
    ids, differ = list(prompt), 0
    for s in steps:
        logits, cache = net.run_with_cache(torch.tensor([ids]))
        names = _exit_names(layers)
        early = lens_logits(net, torch.stack([cache[names[l]][0, -1] for l in layers]))
        final = logits[0, -1]
        m = 0.5 * (F.softmax(final, -1)[None] + F.softmax(early, -1))
        kl1 = F.kl_div(F.log_softmax(final, -1)[None], m, reduction="none").mean(-1)
        kl2 = F.kl_div(F.log_softmax(early, -1), m, reduction="none").mean(-1)
        differ += layers[int((0.5 * (kl1 + kl2)).argmax())] != s.premature
        ids.append(s.token)
    assert differ >= 1


def test_dola_matches_the_paper_real(real):
    net, enc = real
    prompt = enc.encode("The capital of France is")
    layers = [0, 4, 8, 12]
    ours = dola(net, prompt, 4, layers, alpha=0.1)
    ref = list(_dola_reference(net, prompt, 4, layers, 0.1))
    assert [(s.token, s.premature) for s in ours] == [(t, m) for t, m, _ in ref]
    assert jensen_shannon(torch.zeros(5), torch.zeros(5)) == pytest.approx(0.0, abs=1e-9)


def test_contrastive_search_matches_the_paper_on_transformers_hidden_states(real, hf_model):
    """Su et al. 2022, eq. 5: x_t = argmax over the top-k v of (1 - alpha) p(v) - alpha max_j s(h_v, h_j), s the cosine
    similarity of last-layer hidden states; the reference takes them from transformers (hidden_states[-1] is after
    the final norm, as transformers' contrastive search used)."""
    net, enc = real
    prompt, k, alpha = enc.encode("The cat sat on the mat. The cat"), 4, 0.6
    ours = contrastive(net, prompt, 5, k, alpha)
    ids = list(prompt)
    for step in ours:
        with torch.no_grad():
            out = hf_model(torch.tensor([ids]), output_hidden_states=True)
        probs = torch.softmax(out.logits[0, -1].double(), -1)
        top = probs.topk(k)
        context = out.hidden_states[-1][0].double()
        scores = []
        for v, p in zip(top.indices.tolist(), top.values.tolist(), strict=True):
            with torch.no_grad():
                h_v = hf_model(torch.tensor([ids + [v]]), output_hidden_states=True).hidden_states[-1][0, -1].double()
            cos = F.cosine_similarity(h_v[None], context, dim=-1).max()
            scores.append((1 - alpha) * p - alpha * float(cos))
        assert step.token == top.indices[int(np.argmax(scores))]
        assert step.plain == top.indices[0]
        ids.append(step.token)


def test_contrastive_with_alpha_zero_is_greedy(tiny_net):
    prompt = [5, 9, 14, 3]
    assert [s.token for s in contrastive(tiny_net, prompt, 6, 4, 0.0)] == greedy(tiny_net, prompt, 6)[0]


# -- measures and the KV cache ----------------------------------------------------------------------


def test_token_log_probs_and_repeats(tiny_net):
    prompt, cont = [5, 9, 14], [3, 7, 11]
    lp = token_log_probs(tiny_net, prompt, cont)
    for i, token in enumerate(cont):
        ref = F.log_softmax(tiny_net(torch.tensor([prompt + cont[:i]]))[0, -1], -1)[token]
        assert lp[i] == pytest.approx(float(ref), abs=1e-5)
    assert token_log_probs(tiny_net, prompt, []) == []
    assert repeated_ngrams([1, 2, 3, 1, 2, 3, 1, 2, 3], 3) == 4
    assert repeated_ngrams([1, 2, 3, 4], 3) == 0


def test_kv_cache_timing_counts_every_token(tiny_net):
    ticks = iter(range(10_000))
    timing = time_kv_cache(tiny_net, [5, 9, 14], 6, budget_s=100, clock=lambda: float(next(ticks)))
    assert timing.context == [3, 4, 5, 6, 7, 8]
    assert timing.with_cache == [1.0] * 6 and timing.without_cache == [1.0] * 6
    ticks = iter(range(10_000))
    assert len(time_kv_cache(tiny_net, [5, 9, 14], 50, budget_s=10, clock=lambda: float(next(ticks))).context) == 3


def test_a_strategy_lent_out_between_tokens_gives_the_same_tokens_and_leaves_the_lent_time_out(tiny_net):
    """`pause` is where a server lends the model to other requests: someone else's forward runs there (with hooks of
    its own), and every strategy's output is unchanged; the seconds it was away are not in its timings."""
    prompt, others = [5, 9, 14, 3], torch.tensor([[7, 7, 2, 9, 11]])
    calls = []

    def lend() -> float:
        calls.append(1)
        tiny_net.run_with_hooks(others, [("blocks.0.hook_resid_post", lambda x, hook: 2 * x)])
        return 0.0

    settings = SamplerSettings(temperature=0.9, top_p=0.9)
    runs = [(beam_search, (prompt, 3, 6)), (greedy, (prompt, 6)), (sampled, (prompt, 6, settings, 4)),
            (speculative, (prompt, 1, 2, 6)), (dola, (prompt, 6, [0])), (contrastive, (prompt, 6, 3, 0.6))]
    for strategy, args in runs:
        calls.clear()
        lent, alone = strategy(tiny_net, *args, pause=lend), strategy(tiny_net, *args)
        assert calls, strategy.__name__
        if strategy is greedy:
            assert lent[0] == alone[0]
        elif strategy is speculative:
            assert (lent.tokens, lent.rounds) == (alone.tokens, alone.rounds)
        else:
            assert lent == alone, strategy.__name__

    def away() -> float:  # as the gate reports: a wait of about 0.2 s
        started = time.perf_counter()
        time.sleep(0.2)
        return time.perf_counter() - started

    started = time.perf_counter()
    tokens, seconds = greedy(tiny_net, prompt, 4, pause=away)
    wall = time.perf_counter() - started
    assert len(tokens) == 4 and seconds < wall - 0.75  # four pauses of 0.2 s, none counted
    started = time.perf_counter()
    result = speculative(tiny_net, prompt, 1, 1, 4, pause=away)
    wall = time.perf_counter() - started
    assert len(result.rounds) > 1 and result.seconds < wall - 0.19 * (len(result.rounds) - 1)  # a pause a round
    timing = time_kv_cache(tiny_net, prompt, 3, budget_s=0.1, pause=away)
    assert len(timing.context) == 3  # 0.6 s away, yet within a budget of 0.1 s of its own
