"""Turning next-token logits into a choice: pure functions of (logits, settings, token history, generator).

Two chains over the same knobs:

- ``order="hf"``: exactly Hugging Face transformers' logits processors, in generate()'s order:
  repetition penalty (on prompt + generated tokens) -> temperature -> top-k (ties at the
  boundary kept) -> top-p -> min-p -> typical-p -> epsilon -> eta. transformers has no
  presence, frequency or top-n-sigma step, so in this order they do nothing.
- ``order="llama.cpp"``: llama.cpp's default sampler chain: penalties -> DRY -> top-n-sigma -> top-k
  -> typical -> top-p -> min-p -> XTC -> temperature *last*. Its one penalties step works on a window
  of the last `repeat_last_n` tokens of prompt *and* output (llama-cli and llama-completion
  accept the prompt into it): repetition (a logit <= 0 is multiplied, else divided), then
  frequency x count and presence once per token in the window. Each filter sees the softmax
  of the tokens still in. There is no epsilon or eta step in llama.cpp. DRY penalises a token that would
  extend a repeat of at least `dry_allowed_length` tokens by multiplier x base^(length - allowed), a repeat
  never reaching back across a sequence breaker (a token containing a newline, ':', '"' or '*'). XTC, with
  probability `xtc_probability`, removes every token at or above `xtc_threshold` but the least likely of them;
  as it fires at random, `distribution` is the exact mixture of the chain with and without it.

How these settings are said to the two tools (generate() keyword arguments, llama.cpp flags) is `model.sampler_export`.
One module holds the whole chain in both orders, so each step's two versions read side by side (hence its length).

A temperature of 0 means greedy. Every filter keeps at least one token. Removed tokens
have logit -inf. With the same seed and settings, `sample` picks the same tokens every time.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

NEG_INF = float("-inf")
Order = Literal["hf", "llama.cpp"]


@dataclass(frozen=True)
class SamplerSettings:
    temperature: float = 1.0  # divide logits by this; 0 = greedy
    top_k: int = 0  # keep the k most likely tokens; 0 = off
    top_p: float = 1.0  # keep the smallest set whose mass reaches p; 1.0 = off
    min_p: float = 0.0  # drop tokens below min_p * p(most likely); 0 = off
    typical_p: float = 1.0  # keep the most "typical" tokens up to this mass; 1.0 = off
    repetition_penalty: float = 1.0  # divide (positive) or multiply (negative) logits of seen tokens; 1.0 = off
    presence_penalty: float = 0.0  # subtract once from each token in the penalty window (llama.cpp order only)
    frequency_penalty: float = 0.0  # subtract per occurrence in the penalty window (llama.cpp order only)
    epsilon: float = 0.0  # drop tokens below this probability (HF epsilon_cutoff); 0 = off (HF order only)
    eta: float = 0.0  # drop tokens below min(eta, sqrt(eta) exp(-entropy)) (HF eta_cutoff); 0 = off (HF order only)
    top_n_sigma: float = 0.0  # keep logits within n standard deviations of the top one; 0 = off (llama.cpp only)
    repeat_last_n: int = 64  # llama.cpp's penalty window, in tokens; -1 = the whole context, 0 = no penalties
    xtc_probability: float = 0.0  # llama.cpp XTC: how often it fires; 0 = off
    xtc_threshold: float = 0.1  # XTC removes the tokens at or above this probability but the least likely; > 0.5 = off
    dry_multiplier: float = 0.0  # llama.cpp DRY: penalty scale; 0 = off
    dry_base: float = 1.75  # DRY: the penalty grows as base ** (repeat length - allowed length)
    dry_allowed_length: int = 2  # DRY: repeats up to this long go unpenalised
    dry_last_n: int = -1  # DRY: how many recent tokens it searches; -1 = the whole context
    dry_breakers: tuple[int, ...] = ()  # DRY: tokens a repeat may not reach back across (see `dry_breaker_ids`)
    order: Order = "hf"

    def __post_init__(self) -> None:
        rules = {  # field -> (valid?, what is allowed); NaN fails every comparison, so it is refused too
            "temperature": (_is_number(self.temperature) and 0 <= self.temperature < math.inf, "a number >= 0"),
            "top_k": (_is_whole(self.top_k) and self.top_k >= 0, "a whole number >= 0"),
            "top_p": (_is_number(self.top_p) and 0 < self.top_p <= 1, "in (0, 1]"),
            "min_p": (_is_number(self.min_p) and 0 <= self.min_p <= 1, "in [0, 1]"),
            "typical_p": (_is_number(self.typical_p) and 0 < self.typical_p <= 1, "in (0, 1]"),
            "repetition_penalty": (_is_number(self.repetition_penalty) and 0 < self.repetition_penalty < math.inf,
                                   "a number > 0"),
            "presence_penalty": (_is_number(self.presence_penalty) and math.isfinite(self.presence_penalty),
                                 "a finite number"),
            "frequency_penalty": (_is_number(self.frequency_penalty) and math.isfinite(self.frequency_penalty),
                                  "a finite number"),
            "epsilon": (_is_number(self.epsilon) and 0 <= self.epsilon < 1, "in [0, 1)"),
            "eta": (_is_number(self.eta) and 0 <= self.eta < 1, "in [0, 1)"),
            "top_n_sigma": (_is_number(self.top_n_sigma) and 0 <= self.top_n_sigma < math.inf, "a number >= 0"),
            "repeat_last_n": (_is_whole(self.repeat_last_n) and self.repeat_last_n >= -1, "a whole number >= -1"),
            "xtc_probability": (_is_number(self.xtc_probability) and 0 <= self.xtc_probability <= 1, "in [0, 1]"),
            "xtc_threshold": (_is_number(self.xtc_threshold) and 0 <= self.xtc_threshold <= 1, "in [0, 1]"),
            "dry_multiplier": (_is_number(self.dry_multiplier) and 0 <= self.dry_multiplier < math.inf,
                               "a number >= 0"),
            "dry_base": (_is_number(self.dry_base) and 1 <= self.dry_base < math.inf, "a number >= 1"),
            "dry_allowed_length": (_is_whole(self.dry_allowed_length) and self.dry_allowed_length >= 1,
                                   "a whole number >= 1"),
            "dry_last_n": (_is_whole(self.dry_last_n) and self.dry_last_n >= -1, "a whole number >= -1"),
            "order": (self.order in ("hf", "llama.cpp"), "'hf' or 'llama.cpp'"),
        }
        for name, (ok, allowed) in rules.items():
            if not ok:
                raise ValueError(f"{name} must be {allowed}, got {getattr(self, name)!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # True is an int to Python, not a count


# ---------------------------------------------------------------------------------------
# The steps. Each maps logits (..., V) to logits, -inf where a token is removed.


def repetition_penalty(logits: Tensor, history: Tensor, penalty: float) -> Tensor:
    """HF/CTRL: each token seen in history has its logit divided by penalty if positive, else multiplied."""
    if penalty == 1.0 or history.numel() == 0:
        return logits
    seen = torch.unique(history)
    picked = logits[..., seen]
    out = logits.clone()
    out[..., seen] = torch.where(picked < 0, picked * penalty, picked / penalty)
    return out


def llama_penalties(logits: Tensor, window: Tensor, repeat: float, frequency: float, presence: float) -> Tensor:
    """llama.cpp's penalties step over the window's tokens: repetition (a logit <= 0 multiplied, else divided),
    then minus count x frequency and presence once, for each token in the window."""
    if window.numel() == 0 or (repeat == 1.0 and frequency == 0 and presence == 0):
        return logits
    counts = torch.bincount(window, minlength=logits.shape[-1]).to(logits.dtype)
    seen = counts > 0
    z = torch.where(seen & (logits <= 0), logits * repeat, torch.where(seen, logits / repeat, logits))
    return z - counts * frequency - seen.to(logits.dtype) * presence


def recent_window(history: Sequence[int], n: int) -> list[int]:
    """The last n tokens of the history, as llama.cpp's ring buffer of capacity n holds them: min(len, n) tokens;
    n = -1: all of them (llama.cpp: the context size), n = 0: none."""
    if n == -1:
        return list(history)
    return list(history[max(0, len(history) - n) :]) if n > 0 else []


DRY_BREAKERS = ("\n", ":", "\"", "*")  # llama.cpp's default sequence breakers


def dry_breaker_ids(token_texts: Sequence[str], breakers: Sequence[str] = DRY_BREAKERS) -> tuple[int, ...]:
    """The tokens that break a DRY repeat: as llama.cpp makes them from one-character breakers, every token whose
    text contains one. (llama.cpp also turns longer breakers into multi-token sequences; only the defaults are
    modelled here.)"""
    return tuple(i for i, text in enumerate(token_texts) if any(b in text for b in breakers))


def dry_penalty(logits: Tensor, window: Sequence[int], multiplier: float, base: float, allowed: int,
                breakers: Sequence[int] = ()) -> Tensor:
    """llama.cpp's DRY ("don't repeat yourself"). For each earlier place where the window's last n tokens occur
    again, the token that followed them there would extend a repeat of n tokens; a token whose longest such n
    is >= allowed loses multiplier * base ** (n - allowed) from its logit. A repeat stops at the most recent
    breaker token, and breaker tokens are never penalised."""
    N = len(window)
    if multiplier == 0 or base < 1 or N <= allowed:
        return logits
    stops = set(breakers)
    limit = N  # Step 1: how far back a repeat may reach: not across the most recent breaker
    for i in range(N):
        if window[N - 1 - i] in stops:
            limit = i
            break
    if limit < allowed:
        return logits
    longest: dict[int, int] = {}
    for end in range(N - 1):  # an earlier occurrence ending at `end`, followed by window[end + 1]
        n = 0
        while n <= end and window[end - n] == window[N - 1 - n]:
            n += 1
        n = min(n, limit)
        if n >= allowed:
            token = window[end + 1]
            longest[token] = max(longest.get(token, 0), n)
    out = logits.clone()
    max_exponent = int(88.7228391 / math.log(base)) if base > 1.000001 else 0  # float32 overflow, as llama.cpp
    for token, n in longest.items():
        if token in stops:
            continue
        exponent = n - allowed
        if max_exponent > 0:
            exponent = min(exponent, max_exponent)
        out[..., token] = out[..., token] - multiplier * base**exponent
    return out


def xtc_filter(logits: Tensor, threshold: float) -> Tensor:
    """llama.cpp XTC when it fires ("exclude top choices"): of the tokens with probability >= threshold, remove all
    but the least likely, if there are at least two; a threshold above 0.5 does nothing."""
    if threshold > 0.5:
        return logits
    p = logits.softmax(-1)
    above = p >= threshold
    if int(above.sum()) < 2:
        return logits
    keep = torch.where(above, p, torch.tensor(2.0)).argmin()  # the least likely token still above the threshold
    return logits.masked_fill(above & (torch.arange(logits.shape[-1]) != keep), NEG_INF)


def xtc_active(settings: SamplerSettings) -> bool:
    return settings.order == "llama.cpp" and settings.xtc_probability > 0 and settings.xtc_threshold <= 0.5


def epsilon_filter(logits: Tensor, epsilon: float) -> Tensor:
    """HF EpsilonLogitsWarper: drop tokens with probability below epsilon; keep the top one."""
    if epsilon <= 0:
        return logits
    remove = logits.softmax(-1) < epsilon
    remove &= logits < logits.max(-1, keepdim=True).values
    return logits.masked_fill(remove, NEG_INF)


def eta_filter(logits: Tensor, eta: float) -> Tensor:
    """HF EtaLogitsWarper: drop tokens below min(eta, sqrt(eta) exp(-entropy)); keep the top one."""
    if eta <= 0:
        return logits
    logp = logits.log_softmax(-1)
    p = logp.exp()
    entropy = -(p * logp).nan_to_num().sum(-1, keepdim=True)
    cutoff = torch.minimum(torch.tensor(eta), math.sqrt(eta) * torch.exp(-entropy))
    remove = (p < cutoff) & (logits < logits.max(-1, keepdim=True).values)
    return logits.masked_fill(remove, NEG_INF)


def top_n_sigma(logits: Tensor, n: float) -> Tensor:
    """llama.cpp: keep tokens whose logit is within n standard deviations (of the finite logits) of the largest."""
    if n <= 0:
        return logits
    finite = torch.isfinite(logits)
    values = logits[finite]
    if values.numel() <= 1:
        return logits
    threshold = values.max() - n * values.std(unbiased=False)
    return logits.masked_fill(logits < threshold, NEG_INF)


def temperature(logits: Tensor, t: float) -> Tensor:
    """Divide by t; t = 0 keeps only the most likely token (greedy)."""
    if t == 0:
        top = logits.argmax(-1, keepdim=True)
        return torch.full_like(logits, NEG_INF).scatter(-1, top, logits.gather(-1, top))
    return logits if t == 1.0 else logits / t


def top_k_hf(logits: Tensor, k: int) -> Tensor:
    """Keep tokens whose logit is at least the k-th largest (ties at the boundary stay)."""
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, NEG_INF)


def top_k_exact(logits: Tensor, k: int) -> Tensor:
    """llama.cpp: keep exactly the k most likely tokens (ties broken by position)."""
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    order = torch.sort(logits, dim=-1, descending=True, stable=True).indices[..., :k]
    keep = torch.zeros_like(logits, dtype=torch.bool).scatter(-1, order, True)
    return logits.masked_fill(~keep, NEG_INF)


def top_p_hf(logits: Tensor, p: float) -> Tensor:
    """HF: drop the least likely tokens while their total mass stays <= 1 - p; keep the top one."""
    if p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, descending=False, dim=-1)
    cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    remove = cumulative <= 1 - p
    remove[..., -1:] = False
    return logits.masked_fill(remove.scatter(-1, order, remove), NEG_INF)


def top_p_llama(logits: Tensor, p: float) -> Tensor:
    """llama.cpp: keep the most likely tokens until their cumulative probability reaches p."""
    if p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, descending=True, dim=-1, stable=True)
    cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    keep = (cumulative - sorted_logits.softmax(dim=-1)) < p  # the mass before this token had not reached p yet
    keep[..., :1] = True
    return logits.masked_fill(~keep.scatter(-1, order, keep), NEG_INF)


def min_p_filter(logits: Tensor, min_p: float) -> Tensor:
    """Drop tokens with probability below min_p times the most likely token's; keep the top one."""
    if min_p <= 0:
        return logits
    probs = logits.softmax(dim=-1)
    remove = probs < min_p * probs.amax(dim=-1, keepdim=True)
    remove.scatter_(-1, probs.argmax(dim=-1, keepdim=True), False)
    return logits.masked_fill(remove, NEG_INF)


def _typical_order(logits: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Tokens sorted by |-log p - H| (closest to the entropy first): (shifted sorted, order, probs sorted)."""
    logp = logits.log_softmax(dim=-1)
    p = logp.exp()
    entropy = -(logp * p).nansum(-1, keepdim=True)
    shifted = ((-logp) - entropy).abs()
    sorted_shifted, order = torch.sort(shifted, descending=False, dim=-1, stable=True)
    return sorted_shifted, order, p.gather(-1, order)


def typical_hf(logits: Tensor, mass: float) -> Tensor:
    """HF: keep the typical tokens up to the first whose cumulative mass reaches `mass` (ties kept)."""
    if mass >= 1.0:
        return logits
    sorted_shifted, order, _ = _typical_order(logits)
    cumulative = logits.gather(-1, order).softmax(dim=-1).cumsum(dim=-1)
    last = (cumulative < mass).sum(dim=-1, keepdim=True).clamp(max=logits.shape[-1] - 1)
    remove = sorted_shifted > sorted_shifted.gather(-1, last)
    remove[..., :1] = False
    return logits.masked_fill(remove.scatter(-1, order, remove), NEG_INF)


def typical_llama(logits: Tensor, mass: float) -> Tensor:
    """llama.cpp: keep typical tokens until the cumulative probability exceeds `mass`."""
    if mass >= 1.0:
        return logits
    _, order, p_sorted = _typical_order(logits)
    cumulative = p_sorted.cumsum(dim=-1)
    keep = (cumulative - p_sorted) <= mass  # up to and including the first token that pushes past mass
    keep[..., :1] = True
    return logits.masked_fill(~keep.scatter(-1, order, keep), NEG_INF)


# ---------------------------------------------------------------------------------------
# The chains.

Step = tuple[str, Callable[[Tensor], Tensor]]


def chain(settings: SamplerSettings, prompt_ids: Sequence[int] = (), generated_ids: Sequence[int] = (),
          with_xtc: bool = True) -> list[Step]:
    """The active steps, in order, as (name, function of logits); `with_xtc=False`: the chain when XTC does not
    fire."""
    s = settings
    steps: list[Step] = []
    if s.order == "hf":
        history = torch.tensor([*prompt_ids, *generated_ids], dtype=torch.long)
        if s.repetition_penalty != 1.0:
            steps.append(("repetition penalty", lambda z: repetition_penalty(z, history, s.repetition_penalty)))
        if s.temperature != 1.0:
            steps.append(("temperature", lambda z: temperature(z, s.temperature)))
        if s.top_k:
            steps.append(("top-k", lambda z: top_k_hf(z, s.top_k)))
        if s.top_p < 1.0:
            steps.append(("top-p", lambda z: top_p_hf(z, s.top_p)))
        if s.min_p > 0:
            steps.append(("min-p", lambda z: min_p_filter(z, s.min_p)))
        if s.typical_p < 1.0:
            steps.append(("typical-p", lambda z: typical_hf(z, s.typical_p)))
        if s.epsilon > 0:
            steps.append(("epsilon", lambda z: epsilon_filter(z, s.epsilon)))
        if s.eta > 0:
            steps.append(("eta", lambda z: eta_filter(z, s.eta)))
        return steps
    history = [*prompt_ids, *generated_ids]
    window = torch.tensor(recent_window(history, s.repeat_last_n), dtype=torch.long)
    if window.numel() and (s.repetition_penalty != 1.0 or s.presence_penalty or s.frequency_penalty):
        steps.append(("penalties", lambda z: llama_penalties(z, window, s.repetition_penalty, s.frequency_penalty,
                                                             s.presence_penalty)))
    if s.dry_multiplier > 0:
        dry = recent_window(history, s.dry_last_n)
        steps.append(("DRY", lambda z: dry_penalty(z, dry, s.dry_multiplier, s.dry_base, s.dry_allowed_length,
                                                   s.dry_breakers)))
    if s.top_n_sigma > 0:
        steps.append(("top-n-sigma", lambda z: top_n_sigma(z, s.top_n_sigma)))
    if s.top_k:
        steps.append(("top-k", lambda z: top_k_exact(z, s.top_k)))
    if s.typical_p < 1.0:
        steps.append(("typical-p", lambda z: typical_llama(z, s.typical_p)))
    if s.top_p < 1.0:
        steps.append(("top-p", lambda z: top_p_llama(z, s.top_p)))
    if s.min_p > 0:
        steps.append(("min-p", lambda z: min_p_filter(z, s.min_p)))
    if xtc_active(s) and with_xtc:
        name = "XTC" if s.xtc_probability >= 1 else f"XTC (fires {100 * s.xtc_probability:g}% of the time)"
        steps.append((name, lambda z: xtc_filter(z, s.xtc_threshold)))
    if s.temperature != 1.0:
        steps.append(("temperature", lambda z: temperature(z, s.temperature)))
    return steps


@dataclass
class Stage:
    """The distribution after one step of the chain."""

    name: str
    logits: Tensor  # (V,) -inf where removed
    probs: Tensor  # (V,)
    removed: Tensor  # (V,) bool: tokens this step removed

    @property
    def kept(self) -> int:
        return int(torch.isfinite(self.logits).sum())

    @property
    def entropy_bits(self) -> float:
        p = self.probs[self.probs > 0]
        return float(-(p * p.log2()).sum())


def stages(logits: Tensor, settings: SamplerSettings, prompt_ids: Sequence[int] = (),
           generated_ids: Sequence[int] = ()) -> list[Stage]:
    """The raw softmax, then the distribution after each active step, with what each step removed."""
    z = logits.float()
    out = [Stage("softmax", z, z.softmax(-1), torch.zeros_like(z, dtype=torch.bool))]
    for name, step in chain(settings, prompt_ids, generated_ids):
        new = step(z)
        out.append(Stage(name, new, new.softmax(-1), torch.isfinite(z) & ~torch.isfinite(new)))
        z = new
    return out


def distribution(logits: Tensor, settings: SamplerSettings, prompt_ids: Sequence[int] = (),
                 generated_ids: Sequence[int] = ()) -> Tensor:
    """Probabilities over the whole vocabulary after the sampler chain; with XTC, the exact mixture of the chain
    where it fires (with its probability) and where it does not."""

    def run(with_xtc: bool) -> Tensor:
        z = logits.float()
        for _, step in chain(settings, prompt_ids, generated_ids, with_xtc):
            z = step(z)
        return z.softmax(-1)

    fires = settings.xtc_probability if xtc_active(settings) else 0.0
    if fires == 0:
        return run(False)
    if fires >= 1:
        return run(True)
    return fires * run(True) + (1 - fires) * run(False)


def sample(
    logits: Tensor,
    settings: SamplerSettings | None,
    generator: torch.Generator | None = None,
    prompt_ids: Sequence[int] = (),
    generated_ids: Sequence[int] = (),
) -> Tensor:
    """Next token ids (...,) from logits (..., V); greedy when settings is None or temperature is 0."""
    if settings is None:
        return logits.argmax(dim=-1)
    probs = distribution(logits, settings, prompt_ids, generated_ids)
    if settings.greedy:
        return probs.argmax(dim=-1)
    flat = probs.reshape(-1, probs.shape[-1])
    return torch.multinomial(flat, 1, generator=generator).reshape(probs.shape[:-1])


def draw(probs: Tensor, n: int, seed: int) -> Tensor:
    """n seeded samples (with replacement) from a distribution (V,): the same seed gives the same tokens."""
    return torch.multinomial(probs, n, replacement=True, generator=torch.Generator().manual_seed(seed))
