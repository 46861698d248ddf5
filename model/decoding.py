"""Decoding strategies on the model, each written to be checked: beam search and speculative decoding with the
model's own first layers as the draft; greedy and sampled continuations, their log-probabilities, and what the KV
cache saves.

- `beam_search` reproduces transformers' vectorised beam search (generate(num_beams=..., length_penalty=...,
  early_stopping=..., do_sample=False)): every step keeps the 2 x num_beams best continuations, finished ones are
  scored by sum of log-probs / generated length ** length_penalty, and the same stopping heuristics apply. It also
  records each step for drawing the tree.
- `speculative` drafts gamma tokens with the first k layers (early exit through the final norm and the unembedding,
  the logit lens's row k), verifies them with one forward of the whole model, accepts each with min(1, p/q) and
  resamples a rejection from norm(max(0, p - q)). Greedy, it accepts while the model's argmax agrees.
DoLa and contrastive search, which reshape each step's choice rather than how steps are searched, are in
`model.contrast`.

Each strategy takes `pause`, called between two tokens (or rounds), where nothing of the run sits on the shared
model: a server lends the model to other requests there, and the seconds it returns are left out of the timings.

Shapes: B beams or candidates, T tokens, V vocab, D d_model.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from .generation import generate
from .lens import lens_logits
from .sampling import SamplerSettings
from .transformer import KVCache, Transformer

NEG = -1.0e9  # transformers' "very large negative" for beams that must not be chosen
Pause = Callable[[], float]  # between two tokens: the model may be lent out; the seconds it was away


def no_pause() -> float:
    return 0.0


# ---------------------------------------------------------------------------------------
# Running the model a step at a time


@torch.no_grad()
def early_exit(net: Transformer, tokens: Tensor, layers: int, kv_cache: KVCache) -> Tensor:
    """Logits (B, T, V) from the first `layers` blocks only, through the final norm and the unembedding (with its
    own cache of those layers): the draft model of self-speculative decoding."""
    start = kv_cache.length
    positions = net.positions(start, tokens.shape[1], tokens.device)
    x = net.embed(tokens)
    for block in net.blocks[:layers]:
        x = block(x, positions, kv_cache)
    kv_cache.length += tokens.shape[1]
    return lens_logits(net, x)


# ---------------------------------------------------------------------------------------
# Beam search


@dataclass
class BeamStep:
    """One step of beam search, for the tree: the beams kept and what finished."""

    tokens: list[int]  # the token each running beam added
    parents: list[int]  # which beam of the previous step it continues
    scores: list[float]  # cumulative log-probability of each running beam (at the last step: of the last beams)
    finished: list[tuple[list[int], float, float]]  # finished at this step: (generated ids, score, sum of log-probs)


@dataclass
class BeamResult:
    sequences: list[list[int]]  # the returned beams' generated ids, best first (ending at EOS when they finished)
    scores: list[float]  # their scores: sum of log-probs / generated length ** length_penalty
    steps: list[BeamStep] = field(default_factory=list)


@torch.no_grad()
def beam_search(net: Transformer, prompt: Sequence[int], num_beams: int, max_new_tokens: int,
                length_penalty: float = 1.0, early_stopping: bool | str = False,
                stop_ids: Sequence[int] = (), pause: Pause = no_pause) -> BeamResult:
    """transformers' beam search (do_sample=False, one sequence), with the steps kept for drawing."""
    eos = torch.tensor(list(stop_ids), dtype=torch.long)
    prompt_len = len(prompt)
    max_length = prompt_len + max_new_tokens
    beams_to_keep = max(2, 1 + len(eos)) * num_beams
    top_mask = torch.arange(beams_to_keep) < num_beams
    fill = int(eos[0]) if len(eos) else -1
    running = torch.full((num_beams, max_length), fill, dtype=torch.long)
    running[:, :prompt_len] = torch.tensor(list(prompt))
    running_scores = torch.full((num_beams,), NEG)
    running_scores[0] = 0.0
    finished = running.clone()
    finished_scores = torch.full((num_beams,), NEG)
    is_finished = torch.zeros(num_beams, dtype=torch.bool)
    finished_len = torch.zeros(num_beams, dtype=torch.long)
    unsatisfied = True
    steps: list[BeamStep] = []

    kv_cache = KVCache.for_model(net, 1, max_length)
    logits = net(torch.tensor([list(prompt)]), kv_cache=kv_cache)[:, -1].float()  # (1, V)
    kv_cache = kv_cache.select(torch.zeros(num_beams, dtype=torch.long))  # every beam starts from the prompt
    logits = logits.expand(num_beams, -1)
    cur_len = prompt_len
    V = logits.shape[-1]
    while True:
        log_probs = F.log_softmax(logits, dim=-1) + running_scores[:, None]  # (B, V)
        top_scores, top_index = log_probs.reshape(-1).topk(beams_to_keep)
        parent, token = top_index // V, top_index % V
        candidates = running[parent].clone()
        candidates[:, cur_len] = token
        hits = torch.isin(token, eos) | (cur_len + 1 >= max_length)

        running_lp = top_scores + hits.float() * NEG
        keep = running_lp.topk(num_beams).indices
        running, running_scores, origin = candidates[keep], running_lp[keep], parent[keep]

        just_finished = hits & top_mask
        final_lp = top_scores / ((cur_len + 1 - prompt_len) ** length_penalty)
        if bool(is_finished.all()) and early_stopping is True:
            final_lp = final_lp + NEG
        if not unsatisfied:
            final_lp = final_lp + NEG
        final_lp = final_lp + (~just_finished).float() * NEG
        merged_scores = torch.cat([finished_scores, final_lp])
        best = merged_scores.topk(num_beams).indices
        merged = torch.cat([finished, candidates])
        merged_done = torch.cat([is_finished, just_finished])
        merged_len = torch.cat([finished_len, torch.full((beams_to_keep,), cur_len + 1 - prompt_len)])
        finished, finished_scores, is_finished, finished_len = merged[best], merged_scores[best], merged_done[best], \
            merged_len[best]
        new = [(candidates[i, prompt_len : cur_len + 1].tolist(), float(final_lp[i]), float(top_scores[i]))
               for i in range(beams_to_keep) if bool(just_finished[i]) and float(final_lp[i]) > NEG / 2]
        # At max length every candidate "hits" and the kept order is float noise at -1e9: record the top ones.
        shown = keep if not bool(hits.all()) else torch.arange(num_beams)
        steps.append(BeamStep(token[shown].tolist(), parent[shown].tolist(), top_scores[shown].tolist(), new))

        cur_len += 1
        if early_stopping == "never" and length_penalty > 0.0:
            best_length = max_length - prompt_len
        else:
            best_length = cur_len - prompt_len
        best_possible = running_scores[0] / (best_length**length_penalty)
        worst = torch.where(is_finished, finished_scores.min(), torch.tensor(NEG))
        unsatisfied = unsatisfied and bool((best_possible > worst).any())
        all_done = bool(is_finished.all()) and early_stopping is True
        if not unsatisfied or all_done or bool(hits.all()):
            break
        pause()
        kv_cache = kv_cache.select(origin)  # the cache rows of the beams that continue, in their new order
        logits = net(running[:, cur_len - 1 : cur_len], kv_cache=kv_cache)[:, -1].float()
    sequences = [finished[i, prompt_len : prompt_len + int(finished_len[i])].tolist() for i in range(num_beams)]
    return BeamResult(sequences, finished_scores.tolist(), steps)


# ---------------------------------------------------------------------------------------
# Speculative decoding, the draft being the model's own first layers


def accept_probability(p: Tensor, q: Tensor, token: int) -> float:
    """min(1, p(x) / q(x)): the chance a drafted token x is kept."""
    return float(min(1.0, float(p[token]) / float(q[token]))) if float(q[token]) > 0 else 1.0


def residual_distribution(p: Tensor, q: Tensor) -> Tensor:
    """Where a rejected draft is resampled from: norm(max(0, p - q)) (p itself when p = q)."""
    r = (p - q).clamp(min=0)
    total = r.sum()
    return r / total if float(total) > 0 else p


def speculative_output_distribution(p: Tensor, q: Tensor) -> Tensor:
    """The distribution of the token one speculative step emits, from the accept/resample rule:
    q(x) min(1, p(x)/q(x)) + (1 - sum_y q(y) min(1, p(y)/q(y))) residual(x). It is p (the rule's whole point)."""
    accepted = torch.minimum(q, p)  # q * min(1, p / q)
    return accepted + (1 - accepted.sum()) * residual_distribution(p, q)


@dataclass
class SpeculativeRound:
    drafted: list[int]
    accepted: int  # how many drafted tokens were kept
    extra: int  # the token the model adds: the resample of the first rejection, or one more after all were kept
    accept_p: list[float]  # min(1, p/q) of each drafted token (1 or 0 when greedy)


@dataclass
class SpeculativeResult:
    tokens: list[int]
    rounds: list[SpeculativeRound]
    seconds: float

    @property
    def acceptance(self) -> float:
        drafted = sum(len(r.drafted) for r in self.rounds)
        return sum(r.accepted for r in self.rounds) / drafted if drafted else 0.0


def _probs(logits: Tensor, temperature: float) -> Tensor:
    return F.softmax(logits.float() / temperature, dim=-1)


@torch.no_grad()
def speculative(net: Transformer, prompt: Sequence[int], draft_layers: int, gamma: int, max_new_tokens: int,
                temperature: float = 0.0, seed: int = 0, stop_ids: Sequence[int] = (),
                pause: Pause = no_pause) -> SpeculativeResult:
    """Self-speculative decoding: draft `gamma` tokens with the first `draft_layers` layers, verify with the whole
    model in one forward. temperature 0: greedy (the output equals plain greedy decoding).

    The target's cache holds every token but the last one emitted (`pending`). The draft's cache may lag further:
    when every drafted token is kept, the last of them was never run through the draft (it was drafted, not read),
    so the next round's first draft step reads every token the draft has not seen, up to `pending`. A round
    verifies [pending, drafted...] in one forward, keeps what is accepted plus one token from the model, and rolls
    both caches back to what was kept (the draft's to no further than it has written)."""
    started, away = time.perf_counter(), 0.0
    generator = torch.Generator().manual_seed(seed)
    is_greedy = temperature == 0
    length = len(prompt) + max_new_tokens + gamma + 1
    target_cache, draft_cache = KVCache.for_model(net, 1, length), KVCache.for_model(net, 1, length)
    if len(prompt) > 1:
        head = torch.tensor([list(prompt[:-1])])
        net(head, kv_cache=target_cache)
        early_exit(net, head, draft_layers, draft_cache)
    pending = prompt[-1]
    out: list[int] = []
    rounds: list[SpeculativeRound] = []
    stop = set(stop_ids)
    while len(out) < max_new_tokens and not (out and out[-1] in stop):
        away += pause() if rounds else 0.0
        n_draft = min(gamma, max_new_tokens - len(out) - 1)  # the model adds one token itself
        drafted, q_dists = [], []
        unread = [*prompt, *out][draft_cache.length :]  # what the draft has not run yet, ending with `pending`
        for _ in range(n_draft):  # draft, one token at a time through the first layers
            q_logits = early_exit(net, torch.tensor([unread]), draft_layers, draft_cache)[0, -1].float()
            token, q = _pick(q_logits, temperature, generator)
            drafted.append(token)
            q_dists.append(q)
            unread = [token]
        # verify: the whole model over [pending, drafted...] in one forward; p_logits[i] follows drafted[:i]
        p_logits = net(torch.tensor([[pending, *drafted]]), kv_cache=target_cache)[0].float()
        accepted, accept_p, extra = 0, [], None
        for i, token in enumerate(drafted):
            if is_greedy:
                keep = int(p_logits[i].argmax()) == token
                accept_p.append(1.0 if keep else 0.0)
            else:
                p = _probs(p_logits[i], temperature)
                a = accept_probability(p, q_dists[i], token)
                accept_p.append(a)
                keep = float(torch.rand(1, generator=generator)) < a
            if not keep:
                if is_greedy:
                    extra = int(p_logits[i].argmax())
                else:
                    residual = residual_distribution(_probs(p_logits[i], temperature), q_dists[i])
                    extra = int(torch.multinomial(residual, 1, generator=generator))
                break
            accepted += 1
        if extra is None:  # every drafted token kept: the model's own next token comes for free
            extra, _ = _pick(p_logits[len(drafted)], temperature, generator)
        for token in drafted[:accepted] + [extra]:
            out.append(token)
            if token in stop:
                break
        rounds.append(SpeculativeRound(drafted, accepted, extra, accept_p))
        pending = out[-1]
        target_cache.length = len(prompt) + len(out) - 1
        draft_cache.length = min(draft_cache.length, target_cache.length)
    return SpeculativeResult(out[:max_new_tokens], rounds, time.perf_counter() - started - away)


def _pick(logits: Tensor, temperature: float, generator: torch.Generator) -> tuple[int, Tensor | None]:
    """(token, the distribution it was drawn from): the most likely at temperature 0 (no distribution), else one
    drawn from softmax(logits / temperature)."""
    if temperature == 0:
        return int(logits.argmax()), None
    q = _probs(logits, temperature)
    return int(torch.multinomial(q, 1, generator=generator)), q


def sampled(net: Transformer, prompt: Sequence[int], max_new_tokens: int, settings: SamplerSettings, seed: int,
            stop_ids: Sequence[int] = (), pause: Pause = no_pause) -> list[int]:
    """A seeded sampled continuation (`model.generation.generate` with these sampler settings)."""
    tokens = []
    for token in generate(net, prompt, max_new_tokens, settings, seed, stop_ids):
        tokens.append(token)
        pause()
    return tokens


def greedy(net: Transformer, prompt: Sequence[int], max_new_tokens: int,
           stop_ids: Sequence[int] = (), pause: Pause = no_pause) -> tuple[list[int], float]:
    """Plain greedy decoding with the KV cache (`model.generation.generate`), timed: (tokens, seconds)."""
    started, away, tokens = time.perf_counter(), 0.0, []
    for token in generate(net, prompt, max_new_tokens, stop_ids=stop_ids):
        tokens.append(token)
        away += pause()
    return tokens, time.perf_counter() - started - away


# ---------------------------------------------------------------------------------------
# Comparing continuations, and what the KV cache saves


@torch.no_grad()
def token_log_probs(net: Transformer, prompt: Sequence[int], continuation: Sequence[int]) -> list[float]:
    """log p(token | everything before it) for each continuation token, from one forward of the whole text."""
    if not continuation:
        return []
    ids = torch.tensor([list(prompt) + list(continuation)])
    log_probs = F.log_softmax(net(ids)[0, len(prompt) - 1 : -1].float(), dim=-1)  # (len(continuation), V)
    return log_probs.gather(1, torch.tensor(list(continuation))[:, None])[:, 0].tolist()


def repeated_ngrams(tokens: Sequence[int], n: int = 3) -> int:
    """How many n-grams of the sequence repeat an earlier one (0 when nothing repeats)."""
    grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    return len(grams) - len(set(grams))


@dataclass
class CacheTiming:
    context: list[int]  # tokens in the context when the next token was computed
    with_cache: list[float]  # seconds for that token: one new token's forward, reading the cache
    without_cache: list[float]  # seconds for the same token recomputing the whole context


@torch.no_grad()
def time_kv_cache(net: Transformer, prompt: Sequence[int], new_tokens: int, budget_s: float,
                  clock=time.perf_counter, pause: Pause = no_pause) -> CacheTiming:
    """Greedy generation twice over, timing each token with the cache (one position through the model) and without
    (the whole context again, as a model without a cache must). Stops early once `budget_s` is spent."""
    kv_cache = KVCache.for_model(net, 1, len(prompt) + new_tokens)
    ids = list(prompt)
    net(torch.tensor([ids]), kv_cache=kv_cache)  # the prompt's keys and values, as generation starts
    timing = CacheTiming([], [], [])
    started, away = clock(), 0.0
    for _ in range(new_tokens):
        t0 = clock()
        full = net(torch.tensor([ids]))[0, -1]
        t1 = clock()
        kv_cache.length = len(ids) - 1  # recompute the last position with the cache, as each generated token is
        net(torch.tensor([ids[-1:]]), kv_cache=kv_cache)
        t2 = clock()
        timing.context.append(len(ids))
        timing.without_cache.append(t1 - t0)
        timing.with_cache.append(t2 - t1)
        ids.append(int(full.argmax()))
        if clock() - started - away > budget_s:
            break
        away += pause()
    return timing
