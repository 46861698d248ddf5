"""Turning next-token logits into a choice: pure functions of (logits, settings, generator).

`SamplerSettings` holds the knobs; `distribution` gives the probabilities after the whole
chain, in Hugging Face transformers' order: temperature -> top-k -> top-p -> min-p. A
temperature of 0 means greedy (argmax). Every filter keeps at least one token. With the
same `torch.Generator` seed, `sample` picks the same tokens every time.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class SamplerSettings:
    temperature: float = 1.0  # divide logits by this; 0 = greedy
    top_k: int = 0  # keep the k most likely tokens (ties at the boundary kept); 0 = off
    top_p: float = 1.0  # keep the smallest set whose mass reaches p; 1.0 = off
    min_p: float = 0.0  # drop tokens below min_p * p(top token); 0 = off

    def __post_init__(self) -> None:
        checks = {
            "temperature must be >= 0": self.temperature >= 0,
            "top_k must be >= 0": self.top_k >= 0,
            "top_p must be in (0, 1]": 0 < self.top_p <= 1,
            "min_p must be in [0, 1]": 0 <= self.min_p <= 1,
        }
        for message, ok in checks.items():
            if not ok:  # NaN fails every comparison, so it lands here too
                raise ValueError(f"{message}, got {self}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def top_k_filter(logits: Tensor, k: int) -> Tensor:
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: Tensor, p: float) -> Tensor:
    if p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, descending=False, dim=-1)
    cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    remove = cumulative <= 1 - p  # the low tail whose mass stays under 1 - p
    remove[..., -1:] = False  # keep at least the top token
    return logits.masked_fill(remove.scatter(-1, order, remove), float("-inf"))


def min_p_filter(logits: Tensor, min_p: float) -> Tensor:
    if min_p <= 0:
        return logits
    probs = logits.softmax(dim=-1)
    threshold = min_p * probs.max(dim=-1, keepdim=True).values
    remove = probs < threshold
    remove.scatter_(-1, probs.argmax(dim=-1, keepdim=True), False)
    return logits.masked_fill(remove, float("-inf"))


def filtered_logits(logits: Tensor, settings: SamplerSettings) -> Tensor:
    """Logits after temperature and the filters (removed tokens at -inf), float32."""
    logits = logits.float()
    if settings.greedy:
        return logits.masked_fill(logits < logits.max(dim=-1, keepdim=True).values, float("-inf"))
    logits = logits / settings.temperature
    logits = top_k_filter(logits, settings.top_k)
    logits = top_p_filter(logits, settings.top_p)
    return min_p_filter(logits, settings.min_p)


def distribution(logits: Tensor, settings: SamplerSettings) -> Tensor:
    """Probabilities over the whole vocabulary after the sampler chain."""
    return filtered_logits(logits, settings).softmax(dim=-1)


def sample(logits: Tensor, settings: SamplerSettings | None, generator: torch.Generator | None = None) -> Tensor:
    """Next token ids (...,) from logits (..., V); greedy when settings is None or temperature is 0."""
    if settings is None or settings.greedy:
        return logits.argmax(dim=-1)
    probs = distribution(logits, settings)
    flat = probs.reshape(-1, probs.shape[-1])
    return torch.multinomial(flat, 1, generator=generator).reshape(probs.shape[:-1])
